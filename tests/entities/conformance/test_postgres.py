"""What only the server store has: its URL, its errors, its schema upgrades,
keeping passwords out of sight, and staying out of ``import storylab``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from storylab.entities import (
    EntityGraph,
    GraphAccessError,
    GraphNotFoundError,
    GraphUnreachableError,
    Return,
    RunnableEntity,
)
from storylab.entities.postgres.url import parse

from .conftest import ROOT_ENV, pg_base_url


class Note(RunnableEntity, type_name="ConformanceNote"):
    async def run_impl(self):
        child = self.append_call(NoteChild, "child")
        yield Return({"child": await child.run()})


class NoteChild(RunnableEntity, type_name="ConformanceNoteChild"):
    async def run_impl(self):
        yield self.progress({"step": 1})
        yield Return({"key": self.store_blob(b"<p>hi</p>", "text/html")})


def test_import_storylab_does_not_import_the_driver():
    code = (
        "import sys, storylab, storylab.entities, storylab.entities.postgres\n"
        "from storylab.entities import EntityGraph\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ROOT_ENV, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_url_is_parsed_without_showing_its_password():
    u = parse("postgresql://ann:s3cr%40t@db.example:6543/graphs?schema=team_a&sslmode=require")
    assert u.shown == "postgresql://ann@db.example:6543/graphs?sslmode=require&schema=team_a"
    assert u.schema == "team_a" and u.user == "ann" and u.host == "db.example:6543"
    assert "schema" not in u.conninfo and "s3cr%40t" in u.conninfo
    assert u.scrub("failed for s3cr@t and s3cr%40t") == "failed for *** and ***"
    with pytest.raises(ValueError, match="schema parameter .* got 'Bad-Name'"):
        parse("postgresql://h/db?schema=Bad-Name")
    q = parse("postgresql://h/db?password=hunter22")
    assert "hunter22" not in q.shown and q.scrub("x hunter22") == "x ***"


def test_a_server_that_is_down_is_one_line_without_the_password():
    # Port 9 (discard) on loopback: nothing listens there.
    url = "postgresql://ann:very-secret-pw@127.0.0.1:9/nothing"
    with pytest.raises(GraphUnreachableError) as info:
        EntityGraph.open(url)
    message = str(info.value)
    assert "\n" not in message and "very-secret-pw" not in message
    assert "cannot reach the PostgreSQL server at 127.0.0.1:9" in message
    assert "postgresql://ann@127.0.0.1:9/nothing" in message
    assert isinstance(info.value, ConnectionError)


def test_refused_credentials_are_one_line_without_the_password():
    base = pg_base_url()
    parts = urlsplit(base)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    wrong = urlunsplit(parts._replace(netloc=f"{user}:Wrong-Pw-123@{host}"))
    with pytest.raises(GraphAccessError) as info:
        EntityGraph.open(wrong)
    message = str(info.value)
    assert "\n" not in message and "Wrong-Pw-123" not in message
    assert f"refused the credentials of user {user!r}" in message
    assert "$PGPASSWORD" not in message  # it had one: the hint is for URLs without
    nopw = urlunsplit(parts._replace(netloc=f"{user}@{host}"))
    with pytest.raises(GraphAccessError, match=r"the URL has no password: set \$PGPASSWORD"):
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("PGPASSWORD", raising=False)
            mp.setenv("PGPASSFILE", "/nonexistent")
            EntityGraph.open(nopw)


def test_a_missing_database_says_so():
    parts = urlsplit(pg_base_url())
    url = urlunsplit(parts._replace(path="/no_such_storylab_db"))
    with pytest.raises(GraphNotFoundError, match="no database for the entity graph"):
        EntityGraph.open(url)


def test_open_without_create_on_an_empty_schema_is_refused(pg_target):
    with pytest.raises(GraphNotFoundError, match="no entity graph at"):
        pg_target.open(create=False)
    with pytest.raises(GraphNotFoundError):
        pg_target.open(read_only=True)


def test_the_password_is_nowhere_a_graph_shows_or_stores(pg_target):
    base = pg_target.base
    password = urlsplit(base).password
    if not password:
        pytest.skip("the test server URL carries no password")
    g = pg_target.open()
    root = g.create(Note, "note")
    result = asyncio.run(root.run())
    assert g.blobs.get(result["child"]["key"]) == b"<p>hi</p>"
    shown = [str(g.path), repr(g), g.key, g.blobs.root, repr(g.blobs)]
    assert all(password not in s for s in shown), shown
    assert g.path.startswith("postgresql://") and "schema=" in g.path
    dump = []
    for table in ("nodes", "progress", "leases", "storylab_meta"):
        dump += pg_target.rows(f"SELECT * FROM {table}")
    assert dump and password not in json.dumps(dump, default=str)
    g.close()


def test_an_older_schema_is_upgraded_in_place_keeping_its_nodes(pg_target):
    import psycopg

    from storylab.entities.postgres.schema import APPLICATION, SCHEMA_V1

    with psycopg.connect(pg_target.base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_target.schema}"')
        conn.execute(f'SET search_path = "{pg_target.schema}"')
        for statement in SCHEMA_V1:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO storylab_meta VALUES ('application', %s), ('schema_version', '1')",
            (APPLICATION,),
        )
        conn.execute(
            "INSERT INTO nodes (id, name, type, status, data, created_at) "
            "VALUES ('old1', 'old', 'ConformanceNote', 'Completed', '{}', 1.0)"
        )
    with pytest.raises(Exception, match="older entity-graph schema 1"):
        pg_target.open(read_only=True)
    g = pg_target.open()
    assert g.get_node("old1").status == "Completed"
    key = g.blobs.put(b"new", "text/plain")
    assert g.blobs.get(key) == b"new"
    assert pg_target.rows("SELECT value FROM storylab_meta WHERE name = 'schema_version'") == [
        ("2",)
    ]


def test_a_schema_holding_other_tables_is_not_taken_over(pg_target):
    import psycopg

    from storylab.entities import NotAStorylabGraphError

    with psycopg.connect(pg_target.base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_target.schema}"')
        conn.execute(f'CREATE TABLE "{pg_target.schema}".invoices (id int)')
    with pytest.raises(NotAStorylabGraphError, match="holds 1 tables but no storylab"):
        pg_target.open()
    assert pg_target.rows("SELECT count(*) FROM invoices") == [(0,)]


def test_storylab_eg_reads_a_server_graph(pg_target):
    g = pg_target.open()
    root = g.create(Note, "note")
    asyncio.run(root.run())
    g.close()
    out = subprocess.run(
        [sys.executable, "-m", "storylab.cli", "eg", "--graph", pg_target.url, "list"],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # eg list shows the shortest unique start of each id (8 characters at least).
    assert root.id[:8] in out.stdout and "Completed" in out.stdout and "(note)" in out.stdout
    tree = subprocess.run(
        [sys.executable, "-m", "storylab.cli", "eg", "--graph", pg_target.url, "tree", root.id],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
        timeout=60,
    )
    assert tree.returncode == 0, tree.stderr
    assert "child" in tree.stdout


def test_storylab_eg_on_a_server_that_is_down_fails_in_one_line():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "storylab.cli",
            "eg",
            "--graph",
            "postgresql://ann:pw-never-shown@127.0.0.1:9/x",
            "list",
        ],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "pw-never-shown" not in out.stderr + out.stdout
    assert "cannot reach the PostgreSQL server" in out.stderr


def test_two_handles_in_one_process_share_the_graph(pg_target):
    a = pg_target.open()
    b = pg_target.open()
    node = a.create(NoteChild, "shared")
    # b's write first commits what a holds (they would otherwise wait on each other).
    assert b.get_node(node.id).name == "shared"
    b.set_data(node.id, json.dumps({"by": "b"}))
    b.flush()
    assert a.data_of(node.id) == {"by": "b"}


def test_a_commit_after_a_failed_statement_is_reported_failed_not_done(pg_target):
    """PostgreSQL answers COMMIT in a failed transaction with a rollback, not an
    error: the store must not take that for a commit."""
    from storylab.entities import EntityGraphError

    g = pg_target.open()
    kept = g.insert_node(NoteChild, "kept", {"v": 1}, None)  # committed (no loop running)

    async def main() -> None:
        g.insert_node(NoteChild, "lost", {}, None)  # pending, written at the commit
        g.set_data(kept.id, json.dumps({"v": 2}))  # applied in the open transaction
        with pytest.raises(Exception, match="DivisionByZero"):
            g._conn.execute("SELECT 1 / 0")
        waiter = g.commit_waiter()
        assert waiter is not None
        with pytest.raises(EntityGraphError, match="a commit to .* failed"):
            await waiter

    asyncio.run(main())
    assert pg_target.rows("SELECT name, data FROM nodes") == [("kept", '{"v": 1}')]

    with pytest.raises(EntityGraphError, match="a commit to .* failed"):
        g.set_data(kept.id, "{}")  # the next operation hears of the failed commit too
    g2 = pg_target.open()

    async def only_applied() -> None:  # nothing left to write at the commit but COMMIT
        g2.set_data(kept.id, json.dumps({"v": 3}))
        with pytest.raises(Exception, match="DivisionByZero"):
            g2._conn.execute("SELECT 1 / 0")
        with pytest.raises(EntityGraphError, match="rolled back by the server"):
            await g2.commit_waiter()

    asyncio.run(only_applied())
    assert pg_target.rows("SELECT name, data FROM nodes") == [("kept", '{"v": 1}')]


def test_options_are_checked_before_the_server_is_asked(pg_target):
    with pytest.raises(ValueError, match="commit must be one of 'batched', 'interval'"):
        EntityGraph.open(pg_target.url, commit="sometimes")
    with pytest.raises(ValueError, match="lease_ttl must be a positive number"):
        EntityGraph.open(pg_target.url, lease_ttl=0)
    assert pg_target.rows("SELECT 1 FROM storylab_meta") == []  # nothing was created


class Ticker(RunnableEntity, type_name="ConformanceTicker"):
    async def run_impl(self):
        for i in range(100):
            yield self.progress({"i": i})
            await asyncio.sleep(0.05)
        yield Return("done")


class Fan(RunnableEntity, type_name="ConformanceFan"):
    async def run_impl(self):
        kids = [self.append_or_retrieve_call(Ticker, f"t{i}") for i in range(3)]
        results = await asyncio.gather(*(k.run() for k in kids), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        yield Return(results)


@pytest.fixture
def private_server(tmp_path):
    """A PostgreSQL server of this test's own, on a socket in a fresh folder
    (so it can be stopped mid-run); needs root and the server binaries."""
    import glob
    import os
    import shutil
    import signal
    import tempfile
    import time

    import psycopg

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if os.geteuid() != 0 or not binaries or shutil.which("setpriv") is None:
        pytest.skip("needs root, setpriv and PostgreSQL's server binaries")
    bindir = os.path.dirname(binaries[-1])
    folder = tempfile.mkdtemp(prefix="storylab-pg-")
    os.chmod(folder, 0o755)
    data, sock = os.path.join(folder, "data"), os.path.join(folder, "sock")
    for d in (data, sock):
        os.mkdir(d, 0o700)
        shutil.chown(d, "postgres", "postgres")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    subprocess.run(
        [*as_postgres, f"{bindir}/initdb", "-D", data, "-U", "storylab", "--auth-local=trust"],
        check=True,
        capture_output=True,
        cwd=folder,
    )
    server = subprocess.Popen(
        [*as_postgres, f"{bindir}/postgres", "-D", data, "-p", "5499", "-c", "listen_addresses=",
         "-c", f"unix_socket_directories={sock}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
    )  # fmt: skip
    url = f"postgresql://storylab@/postgres?host={sock}&port=5499&schema=gone"
    deadline = time.monotonic() + 60
    while True:  # the socket appears before the server accepts connections
        assert time.monotonic() < deadline and server.poll() is None
        if os.path.exists(os.path.join(sock, ".s.PGSQL.5499")):
            try:
                psycopg.connect(f"host={sock} port=5499 user=storylab dbname=postgres").close()
                break
            except psycopg.OperationalError:  # "the database system is starting up"
                pass
        time.sleep(0.1)
    try:
        yield server, url
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(60)
def test_a_server_lost_mid_run_stops_the_run_with_a_graph_error_in_one_line(private_server, caplog):
    import signal
    import time

    from storylab.entities import EntityGraphError

    server, url = private_server
    g = EntityGraph.open(url, lease_ttl=2.0)
    root = g.create(Fan, "fan")

    async def main():
        async def stop_server():
            await asyncio.sleep(0.5)
            server.send_signal(signal.SIGINT)  # fast shutdown: every connection closed

        stopper = asyncio.get_running_loop().create_task(stop_server())
        try:
            return await root.run()
        finally:
            await stopper

    t0 = time.monotonic()
    with pytest.raises(EntityGraphError) as info:
        asyncio.run(main())
    assert time.monotonic() - t0 < 10  # stopped within about a lease, not hung
    message = str(info.value)
    assert "\n" not in message and "connection" in message, message
    # No unhandled error in a loop callback (the buffered progress is dropped,
    # with one warning, instead).
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]
    g.close()  # does not raise on a graph whose server is gone
