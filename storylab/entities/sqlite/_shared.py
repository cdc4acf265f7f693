"""What the parts of the SQLite store share: settings, SQL, the table of
open graphs, and small helpers."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storylab.entities._reads import NODE_COLUMNS
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import LeaseLostError
from storylab.entities.records import LeaseRecord, NodeRecord

if TYPE_CHECKING:
    from storylab.entities.sqlite.store import EntityGraph

log = logging.getLogger("storylab.entities")

COMMIT_MODES = ("batched", "interval", "operation")

_NODE_COLUMNS = NODE_COLUMNS


def _commit_all() -> None:
    for peers in list(_OPEN.values()):
        for graph in list(peers):
            graph._commit(block=True)


atexit.register(_commit_all)

# Every open graph of this process, by file, so that one graph can commit the
# others' pending transaction before it takes the write lock: two connections
# of one thread waiting on each other would otherwise wait forever.
_OPEN: dict[str, weakref.WeakSet[EntityGraph]] = {}


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
# A reopening left to the next transaction (Writes._may_defer_reopen).
_REOPEN = (
    "UPDATE nodes SET status = 'Pending', started_at = NULL, finished_at = NULL, error = NULL, "
    "output = NULL WHERE id = ? AND status IN ('Completed', 'Failed')"
)

_LEASE_COLUMNS = "node_id, owner, host, pid, token, taken_at, heartbeat_at, expires_at"
_LEASE_COLUMNS_OF_L = ", ".join("l." + c for c in _LEASE_COLUMNS.split(", "))
_LEASE_UPSERT = f"INSERT OR REPLACE INTO leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


class GraphState:
    """The state every part of :class:`~storylab.entities.sqlite.EntityGraph`
    shares (set by its ``__init__``, described there), and the methods the
    parts call on each other, declared for the type checker."""

    path: Path
    blobs: Any
    key: str
    read_only: bool
    _conn: sqlite3.Connection
    _commit_mode: str
    _commit_interval: float
    _live_runs: int
    _lock: threading.RLock
    _in_txn: bool
    _progress: list[Envelope]
    _commit_loop: asyncio.AbstractEventLoop | None
    _commit_handle: asyncio.Handle | None
    _commit_soon: bool
    _new_rows: dict[str, list]
    _new_keys: set[tuple[str | None, str]]
    _deferred: set[str]
    _reopens: set[str]
    _closing: threading.Thread | None
    _parents: set[str]
    _commit_error: sqlite3.Error | None
    _waiters: list[asyncio.Future]
    _settling: set[str]
    _key: str
    _closed: bool
    _lease_ttl: float
    _lease_heartbeat: float
    _pid: int
    _owner: str
    _token: str
    _new_leases: dict[str, float]
    _heartbeat: asyncio.Task | None
    _held: dict[str, float]
    _lost: dict[str, LeaseLostError]
    _checked: set[str]
    _watchers: dict[str, Callable[[LeaseLostError], None]]
    _busy_ms: int
    _retry_delay: float
    _file_id: Any
    _gone: str | None

    if TYPE_CHECKING:  # defined by one part, called by another

        def flush(self) -> None: ...
        def close(self) -> None: ...
        def get_node(self, id: str) -> NodeRecord: ...
        def descendants(self, id: str) -> list[NodeRecord]: ...
        def lease(self, id: str) -> LeaseRecord | None: ...
        def _stored(self, text: str | None, id: str, column: str) -> Any: ...
        def status_of(self, id: str) -> str: ...
        def lease_state(self, lease: LeaseRecord, now: float | None = None) -> str: ...
        def _begin(self) -> sqlite3.Connection: ...
        def _try_begin(self) -> bool: ...
        def _apply(self, *steps: tuple[str, tuple]) -> sqlite3.Cursor: ...
        def _schedule_commit(self, terminal: bool = False) -> None: ...
        def _commit(self, block: bool = False, *, final: bool = False) -> None: ...
        def _has_pending(self) -> bool: ...
        def _write_nodes(self) -> None: ...
        def _write_pending(self) -> bool: ...
        def _fence_deferred(self) -> None: ...
        def _opened(self) -> None: ...
        def check_lease(self, id: str) -> None: ...
        def append_progress(self, env: Envelope) -> None: ...
        def release_lease(self, id: str) -> None: ...
        def poll_lease(self, id: str) -> tuple[str, LeaseRecord | None]: ...
        def progress_mark(self, id: str) -> int: ...
        def progress_after(self, id: str, seq: int) -> tuple[list[Envelope], int]: ...
        def check_file(self) -> None: ...
        def data_of(self, id: str) -> dict: ...
        def _status_output(self, id: str) -> tuple[str, Any]: ...
        def _write_leases(self) -> None: ...
        def _write_progress(self) -> None: ...
        def _log(self, *envs: Envelope) -> None: ...
        def _read(self, sql: str, params: tuple = ()) -> list[tuple]: ...
        def _fence(self, node: str | None) -> None: ...
        def _took(self, id: str, at: float) -> None: ...
        def _mark_lost(self, errors: dict[str, LeaseLostError]) -> None: ...
        def _lease_lost_error(
            self, node: str, owner: str | None = None, *, read: bool = True
        ) -> LeaseLostError: ...
        def _drop_lease(self, conn: sqlite3.Connection, id: str) -> bool: ...
        def _key_taken(self, conn: sqlite3.Connection, parent_id: str | None, key: str) -> bool: ...
        def _by_name(
            self, name: str, parent_id: str | None, call_path: str | None = None
        ) -> NodeRecord | None: ...
