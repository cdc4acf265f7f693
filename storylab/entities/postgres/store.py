"""The PostgreSQL entity store: the SQLite store's transactions on a server.

:class:`PostgresGraph` keeps the SQLite store's discipline (group commits,
nodes and leases written once per transaction, fencing checked inside the
write transaction, the heartbeat, the awaited waits) and changes what sits
under it: the connection, and the locks. :class:`_Connection` gives
psycopg's connection the few calls that discipline makes (``execute``,
``executemany``, ``in_transaction``), turning

* SQLite's dialect into PostgreSQL's (``?`` parameters, ``INSERT OR
  REPLACE``, an untyped parameter in a recursive query);
* the driver's errors into the error classes that discipline catches, with
  their text freed of any password: a failure fails the transaction (as on
  PostgreSQL it does: a commit after a failed statement is refused here,
  never reported as done).

No graph-wide write lock. SQLite has one writer at a time, and the
discipline above leans on it: a check made in the write transaction (a name
is free, a lease still carries our token) holds until the commit because
nobody else can write meanwhile. A server takes the same guarantees row by
row, so writers of different stories never wait for each other:

* a lease is decided under its node's row lock (``SELECT ... FOR NO KEY
  UPDATE``, held to the commit): the holder takes it before its first
  fenced write under that lease (:meth:`PostgresGraph._fence`) and before
  it drops the lease at the end (:meth:`PostgresGraph._drop_lease`), a
  process taking the node over takes it before it reads the lease it
  judges (:meth:`PostgresGraph._take`). So a take-over waits for the
  holder's open batch and then sees its commit (a finished node, or a
  lease still live), and the holder's writes after a take-over see the new
  token and are refused; parent's row before child's, in that order
  everywhere, so the two never wait for each other in a circle;
* a new node's name is decided under an advisory lock of that one name
  under that one parent (:meth:`_Connection.lock_name`, held to the
  commit): the unique index alone would let two processes both find a name
  free and the second fail its whole batch at the commit; with the lock the
  second waits for the first's commit, finds the node and uses it (create
  or get). A child under a parent made in the same transaction needs none
  (nobody else sees that parent yet);
* a claim of a Pending node is one ``UPDATE ... WHERE status = 'Pending'``,
  which the row lock of the update decides.

What still waits: two processes on the same node or the same name (a
take-over, the same story created twice at once) wait for each other's
commit, each wait bounded by ``busy_timeout`` (then the batch fails with a
graph error), and such a wait is a blocking call on the event loop (short:
the other process's batch). The graph's advisory lock
(:func:`~storylab.entities.postgres.schema.lock_key`) is taken only to
create or upgrade the schema.

Renewing leases is a short transaction of its own
(:meth:`PostgresGraph._try_renew`): it only pushes back the expiry of the
rows that still carry this process's token, which PostgreSQL's row locks
serialise against a take-over, so a heartbeat never waits behind a batch.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from storylab.entities.blobs import blob_content_type, blob_key, check_blob_key
from storylab.entities.errors import (
    EntityGraphError,
    GraphAccessError,
    GraphNotFoundError,
    GraphUnreachableError,
    UnknownBlobError,
)
from storylab.entities.postgres.schema import name_key, prepare
from storylab.entities.postgres.url import ServerURL, parse
from storylab.entities.sqlite.store import EntityGraph

__all__ = ["PgBlobStore", "PostgresGraph"]

log = logging.getLogger("storylab.entities")

# What a connection uses unless the URL says otherwise. The store's operations
# are short round trips made on the event loop, so a server that stops
# answering (a host or a network gone, no connection closed) must not hold
# one for TCP's own minutes: unanswered data fails the connection after
# tcp_user_timeout, an idle connection is probed by keepalives.
_CONNECTION_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 10,
    "application_name": "storylab",
    "tcp_user_timeout": 15_000,  # milliseconds
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


# How long one lease renewal waits for a row lock that another process's open
# write holds, at most, before it counts as busy and is tried again later.
_RENEW_LOCK_MS = 20


class GraphLocation(str):
    """A server graph's URL, without its password: what a graph's ``path``
    is for messages (``name`` is its schema, for task names)."""

    schema: str = "public"

    @property
    def name(self) -> str:
        return self.schema


# ------------------------------------------------------------------ errors
#
# The store logic above the connection catches its driver's error classes
# (sqlite3.Error and its busy/locked variants). These carry a PostgreSQL
# failure through that logic unchanged.


class _ServerError(sqlite3.OperationalError, EntityGraphError):
    """A failure on the server: caught by the store's logic as its driver's
    error, and by callers as an :class:`EntityGraphError`."""

    sqlite_errorname = "STORE_ERROR"


class _Busy(_ServerError):
    sqlite_errorname = "SQLITE_BUSY"  # what the commit and waiting logic look for


def _one_line(exc: BaseException, url: ServerURL) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else type(exc).__name__
    for prefix in ("connection failed: ", "FATAL:  ", "ERROR:  "):
        first = first.removeprefix(prefix)
    return url.scrub(first)


def _wrap(exc: psycopg.Error, url: ServerURL) -> _ServerError:
    return _ServerError(f"{_one_line(exc, url)} ({type(exc).__name__} from the database server)")


@functools.lru_cache(maxsize=256)
def _translate(sql: str) -> str:
    """A statement of the SQLite store in PostgreSQL's dialect."""
    if sql.startswith("INSERT OR REPLACE INTO leases"):
        sql = (
            sql.replace("INSERT OR REPLACE INTO", "INSERT INTO", 1)
            + " ON CONFLICT (node_id) DO UPDATE SET owner = EXCLUDED.owner, "
            "host = EXCLUDED.host, pid = EXCLUDED.pid, token = EXCLUDED.token, "
            "taken_at = EXCLUDED.taken_at, heartbeat_at = EXCLUDED.heartbeat_at, "
            "expires_at = EXCLUDED.expires_at"
        )
    sql = sql.replace("SELECT ? UNION ALL", "SELECT ?::text UNION ALL")
    return sql.replace("?", "%s")


