"""The stores every conformance test runs against.

``target`` is parametrized over the SQLite store (a file in the test's
folder) and the PostgreSQL store (a fresh schema, dropped afterwards, in the
database named by ``$STORYLAB_TEST_PG``). Without that variable, or without
a server answering there, the PostgreSQL cases skip and say how to start
one; with ``$CI`` (or ``$STORYLAB_REQUIRE_PG``) set they fail instead, so
CI cannot pass without them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.cli import write_lock_is_free as sqlite_write_lock_is_free

from storylab.entities import EntityGraph

PG_ENV = "STORYLAB_TEST_PG"
HOW_TO_START = (
    "start a server and point the tests at it: pg_ctlcluster 15 main start; "
    'su postgres -c "psql -c \\"CREATE ROLE storylab LOGIN PASSWORD \'storylab\' CREATEDB\\""; '
    "su postgres -c 'createdb -O storylab storylab_test'; "
    f"export {PG_ENV}=postgresql://storylab:storylab@127.0.0.1:5432/storylab_test "
    "(.ci/run does all of this)"
)


def _unavailable(why: str) -> None:
    message = f"PostgreSQL store not tested: {why}; {HOW_TO_START}"
    if os.environ.get("CI") or os.environ.get("STORYLAB_REQUIRE_PG"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class Target:
    """One store under test: ``url`` is what ``EntityGraph.open`` (and a worker
    process's command line) takes; ``rows`` reads it from outside the store."""

    kind: str
    url: str
    schema: str | None = None
    base: str | None = None
    _opened: list = field(default_factory=list)

    def open(self, **options) -> EntityGraph:
        graph = EntityGraph.open(self.url, **options)
        self._opened.append(graph)
        return graph

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows read on a connection of its own (what another host would see
        committed). ``sql`` uses ``?`` parameters and the store's table names."""
        if self.kind == "sqlite":
            if not Path(self.url).exists():
                return []
            conn = sqlite3.connect(f"file:{self.url}?mode=ro", uri=True, timeout=30)
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:
                return []
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f'SET search_path = "{self.schema}"')
            try:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def set_schema_version(self, version: int) -> None:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url)
            conn.execute(f"PRAGMA user_version={int(version)}")
            conn.commit()
            conn.close()
            return
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{self.schema}".storylab_meta SET value = %s '
                "WHERE name = 'schema_version'",
                (str(version),),
            )

    def write_lock_is_free(self) -> bool:
        """Whether no process is in the middle of a write right now: on SQLite
        nobody holds the file's write lock; on PostgreSQL (which has no
        graph-wide write lock) no other connection holds a lock on the
        graph's tables stronger than a reader's."""
        if self.kind == "sqlite":
            return sqlite_write_lock_is_free(self.url)
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            busy = conn.execute(
                "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace s ON s.oid = c.relnamespace "
                "WHERE s.nspname = %s AND l.pid <> pg_backend_pid() "
                "AND l.mode <> 'AccessShareLock' LIMIT 1",
                (self.schema,),
            ).fetchone()
            return busy is None


def pg_base_url() -> str:
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        _unavailable(f"${PG_ENV} is not set")
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'storylab[postgres]')")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        _unavailable(f"the server at ${PG_ENV} does not answer ({type(exc).__name__})")
    return url


def with_schema(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    yield from store_target(request.param, tmp_path)


def store_target(kind: str, tmp_path: Path):
    """The body of the ``target`` fixture (for test modules elsewhere to
    make a fixture of their own with): one store of ``kind``, closed (and
    its schema dropped) after the test."""
    if kind == "sqlite":
        t = Target("sqlite", str(tmp_path / "graph.sqlite"))
    else:
        base = pg_base_url()
        schema = f"t_{uuid.uuid4().hex[:12]}"
        t = Target("postgres", with_schema(base, schema), schema, base)
    yield t
    for graph in t._opened:
        graph.close()
    if t.kind == "postgres":
        import psycopg

        with psycopg.connect(t.base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{t.schema}" CASCADE')


@pytest.fixture
def pg_target(tmp_path):
    """The PostgreSQL store alone (for what only a server store has)."""
    base = pg_base_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    t = Target("postgres", with_schema(base, schema), schema, base)
    yield t
    for graph in t._opened:
        graph.close()
    import psycopg

    with psycopg.connect(t.base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{t.schema}" CASCADE')


ROOT = Path(__file__).resolve().parents[3]
ROOT_ENV = dict(
    os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
)
