"""The task pool runner: run tasks from a source under a capacity source.

:class:`HierarchicalTaskPoolRunner` repeats three steps for as long as its
source has tasks:

1. take a unit from its capacity source (waiting if any level is full);
2. only then pull the next task from the source, so that a task (and whatever
   pulling it creates) exists only once it can run;
3. start the task and go back to 1.

One task per run, the *filler*, does these steps; nothing else fills the
pool, and a unit given back never runs the runner's code. Where it can (a
tree without a gate, a synchronous source) the filler runs the task it has
just pulled itself, in the task's own context: a task that ends without
suspending then costs no asyncio task, and one that suspends keeps the
filler's asyncio task as its own while a new filler takes over.

Results come back through :meth:`~HierarchicalTaskPoolRunner.run_tasks`, an
async generator of :class:`TaskProgressEnvelope`, in the order tasks finish.
A slot is refilled as soon as a task ends (the unit it gives back goes to
whoever the capacity source's policy picks; if that is this runner, its
filler resumes on the next step of the event loop), whether or not the
consumer has read the result yet. One task's failure becomes an ``ERROR``
envelope and the others go on.

Stopping early is part of the design. Use the stream as an async context
manager, so that leaving the block for any reason (``break``, an exception,
``asyncio.timeout``, a cancelled notebook cell) closes the run there and
then::

    async with runner.run_tasks() as results:
        async for envelope in results:
            ...

Closing cancels every task still running, waits until each has ended, gives
every unit back and closes the source. That clean-up runs to its end even if
the closing task is cancelled again while it waits (a second interrupt, a
timeout inside an outer timeout): further cancellations are held until the
units are back, and then re-raised to the caller, so a cancelled consumer
never leaves a unit taken with nothing running. Plain ``async for`` works
too, but a ``break`` then leaves the closing to the garbage collector.

A task is a *thunk*: a callable with no arguments that returns an awaitable
(its result becomes the ``FINAL`` value) or an async iterator (a *streaming*
task: each item becomes an ``INTERMEDIATE`` envelope, and the ``FINAL`` value
is the iterator's ``result`` attribute once it is exhausted). An awaitable
that resolves to an async iterator is streamed too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextvars import copy_context
from dataclasses import dataclass
from enum import StrEnum
from types import CoroutineType
from typing import Any

from storylab.scheduling.capacity import CapacitySource
from storylab.scheduling.sources import EXHAUSTED, TaskSource, as_source
from storylab.scheduling.trace import _CURRENT, _TASK, EventKind

__all__ = [
    "HierarchicalTaskPoolRunner",
    "RunnerStatistics",
    "TaskEventType",
    "TaskProgressEnvelope",
    "TaskStream",
]

_keys = itertools.count(1)


class TaskEventType(StrEnum):
    INTERMEDIATE = "INTERMEDIATE"
    FINAL = "FINAL"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class TaskProgressEnvelope:
    """What :meth:`HierarchicalTaskPoolRunner.run_tasks` yields.

    ``task_id`` is 1-based in the order tasks were started. ``value`` is an
    item of a streaming task (``INTERMEDIATE``) or the task's result
    (``FINAL``); ``error`` is the exception of an ``ERROR``.
    """

    type: TaskEventType
    task_id: int
    value: Any = None
    error: BaseException | None = None


# The runner makes one envelope per task and per streamed item. A frozen
# dataclass's __init__ goes through object.__setattr__ field by field; setting
# the slots directly builds the same immutable object in about a third of the
# time. Equality, repr and hashing are the dataclass's own.
_new = object.__new__
_set_type, _set_id, _set_value, _set_error = (
    getattr(TaskProgressEnvelope, field).__set__ for field in ("type", "task_id", "value", "error")
)


def _envelope(
    kind: TaskEventType, task_id: int, value: Any = None, error: BaseException | None = None
) -> TaskProgressEnvelope:
    env = _new(TaskProgressEnvelope)
    _set_type(env, kind)
    _set_id(env, task_id)
    _set_value(env, value)
    _set_error(env, error)
    return env


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    name: str
    key: str
    started: int
    finished: int
    failed: int
    in_flight: int
    running: bool


class TaskStream:
    """What :meth:`HierarchicalTaskPoolRunner.run_tasks` returns.

    An async iterator of :class:`TaskProgressEnvelope` in completion order,
    and an async context manager whose exit closes the run (cancels what is
    still running, returns every unit, closes the source) whatever ended the
    block. The run starts at the first ``__anext__``, not on construction.
    """

    __slots__ = ("_agen",)

    def __init__(self, agen: AsyncGenerator[TaskProgressEnvelope, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> AsyncGenerator[TaskProgressEnvelope, None]:
        # ``async for`` drives the generator itself: no extra call per envelope.
        return self._agen

    def __anext__(self) -> Awaitable[TaskProgressEnvelope]:
        return self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the run: see the class docstring. Safe to call more than once."""
        await self._agen.aclose()

    async def __aenter__(self) -> TaskStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._agen.aclose()