class _NoRows:
    rowcount = -1

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list:
        return []


class _Connection:
    """psycopg's connection, as the store's transaction logic uses one."""

    def __init__(self, conn: psycopg.Connection, url: ServerURL) -> None:
        self._pg = conn
        self._url = url
        self._schema = url.schema
        self._wait_ms = 30_000  # the graph's busy timeout (a try sets 0 for BEGIN alone)

    @property
    def in_transaction(self) -> bool:
        return self._pg.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self._pg.close()

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        if sql.startswith("PRAGMA busy_timeout="):
            # BEGIN never waits here, so a try without waiting (busy 0) needs
            # nothing; the graph's own timeout bounds every row-lock wait.
            ms = int(sql.partition("=")[2])
            if ms > 0:
                self._wait_ms = ms
            return _NoRows()
        if sql == "BEGIN IMMEDIATE":
            self._begin()
            return _NoRows()
        pg = self._pg
        if sql == "COMMIT" and pg.info.transaction_status == TransactionStatus.INERROR:
            # PostgreSQL would answer a COMMIT of a failed transaction with a
            # rollback, not an error: never let that pass for a commit.
            self._rollback()
            raise _ServerError(
                "the transaction was rolled back by the server after an earlier statement "
                "in it failed"
            )
        try:
            return pg.execute(_translate(sql), params or None)
        except psycopg.Error as exc:
            raise _wrap(exc, self._url) from None

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        cur = self._pg.cursor()
        if rows:
            try:
                cur.executemany(_translate(sql), rows)
            except psycopg.Error as exc:
                raise _wrap(exc, self._url) from None
        return cur

    def renew(self, token: str, now: float, expires: float, lock_ms: int) -> set[str]:
        """Push back the expiry of every lease row carrying ``token``, in a
        transaction of its own without the graph's advisory lock; the ids of
        the rows renewed. A row lock held by another process's open write
        (a take-over of one of these rows) is waited for ``lock_ms`` at most,
        then this is busy. Call it outside a transaction."""
        pg = self._pg
        try:
            with pg.transaction():
                pg.execute(f"SET LOCAL lock_timeout = {int(lock_ms):d}")
                rows = pg.execute(
                    "UPDATE leases SET heartbeat_at = %s, expires_at = %s WHERE token = %s "
                    "RETURNING node_id",
                    (now, expires, token),
                ).fetchall()
        except pg_errors.LockNotAvailable:
            raise _Busy(
                "a lease row was locked by another process's open write (a take-over?)"
            ) from None
        except psycopg.Error as exc:
            raise _wrap(exc, self._url) from None
        return {row[0] for row in rows}

    def _rollback(self) -> None:
        try:
            self._pg.execute("ROLLBACK")
        except psycopg.Error:
            pass

    def lock_node(self, node_id: str) -> None:
        """Lock ``node_id``'s row until the transaction ends (``FOR NO KEY
        UPDATE``: children may still be inserted under it, progress rows
        still point at it). Every decision about a node's lease is made
        under this lock, by its holder writing under it and by a process
        taking it over alike, so the two are serialised per node, and
        processes writing other nodes never wait for each other."""
        self._locking("SELECT 1 FROM nodes WHERE id = %s FOR NO KEY UPDATE", (node_id,))

    def lock_name(self, parent_id: str | None, key: str) -> None:
        """Take the transaction-level advisory lock of one name under one
        parent (a root when ``parent_id`` is None), held to the commit: two
        processes creating the same name take turns, so the second sees the
        first's committed row and gets that node instead of failing its
        commit on the unique index; names that differ never wait."""
        self._locking("SELECT pg_advisory_xact_lock(%s)", (name_key(self._schema, parent_id, key),))

    def _locking(self, sql: str, params: tuple) -> None:
        try:
            self._pg.execute(sql, params)
        except pg_errors.LockNotAvailable:
            raise _ServerError(
                f"another process held a row of the entity graph for "
                f"{self._wait_ms / 1000:g} s (busy_timeout)"
            ) from None
        except psycopg.Error as exc:
            raise _wrap(exc, self._url) from None

    def _begin(self) -> None:
        """Open the write transaction. There is no graph-wide lock to take
        (see the module docstring): the locks a transaction needs are taken
        row by row (:meth:`lock_node`) or name by name (:meth:`lock_name`)
        as it goes, each waited for up to ``busy_timeout`` at most."""
        try:
            self._pg.execute(f"BEGIN; SET LOCAL lock_timeout = {self._wait_ms:d}")
        except psycopg.Error as exc:
            self._rollback()
            raise _wrap(exc, self._url) from None


