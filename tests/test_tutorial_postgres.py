"""Notebook 8's PostgreSQL section: the server is found, or a clear sentence says how to start
one; the password never shows, and each run starts from an empty schema of its own."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from storylab.tutorial import server_graph

SCHEMA = "storylab_test_notebook_server"


def test_without_a_url_it_says_how_to_start_a_server(monkeypatch):
    monkeypatch.delenv("STORYLAB_PG_URL", raising=False)
    found = server_graph("", schema=SCHEMA)
    assert not found.reachable and found.url is None
    assert "pg_ctlcluster" in found.describe() and "STORYLAB_PG_URL" in found.describe()
    assert "must start with postgresql://" in server_graph("mysql://x@h/db", schema=SCHEMA).reason
    with pytest.raises(ValueError, match="schema must be a lower-case SQL name"):
        server_graph("", schema="Bad-Name")


def test_a_server_that_does_not_answer_is_one_masked_sentence(monkeypatch):
    pytest.importorskip("psycopg")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    found = server_graph(f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/nothing",
                         schema=SCHEMA)
    assert not found.reachable and "cannot be used" in found.reason
    assert "s3cret-pw" not in repr(found) and "s3cret-pw" not in found.describe()
    assert os.environ["PGPASSWORD"] == "s3cret-pw"  # for worker processes started later


def test_a_reachable_server_gets_an_empty_schema_and_a_url_without_password(monkeypatch):
    url = os.environ.get("STORYLAB_TEST_PG")
    if not url:
        pytest.skip("STORYLAB_TEST_PG names no PostgreSQL server")
    from storylab import EntityGraph, Return, RunnableEntity

    class Note(RunnableEntity):
        async def run_impl(self):
            yield Return(1)

    monkeypatch.delenv("PGPASSWORD", raising=False)
    password = urlsplit(url).password
    first = server_graph(url, schema=SCHEMA)
    assert first.reachable, first.reason
    assert f"schema={SCHEMA}" in first.url
    if password:
        assert password not in first.url and password not in repr(first)
    with EntityGraph.open(first.url) as graph:
        graph.create_or_retrieve(Note, "left-over", {})
        assert [r.name for r in graph.roots()] == ["left-over"]
    again = server_graph(url, schema=SCHEMA)  # fresh: the schema is emptied
    with EntityGraph.open(again.url) as graph:
        assert list(graph.roots()) == []
    from storylab.tutorial._postgres import _drop_schema

    _drop_schema(again.url, SCHEMA)  # leave the shared server as it was
