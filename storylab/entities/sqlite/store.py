"""The SQLite entity graph: opening, the state every part shares, closing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from storylab.entities._commits import running_loop as _running_loop
from storylab.entities.blobs import BlobStore
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    GraphAccessError,
    GraphNotFoundError,
    LeaseLostError,
)
from storylab.entities.postgres.url import is_server_url
from storylab.entities.records import (
    HOST,
)
from storylab.entities.sqlite._shared import (
    _OPEN,
    _RETRY_FIRST,
    COMMIT_MODES,
    _env_lease_ttl,
    default_graph_path,
)
from storylab.entities.sqlite.leases import Leases
from storylab.entities.sqlite.queries import Queries
from storylab.entities.sqlite.schema import (
    cannot_open,
    connect,
    is_access_error,
    prepare,
)
from storylab.entities.sqlite.transactions import Transactions
from storylab.entities.sqlite.writes import Writes


class EntityGraph(Writes, Queries, Leases, Transactions):
    """A SQLite-backed entity graph. Open it with :meth:`EntityGraph.open`.

    Read API (used by the CLI and the viz layer): :meth:`get_node`,
    :meth:`children`, :meth:`descendants`, :meth:`io`, :meth:`progress`,
    :meth:`edges`, :meth:`roots`. Entities: :meth:`create`,
    :meth:`create_or_retrieve`, :meth:`entity`. Binary outputs: :attr:`blobs`.

    It implements :class:`~storylab.entities.store.EntityStore`, the operations
    entities and their runs call (``start_if_pending``, ``claim``,
    ``finish_completed``, ``commit_waiter``, ...); everything with a leading
    underscore is this SQLite implementation's own.

    One graph holds one connection; it may be used from several threads (a
    lock serialises statements), but is meant for one event loop at a time.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        commit: str,
        commit_interval: float,
        lease_ttl: float = 10.0,
        lease_heartbeat: float | None = None,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = path
        self.blobs = self._open_blobs(path)
        self._conn = conn
        self._commit_mode = commit
        self._commit_interval = commit_interval
        self._live_runs = 0  # runs of this graph's entities executing now
        self._lock = threading.RLock()
        self._in_txn = False
        self._progress: list[Envelope] = []  # logged, not yet inserted
        # The pending commit callback: its loop, its handle, and whether it
        # runs at the end of the current loop iteration (call_soon) or later.
        self._commit_loop: asyncio.AbstractEventLoop | None = None
        self._commit_handle: asyncio.Handle | None = None
        self._commit_soon = False
        # Nodes created in the open transaction, not written yet: id -> the
        # row (a list, in _INSERT_NODE's column order), in creation order. A node that is
        # created, started and finished within one transaction is written
        # once, in its final state, instead of inserted and updated twice.
        # Anything that reads or commits writes them first (_write_nodes), so
        # no reader and no committed state can tell the difference.
        self._new_rows: dict[str, list] = {}
        # Their uniqueness keys, (parent id or None, call path or name).
        self._new_keys: set[tuple[str | None, str]] = set()
        # The parents of rows created outside a transaction while another
        # process held the write lock (see Writes._may_defer): their leases
        # are checked by the commit that writes those rows.
        self._deferred: set[str] = set()
        # Nodes reopened while another process held the write lock, from a
        # running loop (see Writes._may_defer_reopen): the next transaction
        # reopens them first.
        self._reopens: set[str] = set()
        # The thread finishing a close() that had to wait for that lock.
        self._closing: threading.Thread | None = None
        # Parent ids known to exist (nodes are never deleted).
        self._parents: set[str] = set()
        self._commit_error: sqlite3.Error | None = None
        # Runs waiting for the open transaction to be committed before they
        # hand on a result (one future each, resolved by _commit), and the
        # nodes that reached Completed or Failed in that transaction.
        self._waiters: list[asyncio.Future] = []
        self._settling: set[str] = set()
        # The absolute path of the file: with an entity id, what names a run in
        # this process's table of live runs (two graphs of one file share it).
        self.key = self._key = self._graph_key(path)
        self._closed = False
        self.read_only = False  # set by open(read_only=True): every write is refused
        # Leases (see the module docstring). The token is this graph's own:
        # a process that opens the file twice holds two sets of leases.
        self._lease_ttl = lease_ttl
        self._lease_heartbeat = lease_ttl / 4 if lease_heartbeat is None else lease_heartbeat
        self._pid = os.getpid()
        self._owner = f"{HOST}:{self._pid}"
        self._token = os.urandom(8).hex()
        # Leases taken in the open transaction, not written yet: node id ->
        # taken_at. Written at the commit (with the nodes); one dropped before
        # that is never written, so a child that starts and finishes between
        # two commits costs no lease statement at all.
        self._new_leases: dict[str, float] = {}
        self._heartbeat: asyncio.Task | None = None
        # Fencing (see "Fencing" in the module docstring). The nodes whose
        # lease this graph holds, each with when its expiry was last pushed
        # back (taken or renewed); the ones it lost, with the error that says
        # why; the ones whose lease was checked in the open transaction (the
        # write lock is ours until its commit, so nobody can take them over
        # meanwhile); and what to call when a lease is lost (the run's own).
        self._held: dict[str, float] = {}
        self._lost: dict[str, LeaseLostError] = {}
        self._checked: set[str] = set()
        self._watchers: dict[str, Callable[[LeaseLostError], None]] = {}
        # A synchronous operation waits this long for another process's write
        # lock (milliseconds, SQLite's busy timeout); awaited ones never block.
        self._busy_ms = int(busy_timeout * 1000)
        self._retry_delay = _RETRY_FIRST  # of a commit that found the lock taken
        # The file we opened, to notice it being deleted or replaced (by its
        # absolute path: the process may change its working directory).
        self._file_id = self._identify()
        self._gone: str | None = None  # why the file is gone, once it is
        _OPEN.setdefault(self._key, weakref.WeakSet()).add(self)

    # What a store on another medium (a server database) replaces: where its
    # blobs live, the key that names the graph in this process, and what
    # identifies the storage it opened.

    def _open_blobs(self, path: Path) -> Any:
        return BlobStore(path.with_suffix(".blobs"))

    def _graph_key(self, path: Path) -> str:
        return str(path.resolve())

    def _identify(self) -> Any:
        st = os.stat(self._key)
        return (st.st_dev, st.st_ino)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        commit: str = "batched",
        commit_interval: float = 0.005,
        read_only: bool = False,
        lease_ttl: float | None = None,
        lease_heartbeat: float | None = None,
        busy_timeout: float = 30.0,
    ) -> EntityGraph:
        """Open (and if needed create) the graph stored at ``path``.

        ``path`` is a file, a directory (``graph.sqlite`` inside it),
        ``None`` for :func:`default_graph_path`, or a ``postgresql://`` URL:
        a graph on a PostgreSQL server (:mod:`storylab.entities.postgres`,
        the ``storylab[postgres]`` extra), taking the same arguments. With ``create=False`` a
        missing file raises :class:`GraphNotFoundError` instead of being
        created. ``commit`` is ``"batched"`` (operations share a transaction,
        committed at the end of the event-loop iteration in which an entity
        finished or failed, else ``commit_interval`` seconds after the first
        operation), ``"interval"`` (the same without the end-of-iteration
        commit: only the interval, and the end of the last running entity)
        or ``"operation"`` (one commit per operation). In every mode a run
        hands on its result only once it is committed; the module docstring
        has a table of what each mode makes wait and what a crash can lose.
        ``lease_ttl`` is how many seconds a running node's lease outlives its
        owner's last heartbeat (what another process waits for when the owner
        is on another host or stopped answering); ``lease_heartbeat`` how
        often the leases are renewed (default a quarter of ``lease_ttl``).
        Without ``lease_ttl`` it is ``$STORYLAB_LEASE_TTL`` if set, else 10 s.
        ``busy_timeout`` is how long a synchronous write (one made outside
        a run's awaited steps, e.g. ``create`` of a new root or ``merge_data``)
        waits for another process's write lock before it raises; a run's own
        writes, the commits and the heartbeat wait without blocking the event
        loop.
        A file that is not a storylab graph, or one from a newer schema, is
        refused with a clear error and left untouched.

        A graph opened for writing (the default) is tried with a write that is
        rolled back, so a read-only file, folder or mount is refused here with
        :class:`GraphAccessError` instead of failing half-way through a run.
        ``read_only=True`` opens an existing graph for reading only (never
        creating, upgrading or converting it), which also works on read-only
        media; any write then fails.
        """
        if commit not in COMMIT_MODES:
            allowed = ", ".join(repr(m) for m in COMMIT_MODES)
            raise ValueError(f"commit must be one of {allowed}; got {commit!r}")
        if not isinstance(commit_interval, int | float) or not 0 <= commit_interval <= 1:
            raise ValueError(
                f"commit_interval must be a number of seconds in [0, 1]; got {commit_interval!r}"
            )
        if lease_ttl is None:
            lease_ttl = _env_lease_ttl()
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float) or lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds; got {lease_ttl!r}")
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not 0 <= busy_timeout <= 3600
        ):
            raise ValueError(
                f"busy_timeout must be a number of seconds in [0, 3600]; got {busy_timeout!r}"
            )
        if lease_heartbeat is not None and (
            isinstance(lease_heartbeat, bool)
            or not isinstance(lease_heartbeat, int | float)
            or not 0 < lease_heartbeat < lease_ttl
        ):
            raise ValueError(
                "lease_heartbeat must be a number of seconds above 0 and below lease_ttl "
                f"({lease_ttl!r}); got {lease_heartbeat!r}"
            )
        if isinstance(path, str) and is_server_url(path):
            from storylab.entities.postgres import open_graph

            # Not a subclass: its own store with the same public graph API (the
            # conformance suite and the CLI tests run both). Callers are annotated with
            # this class; a shared protocol for the whole read API would replace the cast.
            return cast("EntityGraph", open_graph(
                path,
                create=create,
                commit=commit,
                commit_interval=float(commit_interval),
                read_only=read_only,
                lease_ttl=float(lease_ttl),
                lease_heartbeat=None if lease_heartbeat is None else float(lease_heartbeat),
                busy_timeout=busy_timeout,
            ))
        p = default_graph_path() if path is None else Path(path)
        if p.is_dir():
            p = p / "graph.sqlite"
        if not p.exists():
            if not create or read_only:
                raise GraphNotFoundError(f"no entity graph at {p}")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GraphAccessError(
                    f"cannot create the entity graph {p}: {exc.strerror or exc}"
                ) from None
        try:
            conn = connect(p, read_only)
        except sqlite3.Error as exc:  # e.g. a new file in a folder nobody may write to
            raise GraphAccessError(cannot_open(p, exc)) from None
        try:
            prepare(conn, p, read_only)
        except BaseException:
            conn.close()
            raise
        heartbeat = None if lease_heartbeat is None else float(lease_heartbeat)
        graph = cls(
            p, conn, commit, float(commit_interval), float(lease_ttl), heartbeat, busy_timeout
        )
        conn.execute(f"PRAGMA busy_timeout={graph._busy_ms}")
        graph.read_only = read_only
        if not read_only:
            try:
                graph._check_writable()
            except BaseException:
                graph.close()
                raise
        return graph

    def _check_writable(self) -> None:
        """Raise :class:`GraphAccessError` unless a write to the file can succeed.

        The probe rewrites the schema version with its own value inside a
        transaction that is rolled back, so the file is left byte for byte as
        it was. (``os.access`` cannot answer this: it says yes to root, and
        knows nothing of read-only mounts or immutable files.)
        """
        with self._lock:
            self.commit_peers()  # a peer's open transaction would make us wait for it
            conn = self._conn
            # Another process writing right now proves the file writable: do
            # not wait out its transaction just to find that out (and on an
            # event loop, such as a cluster worker's, do not wait at all).
            conn.execute(f"PRAGMA busy_timeout={0 if _running_loop() is not None else 200}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    conn.execute(f"PRAGMA user_version={int(version)}")
                finally:
                    conn.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:
                name = getattr(exc, "sqlite_errorname", "") or ""
                if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                    return
                if not is_access_error(exc):
                    raise
                raise GraphAccessError(
                    f"the entity graph {self.path} is read-only ({exc}): it can be read "
                    "but not written; nothing was changed"
                ) from None
            finally:
                conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    def close(self) -> None:
        """Commit what is pending and close the connection (idempotent).

        Called on a running event loop while another process holds the write
        lock, with something still to write (progress, rows or a reopening
        made meanwhile), it does not wait there: the graph is closed to this
        process at once, and a thread of its own commits (waiting for the
        lock up to ``busy_timeout``, as a synchronous write does) and closes
        the connection. ``await graph.aclose()`` waits for the lock without
        blocking the loop instead, and returns once everything is stored."""
        if self._closing is not None:
            return  # being closed by its thread, which holds _lock meanwhile
        with self._lock:
            if self._closed:
                return
            self._stop_heartbeat()
            if self._must_wait_to_close():
                # The loop's own retry of the commit would wait for _lock.
                handle, self._commit_handle = self._commit_handle, None
                if handle is not None:
                    handle.cancel()
                self._commit_loop = None
                self._closed = True  # refused from now on, as after close()
                self._closing = threading.Thread(
                    target=self._close_connection, name=f"closing {self.path.name}",
                    # never a daemon: the interpreter waits for it at exit, so the
                    # last commit is not lost when close() is called from one.
                    daemon=False,
                )
                self._closing.start()
                return
            self._close_connection()

    def _must_wait_to_close(self) -> bool:
        """Whether the last commit must wait for another process's write lock
        while an event loop runs in this thread (hold ``_lock``)."""
        if self._in_txn or _running_loop() is None or not self._has_pending():
            return False
        if self._gone is not None or self._commit_error is not None or self.read_only:
            return False  # nothing can be stored: _commit drops it at once
        return not self._try_begin()

    def _close_connection(self) -> None:
        with self._lock:
            try:
                self._commit(block=True, final=True)
            finally:
                self._closed = True
                self._conn.close()
                peers = _OPEN.get(self._key)
                if peers is not None:
                    peers.discard(self)

    def __enter__(self) -> EntityGraph:
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
        """Whether the file was found deleted or replaced (nothing more is stored)."""
        return self._gone is not None