# ------------------------------------------------------------------ opening


def connect(url: ServerURL, *, read_only: bool = False) -> psycopg.Connection:
    """An autocommit connection to the graph's server, its ``search_path``
    the graph's schema; one-line errors for a server that cannot be reached,
    refuses the credentials, or has no such database."""
    where = url.shown
    try:
        given = psycopg.conninfo.conninfo_to_dict(url.conninfo)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"not a valid graph URL {where!r}: {_one_line(exc, url)}") from None
    defaults = {k: v for k, v in _CONNECTION_DEFAULTS.items() if k not in given}
    try:
        conninfo = psycopg.conninfo.make_conninfo(url.conninfo, **defaults)
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise _open_error(exc, url) from None
    try:
        conn.execute(f'SET search_path = "{url.schema}"')
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        conn.close()
        raise EntityGraphError(
            f"cannot use the entity graph {where}: {_one_line(exc, url)}"
        ) from None
    return conn


def _open_error(exc: psycopg.OperationalError, url: ServerURL) -> EntityGraphError:
    text = _one_line(exc, url)
    low = str(exc).lower()
    where = url.shown
    if (
        getattr(exc, "sqlstate", None) in ("28P01", "28000")
        or "password authentication failed" in low
        or "no password supplied" in low
        or "authentication failed" in low
        or "pg_hba.conf" in low
    ):
        who = f"user {url.user!r}" if url.user else "this user"
        hint = "" if url.secrets else " (the URL has no password: set $PGPASSWORD or ~/.pgpass)"
        return GraphAccessError(
            f"the PostgreSQL server at {url.host} refused the credentials of {who} for the "
            f"entity graph {where} ({_reason(text)}){hint}; nothing was changed"
        )
    if "does not exist" in low and "database" in low:
        return GraphNotFoundError(
            f"no database for the entity graph {where} ({_reason(text)}): create it first "
            "(createdb NAME); nothing was changed"
        )
    return GraphUnreachableError(
        f"cannot reach the PostgreSQL server at {url.host} for the entity graph {where} "
        f"({_reason(text)}): is the server running and listening there? nothing was changed"
    )


