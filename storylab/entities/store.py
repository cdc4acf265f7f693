"""The store interface: the few operations the entity layer needs from a graph store.

:class:`~storylab.entities.entity.RunnableEntity` and
:class:`~storylab.entities.run.EntityRun` call nothing else on their graph.
:class:`~storylab.entities.sqlite.EntityGraph` (one SQLite file) and
:class:`~storylab.entities.postgres.store.PostgresGraph` (a PostgreSQL
server, for several hosts) implement it, and the entity classes work
unchanged on either; ``tests/entities/conformance`` runs one suite of these
promises against both.

What every implementation promises (the SQLite one documents how it keeps
each promise, in :mod:`storylab.entities.sqlite`):

* **Names are unique** under a parent (by call path) and among roots, decided
  by the store itself even when several processes create at once.
* **Each operation is atomic** and never spans an ``await``; operations may be
  committed later, in groups, but a finished run's end is handed on only once
  :meth:`EntityStore.commit_waiter` says it is stored.
* **A running node is leased** to one owner, and **every write under a lease
  is fenced** by it: the node's progress, its data, its children (created
  and started), its end. A write made after another owner took the node
  over stores nothing and raises
  :class:`~storylab.entities.errors.LeaseLostError` (its message says who
  took it, and whether our lease had expired); so does every later one. (A
  progress envelope is buffered: one found fenced at its commit is dropped,
  and the run is told as below.) What a run writes outside the store (a
  blob file) is preceded by :meth:`EntityStore.check_lease`. Writes to a
  node nobody here holds a lease on (outside a run) are not fenced.
* **Leases are kept alive** while their runs execute (a heartbeat), through
  a locked or failing store for as long as they can be; a lease that cannot
  be kept, or that is found taken over, is reported to its run's
  ``on_lost`` callback (see :meth:`EntityStore.run_started`), which stops
  the run.
* **Waiting is awaited.** A run's writes that may have to wait for another
  writer (a lock held elsewhere) are preceded by awaiting
  :meth:`EntityStore.write_waiter`, which does that waiting without blocking
  the event loop (SQLite: it opens the write transaction; a server database:
  it would take a connection and begin), so progress, heartbeats and
  deadlines go on meanwhile.
* **Progress** is logged per node and read back per subtree, in log order.

Ids are strings; records are :class:`~storylab.entities.records.NodeRecord`
and :class:`~storylab.entities.records.LeaseRecord`; statuses are the strings
of :class:`~storylab.entities.records.EntityStatus` (plus ``"busy"`` from
:meth:`EntityStore.claim`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from storylab.entities.blobs import Blobs
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import LeaseLostError
from storylab.entities.records import LeaseRecord, NodeRecord

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity

__all__ = ["EntityStore"]


@runtime_checkable
class EntityStore(Protocol):
    """What an entity and its runs need from the store holding their graph."""

    @property
    def path(self) -> Path | str:
        """Where the graph lives (shown in messages; never with a password)."""
        ...

    blobs: Blobs
    """Binary outputs, by content key (readable from every process of the graph)."""

    @property
    def key(self) -> str:
        """Names the graph in this process's table of live runs: two handles
        on the same graph must give the same key."""
        ...

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease outlives its owner's last heartbeat."""
        ...

    @property
    def is_gone(self) -> bool:
        """Whether the graph's storage vanished (nothing more can be stored)."""
        ...

    # ------------------------------------------------------------ reading

    def get_node(self, id: str) -> NodeRecord:
        """The node as stored; ``UnknownEntityError`` if there is none."""
        ...

    def children(self, id: str) -> list[NodeRecord]:
        """Direct children, in creation order."""
        ...

    def status_of(self, id: str) -> str:
        """The node's stored status."""
        ...

    def data_of(self, id: str) -> dict:
        """A fresh copy of the node's stored data."""
        ...

    # ----------------------------------------------------------- creating

    def revive(
        self, record: NodeRecord, expected: type[RunnableEntity] | None = None
    ) -> RunnableEntity:
        """The entity for ``record``: an instance of ``expected`` (which must be
        its type, else ``EntityTypeMismatchError``) or of its registered class."""
        ...

    def insert_node(
        self,
        cls: type[RunnableEntity],
        name: str,
        data: Any,
        parent_id: str | None,
        call_path: str | None = None,
    ) -> NodeRecord:
        """Create a Pending node; ``DuplicateNameError`` if the key is taken."""
        ...

    def insert_or_get_node(
        self,
        cls: type[RunnableEntity],
        name: str,
        data: Any,
        parent_id: str | None,
        call_path: str | None = None,
    ) -> NodeRecord:
        """The node with this key, created (Pending, with ``data``) if missing."""
        ...

    def insert_or_get_encoded(
        self,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        parent_id: str | None,
        call_path: str | None,
    ) -> NodeRecord:
        """:meth:`insert_or_get_node` for a type name and data already checked
        and encoded (``data_json``), as the fan-out path has them."""
        ...

    # ------------------------------------------------------------ running

    def commit_peers(self) -> None:
        """Commit what other handles of this process hold pending on the same
        graph, so that a run neither waits for them nor reads behind them."""
        ...

    def write_waiter(self) -> Awaitable[None] | None:
        """``None`` if writes can be made now without waiting; else an
        awaitable that returns once they can (awaiting, never blocking the
        event loop, while another process holds the store's write lock).
        Writes made right after it, with no ``await`` between, do not wait."""
        ...

    def start_if_pending(self, id: str, env: Envelope, parent_id: str | None = None) -> bool:
        """Make a Pending node InProgress, leased to this handle, and log the
        ``STARTED`` envelope ``env``, in one operation; False if not Pending.
        Fenced by the lease on ``parent_id`` when this handle holds it."""
        ...

    def claim(
        self, id: str, env: Envelope, parent_id: str | None = None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """Decide what starting a node that was not Pending does, in one
        operation: ``("Completed", output, None, env)``; ``("busy", None,
        lease, env)`` while another owner's lease is live; else the node is
        taken (InProgress, leased, result cleared, the start envelope logged)
        and its former status comes back with the lease it was taken from and
        the start envelope as logged. Fenced like :meth:`start_if_pending`."""
        ...

    def run_started(self, id: str, on_lost: Callable[[LeaseLostError], None]) -> None:
        """The run of ``id`` began executing in this process under our lease:
        keep the lease alive, and call ``on_lost`` (on the event loop, with
        the error that says why) if it is lost: taken over by another owner,
        or about to expire because it could not be renewed."""
        ...

    def run_ended(self, id: str) -> None:
        """The run that :meth:`run_started` ended; after the last one everything
        pending is made durable."""
        ...

    def append_progress(self, env: Envelope) -> None:
        """Append an envelope to its node's progress log (fenced: an envelope
        of a node whose lease was lost is never stored)."""
        ...

    def finish_completed(
        self, id: str, output_json: str, value_env: Envelope, done_env: Envelope
    ) -> bool:
        """Store a run's output and log its end, if we still hold the lease;
        ``LeaseLostError``, and nothing stored, if another owner took it over."""
        ...

    def finish_failed(
        self, id: str, error: dict, error_env: Envelope, failed_env: Envelope
    ) -> bool:
        """Store a run's error and log its end, under the same lease rule."""
        ...

    def commit_waiter(self, id: str | None = None) -> asyncio.Future | None:
        """A future resolved once what is stored so far is durable (or set to
        the commit's error); ``None`` if it already is (given ``id``: if that
        node did not finish in what is still pending)."""
        ...

    def release_lease(self, id: str) -> None:
        """Give up the lease on a node whose run was abandoned (it stays InProgress)."""
        ...

    def check_lease(self, id: str) -> None:
        """Raise ``LeaseLostError`` if this handle held the lease on ``id`` and
        lost it: checked before a run writes outside the store's transactions
        (a blob), where the fence cannot be part of the write itself."""
        ...

    def check_file(self) -> None:
        """Raise ``GraphFileGoneError`` if the graph's storage vanished."""
        ...

    # ------------------------------------------------ waiting on another owner

    def progress_mark(self, id: str) -> int:
        """A position in the log just before the node's latest start."""
        ...

    def progress_after(self, id: str, seq: int) -> tuple[list[Envelope], int]:
        """The envelopes of ``id``'s subtree logged after position ``seq``, and
        the position of the last one read."""
        ...

    def poll_lease(self, id: str) -> tuple[str, LeaseRecord | None]:
        """The node's status and lease, read together."""
        ...

    def lease_state(self, lease: LeaseRecord, now: float | None = None) -> str:
        """``"live"``, ``"expired"`` or ``"owner gone"``."""
        ...

    # --------------------------------------------------------------- data

    def set_data(self, id: str, data_json: str) -> None:
        """Replace the node's data with the encoded ``data_json``. This and the
        other data writes are fenced by the node's lease when we hold it."""
        ...

    def merge_data(self, id: str, changes: dict) -> dict:
        """Merge top-level ``changes`` into the data (read and written in one
        operation); the new data."""
        ...

    def set_data_path(self, id: str, path: tuple[str, ...], value: Any) -> dict:
        """Set one nested key (missing levels become dicts), in one operation."""
        ...

    def reopen(self, id: str) -> NodeRecord:
        """Make a finished node Pending again (its children and data stay)."""
        ...
