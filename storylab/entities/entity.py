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
A run that finds, when it ends, that another process took its node over (it
stalled past its lease) stores nothing and raises
:class:`~storylab.entities.errors.LeaseLostError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from storylab.entities.encoding import dumps
from storylab.entities.envelopes import Envelope, EnvelopeType, StatusEvent, ValueKind
from storylab.entities.errors import (
    EntityGraphError,
    EntityRunInterrupted,
    GraphFileGoneError,
    LeaseLostError,
    UnknownBranchError,
)
from storylab.entities.records import EntityStatus, NodeRecord
from storylab.entities.registry import (
    LIVE,
    check_entity_class,
    entity_class,
    register,
    register_base,
    registered_types,
)
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

_LIVE = LIVE


def _is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` leaving ``run_impl`` means the entity failed.

    Any ``Exception`` does. A ``CancelledError`` does only when nobody is
    cancelling the running task (it came from inside, e.g. a library that
    cancelled its own future); a real cancellation, a closed run
    (``GeneratorExit``) or a ``KeyboardInterrupt`` abandons the run instead.
    """
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and not task.cancelling()
    return False


_STATUS_EVENTS = frozenset(StatusEvent)

# Plain strings for the hot path (StrEnum members compare equal to them).
_make_envelope = Envelope._make
_STATUS, _VALUE = EnvelopeType.STATUS.value, EnvelopeType.VALUE.value
_STARTED, _COMPLETED = StatusEvent.STARTED.value, StatusEvent.COMPLETED.value
_ENTITY, _RETURN = "ENTITY", ValueKind.RETURN.value
_PENDING, _COMPLETED_NODE = EntityStatus.PENDING.value, EntityStatus.COMPLETED.value
_IN_PROGRESS, _BUSY = EntityStatus.IN_PROGRESS.value, "busy"
_ERROR = EnvelopeType.ERROR.value
_OWN_EDGES = frozenset({_STARTED, _COMPLETED, StatusEvent.FAILED.value})
# How often a run waiting on another process's lease looks again (seconds):
# soon at first, then backing off.
_POLL_FIRST, _POLL_MAX = 0.02, 0.25


class Return:
    """``yield Return(value)`` ends ``run_impl`` with ``value`` as the output."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Return({self.value!r})"


class Delegate:
    """``value = yield Delegate(child)``: run ``child`` (an entity or a run)
    inline, forward its envelopes, and send its result back into ``run_impl``.
    A failure of the child is raised at the ``yield``."""

    __slots__ = ("target",)

    def __init__(self, target: RunnableEntity | EntityRun) -> None:
        if not isinstance(target, RunnableEntity | EntityRun):
            raise TypeError(f"Delegate needs an entity or an EntityRun; got {target!r}")
        self.target = target

    def start(self) -> EntityRun:
        t = self.target
        return t.start() if isinstance(t, RunnableEntity) else t


class Condition:
    """``value = yield self.condition(label, key, branches)``: run only
    ``branches[key]``, inline, and send its return value back.

    A branch is written like ``run_impl``: an async generator function taking
    no arguments that yields envelopes (or delegates) and ends with ``yield
    Return(value)``; a plain ``async def`` returning the value also works.
    Its envelopes are forwarded, its failure is raised at the ``yield``, and
    while it runs every child the entity creates is keyed by its *call path*
    ``label/key/name`` (``safety-gate/safe/story-writer``), so the same name
    in two branches means two children, and the same branch on a re-run
    finds the children it made before. The node keeps the plain ``name``.
    """

    __slots__ = ("label", "key", "branch")

    def __init__(self, label: str, key: str, branches: Mapping[str, Any]) -> None:
        if not isinstance(label, str) or not label.strip() or "/" in label:
            raise ValueError(
                f"condition label must be a non-empty string without '/'; got {label!r}"
            )
        if not isinstance(branches, Mapping) or not branches:
            raise TypeError(
                f"condition {label!r}: branches must be a non-empty dict of key -> async "
                f"generator function; got {branches!r}"
            )
        for k, fn in branches.items():
            if not isinstance(k, str) or not k or "/" in k:
                raise ValueError(
                    f"condition {label!r}: branch keys must be non-empty strings without "
                    f"'/'; got {k!r}"
                )
            if not callable(fn):
                raise TypeError(
                    f"condition {label!r}: branch {k!r} must be an async generator function "
                    f"(called with no arguments); got {fn!r}"
                )
        if not isinstance(key, str) or key not in branches:
            allowed = ", ".join(repr(k) for k in branches)
            raise UnknownBranchError(
                f"condition {label!r} has no branch for key {key!r}; allowed keys: {allowed}"
            )
        self.label = label
        self.key = key
        self.branch = branches[key]

    def __repr__(self) -> str:
        return f"Condition({self.label!r}, {self.key!r})"