def _reason(text: str) -> str:
    """The part of libpq's message that says why (after its 'at ... failed: ')."""
    return text.rpartition(" failed: ")[2] or text


# ------------------------------------------------------------------ blobs


class PgBlobStore:
    """Binary outputs in the graph's ``blobs`` table (``bytea``), by content key.

    ``put`` commits on a connection of its own before it returns, so a key is
    durable before any node's data or output names it, and every host that
    opens the graph reads the same bytes."""

    def __init__(self, url: ServerURL) -> None:
        self._url = url
        self.root = f"{url.shown} (table blobs)"
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<PgBlobStore {self.root!r}>"

    def _run(self, sql: str, params: tuple) -> Any:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._url)
                return self._conn.execute(sql, params).fetchone()
            except psycopg.Error as exc:
                raise EntityGraphError(
                    f"the blobs of the entity graph {self._url.shown} cannot be used: "
                    f"{_one_line(exc, self._url)}"
                ) from None

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        data, key = blob_key(data, content_type)
        self._run(
            "INSERT INTO blobs (key, data) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING "
            "RETURNING 1",
            (key, data),
        )
        return key

    def get(self, key: str) -> bytes:
        row = self._run("SELECT data FROM blobs WHERE key = %s", (check_blob_key(key),))
        if row is None:
            raise UnknownBlobError(f"no blob {key!r} in {self.root}")
        return bytes(row[0])

    def exists(self, key: str) -> bool:
        try:
            check_blob_key(key)
        except UnknownBlobError:
            return False
        return self._run("SELECT 1 FROM blobs WHERE key = %s", (key,)) is not None

    def delete(self, key: str) -> bool:
        """Remove the row under ``key`` (committed before this returns);
        whether there was one (``False`` for what is not a key)."""
        try:
            check_blob_key(key)
        except UnknownBlobError:
            return False
        return self._run("DELETE FROM blobs WHERE key = %s RETURNING 1", (key,)) is not None

    content_type = staticmethod(blob_content_type)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ------------------------------------------------------------------ the store