async def _uninterruptible(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to its end even if the awaiting task is cancelled meanwhile,
    any number of times; then re-raise that cancellation.

    Clean-up that gives resources back must not stop half-way because a second
    cancellation arrived while it waited (the first one is usually why it is
    running at all). Its own failure, if any, is raised as usual.
    """
    task = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    task.result()


class _Driven:
    """Await a coroutine that has already taken its first step, inside ``context``.

    The filler runs a task's first step itself (see :meth:`_Run.fill`); if the
    task suspends there, the rest of it runs through this object, so that each
    of its steps happens in the task's own context as an asyncio task's would,
    and a cancellation or error thrown into the awaiting task reaches it.
    """

    __slots__ = ("coro", "context", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], context: Any, pending: Any) -> None:
        self.coro = coro
        self.context = context
        self.pending = pending

    def __await__(self):
        coro = self.coro
        run = self.context.run
        pending = self.pending
        self.pending = None
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:
                try:
                    pending = run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = run(coro.send, value)
                except StopIteration as stop:
                    return stop.value


class _Raise:
    """Marker in the result queue: re-raise ``error`` in the consumer."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()
# After a task started by the filler suspends, this many more get their own task.
_SPAWN_AFTER_SUSPEND = 32
_FAILED = object()


def _stream_result(stream: Any, iterator: Any, stop: StopAsyncIteration) -> Any:
    """The FINAL value of a streaming task: ``result`` of the iterable (or of its
    iterator), else a value carried by ``StopAsyncIteration``, else ``None``."""
    for obj in (stream, iterator):
        if hasattr(obj, "result"):
            return obj.result
    return stop.args[0] if stop.args else None


class HierarchicalTaskPoolRunner:
    """Runs thunks from ``source`` with at most as many in flight as ``capacity``
    (and all its ancestors) allow. See the module docstring for the model.

    ``source`` may be a :class:`~storylab.scheduling.sources.TaskSource` or any
    sync or async iterable of thunks (wrapped in ``SourceFromIterable``).
    """

    def __init__(self, name: str, source: Any, capacity: CapacitySource) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        if not isinstance(capacity, CapacitySource):
            raise TypeError(f"capacity must be a CapacitySource, got {type(capacity).__name__}")
        self.name = name
        self.key = f"{name}#{next(_keys)}"
        self.source: TaskSource = as_source(source)
        self.capacity = capacity
        self._started = 0
        self._finished = 0
        self._failed = 0
        self._active = 0
        self._running = False

    def statistics(self) -> RunnerStatistics:
        return RunnerStatistics(
            name=self.name,
            key=self.key,
            started=self._started,
            finished=self._finished,
            failed=self._failed,
            in_flight=self._active,
            running=self._running,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<HierarchicalTaskPoolRunner {self.key!r} started={s.started} "
            f"in_flight={s.in_flight} finished={s.finished} failed={s.failed}>"
        )

    def run_tasks(self, stop_on_error: bool = False) -> TaskStream:
        """Run every task of the source; envelopes come back in completion order.

        Returns a :class:`TaskStream`: iterate it, preferably inside
        ``async with`` so that leaving early closes the run at once (see the
        module docstring). With ``stop_on_error=True`` the first task failure
        cancels the tasks still running, releases their units and is raised
        from the iteration (no ``ERROR`` envelope is yielded for it).
        """
        return TaskStream(self._run_tasks(stop_on_error))

    async def _run_tasks(self, stop_on_error: bool) -> AsyncGenerator[TaskProgressEnvelope, None]:
        if self._running:
            raise RuntimeError(f"runner {self.key!r} is already running")
        self._running = True
        run = _Run(self, stop_on_error)
        loop = asyncio.get_running_loop()
        results = run.results
        run.start(loop)
        try:
            while True:
                while results:
                    item = results.popleft()
                    if item is _DONE:
                        return
                    if type(item) is _Raise:
                        raise item.error
                    yield item
                run.wakeup = loop.create_future()
                await run.wakeup
        finally:
            run.wakeup = None
            await run.shutdown()
            self._running = False


class _Run:
    """The state of one ``run_tasks`` call: the fill loop, workers and result queue.

    One task, the *filler*, fills the pool (:meth:`fill`): take a unit, then
    pull a task, then start it, again and again. When no unit is free it
    waits in the capacity source's queue like any ``acquire()``; a worker
    that ends gives its unit back and the source decides who is served next.
    Nothing ever calls into the filler: it is resumed by the event loop. A
    filler that ran a task which suspended becomes that task's worker, and
    the filling passes to a new filler task (``filler`` names the current one).
    """

    __slots__ = (
        "runner",
        "stop_on_error",
        "results",
        "wakeup",
        "filler",
        "workers",
        "exhausted",
        "closing",
        "loop",
        "spawn_next",
    )

    def __init__(self, runner: HierarchicalTaskPoolRunner, stop_on_error: bool) -> None:
        self.runner = runner
        self.stop_on_error = stop_on_error
        self.results: deque[Any] = deque()
        self.wakeup: asyncio.Future | None = None
        self.filler: asyncio.Task | None = None
        # Workers by task id, each holding one unit. A worker removes itself and
        # gives its unit back in its own ``finally``; one cancelled before its
        # first step never runs that, so shutdown() settles what is left here.
        self.workers: dict[int, asyncio.Task] = {}
        self.exhausted = False
        self.closing = False
        # Tasks to start in their own asyncio task before the filler tries
        # running one itself again (see fill()).
        self.spawn_next = 0

    def push(self, item: Any) -> None:
        self.results.append(item)
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.filler = loop.create_task(self.fill())

    async def fill(self) -> None:
        """Take a unit, then pull the next task for it, then start it; until the
        source is exhausted or the run closes.

        When both the tree and the source answer without awaiting (``sync``),
        the filler runs the task it has just pulled itself, in a context of
        that task's own (:class:`_Driven`). A task that ends without
        suspending then costs no asyncio task at all, and the filler goes on
        to the next unit; after ``capacity`` such tasks in a row it lets the
        event loop run once before taking another unit. A task
        that suspends keeps this asyncio task as its worker: the units free at
        that moment get a task each, in their own asyncio tasks, and a new
        filler task takes over the filling. Tasks start in the order of their
        ids either way. On a tree with a gate, or with an asynchronous source,
        every task gets its own asyncio task.
        """
        runner = self.runner
        capacity = runner.capacity
        source = runner.source
        key = runner.key
        release = capacity.release
        acquire = capacity.acquire
        loop = self.loop
        workers = self.workers
        # try_acquire() needs a tree without a gate, and the filler may only
        # hold a task back while it runs another if pulling never waits.
        probe = capacity.try_acquire if capacity.sync and source.sync else None
        burst = capacity.capacity
        ended = 0  # tasks run to their end here since the loop last ran
        while True:
            task_id = runner._started + 1
            owner = (key, task_id)
            if self.closing:
                break
            if ended >= burst:
                # As many tasks in a row ended here as this runner's limit:
                # let the loop run (the consumer, other runners) first. The
                # units they gave back went to whoever waited for them.
                ended = 0
                await asyncio.sleep(0)
                continue
            if probe is None or self.spawn_next or not probe(owner=owner):
                try:
                    await acquire(owner=owner)  # returns at once when a unit is free
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # a gate that failed: not a task error
                    self.closing = True
                    self.push(_Raise(exc))
                    return
                ended = 0
                if self.closing:  # a task failed under stop_on_error meanwhile
                    release(owner=owner)
                    return
            try:
                thunk = source.pull_nowait() if source.sync else await source.pull()
            except asyncio.CancelledError:
                release(owner=owner)
                raise
            except BaseException as exc:  # the source itself failed: not a task error
                release(owner=owner)
                self.closing = True
                self.push(_Raise(exc))
                return
            if thunk is EXHAUSTED:
                release(owner=owner)
                break
            if probe is None or self.spawn_next:
                # Its own asyncio task: on a gated tree or an asynchronous
                # source, or while this run's tasks have been suspending.
                runner._started = task_id
                runner._active += 1
                workers[task_id] = loop.create_task(self.work(task_id, thunk))
                if probe is not None:
                    self.spawn_next -= 1
                continue
            runner._started = task_id
            runner._active += 1
            workers[task_id] = asyncio.current_task()  # type: ignore[assignment]
            coro = self.work(task_id, thunk)
            context = copy_context()
            try:
                pending = context.run(coro.send, None)
            except StopIteration:  # it ended at once, and gave its unit back
                ended += 1
                continue
            # It suspended: start a task for every unit free now, hand the
            # filling over to a new task, and carry on as this task's worker.
            # Tasks that suspend gain nothing from starting here: the next
            # few get their own asyncio task straight away.
            self.spawn_next = _SPAWN_AFTER_SUSPEND
            while not self.closing:
                next_id = runner._started + 1
                if not probe(owner=(key, next_id)):
                    break
                more = self._pull((key, next_id))
                if more is _FAILED:
                    break
                if more is EXHAUSTED:
                    self.exhausted = True
                    break
                runner._started = next_id
                runner._active += 1
                workers[next_id] = loop.create_task(self.work(next_id, more))
            if not (self.exhausted or self.closing):
                self.filler = loop.create_task(self.fill())
            await _Driven(coro, context, pending)
            return
        self.exhausted = True
        if runner._active == 0:
            self.push(_DONE)

    def _pull(self, owner: Any) -> Any:
        """The next thunk of a synchronous source for the unit ``owner`` holds
        (given back if there is none); ``_FAILED`` once a failing source has
        been reported."""
        source = self.runner.source
        try:
            thunk = source.pull_nowait()
        except BaseException as exc:  # the source itself failed: not a task error
            self.runner.capacity.release(owner=owner)
            self.closing = True
            self.push(_Raise(exc))
            return _FAILED
        if thunk is EXHAUSTED:
            self.runner.capacity.release(owner=owner)
        return thunk

    async def work(self, task_id: int, thunk: Callable[[], Any]) -> None:
        runner = self.runner
        trace = _CURRENT.get()
        label = getattr(thunk, "label", None) if trace is not None else None
        if trace is not None:
            # This task's own context: backends inside may mark its lane.
            _TASK.set((runner.key, task_id, label, runner.capacity.name))
            self._record(trace, EventKind.TASK_START, task_id, label)
        try:
            result = thunk()
            if type(result) is CoroutineType or (
                not hasattr(result, "__aiter__") and hasattr(result, "__await__")
            ):
                result = await result
            if hasattr(result, "__aiter__"):
                iterator = result.__aiter__()
                anext = iterator.__anext__
                push = self.push
                while True:
                    try:
                        item = await anext()
                    except StopAsyncIteration as stop:
                        result = _stream_result(result, iterator, stop)
                        break
                    push(_envelope(TaskEventType.INTERMEDIATE, task_id, item))
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if self.closing or (task is not None and task.cancelling()):
                # We cancelled it (the consumer left, or stop_on_error).
                if trace is not None:
                    self._record(trace, EventKind.TASK_CANCEL, task_id, label)
                raise
            # Nobody cancelled this task: the CancelledError came from inside
            # it (a library cancelling its own future). That is the task
            # failing, and it must end with an envelope like any failure.
            self._failed(task_id, label, exc, trace)
        except Exception as exc:
            self._failed(task_id, label, exc, trace)
        else:
            runner._finished += 1
            if trace is not None:
                self._record(trace, EventKind.TASK_END, task_id, label)
            self.push(_envelope(TaskEventType.FINAL, task_id, result))
        finally:
            # _give_back(task_id), inlined: this runs once per task.
            del self.workers[task_id]
            runner._active -= 1
            runner.capacity.release(owner=(runner.key, task_id))
            if self.exhausted and runner._active == 0:
                self.push(_DONE)

    def _failed(self, task_id: int, label, exc: BaseException, trace) -> None:
        self.runner._failed += 1
        if trace is not None:
            self._record(trace, EventKind.TASK_ERROR, task_id, label, error=repr(exc))
        if self.stop_on_error:
            self.closing = True  # start nothing more: the run is about to end
            self.push(_Raise(exc))
        else:
            self.push(_envelope(TaskEventType.ERROR, task_id, None, exc))

    def _give_back(self, task_id: int) -> None:
        runner = self.runner
        del self.workers[task_id]
        runner._active -= 1
        runner.capacity.release(owner=(runner.key, task_id))

    def _record(
        self, trace, kind: EventKind, task_id: int, label, error: str | None = None
    ) -> None:
        trace.record(
            kind,
            path=(),
            runner=self.runner.key,
            task_id=task_id,
            label=label,
            group=self.runner.capacity.name,
            error=error,
        )

    async def shutdown(self) -> None:
        """Cancel the filler and every task still running, wait until they are
        gone, give back what they held and close the source.

        Runs to its end even if the closing task is cancelled again while it
        waits (see :func:`_uninterruptible`): a unit must never stay taken
        with nothing running behind it.
        """
        self.closing = True
        # (A filler that carries on as a task's worker is listed once.)
        tasks = dict.fromkeys((self.filler, *self.workers.values()))
        pending = [t for t in tasks if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        source = self.runner.source
        # A run cut short leaves its source suspended mid-way: close it, so that
        # a generator behind it (such as parallel_calls) runs its cleanup now.
        aclose = getattr(source, "aclose", None) if not source.done else None
        if pending or aclose is not None:
            await _uninterruptible(self._settle(pending, aclose))
        else:
            self._give_back_unstarted()

    async def _settle(self, pending: list[asyncio.Task], aclose: Any) -> None:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._give_back_unstarted()
        if aclose is not None:
            await aclose()

    def _give_back_unstarted(self) -> None:
        # A worker cancelled before its first step never ran its ``finally``.
        for task_id in sorted(self.workers):
            self._give_back(task_id)
