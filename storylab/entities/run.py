"""Running an entity: the handle :meth:`RunnableEntity.start` returns, and what
``run_impl`` may yield to it.

An :class:`EntityRun` applies the status rules of :mod:`storylab.entities.entity`
when it is first iterated, in steps:

1. **attach**: a run of the same node already executing in this process is
   followed (its envelopes from now on, and its result), never run twice;
2. **claim**: a Pending node is started in one store operation (the common
   case); any other is claimed (:meth:`EntityStore.claim`): a Completed one
   hands back its stored result, one under another process's live lease is
   waited for (passing on what that run logs), a Failed or stale one is taken
   over;
3. **run the body**: ``run_impl`` is driven (:class:`_Body`), forwarding its
   envelopes and handling ``Return``, ``Delegate`` and ``Condition``;
4. **finish**: the end (Completed with its output, or Failed with its error) is
   stored, and handed on only once its commit is durable;
5. **abandon**: a run cut short (cancelled, closed by its consumer) logs
   ``STATUS CANCELLED`` and gives its lease back.

It reaches the store only through :class:`~storylab.entities.store.EntityStore`.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from storylab.entities.encoding import dumps, dumps_log
from storylab.entities.envelopes import Envelope, EnvelopeType, StatusEvent, ValueKind
from storylab.entities.errors import (
    EntityGraphError,
    EntityRunInterrupted,
    LeaseLostError,
    UnknownBranchError,
)
from storylab.entities.records import EntityStatus, LeaseRecord
from storylab.entities.registry import LIVE, is_entity

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity

__all__ = ["Condition", "Delegate", "EntityRun", "Return"]

log = logging.getLogger("storylab.entities")

# Plain strings for the hot path (StrEnum members compare equal to them).
_make_envelope = Envelope._make
_STATUS, _VALUE = EnvelopeType.STATUS.value, EnvelopeType.VALUE.value
_STARTED, _COMPLETED = StatusEvent.STARTED.value, StatusEvent.COMPLETED.value
_ENTITY, _RETURN = "ENTITY", ValueKind.RETURN.value
_PENDING = EntityStatus.PENDING.value
# The two ends a node can be finished with, spelt as the store's interface types them.
_COMPLETED_NODE: Literal["Completed"] = "Completed"
_FAILED_NODE: Literal["Failed"] = "Failed"
assert (_COMPLETED_NODE, _FAILED_NODE) == (EntityStatus.COMPLETED.value, EntityStatus.FAILED.value)
_IN_PROGRESS, _BUSY = EntityStatus.IN_PROGRESS.value, "busy"
_ERROR = EnvelopeType.ERROR.value
_OWN_EDGES = frozenset({_STARTED, _COMPLETED, StatusEvent.FAILED.value})
# How often a run waiting on another process's lease looks again (seconds):
# soon at first, then backing off.
_POLL_FIRST, _POLL_MAX = 0.02, 0.25


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
        if not (isinstance(target, EntityRun) or is_entity(target)):
            raise TypeError(f"Delegate needs an entity or an EntityRun; got {target!r}")
        self.target = target

    def start(self) -> EntityRun:
        t = self.target
        return t if isinstance(t, EntityRun) else t.start()


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


def _error_info(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


_UNSET = object()
_END = object()
_EXHAUSTED = object()  # run_impl ended without Return


class EntityRun:
    """The handle :meth:`RunnableEntity.start` returns.

    ``async for env in run`` streams the envelopes; afterwards ``run.result``
    is the entity's output. If the entity failed, iterating raised its
    exception (after the ``ERROR`` and ``STATUS FAILED`` envelopes) and
    ``run.result`` raises it again.
    """

    __slots__ = (
        "entity",
        "_gen",
        "_result",
        "_error",
        "_followers",
        "_done",
        "_task",
        "_lost_error",
        "_cancelled",
    )

    def __init__(self, entity: RunnableEntity) -> None:
        self.entity = entity
        self._gen: AsyncGenerator[Envelope, None] | None = None
        self._result: Any = _UNSET
        self._error: BaseException | None = None
        self._followers: list[asyncio.Queue] = []
        self._done = False
        # The task running the body, the error saying why our lease was lost
        # (set by the store), and whether we cancelled that task for it.
        self._task: asyncio.Task | None = None
        self._lost_error: LeaseLostError | None = None
        self._cancelled = False

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

    # The generator behind the handle: the steps of the module docstring.
    async def _drive(self) -> AsyncGenerator[Envelope, None]:
        entity = self.entity
        store = entity._graph
        entity_id = entity._id
        key = (store.key, entity_id)
        live = LIVE.get(key)
        if live is not None and live is not self:  # 1. attach
            async for env in self._follow(live):
                yield env
            return
        # 2. claim; the common case in one step: a Pending node becomes InProgress.
        started = _make_envelope(
            _STATUS, entity_id, entity.type_name, entity._name, _STARTED, None, None, _ENTITY
        )
        waiter = store.write_waiter()
        if waiter is not None:  # another process holds the write lock
            await waiter
        claim = store.claim(entity_id, started, entity._parent_id)
        status = claim[0]
        if status != _PENDING:
            claimed: list[Any] = []
            async for env in self._claim(key, claim, claimed):
                yield env
            if not claimed:
                return  # followed a run of this process, or handed on the stored result
            status, started = claimed
        LIVE[key] = self
        self._task = asyncio.current_task()
        store.run_started(entity_id, self._on_lease_lost)
        body = _Body(self)
        ended = False  # the end (Completed or Failed) is written, if not yet committed
        try:
            try:
                if status != _PENDING:  # Failed or stale, and ours now
                    await entity.reset()
                yield self._emit(started)
                if not await body.first():  # 3. run the body
                    async for env in body.steps():
                        yield env
                result = body.result
                output_json = dumps(result, what=self._output_name)
                waiter = store.write_waiter()
                if waiter is not None:
                    await waiter
            except BaseException as exc:
                lost = self._lost_by(exc)
                if lost is not None:  # another owner has the node: store nothing more
                    raise self._lost(key, lost) from None
                if not _is_failure(exc):
                    raise  # cancelled or closed from outside: abandoned, not failed
                waiter = store.write_waiter()
                if waiter is not None:
                    await waiter
                error_env, failed_env = self._store_failure(key, exc)  # 4. finish failed
                ended = True
                await self._until_stored(key)  # a failed commit is raised instead of exc
                self._error = exc
                self._done = True
                yield self._emit(error_env)
                yield self._emit(failed_env)
                self._end()
                raise
            value_env, done_env = self._store_completion(key, result, output_json)  # 4. finish
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
            if not self._done:
                lost = self._lost_by(exc)
                if lost is not None:
                    raise self._lost(key, lost) from None
            self._abandon(exc, ended)  # 5. abandon (a no-op once the run is done)
            raise
        finally:
            self._unregister(key)
            if body.impl is not None:  # failed or abandoned while run_impl was open
                await body.close()

    def _output_name(self) -> str:
        return f"output of {self.entity.type_name} {self.entity._name!r}"

    async def _claim(
        self, key: tuple[str, str], claim: tuple, claimed: list[Any]
    ) -> AsyncIterator[Envelope]:
        """Step 2 for a node that was not Pending (``claim`` is what
        :meth:`EntityStore.claim` said of it). Fills ``claimed`` with the
        status it had and the start envelope as logged when the node is ours
        now (Failed or stale); leaves it empty when the run is over already
        (the stored result was handed on, or a run of this process that took
        the node meanwhile was followed). While another process's lease is
        live, waits, passing that run's progress on."""
        entity = self.entity
        store = entity._graph
        status, output, lease, started = claim
        while status == _BUSY:
            # Another process runs it: wait, passing its progress on.
            assert lease is not None  # "busy" comes with the live lease
            async for env in self._wait(lease):
                yield env
            live = LIVE.get(key)
            if live is not None:  # another task of ours took it over meanwhile
                async for env in self._follow(live):
                    yield env
                return
            started = entity.status_envelope(StatusEvent.STARTED)
            waiter = store.write_waiter()
            if waiter is not None:
                await waiter
            status, output, lease, started = store.claim(entity._id, started, entity._parent_id)
        if status == _COMPLETED_NODE:
            yield await self._stored_result(output)
            return
        claimed += (status, started)

    async def _stored_result(self, output: Any) -> Envelope:
        """Become done with a Completed node's stored output; its ``VALUE return``."""
        entity = self.entity
        value = type(entity).output_from_json(output)
        # Finished in the transaction still open (by a run that is itself
        # waiting for it): hand the stored result on only once it is stored.
        waiter = entity._graph.commit_waiter(entity._id)
        if waiter is not None:
            try:
                await waiter
            except EntityGraphError as exc:
                self._error = exc
                self._done = True
                raise
        self._result = value
        self._done = True
        return _make_envelope(
            _VALUE, entity._id, entity.type_name, entity._name, None, None, value, _RETURN
        )

    def _store_completion(
        self, key: tuple[str, str], result: Any, output_json: str
    ) -> tuple[Envelope, Envelope]:
        """Write the Completed end into the store (not yet committed); its
        ``VALUE return`` and ``STATUS COMPLETED`` envelopes."""
        entity = self.entity
        entity_id, type_name, name = entity._id, entity.type_name, entity._name
        value_env = _make_envelope(_VALUE, entity_id, type_name, name, None, None, result, _RETURN)
        done_env = _make_envelope(
            _STATUS, entity_id, type_name, name, _COMPLETED, None, None, _ENTITY
        )
        try:
            entity._graph.finish(entity_id, _COMPLETED_NODE, output_json, (value_env, done_env))
        except LeaseLostError as exc:
            if exc.node_id != entity_id:
                raise
            raise self._lost(key, exc) from None
        return value_env, done_env

    def _store_failure(self, key: tuple[str, str], exc: BaseException) -> tuple[Envelope, Envelope]:
        """Write the Failed end into the store (not yet committed); its
        ``ERROR`` and ``STATUS FAILED`` envelopes."""
        entity = self.entity
        info = _error_info(exc)
        error_env = entity._envelope(
            EnvelopeType.ERROR, error=info, message=f"{info['type']}: {info['message']}"
        )
        failed_env = entity.status_envelope(StatusEvent.FAILED, info["message"])
        try:
            entity._graph.finish(entity._id, _FAILED_NODE, dumps_log(info), (error_env, failed_env))
        except LeaseLostError as lost:
            if lost.node_id != entity._id:
                raise
            raise self._lost(key, lost) from exc
        return error_env, failed_env

    def _abandon(self, exc: BaseException, ended: bool) -> None:
        """The run is being cut short (cancelled, or its consumer closed it)."""
        if not self._done:
            entity = self.entity
            self._done = True
            if ended:
                # Abandoned while waiting for the commit of its end: that end
                # is in the log and will be stored; only its delivery is lost.
                self._error = EntityRunInterrupted(
                    f"the run of {entity!r} was abandoned while its end was being committed"
                )
            else:
                self._error = EntityRunInterrupted(
                    f"the run of {entity!r} was abandoned before it finished"
                )
                if self._lost_error is None:
                    try:
                        entity._graph.abandon(
                            entity._id,
                            entity.status_envelope(StatusEvent.CANCELLED, type(exc).__name__),
                        )
                    except Exception:
                        log.warning("could not log the cancellation of %r", entity, exc_info=True)
        self._end()

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
        if LIVE.get(key) is self:
            del LIVE[key]
            # The last one makes everything durable.
            self.entity._graph.run_ended(self.entity._id)

    def _on_lease_lost(self, error: LeaseLostError) -> None:
        """The store lost our lease (taken over, or not renewable in time):
        stop the body now, by cancelling the task running it; the run then
        raises ``error`` (see :meth:`_lost_by`)."""
        if self._lost_error is None:
            self._lost_error = error
        task = self._task
        if task is None or task.done() or self._cancelled or self._done:
            return
        try:
            current = asyncio.current_task()
        except RuntimeError:
            current = None
        if task is not current:  # in its own task, the failed write raises instead
            self._cancelled = True
            task.cancel(f"lease lost: {error}")

    def _lost_by(self, exc: BaseException) -> LeaseLostError | None:
        """The lease-lost error that ``exc`` (leaving the body) stands for, if any:
        the cancellation we asked for, or a refused write on our node."""
        if not isinstance(exc, Exception | asyncio.CancelledError):
            return None  # closed by its consumer, or interrupted: abandoned as usual
        error = self._lost_error
        if error is None:
            if isinstance(exc, LeaseLostError) and exc.node_id == self.entity._id:
                return exc
            return None
        if self._cancelled and isinstance(exc, asyncio.CancelledError):
            self._cancelled = False
            task = self._task
            if task is not None and task.cancelling():
                task.uncancel()  # it was our cancellation, turned into the error
        return error

    def _lost(self, key: tuple[str, str], error: LeaseLostError) -> LeaseLostError:
        """End a run whose lease was lost: store nothing more. The error to raise."""
        self._error = error
        self._done = True
        self._unregister(key)
        self._end()
        return error

    async def _wait(self, lease: LeaseRecord) -> AsyncIterator[Envelope]:
        """Wait while another process holds a live lease on the node, passing
        on what its subtree logs meanwhile. Returns when the lease is over
        (finished, failed, expired, owner gone) or a run of it started in this
        process; the caller then tries again.

        Nothing is held for the owner meanwhile but whatever the consumer
        holds (a runner's capacity unit, say): the owner is another process
        and needs none of ours, so this cannot deadlock."""
        entity = self.entity
        store, entity_id = entity._graph, entity._id
        key = (store.key, entity_id)
        _, seq = store.progress_since(entity_id, None)
        yield entity.status_envelope(
            StatusEvent.RUNNING, f"waiting for {lease.owner}, which is running it"
        )
        delay = _POLL_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            envs, seq = store.progress_since(entity_id, seq)
            if key in LIVE:
                return
            for env in envs:
                # Its own start and end are not passed on: this run reports
                # the outcome itself once it is stored.
                if env.entity_id != entity_id or (
                    env.type != _ERROR and env.sub_type != _RETURN and env.status not in _OWN_EDGES
                ):
                    yield env
            status, now, state = store.lease_of(entity_id)
            if status != _IN_PROGRESS or now is None or state != "live":
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