class PostgresGraph(EntityGraph):
    """An entity graph on a PostgreSQL server. Open it with
    ``EntityGraph.open("postgresql://...")``; see :mod:`storylab.entities.postgres`."""

    def __init__(
        self,
        url: ServerURL,
        conn: psycopg.Connection,
        commit: str,
        commit_interval: float,
        lease_ttl: float = 10.0,
        lease_heartbeat: float | None = None,
        busy_timeout: float = 30.0,
    ) -> None:
        self._url = url
        where = GraphLocation(url.shown)
        where.schema = url.schema
        super().__init__(
            where,  # type: ignore[arg-type]
            _Connection(conn, url),  # type: ignore[arg-type]
            commit,
            commit_interval,
            lease_ttl,
            lease_heartbeat,
            busy_timeout,
        )
        self._conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    # The three things a server store names differently from a file.

    def _open_blobs(self, path: Any) -> PgBlobStore:
        return PgBlobStore(self._url)

    def _graph_key(self, path: Any) -> str:
        return str(path)

    def _identify(self) -> None:
        return None

    def _file_gone(self) -> str | None:
        return None  # a server's tables do not vanish under an open connection

    def _check_writable(self) -> None:
        return None  # a write the server refuses fails its operation, with its reason

    # Row locks in place of the graph-wide lock (see the module docstring).
    # Each takes a node's row before its lease is read or changed, parent
    # before child, so a holder and a process taking over one node take
    # their locks in the same order.

    def _fence(self, node: str | None) -> None:
        if (
            node is not None
            and node in self._held
            and node not in self._checked
            and node not in self._new_leases
        ):
            if not self._conn.in_transaction:
                self._begin()
                self._schedule_commit()
            self._conn.lock_node(node)  # type: ignore[attr-defined]
        super()._fence(node)

    def _take(self, id: str, env: Any, parent_id: str | None = None) -> Any:
        with self._lock:
            self._begin()
            try:
                self._fence(parent_id)
                self._conn.lock_node(id)  # type: ignore[attr-defined]
            finally:
                self._schedule_commit()
            return super()._take(id, env, parent_id)

    def _drop_lease(self, conn: Any, id: str) -> bool:
        if id not in self._new_leases:
            self._conn.lock_node(id)  # type: ignore[attr-defined]
        return super()._drop_lease(conn, id)

    def _key_taken(self, conn: Any, parent_id: str | None, key: str) -> bool:
        # A parent made in this transaction is seen by nobody else yet, so
        # nobody else can be naming its children.
        if parent_id is None or parent_id not in self._new_rows:
            self._conn.lock_name(parent_id, key)  # type: ignore[attr-defined]
        return super()._key_taken(conn, parent_id, key)

    def _try_renew(self) -> bool:
        """One renewal of every lease we hold, without the graph's write lock
        (see the module docstring): what runs wrote so far is committed first
        (if a transaction is open we hold the lock, so that waits for nobody),
        then our lease rows are renewed in one short transaction. The leases
        taken on nodes not written yet count as renewed (their rows are
        written with a fresh heartbeat); a lease row found taken over is
        lost, and its run is told."""
        with self._lock:
            if self._closed:
                return True
            if self._in_txn:
                self._commit()
                if self._in_txn:
                    return False
            now = time.time()
            # A short try: the heartbeat tries again after an awaited delay,
            # so a row lock held by another process never holds up the loop.
            lock_ms = _RENEW_LOCK_MS
            renewed = self._conn.renew(  # type: ignore[attr-defined]
                self._token, now, now + self._lease_ttl, lock_ms
            )
            self._settle_renewal({*renewed, *self._new_leases}, now)
            return True

    @classmethod
    def open_url(
        cls,
        url: str,
        *,
        create: bool = True,
        commit: str = "batched",
        commit_interval: float = 0.005,
        read_only: bool = False,
        lease_ttl: float = 10.0,
        lease_heartbeat: float | None = None,
        busy_timeout: float = 30.0,
    ) -> PostgresGraph:
        parsed = parse(url)
        conn = connect(parsed, read_only=read_only)
        try:
            prepare(conn, parsed.shown, parsed.schema, create=create, read_only=read_only)
        except psycopg.Error as exc:
            conn.close()
            raise EntityGraphError(
                f"cannot open the entity graph {parsed.shown}: {_one_line(exc, parsed)}"
            ) from None
        except BaseException:
            conn.close()
            raise
        graph = cls(parsed, conn, commit, commit_interval, lease_ttl, lease_heartbeat, busy_timeout)
        graph.read_only = read_only
        return graph

    def close(self) -> None:
        super().close()
        self.blobs.close()

    def __repr__(self) -> str:
        return f"<EntityGraph {str(self.path)!r}>"
