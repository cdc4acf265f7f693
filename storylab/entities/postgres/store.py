"""The PostgreSQL entity store: the class :class:`PostgresGraph`, on psycopg's async API.

Its own implementation of :class:`~storylab.entities.store.EntityStore`
(nothing of the SQLite store's classes; the read queries and a few helpers
are store-neutral ones both stores share), in two halves:

* the **core** is asynchronous: every decision the store makes on the server
  (create-or-get a name, claim or take over a node, fence a write, finish,
  commit, renew leases) is a coroutine on psycopg's ``AsyncConnection``,
  run on the store's own event loop (:mod:`storylab.entities.postgres.core`),
  one at a time per graph (an ``asyncio.Lock`` on its write connection);
* the **entry points** are the interface's: synchronous, as the store
  contract asks (each operation is atomic and never spans an ``await``), so
  each hands its coroutine to the store's loop and waits for the answer.
  What may take long is awaited instead, on the caller's own loop: the
  heartbeat's renewals (:meth:`PostgresGraph._renew_leases`) and the commits
  of :meth:`PostgresGraph.settle` and :meth:`PostgresGraph.aclose`.

The guarantees, and how each is kept on a server:

* **Names are unique** by the ``UNIQUE`` indexes of the schema; a name is
  looked up and created under a transaction-level advisory lock of that one
  name under that one parent (:func:`~storylab.entities.postgres.schema.name_key`),
  so two processes creating the same root take turns and the second gets
  the first's node instead of failing its commit. A transaction that
  already holds locks never waits for a name's lock, nor for the row of a
  node nobody here leases (a data change, a reopen): its batch is committed
  first and the lock waited for in a fresh transaction, so two batches
  writing the same names or nodes in opposite orders cannot wait for each
  other (:meth:`PostgresGraph._without_crossing`). A child of a parent made
  in the same transaction needs no lock (nobody else sees that parent yet),
  nor does a child of a parent leased here: only the lease's holder makes
  a node's children, so their names are read once per lease and decided
  without a statement, and the commit fences the parent before it inserts
  them (:meth:`PostgresGraph._leased_child`).
* **Leases and fencing by token.** A node's lease is decided under its row
  lock (``SELECT ... FOR NO KEY UPDATE``, held to the commit): by the holder
  before its first fenced write of a transaction, before its end and before
  it lets the lease go; by a process taking the node over before it reads
  the lease it judges. Row locks are taken parent before child (a holder
  locks the held parent of a node before the node, a process taking a node
  over locks its held parent first), and a take-over skips a row that is
  locked right now if its lease is live ("busy": its holder is writing it),
  so a take-over never waits on a holder that is waiting on it. No
  graph-wide lock: writers of different stories never wait for each other.
* **Batching.** Operations share a transaction; a node created in it is
  inserted once at the commit in its final state, its lease row too, and
  progress rows go in with one ``executemany``; a run's end is handed on only
  once the commit returned (:meth:`PostgresGraph.commit_waiter`). The commit
  modes are the SQLite store's (``batched``, ``interval``, ``operation``).
* **The caller's loop** (a synchronous entry point called from a coroutine)
  is not made to wait for another process's open write by: reads (MVCC:
  reads never wait for writers; the nodes and progress of the open
  transaction that wait for a fence are read with the stored ones,
  :meth:`PostgresGraph._a_read_with_pending`); finding a root that exists
  (the name's lock is only tried: a name another process is deciding is
  answered by the node already committed under it); reopening a node
  another process is writing (made on a connection of its own, awaited by
  the next run of it through :meth:`PostgresGraph.write_waiter`; its
  record reads Pending meanwhile); the first ``append_call`` of a lease whose node
  another process is writing (the children are read without the row's
  lock once the lease is seen to be ours: the commit fences it); the
  batched commit (its fences are tried first and, if one is held, it is
  tried again later by a loop callback); ``close`` (a thread of its own
  finishes what waits). A fence found held makes the next
  :meth:`PostgresGraph.write_waiter` of a run await that row (on a
  connection of its own), so the run's claims and ends come after it. What
  still waits there, up to ``busy_timeout``: a new name another process is
  deciding, a fenced write (a claim, a data change, an end) whose node's
  row another process took since the last fence was tried, and a commit
  that holds fences of its own and has been held up for over a second
  (it then waits where the server can tell a deadlock).
* **Blobs** are rows of the ``blobs`` table, each committed on a connection
  of its own before its key is returned (:class:`PgBlobStore`).
* **Schema versions**: :mod:`storylab.entities.postgres.schema`.
* **Errors** are one line, without the password (:mod:`~storylab.entities.postgres.url`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg.pq import TransactionStatus

from storylab.entities._commits import again as _again
from storylab.entities._commits import running_loop as _running_loop
from storylab.entities._commits import settle as _settle
from storylab.entities._reads import NODE_COLUMNS as _NODE_COLUMNS
from storylab.entities._reads import StoreReads
from storylab.entities.blobs import blob_content_type, blob_key, check_blob_key
from storylab.entities.encoding import dumps, dumps_log, envelopes_from_rows, progress_rows
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    DuplicateNameError,
    EntityGraphError,
    GraphAccessError,
    LeaseLostError,
    UnknownBlobError,
    UnknownEntityError,
    taken_over,
)
from storylab.entities.postgres import core
from storylab.entities.postgres.core import LockBusy, ServerError, wrap
from storylab.entities.postgres.schema import name_key
from storylab.entities.postgres.url import ServerURL, parse
from storylab.entities.records import (
    HOST,
    LEASE_EXPIRED,
    LEASE_LIVE,
    LEASE_OWNER_GONE,
    EntityStatus,
    LeaseRecord,
    NodeRecord,
    new_id,
    node_record,
    pid_alive,
)
from storylab.entities.registry import check_new, revive, running_here
from storylab.entities.store import DATA_CHANGES, READ_FIELDS

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity
    from storylab.entities.store import EntityStore

__all__ = ["COMMIT_MODES", "GraphLocation", "PgBlobStore", "PostgresGraph"]

log = logging.getLogger("storylab.entities")

COMMIT_MODES = ("batched", "interval", "operation")
# A commit that another process's lock holds up, or an awaited renewal that
# failed, is tried again after this long (seconds), doubling to the maximum.
_RETRY_FIRST, _RETRY_MAX = 0.002, 0.05
# How long one lease renewal waits for a lease row another process's open
# write holds (a take-over of it), at most, before it is tried again later.
_RENEW_LOCK_MS = 20
# How many times an operation finding a name or row locked by another
# process is tried (committing this graph's open transaction in between)
# before LockBusy; the second try, in a fresh transaction, waits for the
# lock, so more are rare.
_ATTEMPTS = 3
# What an operation returns, having changed nothing, when it would have to
# wait for a lock another process holds while its transaction holds others
# (see PostgresGraph._without_crossing).
_CROSSING = object()
# What a reopening returns, having changed nothing, when the node's row is
# locked by another process and the caller's event loop must not wait for it
# (see PostgresGraph.reopen).
_DEFERRED = object()
# What a fence tried without waiting finds: another process holds the row.
_BUSY_ROW = ("busy", None)
_REOPEN = (
    "UPDATE nodes SET status = 'Pending', started_at = NULL, finished_at = NULL, "
    "error = NULL, output = NULL WHERE id = %s AND status IN ('Completed', 'Failed')"
)

# Reads answered with the rows not written yet (_a_read_with_pending): the
# tables a query reads, each with an alias or none.
_NODES_READ = re.compile(
    r"\b(FROM|JOIN)\s+nodes\b(?:\s+(?!WHERE\b|ORDER\b|JOIN\b|LEFT\b|LIMIT\b|ON\b|GROUP\b"
    r"|UNION\b|FOR\b)([a-z_]\w*))?",
    re.IGNORECASE,
)
_PROGRESS_READ = re.compile(
    r"\b(FROM|JOIN)\s+progress\b(?:\s+(?!WHERE\b|ORDER\b|JOIN\b|LEFT\b|LIMIT\b|ON\b"
    r"|GROUP\b|UNION\b|FOR\b)([a-z_]\w*))?",
    re.IGNORECASE,
)


def _with_pending(table: str) -> Callable[[re.Match], str]:
    def sub(m: re.Match) -> str:
        alias = m[2] or table
        both = f"SELECT * FROM {table} UNION ALL SELECT * FROM pg_temp.pending_{table}"
        return f"{m[1]} ({both}) {alias}"

    return sub


_LEASE_COLUMNS = "node_id, owner, host, pid, token, taken_at, heartbeat_at, expires_at"
_LEASE_OF_L = ", ".join("l." + c for c in _LEASE_COLUMNS.split(", "))
_INSERT_NODE = (
    "INSERT INTO nodes (id, name, type, status, data, parent_id, created_at, started_at, "
    "finished_at, error, output, call_path) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "%s, %s)"
)
_UPSERT_LEASE = (
    f"INSERT INTO leases ({_LEASE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (node_id) DO UPDATE SET owner = EXCLUDED.owner, host = EXCLUDED.host, "
    "pid = EXCLUDED.pid, token = EXCLUDED.token, taken_at = EXCLUDED.taken_at, "
    "heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at"
)
_INSERT_PROGRESS = (
    "INSERT INTO progress (node_id, type, status, message, sub_type, value, error, at, more) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# A node's row locked (to the commit), with the lease on it.
_LOCK_NODE = (
    "SELECT l.token, l.owner FROM nodes n LEFT JOIN leases l ON l.node_id = n.id "
    "WHERE n.id = %s FOR NO KEY UPDATE OF n"
)
_STATE_AND_LEASE = (
    f"SELECT n.status, n.output, {_LEASE_OF_L} FROM nodes n "
    "LEFT JOIN leases l ON l.node_id = n.id WHERE n.id = %s"
)
# Every open server graph of this process, by graph: one commits the others'
# open transaction before it writes (two handles of one thread waiting on each
# other's row locks would otherwise wait forever), and all are committed at exit.
_OPEN: dict[str, weakref.WeakSet[PostgresGraph]] = {}


@atexit.register
def _commit_all() -> None:
    for peers in list(_OPEN.values()):
        for graph in list(peers):
            try:
                graph._commit()
            except Exception:  # pragma: no cover - a server gone at exit
                pass


class GraphLocation(str):
    """A server graph's URL, without its password: what a graph's ``path``
    is for messages (``name`` is its schema, for task names)."""

    schema: str = "public"

    @property
    def name(self) -> str:
        return self.schema


@dataclasses.dataclass(slots=True)
class _NewNode:
    """A node created in the open transaction, not inserted yet: written at
    the commit (or before anything reads), in the state it has by then."""

    id: str
    name: str
    type: str
    status: str
    data: str
    parent_id: str | None
    created_at: float
    call_path: str | None  # None when it is the name
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    output: str | None = None

    @property
    def key(self) -> str:
        return self.call_path or self.name

    def row(self) -> tuple:
        return (
            self.id, self.name, self.type, self.status, self.data, self.parent_id,
            self.created_at, self.started_at, self.finished_at, self.error, self.output,
            self.call_path,
        )  # fmt: skip

    def read_row(self) -> tuple:
        """As a row of ``_NODE_COLUMNS``."""
        return (*self.row()[:11], None if self.parent_id is None else self.key)


@dataclasses.dataclass
class _Batch:
    """What one commit writes besides the statements already made."""

    rows: list[_NewNode]
    leases: dict[str, float]
    progress: list[Envelope]


class _SqlHandle:
    """Raw statements in the graph's open write transaction (for tools and
    tests): ``execute`` returns the rows read, as a cursor would."""

    def __init__(self, graph: PostgresGraph) -> None:
        self._graph = graph

    def execute(self, sql: str, params: tuple | list = ()) -> _Rows:
        graph = self._graph
        return graph._write(graph._a_raw(sql.replace("?", "%s"), tuple(params)))


@dataclasses.dataclass
class _Rows:
    rows: list[tuple]
    rowcount: int

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return self.rows


# ------------------------------------------------------------------ blobs


class PgBlobStore:
    """Binary outputs in the graph's ``blobs`` table (``bytea``), by content key.

    ``put`` commits on a connection of its own before it returns, so a key is
    durable before any node's data or output names it, and every host that
    opens the graph reads the same bytes."""

    def __init__(self, url: ServerURL, connections: core.Connections) -> None:
        self._url = url
        self._pg = connections
        self.root = f"{url.shown} (table blobs)"

    def __repr__(self) -> str:
        return f"<PgBlobStore {self.root!r}>"

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        data, key = blob_key(data, content_type)
        core.call(
            self._pg.blob(
                "INSERT INTO blobs (key, data) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (key, data),
            )
        )
        return key

    def get(self, key: str) -> bytes:
        row = core.call(
            self._pg.blob("SELECT data FROM blobs WHERE key = %s", (check_blob_key(key),))
        )
        if row is None:
            raise UnknownBlobError(f"no blob {key!r} in {self.root}")
        return bytes(row[0])

    def exists(self, key: str) -> bool:
        try:
            check_blob_key(key)
        except UnknownBlobError:
            return False
        return core.call(self._pg.blob("SELECT 1 FROM blobs WHERE key = %s", (key,))) is not None

    def delete(self, key: str) -> bool:
        """Remove the row under ``key`` (committed before this returns);
        whether there was one (``False`` for what is not a key)."""
        try:
            check_blob_key(key)
        except UnknownBlobError:
            return False
        row = core.call(self._pg.blob("DELETE FROM blobs WHERE key = %s RETURNING 1", (key,)))
        return row is not None

    content_type = staticmethod(blob_content_type)

    def close(self) -> None:
        core.call(self._pg.close_blobs())


# ------------------------------------------------------------------ the store


class PostgresGraph(StoreReads):
    """An entity graph on a PostgreSQL server (see the module docstring).

    Open it with ``EntityGraph.open("postgresql://...")`` or
    :meth:`PostgresGraph.open_url`. It implements
    :class:`~storylab.entities.store.EntityStore`, plus the read API of the
    command line and the plots (:meth:`get_node`, :meth:`descendants`,
    :meth:`progress`, :meth:`roots`, ...), as the SQLite graph does: most
    of it :class:`~storylab.entities._reads.StoreReads`, the same SQL.
    """

    _ID_PARAM = "?::text"  # (the id a recursive query starts from, typed)

    def __init__(
        self,
        url: ServerURL,
        connections: core.Connections,
        commit: str,
        commit_interval: float,
        lease_ttl: float,
        lease_heartbeat: float | None,
        busy_timeout: float,
        read_only: bool,
    ) -> None:
        self._url = url
        where = GraphLocation(url.shown)
        where.schema = url.schema
        self.path = where
        self.key = self._key = str(where)
        self.read_only = read_only
        self._pg = connections
        self.blobs = PgBlobStore(url, connections)
        self._conn = _SqlHandle(self)
        self._commit_mode = commit
        self._commit_interval = commit_interval
        self._busy_ms = max(1, int(busy_timeout * 1000))
        self._lock = threading.RLock()
        self._writer_lock: asyncio.Lock | None = None  # on the store's loop
        self._closed = False
        # The open write transaction and what it will write at its commit.
        self._in_txn = False
        self._new_rows: dict[str, _NewNode] = {}
        self._new_keys: set[tuple[str | None, str]] = set()
        self._new_leases: dict[str, float] = {}  # node -> taken_at
        self._progress: list[Envelope] = []
        self._parents: set[str] = set()  # known to exist
        self._commit_loop: asyncio.AbstractEventLoop | None = None
        self._commit_handle: asyncio.Handle | None = None
        self._commit_soon = False
        self._commit_error: EntityGraphError | None = None
        self._waiters: list[asyncio.Future] = []
        self._settling: set[str] = set()
        # Leases: ours are those carrying our token.
        self._lease_ttl = lease_ttl
        self._lease_heartbeat = lease_ttl / 4 if lease_heartbeat is None else lease_heartbeat
        self._pid = os.getpid()
        self._owner = f"{HOST}:{self._pid}"
        self._token = os.urandom(8).hex()
        self._held: dict[str, float] = {}  # node -> when its expiry was last pushed back
        self._lost: dict[str, LeaseLostError] = {}
        self._checked: set[str] = set()  # row-locked with our lease in the open transaction
        self._parent_of: dict[str, str | None] = {}  # of the nodes we claimed
        # The children of nodes we lease, by key -> id: read once per lease
        # (nobody else names them while we hold it; see _leased_child).
        self._kids: dict[str, dict[str, str]] = {}
        self._watchers: dict[str, Callable[[LeaseLostError], None]] = {}
        self._to_tell: list[tuple[str, LeaseLostError]] = []
        self._live_runs = 0
        self._heartbeat: asyncio.Task | None = None
        # Reopenings left to a connection of their own because another
        # process held the node's row (see reopen): node -> its future.
        self._reopens: dict[str, concurrent.futures.Future] = {}
        # On a caller's running loop, fences are only tried (see _afence):
        # the nodes of ours found locked by another process's open write.
        self._nowait = False
        self._busy: set[str] = set()
        self._retry_delay = _RETRY_FIRST
        self._retry_since: float | None = None
        # The thread finishing a close() made on a loop while reopenings wait.
        self._closing: threading.Thread | None = None
        _OPEN.setdefault(self._key, weakref.WeakSet()).add(self)

    # ------------------------------------------------------------ opening

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
        """Open (creating its tables unless ``create=False`` or ``read_only``)
        the graph at a ``postgresql://`` URL; the options are those of
        :meth:`EntityGraph.open <storylab.entities.sqlite.EntityGraph.open>`,
        checked there."""
        if commit not in COMMIT_MODES:
            allowed = ", ".join(repr(m) for m in COMMIT_MODES)
            raise ValueError(f"commit must be one of {allowed}; got {commit!r}")
        parsed = parse(url)
        connections = core.Connections(parsed, read_only)
        core.call(connections.open(create=create and not read_only))
        return cls(
            parsed, connections, commit, commit_interval, lease_ttl, lease_heartbeat,
            busy_timeout, read_only,
        )  # fmt: skip

    def close(self) -> None:
        """Commit what is pending and close the connections (idempotent;
        quiet on a server that is gone: the commit's failure is logged).

        Called on a running event loop while a reopening waits for a node
        another process is writing (see :meth:`reopen`), or while the last
        commit needs a fence such a write holds up, it does not wait there:
        the graph is closed to this process at once, and a thread of its own
        (never a daemon, so the process stores it before it exits) waits for
        them, commits and closes the connections.
        ``await graph.aclose()`` awaits all of it instead."""
        with self._lock:
            if self._closed or self._closing is not None:
                return
            if _running_loop() is not None and (self._in_txn or self._progress or self._new_rows):
                self._commit(nowait=True)  # at once, unless a fence waits
            if _running_loop() is not None and (
                self._waiting_reopens() or self._in_txn or self._progress or self._new_rows
            ):
                self._stop_heartbeat()
                handle, self._commit_handle = self._commit_handle, None
                if handle is not None:
                    handle.cancel()
                self._closing = threading.Thread(
                    target=self._close_later, name=f"closing {self.path.name}"
                )
                self._closing.start()
                return
        self._close_now()

    def _close_later(self) -> None:
        self._wait_reopens()
        self._close_now()

    def _close_now(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._commit()
            except Exception:  # pragma: no cover - logged by _commit
                pass
            self._stop_heartbeat()
            self._closed = True
            try:
                core.call(self._pg.aclose())
            except Exception:  # pragma: no cover - a connection already broken
                pass
            peers = _OPEN.get(self._key)
            if peers is not None:
                peers.discard(self)

    async def aclose(self) -> None:
        """:meth:`close` from a coroutine: the last commit (and any reopening
        waiting for another process's write) is awaited."""
        try:
            await self._await_reopens()
            await self.settle()
        except EntityGraphError:
            pass
        finally:
            self.close()

    def __enter__(self) -> PostgresGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EntityGraph {str(self.path)!r}>"

    @property
    def lease_ttl(self) -> float:
        return self._lease_ttl

    @property
    def is_gone(self) -> bool:
        return False  # a server's tables do not vanish under an open connection

    def check_file(self) -> None:
        return None

    # -------------------------------------------------- running the core

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run one operation's coroutine on the store's loop, alone on the write
        connection, and wait for it; then tell the runs whose leases it found
        lost. Call with ``_lock`` held."""
        try:
            return core.call(self._exclusive(coro))
        finally:
            if self._to_tell:
                self._tell()

    def _nowait_on_loop(self, coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
        """``coro``, its fences only tried (see :meth:`_afence`) when the
        caller runs an event loop, which must not wait for another process."""
        if _running_loop() is None:
            return coro
        return self._as_nowait(coro)

    async def _as_nowait(self, coro: Coroutine[Any, Any, Any]) -> Any:
        self._nowait = True
        try:
            return await coro
        finally:
            self._nowait = False

    async def _exclusive(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self._writer_lock is None:
            self._writer_lock = asyncio.Lock()
        async with self._writer_lock:
            return await coro

    async def _x(self, sql: str, params: tuple | list | None = None) -> psycopg.AsyncCursor:
        conn = self._pg.writer
        if conn is None:
            raise EntityGraphError(f"the entity graph {self.path} is closed")
        try:
            return await conn.execute(sql, params)
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None

    async def _one(self, sql: str, params: tuple | list | None = None) -> tuple | None:
        cur = await self._x(sql, params)
        try:
            return await cur.fetchone()
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None

    async def _all(self, sql: str, params: tuple | list | None = None) -> list[tuple]:
        cur = await self._x(sql, params)
        try:
            return await cur.fetchall()
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None

    async def _a_raw(self, sql: str, params: tuple) -> _Rows:
        await self._abegin()
        cur = await self._x(sql, params or None)
        rows = await cur.fetchall() if cur.description else []
        return _Rows(rows, cur.rowcount)

    # ----------------------------------------------------- transactions

    def _check_can_write(self) -> None:
        if self._commit_error is not None:
            error, self._commit_error = self._commit_error, None
            raise self._commit_failure(error)
        if self._closed or self._closing is not None:
            raise EntityGraphError(f"the entity graph {self.path} is closed")
        if self.read_only:
            raise GraphAccessError(
                f"the entity graph {self.path} was opened read-only; nothing was changed"
            )

    def _before_write(self) -> None:
        """On the caller's thread, before an operation that writes: refuse it
        if nothing may be written, and commit the open transactions of the
        other handles of this process on the graph (their row locks would
        otherwise hold ours up forever, on one thread)."""
        self._check_can_write()
        if self._in_txn:
            return
        peers = _OPEN.get(self._key)
        if peers is not None and len(peers) > 1:
            for peer in list(peers):
                if peer is not self and peer._in_txn:
                    peer._commit()

    async def _abegin(self) -> None:
        if not self._in_txn:
            await self._x(f"BEGIN; SET LOCAL lock_timeout = {self._busy_ms:d}")
            self._in_txn = True

    def _write(self, coro: Coroutine[Any, Any, Any], terminal: bool = False) -> Any:
        """Run a writing operation: refused first if nothing may be written,
        then run in the open transaction, whose commit is scheduled."""
        with self._lock:
            try:
                self._before_write()
            except BaseException:
                coro.close()
                raise
            try:
                return self._run(coro)
            finally:
                if self._in_txn:
                    self._schedule_commit(terminal)

    def _commit_failure(self, error: BaseException) -> EntityGraphError:
        exc = EntityGraphError(
            f"a commit to {self.path} failed ({error}); the work done since the "
            "previous commit was rolled back and will be redone on resume"
        )
        exc.__cause__, exc.__suppress_context__ = error, True
        return exc

    def commit_waiter(self, id: str | None = None) -> asyncio.Future | None:
        """A future resolved by the commit of the open transaction (set to the
        commit's error if it fails); ``None`` if there is nothing to wait for:
        no transaction is open or, given ``id``, the node did not finish in it."""
        with self._lock:
            if self._commit_error is not None:
                error, self._commit_error = self._commit_error, None
                raise self._commit_failure(error)
            if not self._in_txn or (id is not None and id not in self._settling):
                return None
            loop = _running_loop()
            if loop is None or loop is not self._commit_loop:
                self._commit()
                if self._commit_error is not None:
                    error, self._commit_error = self._commit_error, None
                    raise self._commit_failure(error)
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            return waiter

    def write_waiter(self) -> Coroutine[Any, Any, None] | None:
        """``None`` but while a reopening made on the loop waits for a node
        another process is writing (see :meth:`reopen`): then a coroutine
        that returns once it is stored, so that a run of that node claims it
        Pending. There is no graph-wide write lock to wait for: a row or name
        another process is writing right now is otherwise waited for by the
        operation that needs it (the same node or name only)."""
        if not self._waiting_reopens() and not (self._busy & self._held.keys()):
            return None
        return self.writable()

    async def writable(self) -> None:
        """Return once the reopenings under way are stored, and the nodes of
        ours that another process's open write was found holding are free
        (awaited, never blocking the caller's loop)."""
        await self._await_reopens()
        busy = self._busy & self._held.keys()
        for node in sorted(busy):
            await core.submit(self._a_wait_row(node))
            self._busy.discard(node)

    async def _a_wait_row(self, node: str) -> None:
        """Wait, on a connection of its own, until no other process holds
        ``node``'s row (up to ``busy_timeout``), then let it go at once."""
        try:
            conn = await core.aconnect(self._url)
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {self._busy_ms:d}")
                    await conn.execute(
                        "SELECT 1 FROM nodes WHERE id = %s FOR NO KEY UPDATE", (node,)
                    )
            finally:
                await conn.close()
        except (psycopg.Error, EntityGraphError):
            pass  # the write that needs it says what is wrong

    def _waiting_reopens(self) -> list[concurrent.futures.Future]:
        return [f for f in list(self._reopens.values()) if not f.done()]

    async def _await_reopens(self) -> None:
        """Await (never blocking the caller's loop) the reopenings under way."""
        waiting = self._waiting_reopens()
        if waiting:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in waiting))

    def _wait_reopens(self) -> None:
        """Wait (off any event loop) for the reopenings under way."""
        for future in self._waiting_reopens():
            future.result()

    def _schedule_commit(self, terminal: bool = False) -> None:
        """Have the open transaction committed: at the end of this loop
        iteration for a run's end in ``batched`` mode, else after
        ``commit_interval``; at once outside a loop or in ``operation`` mode."""
        mode = self._commit_mode
        if mode == "operation":
            self._commit()
            return
        loop = self._commit_loop
        running = _running_loop()
        if loop is not None and (self._commit_soon or not terminal) and loop is running:
            return
        if running is None:
            self._commit()
            return
        soon = (terminal and mode == "batched") or not self._commit_interval
        if loop is None:
            self._commit_loop = running
            self._commit_soon = soon
            if soon:
                self._commit_handle = running.call_soon(self._commit_on_loop)
            else:
                self._commit_handle = running.call_later(
                    self._commit_interval, self._commit_on_loop
                )
        elif loop is not running:
            self._commit()
        elif soon and not self._commit_soon:
            if self._commit_handle is not None:
                self._commit_handle.cancel()
            self._commit_soon = True
            self._commit_handle = running.call_soon(self._commit_on_loop)

    def _take_batch(self) -> tuple[_Batch, list[asyncio.Future]]:
        """The open transaction's buffers and waiters, handed to its commit
        (hold ``_lock``)."""
        handle, self._commit_handle = self._commit_handle, None
        if handle is not None:
            handle.cancel()
        self._commit_loop = None
        batch = _Batch(list(self._new_rows.values()), self._new_leases, self._progress)
        self._new_rows, self._new_keys, self._new_leases, self._progress = {}, set(), {}, []
        waiters, self._waiters = self._waiters, []
        self._settling.clear()
        return batch, waiters

    def _commit_on_loop(self) -> None:
        """The commit a loop callback makes: never waiting there for another
        process's open write (see :meth:`_commit`)."""
        if self._closing is not None:
            return  # the closing thread commits
        self._commit(nowait=_running_loop() is not None)

    def _commit(self, nowait: bool = False) -> None:
        """Commit the open transaction now (or write the progress logged
        outside one). Never raises: a failed commit is logged, handed to the
        runs waiting for it, and raised by the next operation.

        ``nowait`` (a loop callback): the fences the commit needs are tried
        first, without waiting; if another process's open write holds one of
        them, nothing is committed yet and the commit is tried again a little
        later, by a loop callback, so the loop keeps running meanwhile. If
        the transaction already holds locks of its own and that lasts past a
        second (the other process may be waiting for one of them), the
        commit waits for the lock after all, where the server can tell a
        deadlock."""
        with self._lock:
            if not self._in_txn and not self._progress and not self._new_rows:
                return
            if self._closed or self._commit_error is not None or self.read_only:
                self._progress.clear()
                self._new_rows.clear()
                self._new_keys.clear()
                return
            if nowait and self._commit_waits():
                return
            self._retry_since = None
            self._retry_delay = _RETRY_FIRST
            batch, waiters = self._take_batch()
            try:
                self._run(self._a_commit(batch))
            except EntityGraphError as exc:
                self._failed(exc, waiters)
                return
            if waiters:
                _settle(waiters, None)

    def _commit_waits(self) -> bool:
        """Whether the commit must wait for a fence another process holds up
        (hold ``_lock``, on a running loop): then it is tried again later."""
        loop = _running_loop()
        assert loop is not None
        nodes = {r.parent_id for r in self._new_rows.values() if r.parent_id in self._held}
        nodes.update(e.entity_id for e in self._progress if e.entity_id in self._held)
        nodes.difference_update(self._checked, self._new_leases)
        nodes.discard(None)
        if not nodes:
            return False
        try:
            ready = self._run(self._as_nowait(self._a_prefence(sorted(nodes))))
        except EntityGraphError:
            return False  # the commit itself says what is wrong
        if ready:
            return False
        now = time.monotonic()
        if self._retry_since is None:
            self._retry_since = now
        elif now - self._retry_since > 1.0 and self._holds_locks():
            return False  # holding locks of its own: wait where deadlocks are seen
        handle, self._commit_handle = self._commit_handle, None
        if handle is not None:
            handle.cancel()
        self._commit_loop = loop
        self._commit_soon = True
        self._commit_handle = loop.call_later(self._retry_delay, self._commit_on_loop)
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        return True

    def _holds_locks(self) -> bool:
        """Whether the open transaction holds locks another process may wait
        for: nodes' rows (fenced, claimed or taken) and names being decided
        (a root's, or a child's under a parent not leased here)."""
        return bool(self._checked or self._new_leases) or any(
            parent not in self._held for parent, _ in self._new_keys
        )

    async def _a_prefence(self, nodes: list[str]) -> bool:
        """Try the fences the commit will need (``nodes``: the leased parents
        of the new rows, the leased nodes of the progress); False if one is
        busy."""
        ready = True
        for node in nodes:
            try:
                ready = await self._afence(node) and ready
            except LeaseLostError:
                pass  # the commit drops what was written under it
        return ready

    def _failed(self, exc: EntityGraphError, waiters: list[asyncio.Future]) -> None:
        log.warning("entity graph %s: a commit failed (%s); rolled back", self.path, exc)
        self._in_txn = False
        self._checked.clear()
        self._parents.clear()
        self._kids.clear()  # may name nodes that were just rolled back
        self._commit_error = exc
        if waiters:
            _settle(waiters, lambda: self._commit_failure(exc))

    async def _a_commit(self, batch: _Batch) -> None:
        """Write the batch into the open transaction (opening one for progress
        logged outside any) and commit it; on any failure roll it back."""
        try:
            await self._abegin()
            conn = self._pg.writer
            if conn is not None and conn.info.transaction_status == TransactionStatus.INERROR:
                raise ServerError(
                    "the transaction was rolled back by the server after an earlier "
                    "statement in it failed"
                )
            await self._a_write(batch)
            await self._x("COMMIT")
        except BaseException:
            await self._a_rollback()
            raise
        finally:
            self._in_txn = False
            self._checked.clear()

    async def _a_rollback(self) -> None:
        conn = self._pg.writer
        if conn is not None and not conn.closed:
            try:
                await conn.execute("ROLLBACK")
            except psycopg.Error:
                pass

    async def _a_write(self, batch: _Batch) -> None:
        """Insert the batch's nodes, leases and progress (fencing the progress
        of nodes we lease: a lost node's envelopes are dropped)."""
        conn = self._pg.writer
        assert conn is not None
        try:
            async with conn.cursor() as cur:
                rows = await self._a_fenced_rows(batch.rows, batch.leases) if batch.rows else []
                if rows:
                    await cur.executemany(_INSERT_NODE, [r.row() for r in rows])
                if batch.leases:
                    await cur.executemany(_UPSERT_LEASE, self._lease_rows(batch.leases))
                envs = batch.progress
                if envs and (self._held or self._lost):
                    envs = await self._a_fenced(envs, batch.leases)
                if envs:
                    await cur.executemany(_INSERT_PROGRESS, progress_rows(envs))
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None

    def _lease_rows(self, taken: dict[str, float]) -> list[tuple]:
        now = time.time()
        expires = now + self._lease_ttl
        return [
            (id, self._owner, HOST, self._pid, self._token, at, now, expires)
            for id, at in taken.items()
        ]

    async def _a_fenced(self, envs: list[Envelope], fresh: dict[str, float]) -> list[Envelope]:
        kept = []
        for env in envs:
            node = env.entity_id
            if node in self._held and node not in fresh:
                try:
                    await self._afence(node)
                except LeaseLostError:
                    continue
            elif node in self._lost:
                continue
            kept.append(env)
        return kept

    async def _a_write_rows(self) -> None:
        """Insert the nodes created in this transaction now (before a read)."""
        rows, self._new_rows = list(self._new_rows.values()), {}
        self._new_keys.clear()
        if rows:
            await self._abegin()
            rows = await self._a_fenced_rows(rows)
            conn = self._pg.writer
            assert conn is not None
            try:
                async with conn.cursor() as cur:
                    await cur.executemany(_INSERT_NODE, [r.row() for r in rows])
            except psycopg.Error as exc:
                raise wrap(exc, self._url) from None

    async def _a_fenced_rows(
        self, rows: list[_NewNode], fresh: dict[str, float] | None = None
    ) -> list[_NewNode]:
        """``rows`` less those made under a lease found lost now (fencing each
        leased parent in this transaction first), and less the rows under
        those; a run of a dropped node is told, with its parent's error."""
        lost: dict[str, LeaseLostError] = {}
        fresh = self._new_leases if fresh is None else fresh
        for parent in {r.parent_id for r in rows if r.parent_id in self._held}:
            if parent in fresh:
                continue  # taken in this transaction: its row is ours to the commit
            try:
                await self._afence(parent)
            except LeaseLostError as exc:
                lost[parent] = exc
        for parent in {r.parent_id for r in rows if r.parent_id in self._lost}:
            lost.setdefault(parent, self._lost[parent])
        if not lost:
            return rows
        kept, stopped = [], {}
        for row in rows:
            error = lost.get(row.parent_id)  # type: ignore[arg-type]
            if error is None:
                kept.append(row)
                continue
            lost[row.id] = error
            fresh.pop(row.id, None)  # its lease is not written either
            if row.id in self._held:
                stopped[row.id] = LeaseLostError(
                    f"{row.type} {row.name!r} (id {row.id}) was not stored: {error}",
                    node_id=row.id,
                )
        if stopped:
            self._lose(stopped)
        return kept

    def flush(self) -> None:
        """Commit pending operations now (outside an event loop, after the
        reopenings under way are stored too); raise the error of this or an
        earlier failed commit."""
        if _running_loop() is None:
            self._wait_reopens()
        self._commit()
        with self._lock:
            if self._commit_error is not None:
                error, self._commit_error = self._commit_error, None
                raise self._commit_failure(error)

    async def settle(self) -> None:
        """:meth:`flush` from a coroutine: the commit is awaited on the store's
        loop, never waited for on the caller's."""
        with self._lock:
            if self._in_txn or self._progress or self._new_rows:
                if not (self._closed or self._commit_error is not None or self.read_only):
                    batch, waiters = self._take_batch()
                    future = core.submit(self._exclusive(self._a_commit(batch)))
                else:
                    future = None
            else:
                future = None
        await self._await_reopens()
        if future is not None:
            try:
                await future
            except EntityGraphError as exc:
                with self._lock:
                    self._failed(exc, waiters)
            else:
                if waiters:
                    _settle(waiters, None)
            if self._to_tell:
                self._tell()
        self.flush()

    # ------------------------------------------------------------ leases

    async def _alock_node(self, node: str) -> tuple | None:
        """Lock ``node``'s row to the commit (after its parent's, if we lease
        the parent: parent before child, everywhere); its lease's token and
        owner, ``(None, None)`` without one, ``None`` without the node."""
        parent = self._parent_of.get(node)
        if parent is not None and parent in self._held:
            try:
                if not await self._afence(parent):
                    return _BUSY_ROW
            except LeaseLostError:
                pass  # the parent's run is told; the child's lease is judged alone
        if not self._nowait:
            return await self._one(_LOCK_NODE, (node,))
        row = await self._one(_LOCK_NODE + " SKIP LOCKED", (node,))
        if row is None and await self._one("SELECT 1 FROM nodes WHERE id = %s", (node,)):
            return _BUSY_ROW  # another process is writing it right now
        return row

    async def _afence(self, node: str | None) -> bool:
        """Refuse a write under ``node``'s lease unless it is still ours
        (:class:`LeaseLostError`); the check holds to the commit (the row
        stays locked). Nodes not leased here pass. True once fenced; False
        only in ``_nowait`` mode (an operation called on a running loop),
        when another process's open write holds the node's row (or its
        parent's): nothing was waited for, and the node is noted busy
        (:meth:`write_waiter` then waits for it, awaited)."""
        if node is None or node in self._checked or node in self._new_leases:
            return True
        if node not in self._held:
            lost = self._lost.get(node)
            if lost is not None:
                raise _again(lost)
            return True
        await self._abegin()
        row = await self._alock_node(node)
        if row is _BUSY_ROW:
            self._busy.add(node)
            return False
        self._busy.discard(node)
        if row is not None and row[0] == self._token:
            self._checked.add(node)
            return True
        error = await self._alost_error(node, row[1] if row else None)
        self._lose({node: error})
        raise error

    def _lose(self, errors: dict[str, LeaseLostError]) -> None:
        """Record leases as lost; their runs are told once the operation
        returns to the caller's thread (:meth:`_tell`)."""
        for node, error in errors.items():
            self._held.pop(node, None)
            self._kids.pop(node, None)
            self._lost[node] = error
            self._to_tell.append((node, error))

    def _tell(self) -> None:
        tell, self._to_tell = self._to_tell, []
        for node, error in tell:
            watcher = self._watchers.pop(node, None)
            if watcher is not None:
                try:
                    watcher(error)
                except Exception:  # pragma: no cover - a run's own callback
                    log.exception("telling the run of %s that its lease was lost failed", node)

    async def _adescribe(self, node: str) -> str:
        try:
            row = await self._one("SELECT type, name FROM nodes WHERE id = %s", (node,))
        except EntityGraphError:
            row = None
        return f"{row[0]} {row[1]!r} (id {node})" if row else f"entity {node}"

    async def _alost_error(self, node: str, owner: str | None) -> LeaseLostError:
        """The one line for a lease found taken: by whom, and whether ours had
        expired by our clock."""
        if owner is None:
            try:
                row = await self._one("SELECT owner FROM leases WHERE node_id = %s", (node,))
            except EntityGraphError:
                row = None
            owner = row[0] if row else None
        age = time.time() - self._held.get(node, time.time())
        status = None
        if owner is None:
            try:
                row = await self._one("SELECT status FROM nodes WHERE id = %s", (node,))
            except EntityGraphError:
                row = None
            status = row[0] if row else None
        return taken_over(node, await self._adescribe(node), owner, status, age, self._lease_ttl)

    def _took(self, id: str, at: float, parent_id: str | None) -> None:
        self._kids.pop(id, None)  # others may have named its children meanwhile
        self._new_leases[id] = at
        self._held[id] = at
        self._parent_of[id] = parent_id
        self._lost.pop(id, None)

    def check_lease(self, id: str) -> None:
        """Raise :class:`LeaseLostError` if this graph held the lease on ``id``
        and another process has taken it over (one read): what a run checks
        before it writes outside the graph (a blob)."""
        with self._lock:
            if id in self._held and id not in self._checked and id not in self._new_leases:
                self._run(self._a_check_lease(id))
                return
            lost = self._lost.get(id)
            if lost is not None and id not in self._held:
                raise _again(lost)

    async def _a_check_lease(self, id: str) -> None:
        row = await self._one("SELECT token, owner FROM leases WHERE node_id = %s", (id,))
        if row is not None and row[0] == self._token:
            return
        error = await self._alost_error(id, row[1] if row else None)
        self._lose({id: error})
        raise error

    def run_started(self, id: str, on_lost: Callable[[LeaseLostError], None]) -> None:
        """The run of ``id`` began here under our lease: ``on_lost`` is called
        if the lease is lost; the first run starts the heartbeat."""
        self._watchers[id] = on_lost
        self._live_runs += 1
        if self._live_runs == 1:
            loop = _running_loop()
            task = self._heartbeat
            if loop is not None and (task is None or task.done() or task.get_loop() is not loop):
                self._heartbeat = loop.create_task(
                    self._beat(), name=f"lease heartbeat {self.path.name}"
                )

    def run_ended(self, id: str) -> None:
        """The run that :meth:`run_started` ended; after the last one the
        heartbeat stops and what is pending is committed."""
        self._watchers.pop(id, None)
        self._live_runs -= 1
        if self._live_runs == 0:
            self._stop_heartbeat()
            self.flush()

    def _stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None and not task.done() and task.get_loop() is _running_loop():
            task.cancel()

    async def _beat(self) -> None:
        """Renew our leases every ``lease_heartbeat`` seconds while anything runs;
        never ends on an error (see :meth:`_renew_leases`)."""
        try:
            while True:
                await asyncio.sleep(self._lease_heartbeat)
                if self._closed or self._live_runs == 0:
                    return
                await self._renew_leases()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not expected: say so, and stop the runs
            log.exception("entity graph %s: the lease heartbeat failed", self.path)
            self._give_up(repr(exc))

    async def _renew_leases(self) -> None:
        """Push back the expiry of every lease we hold, in a transaction of its
        own on the heartbeat's connection, awaited (the caller's loop goes on
        meanwhile); a lock or a failure is tried again with a growing delay,
        and if that cannot succeed before our oldest lease would expire every
        run holding one is stopped."""
        delay = _RETRY_FIRST
        margin = self._lease_heartbeat / 2
        while True:
            if self._closed:
                return
            try:
                if self._in_txn:
                    # What runs wrote so far goes first (tried again later,
                    # not waited for here, if another process holds a fence).
                    self._commit(nowait=True)
                    if self._commit_error is not None:
                        raise self._commit_error
                now = time.time()
                with self._lock:
                    # Only the leases already written can be judged by this
                    # renewal: others are taken (and committed) by runs of
                    # this loop while it is awaited.
                    judged = {n for n in self._held if n not in self._new_leases}
                renewed = await core.submit(self._a_renew(now, now + self._lease_ttl))
                with self._lock:
                    self._settle_renewal(renewed, judged, now)
                return
            except EntityGraphError as exc:
                error = str(exc)
                log.debug("entity graph %s: lease renewal failed (%s)", self.path, error)
            if not self._held:
                return
            left = min(self._held.values()) + self._lease_ttl - margin - time.time()
            if left <= 0:
                self._give_up(error)
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self._lease_heartbeat)

    async def _a_renew(self, now: float, expires: float) -> set[str]:
        conn = await self._pg.beat()
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {_RENEW_LOCK_MS:d}")
                cur = await conn.execute(
                    "UPDATE leases SET heartbeat_at = %s, expires_at = %s WHERE token = %s "
                    "RETURNING node_id",
                    (now, expires, self._token),
                )
                rows = await cur.fetchall()
        except psycopg.errors.LockNotAvailable:
            raise LockBusy(
                "a lease row was locked by another process's open write (a take-over?)"
            ) from None
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None
        return {row[0] for row in rows}

    def _settle_renewal(self, renewed: set[str], judged: set[str], now: float) -> None:
        """After a renewal: the held leases in ``renewed`` are fresh as of
        ``now``; a lease in ``judged`` (written before the renewal began) that
        is still held and was not renewed was taken over, and its run is told."""
        gone = []
        for node in self._held:
            if node in renewed:
                self._held[node] = now
            elif node in judged:
                gone.append(node)
        if gone:
            errors = {}
            for node in gone:
                errors[node] = self._run(self._alost_error(node, None))
            self._lose(errors)
            self._tell()

    def _give_up(self, why: str) -> None:
        """Our leases could not be renewed in time: stop every run holding one
        before another process may take it over; a new token from now on."""
        if not self._held:
            return
        now = time.time()
        errors = {}
        for node, renewed in self._held.items():
            errors[node] = LeaseLostError(
                f"entity {node}: this process could not renew its lease for "
                f"{now - renewed:.1f} s ({why}), so it stopped the run before the lease "
                f"({self._lease_ttl:g} s) could expire under it; nothing more of it is "
                "stored here, and another process may take it over",
                node_id=node,
            )
        log.warning("entity graph %s: leases not renewed (%s); stopping their runs", self.path, why)
        self._token = os.urandom(8).hex()
        self._lose(errors)
        self._tell()

    def lease(self, id: str) -> LeaseRecord | None:
        """The lease on a node (``None`` if nobody holds one)."""
        with self._lock:
            if id in self._new_leases:
                now = time.time()
                return LeaseRecord(
                    id, self._owner, HOST, self._pid, self._token, self._new_leases[id], now,
                    now + self._lease_ttl,
                )  # fmt: skip
        rows = self._rows(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE node_id = %s", (id,))
        return LeaseRecord(*rows[0]) if rows else None

    def lease_state(self, lease: LeaseRecord, now: float | None = None) -> str:
        """``"live"``, ``"expired"`` or ``"owner gone"`` (its process, on this
        host, no longer exists, or is this one and nothing of it runs here)."""
        if lease.host == HOST:
            if lease.pid == self._pid:
                if not running_here(self._key, lease.node_id):
                    return LEASE_OWNER_GONE
            elif not pid_alive(lease.pid):
                return LEASE_OWNER_GONE
        if lease.expires_at <= (time.time() if now is None else now):
            return LEASE_EXPIRED
        return LEASE_LIVE

    def poll_lease(self, id: str) -> tuple[str, LeaseRecord | None]:
        rows = self._rows(_STATE_AND_LEASE, (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        status, _output, *lease = rows[0]
        return status, (LeaseRecord(*lease) if lease[0] is not None else None)

    def lease_of(self, id: str) -> tuple[str, LeaseRecord | None, str | None]:
        status, lease = self.poll_lease(id)
        return status, lease, (None if lease is None else self.lease_state(lease))

    def abandon(self, id: str, env: Envelope) -> None:
        """Log ``env`` and give the lease back (the node stays InProgress);
        nothing if it was taken over meanwhile, or the graph cannot be written."""
        if self._closed:
            return
        if id in self._held:
            try:
                self.check_lease(id)
            except LeaseLostError:
                return
            except EntityGraphError:
                return
        try:
            self.append_progress(env)
            self.release_lease(id)
        except EntityGraphError as exc:
            log.warning(
                "entity graph %s: could not give back the lease on %s (%s)", self.path, id, exc
            )

    def release_lease(self, id: str) -> None:
        """Give up the lease on a node that stays InProgress."""
        with self._lock:
            self._held.pop(id, None)
            self._kids.pop(id, None)
            if self._new_leases.pop(id, None) is not None:
                return  # never written: nobody else could have it
            self._write(self._a_release(id))

    async def _a_release(self, id: str) -> None:
        await self._abegin()
        await self._alock_node(id)
        await self._x("DELETE FROM leases WHERE node_id = %s AND token = %s", (id, self._token))

    # ------------------------------------------------------------ reading

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._run(self._nowait_on_loop(self._a_rows(sql, params)))
            finally:
                if self._in_txn:
                    self._schedule_commit()

    async def _a_rows(self, sql: str, params: tuple) -> list[tuple]:
        if self._new_rows:
            if self._nowait and not await self._a_fence_new_rows():
                return await self._a_read_with_pending(sql, params)
            await self._a_write_rows()
        return await self._all(sql, params or None)

    async def _a_fence_new_rows(self) -> bool:
        """Try (without waiting) the fences writing the new rows needs;
        False if another process is writing one of their leased parents."""
        ok = True
        for parent in {r.parent_id for r in self._new_rows.values() if r.parent_id in self._held}:
            if parent in self._new_leases:
                continue
            try:
                ok = await self._afence(parent) and ok
            except LeaseLostError:
                pass  # the rows under it are dropped when written
        return ok

    async def _a_read_pending(self, sql: str, params: tuple) -> list[tuple]:
        if self._new_rows and await self._a_fence_new_rows():
            await self._a_write_rows()
        return await self._a_read_with_pending(sql, params)

    async def _a_read_with_pending(self, sql: str, params: tuple) -> list[tuple]:
        """``sql`` answered as if the nodes created in this transaction (and
        ``progress``, the envelopes not stored yet) were written: they wait
        for a fence another process's open write holds up, and a read on the
        caller's loop must not wait for it. They are copied into temporary
        tables of the write connection (nobody else sees or locks those),
        numbered after the stored rows in creation order as the commit will
        number them, and every ``nodes`` (and ``progress``) the query reads
        is the stored rows and those together. Reads never wait for writers."""
        rows: list[tuple] = []
        if self._new_rows:
            top = (await self._all("SELECT coalesce(max(rowid), 0) FROM nodes"))[0][0]
            rows = [(top + i, *r.row()) for i, r in enumerate(self._new_rows.values(), 1)]
        await self._x("CREATE TEMP TABLE IF NOT EXISTS pending_nodes (LIKE nodes)")
        await self._x("CREATE TEMP TABLE IF NOT EXISTS pending_progress (LIKE progress)")
        conn = self._pg.writer
        assert conn is not None
        try:
            async with conn.cursor() as cur:
                marks = ", ".join(["%s"] * 13)
                if rows:
                    await cur.executemany(
                        f"INSERT INTO pg_temp.pending_nodes VALUES ({marks})", rows
                    )
                if self._progress and _PROGRESS_READ.search(sql):
                    seq = (await self._all("SELECT coalesce(max(seq), 0) FROM progress"))[0][0]
                    envs = progress_rows(self._progress)
                    marks = ", ".join(["%s"] * 10)
                    await cur.executemany(
                        f"INSERT INTO pg_temp.pending_progress VALUES ({marks})",
                        [(seq + i, *row) for i, row in enumerate(envs, 1)],
                    )
                    sql = _PROGRESS_READ.sub(_with_pending("progress"), sql)
            return await self._all(_NODES_READ.sub(_with_pending("nodes"), sql), params or None)
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None
        finally:
            await self._x("DELETE FROM pg_temp.pending_nodes")
            await self._x("DELETE FROM pg_temp.pending_progress")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of a query in SQLite's ``?`` style (for the command line)."""
        return self._rows(sql.replace("?", "%s"), params)

    def get_node(self, id: str) -> NodeRecord:
        with self._lock:
            new = self._new_rows.get(id)
            if new is not None:
                return self._record(new.read_row())
        rows = self._rows(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = %s", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        row = rows[0]
        reopening = self._reopens.get(id)
        if reopening is not None and not reopening.done() and row[3] in ("Completed", "Failed"):
            # Reopened, stored once the other process's write of it is over.
            row = (*row[:3], "Pending", row[4], row[5], row[6], None, None, None, None, row[11])
        return self._record(row)

    def read(self, id: str, field: str | None = None) -> Any:
        """The node (a :class:`NodeRecord`), or one of its :data:`READ_FIELDS`."""
        if field is not None and field not in READ_FIELDS:
            allowed = ", ".join(repr(f) for f in READ_FIELDS)
            raise ValueError(f"field must be None or one of {allowed}; got {field!r}")
        record = self.get_node(id)
        return record if field is None else getattr(record, field)

    def status_of(self, id: str) -> str:
        return self.get_node(id).status

    def data_of(self, id: str) -> dict:
        return self.get_node(id).data

    def has_node(self, id: str) -> bool:
        with self._lock:
            if id in self._new_rows:
                return True
        return bool(self._rows("SELECT 1 FROM nodes WHERE id = %s", (id,)))

    def progress(self, id: str) -> list[Envelope]:
        """The node's progress log with its descendants', in the order written."""
        self._require(id)
        with self._lock:
            if self._progress:
                if _running_loop() is None:
                    self._commit()
                else:
                    self._commit(nowait=True)
                    if self._progress or self._new_rows:
                        # A fence waits for another process's open write:
                        # the envelopes not stored yet are read with the rest.
                        sql, params = self._progress_query(id)
                        sql = sql.replace("?", "%s")
                        rows = self._run(self._as_nowait(self._a_read_pending(sql, params)))
                        return envelopes_from_rows(rows)
        return self._progress_rows(id)

    def progress_since(self, id: str, seq: int | None) -> tuple[list[Envelope], int]:
        if seq is None:
            return [], self.progress_mark(id)
        return self.progress_after(id, seq)

    def integrity_problems(self, full: bool = False) -> list[str]:
        return []  # the server checks its own storage (pg_amcheck)

    def copy_to(self, path: Any) -> Any:
        raise EntityGraphError(
            f"{self.path} is not a SQLite graph: copy it with the database's own tools"
        )

    # --------------------------------------------------------- creating

    def entity(self, id: str) -> RunnableEntity:
        return self.revive(self.get_node(id))

    def revive(
        self, record: NodeRecord, expected: type[RunnableEntity] | None = None
    ) -> RunnableEntity:
        return revive(cast("EntityStore", self), record, expected)

    _revive = revive

    def create(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """Create a root entity; :class:`DuplicateNameError` if the name is taken."""
        return self.revive(self.insert_node(cls, name, data, None), cls)

    def create_or_retrieve(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """The root entity called ``name``, created with ``data`` if missing."""
        return self.revive(self.insert_or_get_node(cls, name, data, None), cls)

    def insert_node(
        self, cls, name: str, data, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord:
        type_name, data_json = check_new(cls, name, data)
        return self.child(parent_id, type_name, name, data, data_json, call_path, exists_ok=False)

    def insert_or_get_node(
        self, cls, name: str, data, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord:
        type_name, data_json = check_new(cls, name, data)
        return self.child(parent_id, type_name, name, data, data_json, call_path)

    def child(
        self,
        parent_id: str | None,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        call_path: str | None = None,
        *,
        exists_ok: bool = True,
    ) -> NodeRecord:
        """The node keyed ``call_path or name`` under ``parent_id``, created if
        missing (see :meth:`EntityStore.child <storylab.entities.store.EntityStore.child>`)."""
        with self._lock:
            if (
                parent_id is not None
                and parent_id in self._new_rows
                and self._no_fence_needed(parent_id)
            ):
                # A child of a parent made in this transaction: nobody else
                # sees the parent, so nobody else can be naming its children.
                self._before_write()
                found, record = self._new_child(
                    parent_id, type_name, name, data, data_json, call_path
                )
                self._schedule_commit()
            elif parent_id is not None and parent_id in self._held:
                found, record = self._leased_child(
                    parent_id, type_name, name, data, data_json, call_path
                )
            else:
                found, record = self._named_child(
                    parent_id, type_name, name, data, data_json, call_path
                )
        if found and not exists_ok:
            if parent_id is None:
                where = "among root entities"
            elif call_path and call_path != name:
                where = f"under parent {parent_id} at call path {call_path!r}"
            else:
                where = f"under parent {parent_id}"
            raise DuplicateNameError(f"an entity named {name!r} already exists {where}")
        return record

    def _named_child(
        self,
        parent_id: str | None,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        call_path: str | None,
    ) -> tuple[bool, NodeRecord]:
        """A root, or a child of a parent nobody here leases, decided under
        the lock of its name (hold ``_lock``), which is never waited for
        while the open transaction holds other locks
        (:meth:`_without_crossing`)."""
        where = "among root entities" if parent_id is None else f"under parent {parent_id}"
        look = _running_loop() is not None
        return self._without_crossing(
            lambda: self._a_child(parent_id, type_name, name, data, data_json, call_path, look),
            f"the name {call_path or name!r} {where}",
        )

    def _without_crossing(self, make: Callable[[], Coroutine[Any, Any, Any]], what: str) -> Any:
        """Run the writing operation ``make()`` makes, so that it never waits
        for a lock another process holds while this transaction holds others.

        The operation waits for a name or row lock only in a fresh
        transaction (it holds nothing yet); in one that already holds locks
        (names made and rows written earlier in this batch) it tries the
        lock instead, and if another process holds it, changes nothing and
        returns ``_CROSSING``: the batch is committed, and the operation run
        again in a fresh transaction, where it waits. Two batches writing the
        same names or rows in opposite orders would otherwise each hold what
        the other waits for, and the server would fail one of them
        ("deadlock detected")."""
        with self._lock:  # no other thread's operation slips in between
            for _ in range(_ATTEMPTS):
                outcome = self._write(make())
                if outcome is not _CROSSING:
                    return outcome
                self._commit()  # a failure is raised by the next _write
        raise LockBusy(
            f"{what} stayed locked by other processes' open writes through {_ATTEMPTS} "
            "commits of this one; nothing was changed"
        )

    async def _a_child(
        self,
        parent_id: str | None,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        call_path: str | None,
        look: bool = False,
    ) -> Any:
        """The node of that name, found or created (buffered): ``(found,
        record)``; ``_CROSSING``, with nothing changed, if another process
        holds the name's lock and this transaction already held locks
        before (see :meth:`_without_crossing`).

        ``look`` (called on a running event loop): the name's lock is only
        tried first; if another process holds it (it is deciding that name
        in an open transaction), a node already committed under the name is
        the answer, found by a read that waits for nobody, so finding a
        story that exists never stops the caller's loop. Only a name with
        no node yet waits for the lock (a new node must not be made without
        it)."""
        key = call_path or name
        fresh = not self._in_txn  # holds nothing yet: it may wait
        await self._abegin()
        if parent_id is not None:
            await self._afence(parent_id)  # a child is made only under a lease we hold
        if (parent_id, key) not in self._new_keys and (
            parent_id is None or parent_id not in self._new_rows
        ):
            locked, row = await self._alock_name(parent_id, key, wait=fresh and not look)
            if not locked and look:
                if row is not None:  # committed before the other process took the lock
                    return True, self._record(row)
                if fresh:
                    locked, row = await self._alock_name(parent_id, key, wait=True)
            if not locked:
                return _CROSSING
            if row is not None:
                return True, self._record(row)
            if parent_id is not None and parent_id not in self._parents:
                if await self._one("SELECT 1 FROM nodes WHERE id = %s", (parent_id,)) is None:
                    raise UnknownEntityError(f"no entity with id {parent_id!r} in {self.path}")
                self._parents.add(parent_id)
        return self._new_child(parent_id, type_name, name, data, data_json, call_path)

    def _leased_child(
        self,
        parent_id: str,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        call_path: str | None,
    ) -> tuple[bool, NodeRecord]:
        """A child of a parent whose lease we hold (hold ``_lock``). Only the
        lease's holder makes a node's children, so while we hold it nobody
        else names them: the parent's existing children are read once per
        lease (:meth:`_a_children_of`), and a new name is decided here, with
        no statement. The commit that inserts the child fences the parent's
        lease first (a child made under a lease lost meanwhile is not
        stored, and its run is told); the unique index still guards the
        insert against a writer outside any run."""
        self._before_write()
        known = self._kids.get(parent_id)
        if known is None:
            known = self._write(self._nowait_on_loop(self._a_children_of(parent_id)))
            self._kids[parent_id] = known
        lost = self._lost.get(parent_id)
        if lost is not None:
            raise _again(lost)
        key = call_path or name
        id = known.get(key)
        if id is not None:
            new = self._new_rows.get(id)
            if new is not None:
                return True, self._record(new.read_row())
            return True, self.get_node(id)
        found, record = self._new_child(parent_id, type_name, name, data, data_json, call_path)
        known[key] = record.id
        self._schedule_commit()
        return found, record

    async def _a_children_of(self, parent_id: str) -> dict[str, str]:
        """The ids of ``parent_id``'s children by key (fenced: the parent's row
        is locked with our lease on it)."""
        await self._abegin()
        if not await self._afence(parent_id):
            # Another process is writing the parent's row: the children are
            # read without its lock (the commit that stores new ones fences
            # the lease), once the lease is seen to be ours.
            await self._a_check_lease(parent_id)
        rows = await self._all(
            "SELECT coalesce(call_path, name), id FROM nodes WHERE parent_id = %s", (parent_id,)
        )
        known = dict(rows)
        for new in self._new_rows.values():
            if new.parent_id == parent_id:
                known[new.key] = new.id
        return known

    def _new_child(
        self,
        parent_id: str | None,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        call_path: str | None,
    ) -> tuple[bool, NodeRecord]:
        """The node made in this transaction under that key, or a new one
        (buffered, inserted at the commit); whether it existed."""
        key = call_path or name
        if (parent_id, key) in self._new_keys:
            for new in self._new_rows.values():
                if new.parent_id == parent_id and new.key == key:
                    return True, self._record(new.read_row())
        now = time.time()
        new = _NewNode(
            new_id(), name, type_name, "Pending", data_json, parent_id, now,
            None if call_path == name else call_path,
        )  # fmt: skip
        self._new_rows[new.id] = new
        self._new_keys.add((parent_id, key))
        return False, node_record(
            new.id, name, type_name, "Pending", {} if data is None else data, parent_id, now,
            None, None, None, None, None if parent_id is None else key,
        )  # fmt: skip

    async def _alock_name(
        self, parent_id: str | None, key: str, *, wait: bool
    ) -> tuple[bool, tuple | None]:
        """Take the advisory lock of the name ``key`` under ``parent_id`` to
        the commit, then read the node of that name (a row of
        ``_NODE_COLUMNS``, or None): nobody else decides that name
        meanwhile, and whoever decided it before has committed, so the read
        sees their node. Both statements go in one round trip (a pipeline:
        the read starts once the lock is granted). Without ``wait``, a lock
        another transaction holds is not waited for: ``(False, row)``, the
        row as committed (read without the lock)."""
        conn = self._pg.writer
        if conn is None:
            raise EntityGraphError(f"the entity graph {self.path} is closed")
        take = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        lock = (f"SELECT {take}(%s)", (name_key(self._url.schema, parent_id, key),))
        read: tuple[str, tuple[Any, ...]]
        if parent_id is None:
            read = (
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL AND name = %s",
                (key,),
            )
        else:
            read = (
                f"SELECT {_NODE_COLUMNS} FROM nodes "
                "WHERE parent_id = %s AND coalesce(call_path, name) = %s",
                (parent_id, key),
            )
        try:
            async with conn.pipeline():
                taken = await conn.execute(*lock)
                cur = await conn.execute(*read)
            got = await taken.fetchone()
            row = await cur.fetchone()
            if not wait and not (got and got[0]):
                return False, row
            return True, row
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None

    # ------------------------------------------------------------ running

    def claim(
        self, id: str, env: Envelope, parent_id: str | None = None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """Start the node under our lease, or say why not (see
        :meth:`EntityStore.claim <storylab.entities.store.EntityStore.claim>`)."""
        with self._lock:
            new = self._new_rows.get(id)
            if new is not None and new.status == "Pending" and self._no_fence_needed(parent_id):
                # Created in this transaction: nobody else sees it yet, so
                # nothing needs the server (the common case of a fresh run).
                self._before_write()
                new.status, new.started_at = "InProgress", env.at
                self._took(id, env.at, parent_id)
                self._progress.append(env)
                self._schedule_commit()
                return "Pending", None, None, env
        return self._write(self._a_claim(id, env, parent_id))

    def _no_fence_needed(self, node: str | None) -> bool:
        """Whether a write under ``node``'s lease is already fenced in the open
        transaction (or needs no fence): then it needs no statement."""
        return self._in_txn and (
            node is None
            or node in self._checked
            or node in self._new_leases
            or (node not in self._held and node not in self._lost)
        )

    async def _a_claim(
        self, id: str, env: Envelope, parent_id: str | None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        await self._abegin()
        new = self._new_rows.get(id)
        if new is not None and new.status == "Pending":  # created in this transaction
            if parent_id is not None:
                await self._afence(parent_id)
            new.status, new.started_at = "InProgress", env.at
            self._took(id, env.at, parent_id)
            self._progress.append(env)
            return "Pending", None, None, env
        if self._new_rows:
            await self._a_write_rows()
        if parent_id is not None:
            await self._afence(parent_id)  # parent's row before the child's
        # The common case in one statement: a Pending node nobody is writing
        # right now becomes ours. A row another process holds locked is
        # skipped, never waited for (see _a_take).
        cur = await self._x(
            "UPDATE nodes SET status = 'InProgress', started_at = %s WHERE id = %s "
            "AND status = 'Pending' AND id IN "
            "(SELECT id FROM nodes WHERE id = %s FOR NO KEY UPDATE SKIP LOCKED)",
            (env.at, id, id),
        )
        if cur.rowcount == 1:
            self._took(id, env.at, parent_id)
            self._progress.append(env)
            return "Pending", None, None, env
        return await self._a_take(id, env, parent_id)

    async def _a_take(
        self, id: str, env: Envelope, parent_id: str | None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """A node that was not Pending, or that another process is writing
        right now: Completed (its output), busy (a live lease, or a row
        locked by another process's open write: it is being claimed, taken
        over or finished there), or ours now (taken from a failed run or a
        stale lease, or Pending again).

        A claim never waits for another process's row lock: that process may
        be waiting for a row this transaction holds (it took over the child
        of a parent we just took, say), and the two would wait for each
        other. "busy" makes the run wait by polling instead (awaited), and
        claim again once that write is committed."""
        if self._new_leases:
            await self._a_write_leases()
        row = await self._one(_STATE_AND_LEASE + " FOR NO KEY UPDATE OF n SKIP LOCKED", (id,))
        if row is None:
            row = await self._one(_STATE_AND_LEASE, (id,))  # as committed, without a lock
            if row is None:
                raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
            decided = self._judge(id, row, env)
            if decided is not None:
                return decided
            now = time.time()
            writing = LeaseRecord(
                id, "another process (writing it right now)", "", 0, "", now, now, now
            )
            return "busy", None, writing, env
        decided = self._judge(id, row, env)
        if decided is not None:
            return decided
        status = row[0]
        lease = LeaseRecord(*row[2:]) if row[2] is not None else None
        if status == "InProgress" and lease is not None:
            env = dataclasses.replace(
                env, message=f"taken over from {lease.owner} ({self.lease_state(lease)})"
            )
        await self._x(
            "UPDATE nodes SET status = 'InProgress', started_at = %s, finished_at = NULL, "
            "error = NULL, output = NULL WHERE id = %s",
            (env.at, id),
        )
        self._took(id, env.at, parent_id)
        self._checked.add(id)  # its row is ours to the commit
        if lease is not None:
            await self._a_write_leases()  # replace the old owner's row now
        self._progress.append(env)
        return status, None, lease, env

    def _judge(
        self, id: str, row: tuple, env: Envelope
    ) -> tuple[str, Any, LeaseRecord | None, Envelope] | None:
        status = row[0]
        if status == "Completed":
            return status, self._stored(row[1], id, "output"), None, env
        if status == "InProgress" and row[2] is not None:
            lease = LeaseRecord(*row[2:])
            if self.lease_state(lease) == LEASE_LIVE:
                return "busy", None, lease, env
        return None

    async def _a_write_leases(self) -> None:
        taken, self._new_leases = self._new_leases, {}
        conn = self._pg.writer
        assert conn is not None
        try:
            async with conn.cursor() as cur:
                await cur.executemany(_UPSERT_LEASE, self._lease_rows(taken))
        except psycopg.Error as exc:
            raise wrap(exc, self._url) from None
        self._checked.update(taken)

    def append_progress(self, env: Envelope) -> None:
        """Log an envelope (buffered; fenced at the commit that writes it)."""
        with self._lock:
            self._check_can_write()
            lost = self._lost.get(env.entity_id)
            if lost is not None:
                raise _again(lost)
            self._progress.append(env)
            if self._in_txn:
                self._schedule_commit()
            elif _running_loop() is None or self._commit_mode == "operation":
                self._commit()
            else:
                self._schedule_commit()

    def finish(
        self, id: str, status: str, stored_json: str, envs: tuple[Envelope, Envelope]
    ) -> None:
        """Store a run's end and log ``envs`` if we still hold the lease;
        :class:`LeaseLostError`, nothing stored, if another owner took it."""
        if status == "Completed":
            column = "output"
        elif status == "Failed":
            column = "error"
        else:
            raise ValueError(f"status must be 'Completed' or 'Failed'; got {status!r}")
        with self._lock:
            new = self._new_rows.get(id)
            if new is not None and self._in_txn and id not in self._lost:
                # Not written yet: it will be, in this state, at the commit.
                self._before_write()
                self._new_leases.pop(id, None)
                new.status, new.finished_at = status, envs[-1].at
                setattr(new, column, stored_json)
                self._held.pop(id, None)
                self._kids.pop(id, None)
                self._progress.extend(envs)
                self._settling.add(id)
                self._schedule_commit(terminal=True)
                return
        self._write(self._a_finish(id, status, column, stored_json, envs), terminal=True)

    def finish_completed(self, id: str, output_json: str, value_env: Envelope, done_env: Envelope):
        self.finish(id, "Completed", output_json, (value_env, done_env))
        return True

    def finish_failed(self, id: str, error: dict, error_env: Envelope, failed_env: Envelope):
        self.finish(id, "Failed", dumps_log(error), (error_env, failed_env))
        return True

    async def _a_finish(
        self, id: str, status: str, column: str, value: str, envs: tuple[Envelope, Envelope]
    ) -> None:
        await self._abegin()
        lost = self._lost.get(id)
        if lost is not None:
            raise _again(lost)
        at = envs[-1].at
        new = self._new_rows.get(id)
        if new is not None:  # not written yet: it will be, in this state
            self._new_leases.pop(id, None)
            new.status, new.finished_at = status, at
            setattr(new, column, value)
        else:
            if self._new_leases.pop(id, None) is None:
                row = await self._alock_node(id)
                if row is None:
                    raise self._rolled_back(id)
                if row[0] != self._token:
                    error = await self._alost_error(id, row[1])
                    self._lose({id: error})
                    raise error
                await self._x(
                    "DELETE FROM leases WHERE node_id = %s AND token = %s", (id, self._token)
                )
            cur = await self._x(
                f"UPDATE nodes SET status = %s, finished_at = %s, {column} = %s WHERE id = %s",
                (status, at, value, id),
            )
            if cur.rowcount == 0:
                raise self._rolled_back(id)
        self._held.pop(id, None)
        self._kids.pop(id, None)
        self._progress.extend(envs)
        self._settling.add(id)

    def _rolled_back(self, id: str) -> UnknownEntityError:
        return UnknownEntityError(
            f"no entity with id {id!r} in {self.path} (a failed commit "
            "rolled back its creation); its result is not stored"
        )

    def update_data(
        self, id: str, change: str, value: Any, path: tuple[str, ...] = ()
    ) -> dict | None:
        """One data change, fenced by the node's lease when we hold it."""
        if change not in DATA_CHANGES:
            allowed = ", ".join(repr(c) for c in DATA_CHANGES)
            raise ValueError(f"change must be one of {allowed}; got {change!r}")
        return self._without_crossing(
            lambda: self._a_update_data(id, change, value, tuple(path)),
            f"the data of entity {id}",
        )

    async def _a_update_data(self, id: str, change: str, value: Any, path: tuple[str, ...]) -> Any:
        """The change, made under the node's row lock (the new data for a
        merge or a path, None for a replace); ``_CROSSING`` if another
        process holds that lock and this transaction held locks before."""
        fresh = not self._in_txn
        await self._abegin()
        await self._afence(id)
        new = self._new_rows.get(id)
        if new is not None:
            current = new.data
        elif change == "replace" and (fresh or id in self._checked or id in self._new_leases):
            current = None  # the UPDATE may wait for the row, or it is ours already
        else:
            row = await self._one(
                "SELECT data FROM nodes WHERE id = %s FOR NO KEY UPDATE"
                + ("" if fresh else " SKIP LOCKED"),
                (id,),
            )
            if row is None:
                if not fresh and await self._one("SELECT 1 FROM nodes WHERE id = %s", (id,)):
                    return _CROSSING  # locked by another process
                raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
            current = row[0]
        out: dict | None = None
        if change == "replace":
            data_json = value
        else:
            data = json.loads(current or "{}")
            if change == "merge":
                data.update(value)
            else:
                node = data
                for depth, key in enumerate(path[:-1]):
                    child = node.setdefault(key, {})
                    if not isinstance(child, dict):
                        where = "/".join(path[: depth + 1])
                        raise TypeError(
                            f"cannot set {'/'.join(path)!r}: {where!r} holds a "
                            f"{type(child).__name__}, not a dict; nothing was changed"
                        )
                    node = child
                node[path[-1]] = value
            data_json = dumps(data, what="entity data")
            out = data
        if new is not None:
            new.data = data_json
            return out
        cur = await self._x("UPDATE nodes SET data = %s WHERE id = %s", (data_json, id))
        if cur.rowcount == 0:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return out

    def set_data(self, id: str, data_json: str) -> None:
        self.update_data(id, "replace", data_json)

    def merge_data(self, id: str, changes: dict) -> dict:
        return cast(dict, self.update_data(id, "merge", changes))

    def set_data_path(self, id: str, path: tuple[str, ...], value: Any) -> dict:
        return cast(dict, self.update_data(id, "path", value, tuple(path)))

    def reopen(self, id: str) -> NodeRecord:
        """Make a finished node Pending again (its data and children stay);
        a Pending one is returned as it is, an InProgress one refused."""
        record = self.get_node(id)
        if record.status == "Pending":
            return record
        if record.status == "InProgress":
            live = running_here(self._key, id)
            raise EntityGraphError(
                f"cannot reopen {record.type} ({record.name}): it is InProgress"
                + (" and running in this process" if live else " (start it to resume it)")
                + "; only Completed or Failed nodes can be reopened"
            )
        on_loop = _running_loop() is not None
        with self._lock:
            changed = self._without_crossing(lambda: self._a_reopen(id, on_loop), f"entity {id}")
            if changed is _DEFERRED:
                self._reopens[id] = asyncio.run_coroutine_threadsafe(
                    self._a_reopen_later(id), core.store_loop()
                )
                return self.get_node(id)
        if not changed and self.status_of(id) == "InProgress":
            raise EntityGraphError(
                f"cannot reopen {record.type} ({record.name}): another process started it "
                "meanwhile; only Completed or Failed nodes can be reopened"
            )
        return self.get_node(id)

    async def _a_reopen(self, id: str, defer: bool = False) -> Any:
        """Whether the node was finished and is Pending now; ``_CROSSING`` if
        another process holds its row and this transaction held locks before;
        with ``defer`` (on a running loop), ``_DEFERRED`` instead whenever
        another process holds its row (nothing was changed)."""
        fresh = not self._in_txn
        await self._abegin()
        if defer or not fresh:
            row = await self._one(
                "SELECT 1 FROM nodes WHERE id = %s FOR NO KEY UPDATE SKIP LOCKED", (id,)
            )
            if row is None and await self._one("SELECT 1 FROM nodes WHERE id = %s", (id,)):
                return _DEFERRED if defer else _CROSSING  # locked by another process
        cur = await self._x(_REOPEN, (id,))
        return cur.rowcount == 1

    async def _a_reopen_later(self, id: str) -> None:
        """Reopen ``id`` on a connection of its own, in a transaction of its
        own, waiting (up to ``busy_timeout``) for the other process's write
        of its row; a reopening that cannot be stored is logged, as a commit
        that fails is. Runs on the store's loop, so nobody's loop waits."""
        try:
            conn = await core.aconnect(self._url)
            try:
                await conn.execute(f"SET lock_timeout = {self._busy_ms:d}")
                await conn.execute(_REOPEN, (id,))
            finally:
                await conn.close()
        except (psycopg.Error, EntityGraphError) as exc:
            text = core.one_line(exc, self._url) if isinstance(exc, psycopg.Error) else str(exc)
            log.warning(
                "entity graph %s: the reopening of %s was not stored (%s)", self.path, id, text
            )

    def put_blob(self, id: str, data: bytes, content_type: str) -> str:
        """Store ``data`` as a blob (committed) once :meth:`check_lease` says
        the run writing it still holds ``id``."""
        self.check_lease(id)
        return self.blobs.put(data, content_type)

    def delete_tree(self, id: str) -> list[NodeRecord]:
        """Delete a root node and every node under it, with their progress and
        leases, in one transaction; refused (nothing changed) for a node that
        is not a root or a tree in which a node runs."""
        root = self.get_node(id)
        if root.parent_id is not None:
            raise EntityGraphError(
                f"{root.type} ({root.name}) is not a root entity: delete its root instead"
            )
        nodes = [root, *self.descendants(id)]
        now = time.time()
        for node in nodes:
            if node.status != "InProgress":
                continue
            lease = self.lease(node.id)
            if lease is not None and self.lease_state(lease, now) == LEASE_LIVE:
                raise EntityGraphError(
                    f"{node.type} ({node.name}) is running in {lease.owner}: let it finish "
                    "(or stop it) first; nothing was deleted"
                )
        ids = [n.id for n in nodes]
        self._write(self._a_delete(ids))
        with self._lock:
            self._parents.difference_update(ids)
        self.flush()
        return nodes

    async def _a_delete(self, ids: list[str]) -> None:
        await self._abegin()
        await self._x("DELETE FROM progress WHERE node_id = ANY(%s)", (ids,))
        await self._x("DELETE FROM leases WHERE node_id = ANY(%s)", (ids,))
        for node in reversed(ids):  # children first
            await self._x("DELETE FROM nodes WHERE id = %s", (node,))

    def _set_status(self, id: str, status: EntityStatus | str) -> None:
        """Force a stored status (for tools and tests that simulate a crash)."""
        allowed = {s.value for s in EntityStatus}
        if status not in allowed:
            raise ValueError(f"status must be one of {sorted(allowed)}; got {status!r}")
        self._conn.execute("UPDATE nodes SET status = %s WHERE id = %s", (str(status), id))
