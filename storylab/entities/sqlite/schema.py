"""The SQLite schema of an entity graph, its versions and upgrades, and opening a file.

Schema versions (``PRAGMA user_version``): 1 unique child names; 2 unique
call paths; 3 packed progress rows; 4 leases. An older file is upgraded in
place on open, inside one transaction that rewrites no existing row (a
failed upgrade changes nothing); a newer one is refused. A file is a
storylab graph when its header carries :data:`APPLICATION_ID`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from storylab.entities.errors import GraphAccessError, NotAStorylabGraphError, SchemaVersionError

__all__ = [
    "APPLICATION_ID",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UPGRADES",
    "cannot_open",
    "connect",
    "is_access_error",
    "prepare",
    "upgrade",
]

log = logging.getLogger("storylab.entities")

SCHEMA_VERSION = 4
APPLICATION_ID = 0x53544C42  # "STLB" in the SQLite header: marks a storylab graph

SCHEMA = """
CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('Pending', 'InProgress', 'Completed', 'Failed')),
    data        TEXT NOT NULL,
    parent_id   TEXT REFERENCES nodes(id),
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    error       TEXT,
    output      TEXT,
    call_path   TEXT
);
CREATE UNIQUE INDEX nodes_child_path ON nodes(parent_id, coalesce(call_path, name))
    WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX nodes_root_name ON nodes(name) WHERE parent_id IS NULL;
