"""The store interface: what entities and their runs need from a graph store.

:class:`~storylab.entities.entity.RunnableEntity` and
:class:`~storylab.entities.run.EntityRun` call nothing else on their graph.
It is small on purpose, one member per need:

=========================  ===============================================
need                       members
=========================  ===============================================
read a node                :meth:`~EntityStore.read`, :meth:`~EntityStore.children`
create-or-get by name      :meth:`~EntityStore.child`
claim and lease            :meth:`~EntityStore.claim`, :meth:`~EntityStore.run_started`,
                           :meth:`~EntityStore.run_ended`, :meth:`~EntityStore.abandon`
fenced writes              :meth:`~EntityStore.write_waiter`, :meth:`~EntityStore.append_progress`,
                           :meth:`~EntityStore.update_data`, :meth:`~EntityStore.reopen`
finish                     :meth:`~EntityStore.finish`, :meth:`~EntityStore.commit_waiter`
another owner's progress   :meth:`~EntityStore.progress_since`, :meth:`~EntityStore.lease_of`
blobs                      :meth:`~EntityStore.put_blob`, :attr:`~EntityStore.blobs`
naming the graph           :attr:`~EntityStore.key`
=========================  ===============================================

:class:`~storylab.entities.sqlite.EntityGraph` (one SQLite file) and
:class:`~storylab.entities.postgres.store.PostgresGraph` (a PostgreSQL
server, for several hosts) implement it, and the entity classes work
unchanged on either; ``tests/entities/conformance`` runs one suite of these
promises against both. A store's other methods (the read API of the command
line and the plots, opening, copying) are its own.

What every implementation promises (the SQLite one documents how it keeps
each promise, in :mod:`storylab.entities.sqlite`):

* **Names are unique** under a parent (by call path) and among roots, decided
  by the store itself even when several processes create at once.
* **Each operation is atomic** and never spans an ``await``; operations may be
  committed later, in groups, but a finished run's end is handed on only once
  :meth:`EntityStore.commit_waiter` says it is stored.
* **A running node is leased** to one owner, and **every write under a lease
  is fenced** by it: the node's progress, its data, its children (created
  and started), its end, its blobs. A write made after another owner took
  the node over stores nothing and raises
  :class:`~storylab.entities.errors.LeaseLostError` (its message says who
  took it, and whether our lease had expired); so does every later one. (A
  progress envelope is buffered: one found fenced at its commit is dropped,
  and the run is told as below.) Writes to a node nobody here holds a lease
  on (outside a run) are not fenced.
* **Leases are kept alive** while their runs execute (a heartbeat), through
  a locked or failing store for as long as they can be; a lease that cannot
  be kept, or that is found taken over, is reported to its run's
  ``on_lost`` callback (see :meth:`EntityStore.run_started`), which stops
  the run.
* **Waiting is awaited.** A run's writes that may have to wait for another
  writer (a lock held elsewhere) are preceded by awaiting
  :meth:`EntityStore.write_waiter`, which does that waiting without blocking
  the event loop, so progress, heartbeats and deadlines go on meanwhile.
* **Progress** is logged per node and read back per subtree, in log order.

Ids are strings; records are :class:`~storylab.entities.records.NodeRecord`
and :class:`~storylab.entities.records.LeaseRecord`; statuses are the strings
of :class:`~storylab.entities.records.EntityStatus` (plus ``"busy"`` from
:meth:`EntityStore.claim`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from storylab.entities.blobs import Blobs
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import LeaseLostError
from storylab.entities.records import LeaseRecord, NodeRecord

__all__ = ["DATA_CHANGES", "READ_FIELDS", "EntityStore"]

READ_FIELDS = ("status", "data", "output")
"""What :meth:`EntityStore.read` can read alone, besides the whole record."""

DATA_CHANGES = ("replace", "merge", "path")
"""The kinds of change :meth:`EntityStore.update_data` makes."""


@runtime_checkable
class EntityStore(Protocol):
    """What an entity and its runs need from the store holding their graph."""

    @property
    def key(self) -> str:
        """Names the graph in this process's table of live runs: two handles
        on the same graph give the same key (never with a password)."""
        ...

    blobs: Blobs
    """Binary outputs, by content key: read them here (``get``, ``exists``),
    from any process of the graph; a run writes them with :meth:`put_blob`."""

    # ------------------------------------------------------------ reading

    def read(self, id: str, field: Literal["status", "data", "output"] | None = None) -> Any:
        """The node as stored (a :class:`NodeRecord`), or only one of its
        :data:`READ_FIELDS` (the data as a fresh dict); ``UnknownEntityError``
        if there is no such node."""
        ...

    def children(self, id: str) -> list[NodeRecord]:
        """Direct children, in creation order."""
        ...

    # ----------------------------------------------------------- creating

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
        """The node keyed ``call_path or name`` under ``parent_id`` (among the
        roots for ``None``), created Pending with ``data`` (``data_json`` is
        its encoding, already checked) if missing; an existing one is handed
        back as stored, or with ``exists_ok=False`` refused with
        ``DuplicateNameError``. Fenced by the parent's lease when we hold it."""
        ...

    # ------------------------------------------------------------ running

    def write_waiter(self) -> Awaitable[None] | None:
        """``None`` if writes can be made now without waiting; else an
        awaitable that returns once they can (awaiting, never blocking the
        event loop, while another process holds the store's write lock).
        Writes made right after it, with no ``await`` between, do not wait."""
        ...

    def claim(
        self, id: str, env: Envelope, parent_id: str | None = None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """Start the node under our lease, or say why not, in one operation.

        ``("Pending", None, None, env)``: it was Pending and is now
        InProgress, leased to this handle, with the ``STARTED`` envelope
        ``env`` logged (the common case). ``("Completed", output, None,
        env)``: nothing to run. ``("busy", None, lease, env)``: another
        owner's lease is live. Otherwise the node is taken (InProgress,
        leased, result cleared, the start envelope logged) and its former
        status comes back with the lease it was taken from and the start
        envelope as logged. Fenced by the lease on ``parent_id`` when this
        handle holds it."""
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

    def abandon(self, id: str, env: Envelope) -> None:
        """A run of ``id`` was cut short before its end: log ``env`` (its
        ``CANCELLED``) and give the lease back (the node stays InProgress, so
        the next start takes it over). Nothing if the store is gone."""
        ...

    def append_progress(self, env: Envelope) -> None:
        """Append an envelope to its node's progress log (fenced: an envelope
        of a node whose lease was lost is never stored)."""
        ...

    def update_data(
        self,
        id: str,
        change: Literal["replace", "merge", "path"],
        value: Any,
        path: tuple[str, ...] = (),
    ) -> dict | None:
        """Change the node's data in one operation, fenced by its lease when we
        hold it: ``"replace"`` it with the encoded ``value`` (a JSON string;
        returns ``None``), ``"merge"`` the top-level keys of the dict
        ``value`` into it, or set the nested key ``path`` to ``value``
        (missing levels become dicts); those two return the new data."""
        ...

    def reopen(self, id: str) -> NodeRecord:
        """Make a finished node Pending again (its children and data stay)."""
        ...

    def finish(
        self,
        id: str,
        status: Literal["Completed", "Failed"],
        stored_json: str,
        envs: tuple[Envelope, Envelope],
    ) -> None:
        """Store a run's end (``stored_json``: its output when Completed, its
        error when Failed) and log ``envs``, if we still hold the lease;
        ``LeaseLostError``, and nothing stored, if another owner took it."""
        ...

    def commit_waiter(self, id: str | None = None) -> asyncio.Future | None:
        """A future resolved once what is stored so far is durable (or set to
        the commit's error); ``None`` if it already is (given ``id``: if that
        node did not finish in what is still pending)."""
        ...

    # ------------------------------------------------ waiting on another owner

    def progress_since(self, id: str, seq: int | None) -> tuple[list[Envelope], int]:
        """The envelopes of ``id``'s subtree logged after position ``seq``,
        and the position of the last one read; with ``seq=None``, no
        envelopes and the position just before the node's latest start.
        ``GraphFileGoneError`` if the graph's storage vanished."""
        ...

    def lease_of(self, id: str) -> tuple[str, LeaseRecord | None, str | None]:
        """The node's status and lease, read together, and the lease's state:
        ``"live"``, ``"expired"`` or ``"owner gone"`` (``None`` without one)."""
        ...

    # --------------------------------------------------------------- blobs

    def put_blob(self, id: str, data: bytes, content_type: str) -> str:
        """Store ``data`` and return its key, unless this handle held the lease
        on ``id`` and lost it (then ``LeaseLostError``, nothing written)."""
        ...
