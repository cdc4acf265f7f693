"""Runnable entities: units of work that remember that they ran.

The problem: a long pipeline makes many calls (a safety check, a writer, a
dozen images). If the process dies at image seven, starting again should not
redo the first six, and while it runs you want to see which step is where.
An entity is a unit of work bound to a persisted node of the
:class:`~storylab.entities.graph.EntityGraph`:

* its **status** (``Pending`` -> ``InProgress`` -> ``Completed`` or ``Failed``)
  and its **output** are stored, so a ``Completed`` entity is never run again:
  starting it just hands back the stored output;
* its **children** are created by name (:meth:`RunnableEntity.append_or_retrieve_call`),
  so a re-run finds the children it made before instead of making new ones;
* everything it reports (its *envelopes*) is appended to its progress log.

Write one by subclassing :class:`RunnableEntity` and implementing
``run_impl`` as an async generator that yields envelopes and ends with
``yield Return(value)``::

    class Shout(RunnableEntity):
        async def run_impl(self):
            yield self.status("RUNNING", "shouting")
            yield Return(self.data["text"].upper())

Python async generators cannot ``return`` a value, hence the ``Return``
marker: the framework stops iterating ``run_impl`` once it sees it. To run a
child inside a parent and get its value back, either delegate::

    value = yield self.delegate(child)      # forwards the child's envelopes

or spell it out::

    run = child.start()
    async for env in run:
        yield env
    value = run.result

To take one of several paths, and have the children of each path keyed apart,
yield a condition: only the chosen branch runs (inline, delegated like a
child), and a child it creates is keyed ``label/key/name`` under this entity::

    story = yield self.condition("safety-gate", "safe" if ok else "rejected", {
        "safe": self.write_story,        # async generator functions, no arguments,
        "rejected": self.explain_refusal,  # each ending with yield Return(value)
    })

Status rules on :meth:`RunnableEntity.start`:

* ``Pending``: run it.
* ``Completed``: do not run; yield one ``VALUE(return)`` with the stored output.
* ``Failed``: call :meth:`RunnableEntity.reset`, then run again from the top.
* ``InProgress`` while a run of it is live in this process: attach to that
  run (receive its envelopes from now on, and its result); never run twice.
* ``InProgress`` under another process's live lease (see
  :mod:`storylab.entities.graph`): wait for it, passing on what that run
  logs (from its start), and hand back its stored result when it completes.
  If it fails, or its lease ends without a result, take it over as below.
* ``InProgress`` with no live owner (no lease, a lease that expired, or one
  whose process on this host is gone): it is stale. Take it over
  (InProgress under our lease, in one transaction), call
  :meth:`RunnableEntity.reset`, then run again.

A run whose consumer goes away before it ends (``break``, a cancelled task)
logs ``STATUS CANCELLED``, gives its lease back and stays ``InProgress``; the
next start, here or in another process, treats it as stale and runs it again.
A run whose lease is lost (another process took its node over after it
stalled past its lease, or its heartbeat could not renew it in time) is
stopped at once, stores nothing more (no progress, data, child or end) and
raises :class:`~storylab.entities.errors.LeaseLostError`.

The run itself (:class:`~storylab.entities.run.EntityRun`, and the markers
``Return``, ``Delegate`` and ``Condition``) lives in :mod:`storylab.entities.run`;
both modules reach the graph only through
:class:`~storylab.entities.store.EntityStore`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

from storylab.entities.encoding import dumps
from storylab.entities.envelopes import Envelope, EnvelopeType, StatusEvent, ValueKind
from storylab.entities.errors import GraphFileGoneError, LeaseLostError
from storylab.entities.records import NodeRecord
from storylab.entities.registry import (
    check_entity_class,
    check_new,
    entity_class,
    register,
    register_base,
    registered_types,
    revive,
)
from storylab.entities.run import Condition, Delegate, EntityRun, Return
from storylab.entities.store import EntityStore

__all__ = [
    "Condition",
    "Delegate",
    "EntityRun",
    "Return",
    "RunnableEntity",
    "entity_class",
    "registered_types",
]

log = logging.getLogger("storylab.entities")

# ``type`` is also a property of RunnableEntity, so its annotations name this.
EntityClass: TypeAlias = "type[RunnableEntity]"


_STATUS_EVENTS = frozenset(StatusEvent)

# Plain strings for the hot path (StrEnum members compare equal to them).
_make_envelope = Envelope._make
_STATUS, _ENTITY = EnvelopeType.STATUS.value, "ENTITY"


class _StatusValue(str):
    """The stored status (compares like the string), callable to build a
    ``STATUS`` envelope: ``yield self.status("RUNNING", "writing")``."""

    __slots__ = ("_entity",)
    _entity: RunnableEntity

    def __new__(cls, value: str, entity: RunnableEntity) -> _StatusValue:
        obj = super().__new__(cls, value)
        obj._entity = entity
        return obj

    def __call__(self, status: str, message: str | None = None) -> Envelope:
        return self._entity.status_envelope(status, message)


class _ChildThunk:
    """A runner task that starts one child when called (see ``parallel_calls``)."""

    __slots__ = ("entity", "entity_id", "label")

    def __init__(self, entity: RunnableEntity) -> None:
        self.entity = entity
        self.entity_id = entity.id
        self.label = entity.name

    def __call__(self) -> EntityRun:
        return self.entity.start()

    def __repr__(self) -> str:
        return f"<thunk {self.label!r} -> {self.entity_id}>"


class RunnableEntity:
    """A persisted unit of work. Subclass it and implement :meth:`run_impl`.

    Instances are made by the graph (:meth:`EntityGraph.create`,
    :meth:`EntityGraph.create_or_retrieve`, :meth:`EntityGraph.entity`) or by a
    parent (:meth:`append_call`, :meth:`append_or_retrieve_call`,
    :meth:`parallel_calls`); do not construct them directly. Each subclass is
    registered under its class name (or ``type_name=`` in the class
    statement), which is how a node read back from the store revives as the
    right class.
    """

    type_name: ClassVar[str] = "RunnableEntity"

    def __init_subclass__(cls, type_name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = type_name or cls.__name__
        register(cls)

    def __init__(self, graph: EntityStore, record: NodeRecord) -> None:
        self._graph: EntityStore = graph
        self._id = record.id
        self._name = record.name
        self._parent_id = record.parent_id
        self._call_path = record.call_path
        # ``label/key`` frames of the condition branches running now: children
        # created meanwhile are keyed under them.
        self._frames: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.type_name} {self._name!r} id={self._id}>"

    # ------------------------------------------------------------ properties

    @property
    def id(self) -> str:
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> str:
        return self.type_name

    @property
    def parent_id(self) -> str | None:
        return self._parent_id

    @property
    def graph(self) -> EntityStore:
        """The store holding this entity (an :class:`EntityGraph` for a SQLite file)."""
        return self._graph

    @property
    def call_path(self) -> str | None:
        """This child's key under its parent: its name, prefixed by the
        ``label/key`` of the condition branches it was created in. ``None``
        for a root entity."""
        return self._call_path

    @property
    def status(self) -> _StatusValue:
        """The stored status, read fresh from the graph (``"Pending"``, ...).

        Also callable: ``self.status("RUNNING", "message")`` builds a status
        envelope to yield (see :meth:`status_envelope`)."""
        return _StatusValue(self._graph.read(self._id, "status"), self)

    @property
    def data(self) -> dict:
        """A fresh copy of the stored data. Change it with :meth:`update_entity_data`."""
        return self._graph.read(self._id, "data")

    @property
    def record(self) -> NodeRecord:
        return self._graph.read(self._id)

    @property
    def output(self) -> Any:
        return self._graph.read(self._id, "output")

    # -------------------------------------------------------------- hooks

    async def run_impl(self) -> AsyncGenerator[Any, Any]:
        """Override: an async generator yielding envelopes, ending with
        ``yield Return(value)``. (A plain ``async def`` returning the value
        also works when there is nothing to report.)"""
        raise NotImplementedError(f"{self.type_name} must implement run_impl")
        yield  # pragma: no cover - makes this an async generator

    async def reset(self) -> None:
        """Override: called before re-running a Failed or stale entity."""

    @classmethod
    def output_from_json(cls, value: Any) -> Any:
        """Override to rebuild a typed output from its stored JSON form; the
        value a Completed entity hands back passes through here."""
        return value

    # ---------------------------------------------------------- envelopes

    def _envelope(self, type: str, **fields: Any) -> Envelope:
        return _make_envelope(type, self._id, self.type_name, self._name, **fields)

    def status_envelope(self, status: str, message: str | None = None) -> Envelope:
        if status not in _STATUS_EVENTS:
            allowed = ", ".join(StatusEvent)
            raise ValueError(f"status must be one of {allowed}; got {status!r}")
        return _make_envelope(
            _STATUS, self._id, self.type_name, self._name, str(status), message, None, _ENTITY
        )

    def progress(self, value: Any, message: str | None = None) -> Envelope:
        """A ``VALUE`` envelope with ``sub_type="progress"``, e.g. before a fan-out:
        ``yield self.progress({"stage": "images", "total": n, "items": names})``."""
        return self._envelope(
            EnvelopeType.VALUE, value=value, sub_type=ValueKind.PROGRESS.value, message=message
        )

    def internal_update(self, message: str, value: Any = None) -> Envelope:
        return self._envelope(EnvelopeType.INTERNAL_UPDATE, message=message, value=value)

    def delegate(self, child: RunnableEntity | EntityRun) -> Delegate:
        """``value = yield self.delegate(child)``: run the child inline."""
        return Delegate(child)

    def condition(self, label: str, key: str, branches: Mapping[str, Any]) -> Condition:
        """``value = yield self.condition(label, key, branches)``: run only the
        branch ``branches[key]`` and get its return value; children it creates
        are keyed ``label/key/name``. See :class:`Condition`. An unknown key
        raises :class:`~storylab.entities.errors.UnknownBranchError` here,
        naming the label, the key and the allowed keys."""
        return Condition(label, key, branches)

    # ------------------------------------------------------------- running

    def start(self) -> EntityRun:
        """A run handle: iterate it for envelopes, then read ``.result``.

        Nothing happens until the handle is iterated; the status rules of the
        module docstring are applied at that moment."""
        return EntityRun(self)

    async def run(self) -> Any:
        """Run to the end, discarding envelopes, and return the result."""
        run = EntityRun(self)
        async for _ in run:
            pass
        return run.result

    # ------------------------------------------------------- children

    def append_call(self, cls: EntityClass, name: str, data: dict | None = None):
        """Create a child called ``name`` (not started). Raises
        :class:`~storylab.entities.errors.DuplicateNameError` if this entity
        already has a child with that name."""
        return self._child(cls, name, data, exists_ok=False)

    def _child(self, cls: EntityClass, name: str, data: dict | None, exists_ok: bool):
        type_name, data_json = check_new(cls, name, data)
        record = self._graph.child(
            self._id,
            type_name,
            name,
            {} if data is None else data,
            data_json,
            self._child_path(name),
            exists_ok=exists_ok,
        )
        return revive(self._graph, record, cls)

    def _child_path(self, name: str, frames: tuple[str, ...] | None = None) -> str | None:
        frames = self._frames if frames is None else frames
        return "/".join((*frames, name)) if frames else None

    def append_or_retrieve_call(self, cls: EntityClass, name: str, data: dict | None = None):
        """The child called ``name``, created with ``data`` if it does not exist.

        An existing child is returned whatever its status, with its original
        data (``data`` is then ignored). Names are unique per parent in the
        store itself, so two processes doing this at once get the same child.
        """
        return self._child(cls, name, data, exists_ok=True)

    def parallel_calls(
        self, cls: EntityClass, items: Iterable[Mapping[str, Any]]
    ) -> AsyncIterator[_ChildThunk]:
        """A lazy source of runner tasks, one per item ``{"name", "data"}``.

        Each pull creates (or retrieves) the next child, in item order, and
        yields a thunk that starts it; so under a task-pool runner a child
        exists only once a capacity unit is held for it. Thunks carry
        ``label`` (the child's name) and ``entity_id``. The items are checked
        here, before any child is created.
        """
        check_entity_class(cls)
        checked: list[tuple[str, dict | None, str]] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise TypeError(f"items[{i}] must be a dict with 'name' and 'data'; got {item!r}")
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"items[{i}]['name'] must be a non-empty string; got {name!r}")
            data = item.get("data")
            if data is not None and not isinstance(data, dict):
                raise TypeError(f"items[{i}]['data'] must be a dict; got {type(data).__name__}")
            if name in seen:
                raise ValueError(f"items[{i}]['name'] {name!r} repeats items[{seen[name]}]")
            seen[name] = i
            data_json = dumps({} if data is None else data, what=f"items[{i}]['data']")
            checked.append((name, data, data_json))
        # Children are keyed under the condition branch that asked for them,
        # even though the runner pulls them later, from its own task.
        return self._parallel_calls(cls, checked, self._frames)

    async def _parallel_calls(self, cls, checked, frames):
        graph = self._graph
        create = graph.child
        type_name, parent_id = cls.type_name, self._id
        for name, data, data_json in checked:
            path = "/".join((*frames, name)) if frames else None
            waiter = graph.write_waiter()
            if waiter is not None:  # another process holds the write lock
                await waiter
            record = create(parent_id, type_name, name, data, data_json, path)
            yield _ChildThunk(revive(graph, record, cls))

    def store_blob(self, data: bytes, content_type: str) -> str:
        """Put ``data`` in the graph's blob store and return its key, unless
        this entity's run has lost its lease (then
        :class:`~storylab.entities.errors.LeaseLostError`, and nothing is
        written). Blobs are content-addressed: a key is only reachable
        through the data or output it is stored in, which are fenced too."""
        return self._graph.put_blob(self._id, data, content_type)

    def reopen(self) -> None:
        """Make this finished entity Pending again (see :meth:`EntityGraph.reopen`)."""
        self._graph.reopen(self._id)

    def children(self) -> list[NodeRecord]:
        return self._graph.children(self._id)

    # ------------------------------------------------------------- data

    async def update_entity_data(self, **changes: Any) -> None:
        """Merge ``changes`` into the stored data (top-level keys only: a
        nested dict is replaced whole). A storage error is logged as a
        warning and never raised: progress bookkeeping must not fail a run
        (except a deleted graph file: :class:`GraphFileGoneError`, and a lost
        lease: :class:`LeaseLostError`, after which the run must stop)."""
        try:
            await self._write_ready()
            self._graph.update_data(self._id, "merge", changes)
        except (GraphFileGoneError, LeaseLostError):
            raise  # not a bookkeeping hiccup: nothing can be stored any more
        except Exception:
            log.warning("failed to update entity data of %r", self, exc_info=True)

    async def update_data(self, data: dict) -> None:
        """Replace the stored data with ``data`` as a whole: keys absent from
        ``data`` are gone afterwards. Errors are raised, and a refused value
        changes nothing. (For a merge, see :meth:`update_entity_data`.)"""
        if not isinstance(data, dict):
            raise TypeError(f"entity data must be a dict; got {type(data).__name__}")
        data_json = dumps(data, what=f"data of entity {self._name!r}")
        await self._write_ready()
        self._graph.update_data(self._id, "replace", data_json)

    async def update_data_path(self, path: Sequence[str], value: Any) -> None:
        """Set one nested key: ``update_data_path(["story", "title"], "Owls")``
        sets ``data["story"]["title"]`` and leaves every other key alone.

        Missing intermediate keys are created as empty dicts. A path through a
        value that is not a dict, an empty path or a value that is not JSON
        raise before anything is written. The read and the write share one
        transaction, so no other writer can slip a change in between."""
        if isinstance(path, str) or not isinstance(path, Sequence):
            raise TypeError(f"path must be a list of keys, e.g. ['story', 'title']; got {path!r}")
        if not path:
            raise ValueError("path must name at least one key; got []")
        for i, key in enumerate(path):
            if not isinstance(key, str) or not key:
                raise TypeError(f"path[{i}] must be a non-empty string; got {key!r}")
        value_json = dumps(value, what=f"value at {'/'.join(path)!r}")
        await self._write_ready()
        self._graph.update_data(self._id, "path", json.loads(value_json), tuple(path))

    async def _write_ready(self) -> None:
        """Wait (awaiting, never blocking the loop) until the store can be written."""
        waiter = self._graph.write_waiter()
        if waiter is not None:
            await waiter


register_base(RunnableEntity)