class _Body:
    """Step 3 of a run: drive ``run_impl`` to its ``Return``.

    ``await`` :meth:`first`: it starts ``run_impl`` and takes its first step,
    and is true when that ended it (then nothing is handed on). Otherwise
    iterate :meth:`steps` for the envelopes to hand on. Either way
    :attr:`result` is then the returned value. ``gen`` is ``run_impl``, or the
    condition branch running inside it; ``branches`` holds, innermost last,
    what to go back to (the generator and the entity's frames) when a branch
    ends. :meth:`close` closes whatever is still open, innermost first."""

    __slots__ = ("run", "impl", "gen", "branches", "result", "item", "iterator")

    def __init__(self, run: EntityRun) -> None:
        self.run = run
        self.impl: Any = None
        self.gen: Any = None
        self.branches: list[tuple[Any, tuple[str, ...]]] = []
        self.result: Any = None
        self.item: Any = None  # what run_impl yielded first, for steps()
        self.iterator: AsyncGenerator[Envelope, None] | None = None

    async def first(self) -> bool:
        # A coroutine, not an async generator: a run_impl that returns at once
        # (many children do) costs no generator of ours.
        impl: Any = self.run.entity.run_impl()
        self.impl = impl
        if not hasattr(impl, "asend"):
            self.result = await impl
            self.impl = None
            return True
        self.gen = impl
        try:
            item = await impl.asend(None)  # no branch yet: its failure is the run's
        except StopAsyncIteration:
            self.gen = self.impl = None  # exhausted: nothing to close
            return True
        if type(item) is Return:
            await impl.aclose()  # run its finally blocks now
            self.result = item.value
            self.gen = self.impl = None  # closed
            return True
        self.item = item
        return False

    def steps(self) -> AsyncGenerator[Envelope, None]:
        """The envelopes of the rest of the body, from its first item on."""
        self.iterator = self._steps()
        return self.iterator

    async def _steps(self) -> AsyncGenerator[Envelope, None]:
        run = self.run
        entity = run.entity
        emit = run._emit
        item = self.item
        self.item = None
        while True:
            send: Any = None
            throw: BaseException | None = None
            cls = type(item)
            if cls is Return:
                await self.gen.aclose()  # run its finally blocks now
                if not self.branches:
                    self.result = item.value
                    self.gen = self.impl = None  # closed
                    return
                self._leave_branch()
                send = item.value
            elif cls is Delegate:
                child_run = item.start()
                try:
                    async for env in child_run:
                        yield emit(env)
                except Exception as exc:
                    throw = exc
                else:
                    send = child_run.result
            elif cls is Condition:
                send, throw = await self._enter(item)
            else:
                env = run._wrap(item)
                if env.entity_id == entity._id:
                    entity._graph.append_progress(env)
                yield emit(env)
            item = await self._next(send, throw)
            if run._lost_error is not None:  # the body went on after losing the lease
                raise run._lost_error
            if item is _EXHAUSTED:
                self.gen = self.impl = None  # exhausted: nothing to close
                return

    async def _next(self, send: Any, throw: BaseException | None) -> Any:
        """What the running generator yields next, given what to send into it
        or throw at its ``yield``. A branch that fails is left, and its error
        raised at its parent's yield; one that ends without ``Return`` returns
        ``None``. ``_EXHAUSTED`` when ``run_impl`` itself ended so."""
        while True:
            try:
                if throw is not None:
                    exc, throw = throw, None
                    return await self.gen.athrow(exc)
                return await self.gen.asend(send)
            except StopAsyncIteration:
                if not self.branches:
                    return _EXHAUSTED
                return Return(None)  # a branch that ended without Return
            except Exception as exc:
                if not self.branches:
                    raise
                self._leave_branch()  # the branch failed: raise it at the parent's yield
                throw = exc

    async def _enter(self, item: Condition) -> tuple[Any, BaseException | None]:
        """Start the chosen branch of a condition: an async generator becomes
        the one driven (with the frames pushed until it ends); a coroutine is
        awaited here. What to send back into the parent, or to throw into it."""
        entity = self.run.entity
        frames = entity._frames
        entity._frames = (*frames, item.label, item.key)
        try:
            branch = item.branch()
            if hasattr(branch, "asend"):
                self.branches.append((self.gen, frames))
                self.gen = branch
                return None, None
            if not hasattr(branch, "__await__"):
                raise TypeError(
                    f"branch {item.key!r} of condition {item.label!r} "
                    f"returned {branch!r}: it must be an async generator "
                    "function (or an async def)"
                )
            send = await branch
        except Exception as exc:
            entity._frames = frames
            return None, exc
        entity._frames = frames
        return send, None

    def _leave_branch(self) -> None:
        self.gen, self.run.entity._frames = self.branches.pop()

    async def close(self) -> None:
        """Close what is still open after a run that failed or was abandoned
        (runs their finally blocks); nothing after a run that returned."""
        impl = self.impl
        if impl is None:  # returned, or never started: nothing is suspended
            return
        if self.iterator is not None:
            await self.iterator.aclose()
        self.run.entity._frames = ()
        for g in (self.gen, *(g for g, _ in reversed(self.branches))):
            if g is not None and g is not impl:
                await g.aclose()
        if hasattr(impl, "aclose"):
            await impl.aclose()
