"""The entity graph: every entity a persisted node in one SQLite file.

Why a store at all: a pipeline that dies half-way should, when started again,
find what it already finished and do only the rest. That needs the nodes
(id, name, type, status, data, output, error, timestamps), the ``Calls``
edges from parents to children in creation order, and each node's progress
log to outlive the process. SQLite gives all of that in one file, with two
properties we lean on:

* **Uniqueness is a constraint, not a check.** A child's *call path* (its
  name, prefixed by the ``label/key`` of the condition branches it was made
  in) is unique under its parent, and a root's name among roots, by a
  ``UNIQUE`` index. Two processes resuming the same pipeline at once cannot
  both create a child: the name is checked inside the write transaction,
  which only one process holds at a time, and the index guards the write.
* **Transactions are atomic.** A crash leaves the file as of some committed
  transaction, never half an operation.

How writes are committed. Each operation (create a child, mark a run
started, store an output...) is atomic and never spans an ``await``.
Operations share a transaction ("group commit"). A run that ends writes its
end (Completed with its output, or Failed with its error) into the open
transaction, then waits for the commit of that transaction before it hands
any of it on: its ``VALUE return`` and ``STATUS COMPLETED`` (or ``ERROR``
and ``STATUS FAILED``) envelopes, its ``result``, a runner's ``FINAL``, a
delegating parent, a second run attached to it. Every run that ended in one
transaction waits for the same commit, so many ends still share one. If that
commit fails, each waiting run raises the commit's
:class:`~storylab.entities.errors.EntityGraphError` instead of handing on a
result (in ``batched`` and ``interval`` mode, where the failed transaction
held other operations too, the next operation on the graph raises it as
well). The modes differ in when the commit comes, hence in how long an ended
run waits:

=============  ===============================  ===================  ===========================
``commit=``    the transaction is committed     an ended run waits   a crash of the process loses
=============  ===============================  ===================  ===========================
``batched``    at the end of the event-loop     one loop iteration   operations that ended
(default)      iteration in which a run ended;                       nothing (creations, starts,
               else ``commit_interval`` (5 ms)                       progress, data changes), up
               after its first operation                             to 5 ms of them
``interval``   ``commit_interval`` after its    up to 5 ms           the same: up to 5 ms of
               first operation                                       operations
``operation``  by each operation, before it     not at all           nothing that returned
               returns
=============  ===============================  ===================  ===========================

In no mode can a crash take back an end that was handed on: whatever anyone
saw finish is stored, and a resumed run gets it back instead of running that
entity again; lost operations are simply done again. In every mode the
transaction is also committed at once when the last running entity of the
graph ends, on :meth:`EntityGraph.flush` and :meth:`EntityGraph.close`, at
interpreter exit, and by every operation made outside a running event loop.
``interval`` makes fewer commits than ``batched`` but holds every result up
to ``commit_interval``: with few runs in flight that caps how many end per
second (docs/benchmarks.md has the numbers).

"Crash" means the process dies (an exception, a SIGKILL): a committed
transaction is then on disk. The file is in WAL mode with
``synchronous=NORMAL``, so a power cut or an operating-system crash may in
addition take back the last commits (those the OS had not yet written out),
in every mode; the file stays consistent, as of some earlier commit.

Within a transaction, work that nobody can observe is not written twice: a
node created in it is written once, at the commit (or before anything on
this connection reads), in the state it has by then, so a child created,
started and finished within one transaction costs one ``INSERT`` instead of
an ``INSERT`` and two ``UPDATE``s; progress rows are written at the commit
too, and consecutive envelopes of one node share a row. Every reader, and
every committed state, is the same as if each operation had been written
at once.

Progress logs are stored once, on the node that produced each envelope;
reading a node's progress returns its own envelopes and those of all its
descendants in the order they were written, which is how a child's progress
shows up in its parent's log (percolation) without writing it twice.

Several processes may run the same pipeline on one file. A node that runs
is *leased*: a row of the ``leases`` table names its owner (host, pid and a
random token of the owning graph), taken in the transaction that makes the
node InProgress and dropped in the one that finishes it. Another process
that meets a live lease does not run the node; it waits for it (see
``EntityRun``). A lease lives ``lease_ttl`` seconds past its owner's last
heartbeat (one asyncio task per graph renews every lease it holds while
anything runs); one whose owner is a process of this host that no longer
exists is over at once, so a ``kill -9`` is recovered as fast as before.
A pid that is alive is trusted only until the expiry: if the owner died and
its pid went to another program, the lease is simply waited out (the
heartbeat stopped), and the new owner's token keeps the two apart. Expiry
compares wall clocks, so hosts sharing a file over a network must keep their
clocks within a fraction of ``lease_ttl``. ``lease_ttl`` is 10 s unless
given to :meth:`EntityGraph.open` or set in ``$STORYLAB_LEASE_TTL``.

Fencing. Every write made under a lease is checked against its token, inside
the write transaction that stores it (so the check holds until the commit):
the node's progress envelopes (checked at the commit that writes them), its
data (``update_entity_data`` and the other data writes), the children it
creates and starts, and its end. A process whose lease was taken over (it
stalled past the expiry: a ``SIGSTOP``, a suspended laptop) therefore stores
nothing more for that node, and the first refused write, or the heartbeat
that finds the lease gone, stops the run: its task is cancelled, and the run
raises :class:`~storylab.entities.errors.LeaseLostError`, one line naming the
new owner and whether our lease had expired. A node's lease is checked once
per transaction (after that the write lock is ours until the commit), so the
check costs one indexed read per leased node per commit. Blob files are not
fenced: they are content-addressed, and a blob is only reachable through a
key stored in a node's data or output, which are.

The heartbeat never dies on an error. A renewal that meets another process's
write lock or a failing disk (``database is locked``, ``disk I/O error``) is
tried again with a growing delay; if it cannot succeed before the oldest of
our leases would expire (less half a heartbeat), every run holding one is
stopped as above (its error says so), and the leases given up are never
renewed again (a new token is used from then on), so another process can take
those nodes over once they expire. A renewal that finds a lease taken over
stops that run at once.

Waiting for the lock. Another process's write transaction (up to a
``BEGIN EXCLUSIVE`` held for minutes) never blocks the event loop of a run:
a run's steps await :meth:`EntityGraph.write_waiter` before they write, which
opens the transaction when the lock is free and otherwise looks again after
a growing delay (2 ms doubling to 50 ms); progress envelopes are buffered
without the lock; a commit that finds the lock taken is tried again by a
loop callback; the heartbeat retries as above. Only writes made
synchronously outside those steps (``append_call`` from ``run_impl`` when no
transaction is open, ``reopen``, ``create``, anything outside a loop) wait
for the lock the usual SQLite way, up to ``busy_timeout`` (30 s).

The file itself is checked at every commit: if it was deleted or replaced
(another inode at the path), the transaction is rolled back and every later
operation raises :class:`~storylab.entities.errors.GraphFileGoneError`,
instead of writing on into a file nobody will read.

The schema and its upgrades are in :mod:`storylab.entities.schema`, the
records handed out in :mod:`storylab.entities.records`, the JSON encoding in
:mod:`storylab.entities.encoding`.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storylab.entities.blobs import BlobStore
from storylab.entities.encoding import (
    dumps,
    dumps_log,
    envelopes_from_rows,
    loads,
    progress_rows,
)
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    DuplicateNameError,
    EntityGraphError,
    EntityTypeMismatchError,
    GraphAccessError,
    GraphFileGoneError,
    GraphNotFoundError,
    LeaseLostError,
    NotAStorylabGraphError,
    UnknownEntityError,
)
from storylab.entities.records import (
    HOST,
    LEASE_EXPIRED,
    LEASE_LIVE,
    LEASE_OWNER_GONE,
    EntityStatus,
    LeaseRecord,
    NodeRecord,
    edge,
    new_id,
    node_record,
    pid_alive,
)
from storylab.entities.registry import check_entity_class, entity_class, running_here
from storylab.entities.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    cannot_open,
    connect,
    is_access_error,
    prepare,
)

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity

__all__ = [
    "APPLICATION_ID",
    "COMMIT_MODES",
    "HOST",
    "SCHEMA_VERSION",
    "EntityGraph",
    "EntityStatus",
    "LeaseRecord",
    "NodeRecord",
    "default_graph_path",
    "dumps",
]

log = logging.getLogger("storylab.entities")

COMMIT_MODES = ("batched", "interval", "operation")

_NODE_COLUMNS = (
    "id, name, type, status, data, parent_id, created_at, started_at, finished_at, error, output, "
    "CASE WHEN parent_id IS NULL THEN NULL ELSE coalesce(call_path, name) END"
)


def _commit_all() -> None:
    for peers in list(_OPEN.values()):
        for graph in list(peers):
            graph._commit(block=True)


atexit.register(_commit_all)

# Every open graph of this process, by file, so that one graph can commit the
# others' pending transaction before it takes the write lock: two connections
# of one thread waiting on each other would otherwise wait forever.
_OPEN: dict[str, weakref.WeakSet[EntityGraph]] = {}
_STATUSES = tuple(s.value for s in EntityStatus)


LEASE_TTL_ENV = "STORYLAB_LEASE_TTL"
# A commit or an awaited write that finds another process's write lock looks
# again after this long (seconds), doubling up to the maximum.
_RETRY_FIRST, _RETRY_MAX = 0.002, 0.05


def _env_lease_ttl() -> float:
    """``$STORYLAB_LEASE_TTL`` as seconds, else the default of 10."""
    raw = os.environ.get(LEASE_TTL_ENV, "").strip()
    if not raw:
        return 10.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(
            f"{LEASE_TTL_ENV} must be a positive number of seconds (the lease of a running "
            f"entity, default 10); got {raw!r}"
        )
    return value


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock (try again later)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


def default_graph_path() -> Path:
    """``$STORYLAB_HOME/graph.sqlite`` if set, else ``./.storylab/graph.sqlite``."""
    home = os.environ.get("STORYLAB_HOME")
    return Path(home or ".storylab") / "graph.sqlite"


class EntityGraph:
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
        self.blobs = BlobStore(path.with_suffix(".blobs"))
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
        self.key = self._key = str(path.resolve())
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
        st = os.stat(self._key)
        self._file_id = (st.st_dev, st.st_ino)
        self._gone: str | None = None  # why the file is gone, once it is
        _OPEN.setdefault(self._key, weakref.WeakSet()).add(self)

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

        ``path`` is a file, a directory (``graph.sqlite`` inside it) or
        ``None`` for :func:`default_graph_path`. With ``create=False`` a
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
        a run's awaited steps, e.g. ``append_call`` or ``reopen``) waits for
        another process's write lock before it raises; a run's own writes,
        the commits and the heartbeat wait without blocking the event loop.
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
            # not wait out its transaction just to find that out.
            conn.execute("PRAGMA busy_timeout=200")
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
        """Commit what is pending and close the connection (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._commit(block=True)
            self._stop_heartbeat()
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

    def check_file(self) -> None:
        """Raise :class:`GraphFileGoneError` if the file was deleted or replaced
        since it was opened (and refuse every later operation)."""
        gone = self._gone or self._file_gone()
        if gone is not None:
            self._gone = gone
            raise GraphFileGoneError(gone)

    # ------------------------------------------------------------ transactions

    def _commit_failure(self, error: sqlite3.Error) -> EntityGraphError:
        exc = EntityGraphError(
            f"a commit to {self.path} failed ({error}); the work done since the "
            "previous commit was rolled back and will be redone on resume"
        )
        exc.__cause__, exc.__suppress_context__ = error, True  # as `raise ... from error`
        return exc

    def _raise_commit_error(self) -> None:
        error, self._commit_error = self._commit_error, None
        if error is not None:
            raise self._commit_failure(error)

    def commit_waiter(self, id: str | None = None) -> asyncio.Future | None:
        """A future that the commit of the open transaction resolves (or sets
        to the :class:`EntityGraphError` of a failed commit); ``None`` when
        there is nothing to wait for: no transaction is open or, given ``id``,
        the node did not finish in it.

        A run awaits it between storing its end and handing the result on, so
        nobody sees a result that a crash could still take back; every run
        that finished in one transaction waits for the same commit."""
        with self._lock:
            if self._commit_error is not None:  # "operation" mode: the commit just failed
                self._raise_commit_error()
            if not self._in_txn or (id is not None and id not in self._settling):
                return None
            loop = _running_loop()
            if loop is None or loop is not self._commit_loop:
                # No commit is queued on this loop: commit now rather than wait
                # for one that may never come.
                self._commit()
                if self._commit_error is not None:
                    self._raise_commit_error()
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            return waiter

    def _raise_if_gone(self) -> None:
        if self._gone is not None:
            raise GraphFileGoneError(self._gone)

    def _file_gone(self) -> str | None:
        """Why the file we opened is no longer at our path (None if it is)."""
        try:
            st = os.stat(self._key)
        except FileNotFoundError:
            what = "deleted"
        else:
            if (st.st_dev, st.st_ino) == self._file_id:
                return None
            what = "replaced by another file"
        return (
            f"the entity graph file {self.path} was {what} while this process had it open; "
            "nothing more is stored (the work since the last commit is lost)"
        )

    def _begin(self) -> sqlite3.Connection:
        """Join this turn's transaction, opening it if needed (hold ``_lock``)."""
        if self._gone is not None:
            self._raise_if_gone()
        if self._commit_error is not None:
            self._raise_commit_error()
        if self.read_only:
            raise GraphAccessError(
                f"the entity graph {self.path} was opened read-only; nothing was changed"
            )
        if not self._in_txn:
            self.commit_peers()
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        return self._conn

    def _try_begin(self) -> bool:
        """Open the write transaction if no other process holds the write lock
        now; False (at once, without waiting) if one does. Hold ``_lock``,
        outside a transaction."""
        self.commit_peers()
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        self._in_txn = True
        return True

    def write_waiter(self) -> Any:
        """``None`` if a write can be made now without waiting (the write
        transaction is open, or was just opened); else an awaitable that
        returns once it can, looking again with a growing delay (never
        blocking the event loop) while another process holds the lock.

        A run awaits it before the writes of each step; the writes that
        follow in the same step then find the transaction open."""
        if self._in_txn:
            return None
        with self._lock:
            if self._in_txn or self._gone or self._closed or self.read_only:
                return None  # nothing to wait for (the write itself raises)
            if self._commit_error is None and self._try_begin():
                self._opened()
                return None
            if self._commit_error is not None:
                return None
        return self._wait_writable()

    def _opened(self) -> None:
        """A transaction was opened ahead of the writes that follow: see that
        it is committed even if none does (in ``operation`` mode each write
        commits it; the callback then finds nothing to do)."""
        if self._commit_mode == "operation":
            asyncio.get_running_loop().call_soon(self._commit)
        else:
            self._schedule_commit()

    async def _wait_writable(self) -> None:
        delay = _RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
            with self._lock:
                if self._in_txn or self._gone or self._closed or self._commit_error is not None:
                    return
                if self._try_begin():
                    self._opened()
                    return

    def _apply(self, *steps: tuple[str, tuple]) -> sqlite3.Cursor:
        """Run ``steps`` (SQL, params) as one atomic operation.

        Several steps run inside a SAVEPOINT, so a failure in the middle
        leaves none of them behind. Nothing here awaits: an operation never
        spans an ``await``, only the commit is deferred (see the module
        docstring)."""
        with self._lock:
            conn = self._begin()
            if self._new_rows:
                self._write_nodes()
            try:
                if len(steps) == 1:
                    return conn.execute(*steps[0])
                conn.execute("SAVEPOINT op")
                try:
                    for sql, params in steps:
                        cur = conn.execute(sql, params)
                except BaseException:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    raise
                conn.execute("RELEASE op")
                return cur
            finally:
                self._schedule_commit()

    def commit_peers(self) -> None:
        """Commit what other graphs of this process hold pending on our file,
        so that we neither wait for their write lock nor read behind them."""
        if self._in_txn:  # we hold the write lock, so no peer holds a transaction
            return
        peers = _OPEN.get(self._key)
        if peers is None or len(peers) < 2:
            return
        for peer in list(peers):
            if peer is not self and peer._in_txn:
                peer._commit()

    def _schedule_commit(self, terminal: bool = False) -> None:
        """Make sure the open transaction gets committed: at the end of this
        event-loop iteration for a ``terminal`` operation (an entity finished
        or failed) in ``"batched"`` mode, else ``commit_interval`` later."""
        loop = self._commit_loop
        mode = self._commit_mode
        if mode == "operation":
            self._commit()
            return
        if loop is not None and (self._commit_soon or not terminal) and loop is _running_loop():
            return  # called for every operation: the common case first
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._commit()
            return
        pending = self._commit_loop
        soon = (terminal and mode == "batched") or not self._commit_interval
        if pending is None:
            self._commit_loop = loop
            self._commit_soon = soon
            if soon:
                self._commit_handle = loop.call_soon(self._commit)
            else:
                self._commit_handle = loop.call_later(self._commit_interval, self._commit)
        elif pending is not loop:
            # A commit is pending on another loop (another thread, or a loop
            # that has ended): do not leave our write waiting on it.
            self._commit()
        elif soon and not self._commit_soon:
            if self._commit_handle is not None:
                self._commit_handle.cancel()
            self._commit_soon = True
            self._commit_handle = loop.call_soon(self._commit)

    def _commit(self, block: bool = False) -> None:
        """Commit the open transaction, or write the progress logged outside
        one. On a running event loop (unless ``block``) a write lock held by
        another process is never waited for here: the commit is tried again
        a little later, by a loop callback."""
        with self._lock:
            handle, self._commit_handle = self._commit_handle, None
            loop = _running_loop()
            if handle is not None and self._commit_loop is loop:
                handle.cancel()  # when called early (flush, last run ended)
            self._commit_loop = None
            if not self._in_txn:
                if not self._progress or self._closed:
                    return
                if self._gone is not None or self._commit_error is not None or self.read_only:
                    self._progress.clear()  # refused (the operations raise it)
                    return
                if loop is None or block:
                    try:
                        self._begin()
                    except sqlite3.OperationalError as exc:  # locked past busy_timeout
                        log.warning(
                            "entity graph %s: %d progress envelope(s) not stored (%s)",
                            self.path,
                            len(self._progress),
                            exc,
                        )
                        self._progress.clear()
                        return
                elif not self._try_begin():
                    # Another process holds the write lock: look again later.
                    self._commit_loop = loop
                    self._commit_soon = False
                    self._commit_handle = loop.call_later(self._retry_delay, self._commit)
                    self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
                    return
            self._retry_delay = _RETRY_FIRST
            self._in_txn = False
            self._checked.clear()
            waiters, self._waiters = self._waiters, []
            self._settling.clear()
            gone = self._gone or self._file_gone()
            if gone is not None:
                # Committing into a deleted (or swapped-out) file would only
                # pretend to store: roll back, and refuse from now on. The runs
                # waiting for this commit get the reason, not their result.
                self._gone = gone
                self._discard_buffers()
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if waiters:
                    _settle(waiters, functools.partial(GraphFileGoneError, gone))
                return
            try:
                if self._new_rows:
                    self._write_nodes()
                if self._new_leases:
                    self._write_leases()
                self._write_progress()  # (its lease checks end with this transaction)
                self._conn.execute("COMMIT")
                self._checked.clear()
            except sqlite3.Error as exc:
                log.exception("entity graph %s: commit failed; rolling back", self.path)
                self._discard_buffers()
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                # The commit may have run in a loop callback where nobody can
                # catch it: the runs waiting for it get the error, and so does
                # the next operation on this graph, so a run never goes on as
                # if its last results were stored.
                self._commit_error = exc
                if waiters:
                    _settle(waiters, functools.partial(self._commit_failure, exc))
                return
            if waiters:
                _settle(waiters, None)

    def _discard_buffers(self) -> None:
        self._checked.clear()
        self._new_rows.clear()
        self._new_keys.clear()
        self._progress.clear()
        self._new_leases.clear()
        self._parents.clear()  # may name nodes that were just rolled back

    def _write_nodes(self) -> None:
        """Insert the nodes created in this transaction, in creation order
        (hold ``_lock``, in a transaction), each in its current state."""
        rows, self._new_rows = self._new_rows, {}
        self._new_keys.clear()
        self._conn.executemany(_INSERT_NODE, rows.values())

    def _write_leases(self) -> None:
        """Write the leases taken in this transaction (hold ``_lock``, in a
        transaction), their heartbeat as of now."""
        taken, self._new_leases = self._new_leases, {}
        now = time.time()
        owner, host, pid, token = self._owner, HOST, self._pid, self._token
        expires = now + self._lease_ttl
        self._conn.executemany(
            _LEASE_UPSERT,
            [(id, owner, host, pid, token, at, now, expires) for id, at in taken.items()],
        )

    def _write_progress(self) -> None:
        """Insert the buffered progress rows into the open transaction, but
        none of a node whose lease we lost (fenced here, at the write)."""
        if self._progress:
            envs, self._progress = self._progress, []
            if self._held or self._lost:
                envs = self._fenced_progress(envs)
            self._conn.executemany(_PROGRESS_INSERT, progress_rows(envs))

    def _fenced_progress(self, envs: list[Envelope]) -> list[Envelope]:
        kept = []
        lost, held = self._lost, self._held
        for env in envs:
            node = env.entity_id
            if node in held:
                try:
                    self._fence(node)
                except LeaseLostError:
                    continue
            elif node in lost:
                continue
            kept.append(env)
        return kept

    def _log(self, *envs: Envelope) -> None:
        """Append envelopes to the progress log.

        Rows are buffered and inserted with one ``executemany`` at the next
        commit (or before anything on this connection reads the log): the log
        is append-only, so batching changes nothing but the cost. Logging
        takes no lock, so it never waits for another process: the commit does
        (without blocking the event loop), and checks then that the leases of
        the nodes logging are still ours."""
        with self._lock:
            if self._gone is not None:
                self._raise_if_gone()
            if self._commit_error is not None:
                self._raise_commit_error()
            if self.read_only:
                raise GraphAccessError(
                    f"the entity graph {self.path} was opened read-only; nothing was changed"
                )
            lost = self._lost
            if lost:
                for env in envs:
                    if env.entity_id in lost:
                        raise _again(lost[env.entity_id])
            self._progress.extend(envs)
            self._schedule_commit()

    def flush(self) -> None:
        """Commit pending operations now (they are otherwise committed at the
        end of the current event-loop turn, or within ``commit_interval``).
        Raises :class:`EntityGraphError` if this or an earlier commit failed,
        :class:`GraphFileGoneError` if the file was deleted or replaced."""
        self._commit()
        self._raise_if_gone()
        if self._commit_error is not None:
            self._raise_commit_error()

    # ----------------------------------------------------------------- leases

    def run_started(self, id: str, on_lost: Callable[[LeaseLostError], None]) -> None:
        """The run of ``id`` began executing in this process, under our lease:
        ``on_lost`` is called (on the event loop) if that lease is lost. The
        first run starts the heartbeat that renews our leases."""
        self._watchers[id] = on_lost
        self._live_runs += 1
        if self._live_runs == 1:
            self._ensure_heartbeat()

    def run_ended(self, id: str) -> None:
        """The run that :meth:`run_started` ended: with the last one the heartbeat
        stops and everything pending is committed (nothing of this graph runs)."""
        self._watchers.pop(id, None)
        self._live_runs -= 1
        if self._live_runs == 0:
            self._stop_heartbeat()
            self.flush()

    def _ensure_heartbeat(self) -> None:
        """Have a task on the running loop renew our leases while anything of
        this graph runs (called when the first run starts)."""
        task = self._heartbeat
        loop = _running_loop()
        if loop is None or (task is not None and not task.done() and task.get_loop() is loop):
            return
        self._heartbeat = loop.create_task(self._beat(), name=f"lease heartbeat {self.path.name}")

    def _stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None and not task.done() and task.get_loop() is _running_loop():
            task.cancel()

    async def _beat(self) -> None:
        """Renew our leases every ``lease_heartbeat`` seconds while anything runs.

        It never ends on an error: a renewal that finds the store locked, or
        fails (a disk I/O error), is tried again with a growing delay; one
        that cannot succeed before the oldest of our leases would expire
        stops every run holding one (:meth:`_give_up`), so that none of them
        goes on working under a lease another process may take."""
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
        """Push back the expiry of every lease we hold, in a commit of its own,
        trying again while the store is locked or failing; the leases found
        taken over meanwhile are lost (their runs are told)."""
        delay = _RETRY_FIRST
        margin = self._lease_heartbeat / 2
        while True:
            if self._gone is not None:
                self._give_up(self._gone)
                return
            try:
                if self._try_renew():
                    return
                error = "another process holds the write lock"
            except sqlite3.Error as exc:  # "database is locked", "disk I/O error", ...
                error = f"{type(exc).__name__}: {exc}"
                log.debug(
                    "entity graph %s: lease renewal failed (%s); trying again", self.path, error
                )
            if not self._held:
                return
            left = min(self._held.values()) + self._lease_ttl - margin - time.time()
            if left <= 0:
                self._give_up(error)
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self._lease_heartbeat)

    def _try_renew(self) -> bool:
        """One attempt at renewing (False if another process holds the lock)."""
        with self._lock:
            if self._closed:
                return True
            if self._in_txn:
                self._commit()  # what runs wrote so far goes first, in its own commit
            if self._in_txn or not self._try_begin():
                return False
            conn = self._conn
            try:
                if self._new_leases:
                    self._write_leases()
                now = time.time()
                rows = conn.execute(
                    "UPDATE leases SET heartbeat_at = ?, expires_at = ? WHERE token = ? "
                    "RETURNING node_id",
                    (now, now + self._lease_ttl, self._token),
                ).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            finally:
                self._in_txn = False
                self._checked.clear()
            renewed = {r[0] for r in rows}
            held = self._held
            gone = []
            for node in held:
                if node in renewed:
                    held[node] = now
                else:
                    gone.append(node)
            if gone:
                self._mark_lost({node: self._lease_lost_error(node) for node in gone})
            return True

    def _give_up(self, why: str) -> None:
        """Our leases could not be renewed in time: stop every run holding one
        now, before another process may take its node over. A new token is
        used from now on, so the leases given up are never renewed again."""
        if not self._held:
            return
        now = time.time()
        errors = {}
        for node, renewed in self._held.items():
            errors[node] = LeaseLostError(
                f"{self._describe(node)}: this process could not renew its lease for "
                f"{now - renewed:.1f} s ({why}), so it stopped the run before the lease "
                f"({self._lease_ttl:g} s) could expire under it; nothing more of it is "
                "stored here, and another process may take it over",
                node_id=node,
            )
        log.warning("entity graph %s: leases not renewed (%s); stopping their runs", self.path, why)
        self._token = os.urandom(8).hex()
        self._mark_lost(errors)

    # ---------------------------------------------------------------- fencing

    def _fence(self, node: str | None) -> None:
        """Refuse a write made under ``node``'s lease unless that lease is
        still ours: raise :class:`LeaseLostError` if another process took it
        over. Nodes not leased here (a write outside any run) pass. Hold
        ``_lock``; the check is made inside the write transaction, so it
        holds until that transaction's commit."""
        if node is None or node in self._checked or node in self._new_leases:
            return
        if node not in self._held:
            lost = self._lost.get(node)
            if lost is not None:
                raise _again(lost)
            return
        if not self._conn.in_transaction:  # (a commit writing its rows is in one)
            self._begin()
            self._schedule_commit()
        row = self._conn.execute(
            "SELECT token, owner FROM leases WHERE node_id = ?", (node,)
        ).fetchone()
        if row is not None and row[0] == self._token:
            self._checked.add(node)
            return
        error = self._lease_lost_error(node, row[1] if row else None)
        self._mark_lost({node: error})
        raise error

    def check_lease(self, id: str) -> None:
        """Raise :class:`LeaseLostError` if this graph held the lease on ``id``
        and another process has taken it over (one read, no write lock): what
        a run checks before it writes outside the graph (a blob file)."""
        with self._lock:
            if id in self._held and id not in self._checked and id not in self._new_leases:
                row = self._conn.execute(
                    "SELECT token, owner FROM leases WHERE node_id = ?", (id,)
                ).fetchone()
                if row is not None and row[0] == self._token:
                    return
                error = self._lease_lost_error(id, row[1] if row else None)
                self._mark_lost({id: error})
                raise error
            lost = self._lost.get(id)
            if lost is not None and id not in self._held:
                raise _again(lost)

    def _mark_lost(self, errors: dict[str, LeaseLostError]) -> None:
        """Record leases as lost and tell their runs."""
        for node, error in errors.items():
            self._held.pop(node, None)
            self._lost[node] = error
        for node, error in errors.items():
            watcher = self._watchers.pop(node, None)
            if watcher is not None:
                try:
                    watcher(error)
                except Exception:  # pragma: no cover - a run's own callback
                    log.exception("telling the run of %s that its lease was lost failed", node)

    def _describe(self, node: str) -> str:
        try:
            row = self._conn.execute(
                "SELECT type, name FROM nodes WHERE id = ?", (node,)
            ).fetchone()
        except sqlite3.Error:
            row = None
        return f"{row[0]} {row[1]!r} (id {node})" if row else f"entity {node}"

    def _lease_lost_error(self, node: str, owner: str | None = None, *, read: bool = True):
        """The one true line for a lease found taken: by whom, and whether it
        had expired by our clock (our last renewal and ``lease_ttl``)."""
        if read and owner is None:
            try:
                row = self._conn.execute(
                    "SELECT owner FROM leases WHERE node_id = ?", (node,)
                ).fetchone()
            except sqlite3.Error:
                row = None
            owner = row[0] if row else None
        age = time.time() - self._held.get(node, time.time())
        ttl = self._lease_ttl
        if owner is None:
            try:
                row = self._conn.execute(
                    "SELECT status FROM nodes WHERE id = ?", (node,)
                ).fetchone()
            except sqlite3.Error:
                row = None
            if row is not None and row[0] in ("Completed", "Failed"):
                who = f"another process (which has finished it since: it is {row[0]})"
            else:
                who = "another process (which has let it go since)"
        else:
            who = f"another process, {owner},"
        if age >= ttl:
            when = (
                f"after this process's lease on it expired (renewed last {age:.1f} s before; "
                f"a lease lasts {ttl:g} s)"
            )
        else:
            when = (
                f"while this process's lease on it was still live by this host's clock "
                f"(renewed {age:.1f} s before, lasting {ttl:g} s: are two hosts' clocks apart?)"
            )
        return LeaseLostError(
            f"{self._describe(node)} was taken over by {who} {when}; this run stopped and "
            "stored nothing more: the new owner's work stands",
            node_id=node,
        )

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._new_rows:
                self._write_nodes()
            return self._conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------- read API

    def _record(self, row: tuple) -> NodeRecord:
        if row[3] not in _STATUSES:
            raise NotAStorylabGraphError(
                f"the entity graph {self.path} is damaged: node {row[0]} has the impossible "
                f"status {row[3]!r} (a node is {', '.join(_STATUSES)}); restore the file from "
                "a copy, or move it away to start a new graph"
            )
        return node_record(
            row[0],
            row[1],
            row[2],
            row[3],
            self._stored(row[4], row[0], "data"),
            row[5],
            row[6],
            row[7],
            row[8],
            self._stored(row[9], row[0], "error"),
            self._stored(row[10], row[0], "output"),
            row[11],
        )

    def _stored(self, text: str | None, id: str, column: str) -> Any:
        """A stored JSON column; a damaged one is a :class:`NotAStorylabGraphError`
        naming the file, the node and the column (nothing is changed)."""
        try:
            return loads(text)
        except (ValueError, TypeError) as exc:
            raise NotAStorylabGraphError(
                f"the entity graph {self.path} is damaged: the stored {column} of node {id} "
                f"is not JSON ({exc}); restore the file from a copy, or move it away to "
                "start a new graph"
            ) from None

    def get_node(self, id: str) -> NodeRecord:
        rows = self._read(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return self._record(rows[0])

    def _require(self, id: str) -> None:
        if not self._read("SELECT 1 FROM nodes WHERE id = ?", (id,)):
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")

    def children(self, id: str) -> list[NodeRecord]:
        """Direct children over ``Calls`` edges, in creation order."""
        self._require(id)
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id = ? ORDER BY rowid", (id,)
        )
        return [self._record(r) for r in rows]

    def descendants(self, id: str) -> list[NodeRecord]:
        """All descendants, depth first, each level in creation order."""
        out: list[NodeRecord] = []
        stack = list(reversed(self.children(id)))
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(self.children(node.id)))
        return out

    def io(self, id: str) -> dict[str, Any]:
        node = self.get_node(id)
        return {"input": node.data, "output": node.output}

    def progress(self, id: str) -> list[Envelope]:
        """The node's progress log, including every descendant's envelopes,
        in the order they were written."""
        self._require(id)
        with self._lock:
            if self._progress:
                if self._in_txn:
                    self._write_progress()
                else:
                    self._commit(block=True)
        rows = self._read(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id) "
            "SELECT p.node_id, n.type, n.name, p.type, p.status, p.message, p.value, "
            "p.sub_type, p.error, p.at, p.more FROM progress p JOIN nodes n ON n.id = p.node_id "
            "WHERE p.node_id IN (SELECT id FROM sub) ORDER BY p.seq",
            (id,),
        )
        return envelopes_from_rows(rows)

    def lease(self, id: str) -> LeaseRecord | None:
        """The lease on a node (``None`` if nobody holds one). See :meth:`lease_state`."""
        with self._lock:
            if id in self._new_leases:  # ours, not written yet
                now = time.time()
                at = self._new_leases[id]
                return LeaseRecord(
                    id, self._owner, HOST, self._pid, self._token, at, now, now + self._lease_ttl
                )
            rows = self._read(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE node_id = ?", (id,))
        return LeaseRecord(*rows[0]) if rows else None

    def lease_state(self, lease: LeaseRecord, now: float | None = None) -> str:
        """``"live"``, ``"expired"`` (no heartbeat for ``lease_ttl`` seconds) or
        ``"owner gone"`` (its process, on this host, no longer exists, or it
        belongs to this process and nothing of it runs here)."""
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
        """A node's status and lease, read in one snapshot (for a waiting run)."""
        rows = self._read(
            f"SELECT n.status, {_LEASE_COLUMNS_OF_L} FROM nodes n "
            "LEFT JOIN leases l ON l.node_id = n.id WHERE n.id = ?",
            (id,),
        )
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        status, *lease = rows[0]
        return status, (LeaseRecord(*lease) if lease[0] is not None else None)

    def progress_mark(self, id: str) -> int:
        """The progress row just before the node's latest start: a run that
        waits on another process passes on that run's log from its beginning."""
        rows = self._read(
            "SELECT max(seq) FROM progress WHERE node_id = ? AND type = 'STATUS' "
            "AND status = 'STARTED'",
            (id,),
        )
        if rows[0][0] is not None:
            return rows[0][0] - 1
        return self._read("SELECT coalesce(max(seq), 0) FROM progress")[0][0]

    def progress_after(self, id: str, seq: int) -> tuple[list[Envelope], int]:
        """The envelopes of ``id``'s subtree logged after row ``seq``, and the
        last row read: what a run waiting on another process passes on."""
        rows = self._read(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id) "
            "SELECT p.node_id, n.type, n.name, p.type, p.status, p.message, p.value, "
            "p.sub_type, p.error, p.at, p.more, p.seq FROM progress p "
            "JOIN nodes n ON n.id = p.node_id "
            "WHERE p.seq > ? AND p.node_id IN (SELECT id FROM sub) ORDER BY p.seq",
            (id, seq),
        )
        envs = envelopes_from_rows(rows)
        return envs, (rows[-1][11] if rows else seq)

    def edges(self, id: str) -> list[dict[str, Any]]:
        """``Calls`` edges from the node (by position), then the one into it."""
        self._require(id)
        out = [
            edge(id, child, pos)
            for pos, (child,) in enumerate(
                self._read("SELECT id FROM nodes WHERE parent_id = ? ORDER BY rowid", (id,))
            )
        ]
        rows = self._read(
            "SELECT parent_id, (SELECT count(*) FROM nodes s WHERE s.parent_id = n.parent_id "
            "AND s.rowid < n.rowid) FROM nodes n WHERE id = ? AND parent_id IS NOT NULL",
            (id,),
        )
        out.extend(edge(parent, id, pos) for parent, pos in rows)
        return out

    def roots(self, limit: int = 20) -> list[NodeRecord]:
        """The most recently created root entities first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive int; got {limit!r}")
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL "
            "ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (limit,),
        )
        return [self._record(r) for r in rows]

    def find_root(self, name: str) -> NodeRecord | None:
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL AND name = ?", (name,)
        )
        return self._record(rows[0]) if rows else None

    def integrity_problems(self, full: bool = False) -> list[str]:
        """What is wrong with the file, one line each (``[]``: nothing found).

        SQLite's ``quick_check`` (with ``full=True`` its slower
        ``integrity_check``, which also compares every index with its table),
        then storylab's own rules: every node's status is one of the four, and
        (``full``) its stored data, error and output are JSON. Only reads.
        """
        problems: list[str] = []
        try:
            rows = self._read("PRAGMA integrity_check" if full else "PRAGMA quick_check")
            problems += [
                " ".join(line for line in r[0].splitlines() if not line.startswith("***"))
                for r in rows
                if r[0] != "ok"
            ]
            marks = ", ".join("?" for _ in _STATUSES)
            for id, status in self._read(
                f"SELECT id, status FROM nodes WHERE status NOT IN ({marks})", _STATUSES
            ):
                problems.append(f"node {id} has the impossible status {status!r}")
            if full:
                for (id,) in self._read(
                    "SELECT id FROM nodes WHERE NOT json_valid(data) "
                    "OR (error IS NOT NULL AND NOT json_valid(error)) "
                    "OR (output IS NOT NULL AND NOT json_valid(output))"
                ):
                    problems.append(f"node {id} holds stored data that is not JSON")
        except sqlite3.DatabaseError as exc:
            problems.append(f"SQLite cannot read it: {exc}")
        return problems

    # --------------------------------------------------------------- entities

    def entity(self, id: str) -> RunnableEntity:
        """The entity with this id, revived as its registered class."""
        return self.revive(self.get_node(id))

    def revive(
        self, record: NodeRecord, expected: type[RunnableEntity] | None = None
    ) -> RunnableEntity:
        if expected is None:
            return entity_class(record.type)(self, record)
        if record.type != expected.type_name:
            raise EntityTypeMismatchError(
                f"entity {record.name!r} exists with type {record.type!r}, "
                f"not {expected.type_name!r}"
            )
        return expected(self, record)

    _revive = revive  # the name tests and older tools use

    def create(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """Create a root entity; :class:`DuplicateNameError` if the name is taken."""
        return self.revive(self.insert_node(cls, name, data, None), cls)

    def create_or_retrieve(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """The root entity called ``name``; created with ``data`` if it does not
        exist yet. An existing one keeps its original data."""
        return self.revive(self.insert_or_get_node(cls, name, data, None), cls)

    # ---------------------------------------------------- write operations

    def _check_new(self, cls: type[RunnableEntity], name: str, data: Any) -> tuple[str, str]:
        check_entity_class(cls)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"entity name must be a non-empty string; got {name!r}")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TypeError(f"entity data must be a dict; got {type(data).__name__}")
        return cls.type_name, dumps(data, what=lambda: f"data of entity {name!r}")

    def insert_node(
        self, cls, name: str, data, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord:
        """Create a Pending node. ``call_path`` is the child's key under its
        parent when it differs from ``name`` (inside a condition branch)."""
        type_name, data_json = self._check_new(cls, name, data)
        return self.insert_encoded(type_name, name, data, data_json, parent_id, call_path)

    def insert_encoded(
        self,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        parent_id: str | None,
        call_path: str | None,
    ) -> NodeRecord:
        """:meth:`insert_node` for arguments already checked and encoded."""
        key = call_path or name
        with self._lock:
            conn = self._conn if self._in_txn else self._begin()
            try:
                if parent_id is not None:
                    self._fence(parent_id)  # a child is made only under a lease we hold
                # Inside our write transaction nobody else can insert, so
                # checking first and writing later decides races as surely as
                # the UNIQUE index (which still guards the write itself).
                if (parent_id, key) in self._new_keys or self._key_taken(conn, parent_id, key):
                    if parent_id is None:
                        where = "among root entities"
                    elif call_path and call_path != name:
                        where = f"under parent {parent_id} at call path {call_path!r}"
                    else:
                        where = f"under parent {parent_id}"
                    raise DuplicateNameError(f"an entity named {name!r} already exists {where}")
                if (
                    parent_id is not None
                    and parent_id not in self._parents
                    and parent_id not in self._new_rows
                ):
                    if conn.execute(_NODE_EXISTS, (parent_id,)).fetchone() is None:
                        raise UnknownEntityError(f"no entity with id {parent_id!r} in {self.path}")
                    self._parents.add(parent_id)
                node_id = new_id()
                now = time.time()
                self._new_rows[node_id] = [
                    node_id,
                    name,
                    type_name,
                    "Pending",
                    data_json,
                    parent_id,
                    now,
                    None,
                    None,
                    None,
                    None,
                    None if call_path == name else call_path,
                ]
                self._new_keys.add((parent_id, key))
            finally:
                self._schedule_commit()
        return node_record(
            node_id,
            name,
            type_name,
            "Pending",
            {} if data is None else data,
            parent_id,
            now,
            None,
            None,
            None,
            None,
            None if parent_id is None else key,
        )

    def _key_taken(self, conn: sqlite3.Connection, parent_id: str | None, key: str) -> bool:
        if parent_id is None:
            return conn.execute(_ROOT_TAKEN, (key,)).fetchone() is not None
        return conn.execute(_CHILD_TAKEN, (parent_id, key)).fetchone() is not None

    def _by_name(
        self, name: str, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord | None:
        if parent_id is None:
            return self.find_root(name)
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes "
            "WHERE parent_id = ? AND coalesce(call_path, name) = ?",
            (parent_id, call_path or name),
        )
        return self._record(rows[0]) if rows else None

    def insert_or_get_node(
        self, cls, name: str, data, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord:
        type_name, data_json = self._check_new(cls, name, data)
        return self.insert_or_get_encoded(type_name, name, data, data_json, parent_id, call_path)

    def insert_or_get_encoded(
        self,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        parent_id: str | None,
        call_path: str | None,
    ) -> NodeRecord:
        # Insert first: on a fresh run that is the common case, and the UNIQUE
        # index decides races between processes. On a resume the insert fails
        # and we read back the existing node.
        try:
            return self.insert_encoded(type_name, name, data, data_json, parent_id, call_path)
        except DuplicateNameError:
            record = self._by_name(name, parent_id, call_path)
            if record is None:  # pragma: no cover - a node is never deleted
                raise
            return record

    def _status_output(self, id: str) -> tuple[str, Any]:
        rows = self._read("SELECT status, output FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return rows[0][0], self._stored(rows[0][1], id, "output")

    def status_of(self, id: str) -> str:
        return self._status_output(id)[0]

    def data_of(self, id: str) -> dict:
        rows = self._read("SELECT data FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return self._stored(rows[0][0], id, "data")

    def append_progress(self, env: Envelope) -> None:
        self._log(env)

    # A status change and its envelopes share one transaction, so the log
    # never shows an envelope whose status change was not committed with it;
    # so does the lease that goes with it.
    def start_if_pending(self, id: str, env: Envelope, parent_id: str | None = None) -> bool:
        """Mark a Pending node started, leased to us (and log ``env``); False
        if it was not Pending. Fenced by the parent's lease, if we hold it."""
        with self._lock:
            row = self._new_rows.get(id)
            if row is not None:  # created in this transaction, not written yet
                if row[3] != "Pending":
                    return False
                if parent_id is not None:
                    self._fence(parent_id)
                row[3], row[7] = "InProgress", env.at
                self._took(id, env.at)
                self._progress.append(env)
                self._schedule_commit()
                return True
            if parent_id is not None:
                self._begin()
                try:
                    self._fence(parent_id)
                finally:
                    self._schedule_commit()
            cur = self._apply(
                (
                    "UPDATE nodes SET status = 'InProgress', started_at = ? "
                    "WHERE id = ? AND status = 'Pending'",
                    (env.at, id),
                )
            )
            if cur.rowcount != 1:
                return False
            self._took(id, env.at)
            self._progress.append(env)
            return True

    def _took(self, id: str, at: float) -> None:
        """We lease ``id`` from now on (written at the commit)."""
        self._new_leases[id] = at
        self._held[id] = at
        if self._lost:
            self._lost.pop(id, None)

    def claim(
        self, id: str, env: Envelope, parent_id: str | None = None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """Decide, in one write transaction, what starting a node that was not
        Pending does: ``("Completed", output, None, env)``; ``("busy", None,
        lease, env)`` while another owner's lease is live; otherwise the node
        is ours now (InProgress, leased, its result cleared, ``env`` logged)
        and the status it had is returned (``Failed``, ``InProgress`` when
        stale, ``Pending`` if it was reopened meanwhile), with the lease it
        was taken from."""
        with self._lock:
            conn = self._begin()
            try:
                if self._new_rows:
                    self._write_nodes()
                if self._new_leases:
                    self._write_leases()
                if parent_id is not None:
                    self._fence(parent_id)
                row = conn.execute(
                    f"SELECT n.status, n.output, {_LEASE_COLUMNS_OF_L} FROM nodes n "
                    "LEFT JOIN leases l ON l.node_id = n.id WHERE n.id = ?",
                    (id,),
                ).fetchone()
                if row is None:
                    raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
                status, output = row[0], row[1]
                if status == "Completed":
                    return status, self._stored(output, id, "output"), None, env
                lease = LeaseRecord(*row[2:]) if row[2] is not None else None
                if status == "InProgress" and lease is not None:
                    state = self.lease_state(lease)
                    if state == LEASE_LIVE:
                        return "busy", None, lease, env
                    env = dataclasses.replace(
                        env, message=f"taken over from {lease.owner} ({state})"
                    )
                conn.execute(
                    "UPDATE nodes SET status = 'InProgress', started_at = ?, finished_at = NULL, "
                    "error = NULL, output = NULL WHERE id = ?",
                    (env.at, id),
                )
                self._took(id, env.at)
                if lease is not None:
                    # Replace the old owner's row now: a lease dropped before
                    # the commit is otherwise never written, which would
                    # leave that row behind.
                    self._write_leases()
                self._progress.append(env)
                return status, None, lease, env
            finally:
                self._schedule_commit()

    def _drop_lease(self, conn: sqlite3.Connection, id: str) -> bool:
        """Drop our lease on ``id`` (hold ``_lock``, in a transaction); False
        if it is not ours (any more)."""
        if self._new_leases.pop(id, None) is not None:
            return True  # taken in this transaction: nobody else could have it
        cur = conn.execute("DELETE FROM leases WHERE node_id = ? AND token = ?", (id, self._token))
        return cur.rowcount == 1

    def release_lease(self, id: str) -> None:
        """Give up the lease on a node that stays InProgress (its run was
        abandoned): anyone may take it over at once."""
        with self._lock:
            self._held.pop(id, None)
            if not self._in_txn and _running_loop() is not None and not self._try_begin():
                return  # another process holds the lock: the lease just expires
            conn = self._begin()
            try:
                self._drop_lease(conn, id)
            finally:
                self._schedule_commit()

    def _rolled_back(self, id: str) -> UnknownEntityError:
        # Its creation went with a commit that failed: storing its end now
        # would report a result that is nowhere on disk.
        return UnknownEntityError(
            f"no entity with id {id!r} in {self.path} (a failed commit "
            "rolled back its creation); its result is not stored"
        )

    def _finish(self, id: str, status: str, column: str, value: str, at: float, envs) -> bool:
        """Store a run's end, if we still hold its lease (False, and nothing
        written, if another process took the node over)."""
        with self._lock:
            conn = self._conn if self._in_txn else self._begin()
            try:
                if self._lost and id in self._lost:
                    raise _again(self._lost[id])
                row = self._new_rows.get(id)
                if row is not None:  # not written yet: it will be, in this state
                    self._new_leases.pop(id, None)
                    row[3], row[8] = status, at
                    row[10 if column == "output" else 9] = value
                else:
                    if not self._drop_lease(conn, id):
                        if conn.execute("SELECT 1 FROM nodes WHERE id = ?", (id,)).fetchone():
                            # Another process holds it now: store nothing.
                            error = self._lease_lost_error(id)
                            self._mark_lost({id: error})
                            raise error
                        raise self._rolled_back(id)
                    cur = conn.execute(
                        f"UPDATE nodes SET status = ?, finished_at = ?, {column} = ? WHERE id = ?",
                        (status, at, value, id),
                    )
                    if cur.rowcount == 0:
                        raise self._rolled_back(id)
                self._held.pop(id, None)
                self._progress.extend(envs)
                self._settling.add(id)
                return True
            finally:
                self._schedule_commit(terminal=True)

    def finish_completed(
        self, id: str, output_json: str, value_env: Envelope, done_env: Envelope
    ) -> bool:
        return self._finish(
            id, "Completed", "output", output_json, done_env.at, (value_env, done_env)
        )

    def finish_failed(
        self, id: str, error: dict, error_env: Envelope, failed_env: Envelope
    ) -> bool:
        return self._finish(
            id, "Failed", "error", dumps_log(error), failed_env.at, (error_env, failed_env)
        )

    def set_data(self, id: str, data_json: str) -> None:
        with self._lock:
            if id in self._held or id in self._lost:
                self._begin()
                try:
                    self._fence(id)
                finally:
                    self._schedule_commit()
            cur = self._apply(("UPDATE nodes SET data = ? WHERE id = ?", (data_json, id)))
        if cur.rowcount == 0:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")

    def merge_data(self, id: str, changes: dict) -> dict:
        with self._lock:
            # Read inside the write transaction, so no other process can slip
            # a change in between the read and the write.
            row = self._read_for_update(id)
            if row is None:
                self._schedule_commit()
                raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
            data = json.loads(row[0])
            data.update(changes)
            try:
                data_json = dumps(data, what="entity data")
            finally:
                self._schedule_commit()
            self._apply(("UPDATE nodes SET data = ? WHERE id = ?", (data_json, id)))
            return data

    def _read_for_update(self, id: str) -> tuple | None:
        """The node's data, read inside the write transaction (hold ``_lock``)."""
        conn = self._begin()
        if self._new_rows:
            self._write_nodes()
        try:
            self._fence(id)
        except LeaseLostError:
            self._schedule_commit()
            raise
        return conn.execute("SELECT data FROM nodes WHERE id = ?", (id,)).fetchone()

    def set_data_path(self, id: str, path: tuple[str, ...], value: Any) -> dict:
        with self._lock:
            # As in merge_data: read and write inside one write transaction.
            row = self._read_for_update(id)
            if row is None:
                self._schedule_commit()
                raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
            data = json.loads(row[0])
            node = data
            for depth, key in enumerate(path[:-1]):
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    self._schedule_commit()
                    where = "/".join(path[: depth + 1])
                    raise TypeError(
                        f"cannot set {'/'.join(path)!r}: {where!r} holds a "
                        f"{type(child).__name__}, not a dict; nothing was changed"
                    )
                node = child
            node[path[-1]] = value
            self._apply(("UPDATE nodes SET data = ? WHERE id = ?", (dumps(data), id)))
            return data

    def reopen(self, id: str) -> NodeRecord:
        """Make a finished (Completed or Failed) node Pending again, so that its
        next start runs ``run_impl`` from the top.

        Its data and its children stay: a re-run finds the children by name,
        gets the stored result of the finished ones and runs the rest again.
        This is how a story that completed with failed pictures is retried.
        A Pending node is returned as it is; an InProgress one is refused.
        """
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
        # Only if it is still finished: another process may have reopened and
        # started it since we read it.
        cur = self._apply(
            (
                "UPDATE nodes SET status = 'Pending', started_at = NULL, finished_at = NULL, "
                "error = NULL, output = NULL WHERE id = ? AND status IN ('Completed', 'Failed')",
                (id,),
            )
        )
        if cur.rowcount != 1 and self.status_of(id) == "InProgress":
            raise EntityGraphError(
                f"cannot reopen {record.type} ({record.name}): another process started it "
                "meanwhile; only Completed or Failed nodes can be reopened"
            )
        return self.get_node(id)

    def delete_tree(self, id: str) -> list[NodeRecord]:
        """Delete a root node and every node under it, with their progress logs
        and leases, in one transaction; return what was deleted (root first).

        For tools that forget a story (``storylab stories delete``). Refused
        with :class:`EntityGraphError`, nothing changed, for a node that is not
        a root, or a tree in which a node runs (InProgress under a live lease).
        Blobs are not touched: they are shared by content, so the caller
        decides which ones nothing refers to any more.
        """
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
        marks = ", ".join("?" for _ in ids)
        with self._lock:
            self._apply(
                (f"DELETE FROM progress WHERE node_id IN ({marks})", tuple(ids)),
                (f"DELETE FROM leases WHERE node_id IN ({marks})", tuple(ids)),
                # Children first: each row's parent is still there when it goes.
                *((("DELETE FROM nodes WHERE id = ?", (i,))) for i in reversed(ids)),
            )
            self._parents.difference_update(ids)
            self.flush()
        return nodes

    def copy_to(self, path: str | os.PathLike[str]) -> Path:
        """Write a consistent copy of the graph, blobs included: the file to
        ``path`` (or ``path/graph.sqlite`` for a folder) through SQLite's
        online backup (a snapshot, even while others write), and the blob
        folder beside it (``<name>.blobs``). Return the new file's path.

        A graph is its file *and* its blob folder; this is how to move or copy
        it. Refused with :class:`EntityGraphError`, nothing written, if either
        target exists or the target folder does not.
        """
        import shutil

        dest = Path(path)
        if dest.is_dir():
            dest = dest / "graph.sqlite"
        blobs = dest.with_suffix(".blobs")
        for target in (dest, blobs):
            if target.exists():
                raise EntityGraphError(f"{target} already exists: choose a new name")
        if not dest.parent.is_dir():
            raise EntityGraphError(f"the folder {dest.parent} does not exist")
        with self._lock:
            if not self.read_only:
                self.flush()
            copy = sqlite3.connect(dest)
            try:
                self._conn.backup(copy)
            except BaseException:
                copy.close()
                dest.unlink(missing_ok=True)
                raise
            copy.close()
        if self.blobs.root.is_dir():
            try:
                shutil.copytree(self.blobs.root, blobs)
            except BaseException:
                dest.unlink(missing_ok=True)
                shutil.rmtree(blobs, ignore_errors=True)
                raise
        else:
            blobs.mkdir()
        return dest

    def _set_status(self, id: str, status: EntityStatus | str) -> None:
        """Force a stored status (for tools and tests that simulate a crash)."""
        allowed = {s.value for s in EntityStatus}
        if status not in allowed:
            raise ValueError(f"status must be one of {sorted(allowed)}; got {status!r}")
        self._apply(("UPDATE nodes SET status = ? WHERE id = ?", (str(status), id)))


def _again(error: LeaseLostError) -> LeaseLostError:
    """A fresh copy of a lease-lost error, to raise once more."""
    return LeaseLostError(str(error), node_id=error.node_id)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(waiters: list[asyncio.Future], error: Callable[[], BaseException] | None) -> None:
    """Resolve the futures of runs waiting for a commit, or if it failed give
    each its own exception made by ``error``, from whichever thread committed."""
    loop = waiters[0].get_loop()
    if loop is not _running_loop():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_settle, waiters, error)
        return
    for waiter in waiters:
        if not waiter.done():  # a waiter cancelled meanwhile is left alone
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error())


_PROGRESS_INSERT = (
    "INSERT INTO progress (node_id, type, status, message, sub_type, value, error, at, more) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_INSERT_NODE = (
    "INSERT INTO nodes (id, name, type, status, data, parent_id, created_at, started_at, "
    "finished_at, error, output, call_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NODE_EXISTS = "SELECT 1 FROM nodes WHERE id = ?"
_ROOT_TAKEN = "SELECT 1 FROM nodes WHERE parent_id IS NULL AND name = ?"
_CHILD_TAKEN = "SELECT 1 FROM nodes WHERE parent_id = ? AND coalesce(call_path, name) = ?"

_LEASE_COLUMNS = "node_id, owner, host, pid, token, taken_at, heartbeat_at, expires_at"
_LEASE_COLUMNS_OF_L = ", ".join("l." + c for c in _LEASE_COLUMNS.split(", "))
_LEASE_UPSERT = f"INSERT OR REPLACE INTO leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