CREATE INDEX nodes_roots_recent ON nodes(created_at) WHERE parent_id IS NULL;
CREATE TABLE progress (
    seq      INTEGER PRIMARY KEY,
    node_id  TEXT NOT NULL,
    type     TEXT NOT NULL,
    status   TEXT,
    message  TEXT,
    sub_type TEXT,
    value    TEXT,
    error    TEXT,
    at       REAL NOT NULL,
    more     TEXT
);
CREATE INDEX progress_node ON progress(node_id, seq);
CREATE TABLE leases (
    node_id      TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    token        TEXT NOT NULL,
    taken_at     REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at   REAL NOT NULL
);
"""

# Schema history. Each step upgrades a file from the version before it, inside
# the transaction that also sets the new version, so a failed upgrade leaves
# the file exactly as it was.
#
# 2: children are unique by *call path* (see ``RunnableEntity.condition``), not
#    by plain name. The column holds the path only when it differs from the
#    name (a child created inside a condition branch); NULL means "the name",
#    which is what every schema-1 child is, so no row is rewritten.
UPGRADES = {
    2: (
        "DROP INDEX nodes_child_name",
        "ALTER TABLE nodes ADD COLUMN call_path TEXT",
        "CREATE UNIQUE INDEX nodes_child_path ON nodes(parent_id, coalesce(call_path, name)) "
        "WHERE parent_id IS NOT NULL",
    ),
    # 3: a progress row may carry the envelopes of the same node that directly
    #    followed it in the log (``more``: a JSON array of [type, status,
    #    message, sub_type, value, error, at]), so a run that logs STARTED,
    #    VALUE and COMPLETED in one step writes one row, not three. Older rows
    #    have no ``more`` and read as before.
    3: ("ALTER TABLE progress ADD COLUMN more TEXT",),
    # 4: who runs a node right now (see the module docstring). An InProgress
    #    node of an older file has no lease, which reads as "its owner is
    #    gone": it is stale, as it always was.
    4: (
        "CREATE TABLE leases (node_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "host TEXT NOT NULL, pid INTEGER NOT NULL, token TEXT NOT NULL, taken_at REAL NOT NULL, "
        "heartbeat_at REAL NOT NULL, expires_at REAL NOT NULL)",
    ),
}

# A node has exactly one incoming ``Calls`` edge (from its parent), so edges

# SQLite's names for "the file is there, but you may not open or write it"
# (SQLITE_READONLY also comes with suffixes: _DIRECTORY, _CANTINIT, ...).
_ACCESS_ERRORS = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")


def is_access_error(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorname", "") or "").startswith(_ACCESS_ERRORS)


def cannot_open(path: Path, exc: sqlite3.Error) -> str:
    return (
        f"cannot open the entity graph {path} ({exc}): is the file, its folder or its disk "
        "read-only or not yours? Nothing was changed"
    )


def connect(path: Path, read_only: bool) -> sqlite3.Connection:
    def connect(target: str | Path, uri: bool = False) -> sqlite3.Connection:
        return sqlite3.connect(
            target, uri=uri, isolation_level=None, timeout=30.0, check_same_thread=False
        )

    if not read_only:
        return connect(path)
    uri = path.resolve().as_uri()
    if not Path(f"{path}-wal").exists():
        # Nobody has the graph open for writing (a writer keeps its -wal file
        # until it closes, and writes there, not to the file): read it as
        # immutable, which creates no -wal or -shm file beside a graph that
        # is only looked at (or refused), and needs no write access at all.
        return connect(f"{uri}?immutable=1", uri=True)
    conn = connect(f"{uri}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if not name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")):
            return conn  # prepare reports it
        # A WAL graph on a read-only folder or mount: SQLite cannot create the
        # shared-memory file it reads through. With nobody able to write
        # there, reading the file as immutable is safe.
        conn.close()
        conn = connect(f"{uri}?immutable=1", uri=True)
    return conn


def _switch_to_wal(conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Put the file in WAL mode, waiting out another process that opens it too.

    Leaving rollback mode needs an exclusive lock. When two processes open a
    brand-new graph at the same instant, SQLite answers one of them "database
    is locked" at once instead of calling the busy handler (waiting could
    deadlock two readers that both want to write), so the wait is ours to do.
    """
    deadline = time.monotonic() + patience
    delay = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            if not name.startswith("SQLITE_BUSY") or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def prepare(conn: sqlite3.Connection, path: Path, read_only: bool = False) -> None:
    """Check that ``conn`` is a storylab graph (or empty) before changing anything,
    then switch to WAL and create the schema if needed (not when ``read_only``)."""
    try:
        # One read transaction, so the three come from one snapshot: another
        # process may be creating the schema right now, and the header and the
        # table count read a moment apart would contradict each other.
        conn.execute("BEGIN")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        if is_access_error(exc):
            raise GraphAccessError(cannot_open(path, exc)) from None
        raise NotAStorylabGraphError(
            f"{path} is not a storylab entity graph (not an SQLite database: {exc})"
        ) from None
    if app_id != APPLICATION_ID:
        if tables or version or app_id:
            raise NotAStorylabGraphError(
                f"{path} is an SQLite database but not a storylab entity graph "
                f"(application_id {app_id:#x}, {tables} schema objects); nothing was changed"
            )
    elif version > SCHEMA_VERSION or version < 1:
        raise SchemaVersionError(
            f"{path} uses entity-graph schema {version}, "
            + (
                f"newer than the {SCHEMA_VERSION} this storylab understands; upgrade storylab "
                if version > SCHEMA_VERSION
                else "which no storylab ever wrote; "
            )
            + "to open it (nothing was changed)"
        )
    if read_only:
        if app_id != APPLICATION_ID:
            raise NotAStorylabGraphError(f"{path} is empty: not an entity graph yet")
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} uses the older entity-graph schema {version}; open it once for "
                f"writing to upgrade it to {SCHEMA_VERSION} (nothing was changed)"
            )
        conn.execute("PRAGMA cache_size=-65536")
        return
    try:
        _switch_to_wal(conn)
    except sqlite3.OperationalError as exc:
        if not is_access_error(exc):
            raise
        raise GraphAccessError(
            f"the entity graph {path} is read-only ({exc}): it can be read but not "
            "written; nothing was changed"
        ) from None
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache (default: 2 MiB)
    conn.execute("PRAGMA foreign_keys=ON")
    if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-check under the write lock: another process may have created or
        # upgraded it meanwhile.
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        else:
            upgrade(conn, path, conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def upgrade(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring a graph of an older schema up to date, in the open transaction."""
    try:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in UPGRADES[target]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.Error as exc:
        raise SchemaVersionError(
            f"{path} uses entity-graph schema {version}; upgrading it to {SCHEMA_VERSION} "
            f"failed ({exc}), so nothing was changed"
        ) from exc
    log.info("entity graph %s: upgraded from schema %d to %d", path, version, SCHEMA_VERSION)