class _StatusValue(str):
    """The stored status (compares like the string), callable to build a
    ``STATUS`` envelope: ``yield self.status("RUNNING", "writing")``."""

    __slots__ = ("_entity",)

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
        return _StatusValue(self._graph.status_of(self._id), self)

    @property
    def data(self) -> dict:
        """A fresh copy of the stored data. Change it with :meth:`update_entity_data`."""
        return self._graph.data_of(self._id)

    @property
    def record(self) -> NodeRecord:
        return self._graph.get_node(self._id)

    @property
    def output(self) -> Any:
        return self._graph.get_node(self._id).output

    # -------------------------------------------------------------- hooks

    async def run_impl(self) -> AsyncIterator[Any]:
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

    def append_call(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """Create a child called ``name`` (not started). Raises
        :class:`~storylab.entities.errors.DuplicateNameError` if this entity
        already has a child with that name."""
        record = self._graph.insert_node(cls, name, data, self._id, self._child_path(name))
        return self._graph.revive(record, cls)

    def _child_path(self, name: str, frames: tuple[str, ...] | None = None) -> str | None:
        frames = self._frames if frames is None else frames
        return "/".join((*frames, name)) if frames else None

    def append_or_retrieve_call(
        self, cls: type[RunnableEntity], name: str, data: dict | None = None
    ):
        """The child called ``name``, created with ``data`` if it does not exist.

        An existing child is returned whatever its status, with its original
        data (``data`` is then ignored). Names are unique per parent in the
        store itself, so two processes doing this at once get the same child.
        """
        record = self._graph.insert_or_get_node(cls, name, data, self._id, self._child_path(name))
        return self._graph.revive(record, cls)

    def parallel_calls(
        self, cls: type[RunnableEntity], items: Iterable[Mapping[str, Any]]
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
            data_json = dumps({} if data is None else data, what=lambda i=i: f"items[{i}]['data']")
            checked.append((name, data, data_json))
        # Children are keyed under the condition branch that asked for them,
        # even though the runner pulls them later, from its own task.
        return self._parallel_calls(cls, checked, self._frames)

    async def _parallel_calls(self, cls, checked, frames):
        graph = self._graph
        create = graph.insert_or_get_encoded
        type_name, parent_id = cls.type_name, self._id
        for name, data, data_json in checked:
            path = "/".join((*frames, name)) if frames else None
            record = create(type_name, name, data, data_json, parent_id, path)
            yield _ChildThunk(graph.revive(record, cls))

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
        (except a deleted graph file: :class:`GraphFileGoneError`)."""
        try:
            self._graph.merge_data(self._id, changes)
        except GraphFileGoneError:
            raise  # not a bookkeeping hiccup: nothing can be stored any more
        except Exception:
            log.warning("failed to update entity data of %r", self, exc_info=True)

    async def update_data(self, data: dict) -> None:
        """Replace the stored data with ``data`` as a whole: keys absent from
        ``data`` are gone afterwards. Errors are raised, and a refused value
        changes nothing. (For a merge, see :meth:`update_entity_data`.)"""
        if not isinstance(data, dict):
            raise TypeError(f"entity data must be a dict; got {type(data).__name__}")
        self._graph.set_data(self._id, dumps(data, what=f"data of entity {self._name!r}"))

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
        self._graph.set_data_path(self._id, tuple(path), json.loads(value_json))


register_base(RunnableEntity)


def _error_info(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


_UNSET = object()
_END = object()


class EntityRun:
    """The handle :meth:`RunnableEntity.start` returns.

    ``async for env in run`` streams the envelopes; afterwards ``run.result``
    is the entity's output. If the entity failed, iterating raised its
    exception (after the ``ERROR`` and ``STATUS FAILED`` envelopes) and
    ``run.result`` raises it again.
    """

    __slots__ = ("entity", "_gen", "_result", "_error", "_followers", "_done")

    def __init__(self, entity: RunnableEntity) -> None:
        self.entity = entity
        self._gen: AsyncIterator[Envelope] | None = None
        self._result: Any = _UNSET
        self._error: BaseException | None = None
        self._followers: list[asyncio.Queue] = []
        self._done = False

    def __repr__(self) -> str:
        state = "done" if self._done else ("running" if self._gen else "not started")
        return f"<EntityRun {self.entity!r} {state}>"

    def __aiter__(self) -> EntityRun:
        return self

    def __anext__(self):
        gen = self._gen
        if gen is None:
            gen = self._gen = self._drive()
        return gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        if self._result is _UNSET:
            raise RuntimeError(
                f"{self.entity!r} has not finished: iterate the run to the end before "
                "reading .result (or use `await entity.run()`)"
            )
        return self._result

    # The generator behind the handle.
    async def _drive(self) -> AsyncIterator[Envelope]:
        entity = self.entity
        graph = entity._graph
        key = (graph.key, entity._id)
        live = _LIVE.get(key)
        if live is not None and live is not self:
            async for env in self._follow(live):
                yield env
            return
        graph.commit_peers()
        entity_id, type_name, name = entity._id, entity.type_name, entity._name
        # The common case in one step: a Pending node becomes InProgress.
        started = _make_envelope(_STATUS, entity_id, type_name, name, _STARTED, None, None, _ENTITY)
        if graph.start_if_pending(entity_id, started):
            status = _PENDING
        else:
            while True:
                status, output, lease, started = graph.claim(entity_id, started)
                if status != _BUSY:
                    break
                # Another process runs it: wait, passing its progress on.
                async for env in self._wait(lease):
                    yield env
                live = _LIVE.get(key)
                if live is not None:  # another task of ours took it over meanwhile
                    async for env in self._follow(live):
                        yield env
                    return
                started = entity.status_envelope(StatusEvent.STARTED)
            if status == _COMPLETED_NODE:
                value = type(entity).output_from_json(output)
                # Finished in the transaction still open (by a run that is itself
                # waiting for it): hand the stored result on only once it is stored.
                waiter = graph.commit_waiter(entity_id)
                if waiter is not None:
                    try:
                        await waiter
                    except EntityGraphError as exc:
                        self._error = exc
                        self._done = True
                        raise
                self._result = value
                self._done = True
                yield _make_envelope(_VALUE, entity_id, type_name, name, None, None, value, _RETURN)
                return
        _LIVE[key] = self
        graph.run_started()
        impl = None
        gen = None
        branches: list[tuple[Any, tuple[str, ...]]] = []
        ended = False  # the end (Completed or Failed) is written, if not yet committed
        try:
            try:
                if status != _PENDING:  # Failed or stale, and ours now
                    await entity.reset()
                yield self._emit(started)
                impl = entity.run_impl()
                result = None
                if not hasattr(impl, "asend"):
                    result = await impl
                    impl = None
                else:
                    # ``gen`` is run_impl, or the condition branch running inside
                    # it; ``branches`` holds what to go back to when it ends.
                    gen = impl
                    send: Any = None
                    throw: BaseException | None = None
                    while True:
                        try:
                            if throw is not None:
                                exc, throw = throw, None
                                item = await gen.athrow(exc)
                            else:
                                item = await gen.asend(send)
                        except StopAsyncIteration:
                            if not branches:
                                gen = impl = None  # exhausted: nothing to close
                                break
                            item = Return(None)  # a branch that ended without Return
                        except Exception as exc:
                            if not branches:
                                raise
                            # The branch failed: raise it at the parent's yield.
                            gen, entity._frames = branches.pop()
                            throw = exc
                            continue
                        send = None
                        cls = type(item)
                        if cls is Return:
                            await gen.aclose()  # run its finally blocks now
                            if not branches:
                                result = item.value
                                gen = impl = None  # closed
                                break
                            gen, entity._frames = branches.pop()
                            send = item.value
                            continue
                        if cls is Delegate:
                            child_run = item.start()
                            try:
                                async for env in child_run:
                                    yield self._emit(env)
                            except Exception as exc:
                                throw = exc
                            else:
                                send = child_run.result
                            continue
                        if cls is Condition:
                            frames = entity._frames
                            entity._frames = (*frames, item.label, item.key)
                            try:
                                branch = item.branch()
                                if hasattr(branch, "asend"):
                                    branches.append((gen, frames))
                                    gen = branch
                                    continue
                                if not hasattr(branch, "__await__"):
                                    raise TypeError(
                                        f"branch {item.key!r} of condition {item.label!r} "
                                        f"returned {branch!r}: it must be an async generator "
                                        "function (or an async def)"
                                    )
                                send = await branch
                            except Exception as exc:
                                throw = exc
                            entity._frames = frames
                            continue
                        env = self._wrap(item)
                        if env.entity_id == entity._id:
                            graph.append_progress(env)
                        yield self._emit(env)
                output_json = dumps(result, what=lambda: f"output of {type_name} {name!r}")
            except BaseException as exc:
                if not _is_failure(exc):
                    raise  # cancelled or closed from outside: abandoned, not failed
                info = _error_info(exc)
                error_env = entity._envelope(
                    EnvelopeType.ERROR, error=info, message=f"{info['type']}: {info['message']}"
                )
                failed_env = entity.status_envelope(StatusEvent.FAILED, info["message"])
                if not graph.finish_failed(entity._id, info, error_env, failed_env):
                    self._lost(key)
                    raise self._error from exc
                ended = True
                await self._until_stored(key)  # a failed commit is raised instead of exc
                self._error = exc
                self._done = True
                yield self._emit(error_env)
                yield self._emit(failed_env)
                self._end()
                raise
            value_env = _make_envelope(
                _VALUE, entity_id, type_name, name, None, None, result, _RETURN
            )
            done_env = _make_envelope(
                _STATUS, entity_id, type_name, name, _COMPLETED, None, None, _ENTITY
            )
            if not graph.finish_completed(entity_id, output_json, value_env, done_env):
                self._lost(key)
                raise self._error
            ended = True
            await self._until_stored(key)
            self._result = result
            self._done = True
            if self._followers:
                self._emit(value_env)
                self._emit(done_env)
                self._end()
            yield value_env
            yield done_env
        except BaseException as exc:
            # Cancelled, or the consumer closed the run before it ended.
            if not self._done and ended:
                # Abandoned while waiting for the commit of its end: that end
                # is in the log and will be stored; only its delivery is lost.
                self._done = True
                self._error = EntityRunInterrupted(
                    f"the run of {entity!r} was abandoned while its end was being committed"
                )
            elif not self._done:
                self._done = True
                self._error = EntityRunInterrupted(
                    f"the run of {entity!r} was abandoned before it finished"
                )
                if not graph.is_gone:
                    try:
                        graph.append_progress(
                            entity.status_envelope(StatusEvent.CANCELLED, type(exc).__name__)
                        )
                        graph.release_lease(entity_id)
                    except Exception:
                        log.warning("could not log the cancellation of %r", entity, exc_info=True)
            self._end()
            raise
        finally:
            self._unregister(key)
            if impl is not None:  # abandoned or failed while run_impl was open
                entity._frames = ()
                # Close what is still open, innermost first (runs finally blocks).
                for g in (gen, *(g for g, _ in reversed(branches))):
                    if g is not None and g is not impl:
                        await g.aclose()
                if hasattr(impl, "aclose"):
                    await impl.aclose()

    async def _until_stored(self, key: tuple[str, str]) -> None:
        """Wait until the commit that holds this run's end has happened.

        Called once the end is written (into the open transaction), before
        anything of it is handed on: an envelope, ``result``, a follower. Every
        run that ended in one transaction waits for the same commit, so the
        batching stays. A failed commit is raised here and becomes the run's
        error: a result that was rolled back is never reported."""
        try:
            self._unregister(key)  # the last run of the graph commits at once
            waiter = self.entity._graph.commit_waiter()
            if waiter is not None:
                await waiter
        except EntityGraphError as exc:
            self._error = exc
            self._done = True
            raise

    def _unregister(self, key: tuple[str, str]) -> None:
        if _LIVE.get(key) is self:
            del _LIVE[key]
            self.entity._graph.run_ended()  # the last one makes everything durable

    def _lost(self, key: tuple[str, str]) -> None:
        """End a run whose node another process took over: store nothing."""
        entity = self.entity
        self._error = LeaseLostError(
            f"{entity!r} was taken over by another process while this one ran it (this "
            f"process went more than {entity._graph.lease_ttl:g} s without renewing its "
            "lease); its result here was not stored, the new owner's stands"
        )
        self._done = True
        self._unregister(key)
        self._end()

    async def _wait(self, lease: Any) -> AsyncIterator[Envelope]:
        """Wait while another process holds a live lease on the node, passing
        on what its subtree logs meanwhile. Returns when the lease is over
        (finished, failed, expired, owner gone) or a run of it started in this
        process; the caller then tries again.

        Nothing is held for the owner meanwhile but whatever the consumer
        holds (a runner's capacity unit, say): the owner is another process
        and needs none of ours, so this cannot deadlock."""
        entity = self.entity
        graph, entity_id = entity._graph, entity._id
        key = (graph.key, entity_id)
        seq = graph.progress_mark(entity_id)
        yield entity.status_envelope(
            StatusEvent.RUNNING, f"waiting for {lease.owner}, which is running it"
        )
        delay = _POLL_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            graph.check_file()
            if key in _LIVE:
                return
            envs, seq = graph.progress_after(entity_id, seq)
            for env in envs:
                # Its own start and end are not passed on: this run reports
                # the outcome itself once it is stored.
                if env.entity_id != entity_id or (
                    env.type != _ERROR and env.sub_type != _RETURN and env.status not in _OWN_EDGES
                ):
                    yield env
            status, now = graph.poll_lease(entity_id)
            if status != _IN_PROGRESS or now is None or graph.lease_state(now) != "live":
                return
            if now.token != lease.token:  # a new owner took it over meanwhile
                lease = now
                yield entity.status_envelope(
                    StatusEvent.RUNNING, f"waiting for {lease.owner}, which took it over"
                )

    def _wrap(self, item: Any) -> Envelope:
        if type(item) is Envelope:
            return item
        if isinstance(item, Mapping):
            kind = item.get("type", EnvelopeType.INTERNAL_UPDATE)
            if kind not in EnvelopeType.__members__.values():
                allowed = ", ".join(EnvelopeType)
                raise ValueError(f"a yielded dict's 'type' must be one of {allowed}; got {kind!r}")
            fields = {k: v for k, v in item.items() if k != "type"}
            unknown = set(fields) - {"status", "message", "value", "sub_type", "error"}
            if unknown:
                raise ValueError(f"a yielded dict has unknown envelope field(s) {sorted(unknown)}")
            return self.entity._envelope(str(kind), **fields)
        raise TypeError(
            f"run_impl of {self.entity.type_name} yielded {item!r}: yield envelopes "
            "(self.status(...), self.progress(...)), dicts, self.delegate(child) or Return(value)"
        )

    def _emit(self, env: Envelope) -> Envelope:
        for q in self._followers:
            q.put_nowait(env)
        return env

    def _end(self) -> None:
        for q in self._followers:
            q.put_nowait(_END)
        self._followers = []

    async def _follow(self, live: EntityRun) -> AsyncIterator[Envelope]:
        queue: asyncio.Queue = asyncio.Queue()
        live._followers.append(queue)
        try:
            while (env := await queue.get()) is not _END:
                yield env
        finally:
            if queue in live._followers:
                live._followers.remove(queue)
        self._done = True
        if live._error is not None:
            self._error = live._error
            raise live._error
        self._result = live._result
