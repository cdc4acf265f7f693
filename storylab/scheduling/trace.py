"""A recorder of scheduling events, for timelines, capacity charts and checks.

Why a trace: the interesting facts about a parallel run are *when* each task
waited, which limit held it back, when it got a unit, when it ran and how it
ended. Capacity sources and runners report those facts to the trace that is
active in the current context (a :class:`contextvars.ContextVar`), so nothing
has to be threaded through call signatures and nothing is recorded when no
trace is active (the cost is one context-variable lookup per event).

Usage::

    with Trace(meta={"time_scale": 0.01}) as trace:
        await run_everything()
    trace.events  # list[TraceEvent], in the order they happened

Tasks created inside the ``with`` block inherit the trace (asyncio copies the
context into every new task), so work that outlives a single coroutine is
still recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "EventKind",
    "Trace",
    "TraceEvent",
    "current_trace",
    "mark",
    "merge_traces",
    "task_scope",
]


class EventKind(StrEnum):
    """What a :class:`TraceEvent` reports."""

    ACQUIRE = "acquire"  # a unit taken at once, with no wait
    WAIT = "wait"  # an acquirer started waiting; ``level`` names the full level
    GRANT = "grant"  # a waiting acquirer got its unit
    WAIT_CANCELLED = "wait_cancelled"  # a waiter gave up (cancelled) with no unit
    RELEASE = "release"  # a unit given back at every level of ``path``
    TASK_START = "task_start"
    TASK_END = "task_end"  # the task finished with a result
    TASK_ERROR = "task_error"  # the task raised
    TASK_CANCEL = "task_cancel"  # the task was cancelled (consumer left, stop_on_error)
    MARK = "mark"  # something worth showing happened inside a task (e.g. an HTTP retry)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One scheduling fact.

    ``path`` lists the capacity sources involved, leaf first and root last, by
    name; replaying ``ACQUIRE``/``GRANT`` as +1 and ``RELEASE`` as -1 on every
    name of the path gives each source's units in use at any instant.
    ``owner`` identifies who asked for a unit: for a runner it is
    ``(runner_key, task_id)`` of the task the unit is for.
    """

    t: float
    kind: EventKind
    path: tuple[str, ...] = ()
    level: str | None = None
    runner: str | None = None
    task_id: int | None = None
    label: str | None = None
    group: str | None = None
    error: str | None = None
    message: str | None = None


_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "storylab_trace", default=None
)


# The task a piece of code runs in, as (runner, task_id, label, group). The
# runner sets it in each task's own context while a trace is active, so code
# deep inside a task (a backend, say) can mark the task's lane without being
# told which task it belongs to.
_TASK: contextvars.ContextVar[tuple[str, int, str | None, str | None] | None] = (
    contextvars.ContextVar("storylab_task", default=None)
)


def current_trace() -> Trace | None:
    """The trace active in this context, or ``None``."""
    return _CURRENT.get()


@contextlib.contextmanager
def task_scope(runner: str, task_id: int, label: str | None, group: str | None) -> Iterator[None]:
    """Code inside runs as the given task: its marks go to that task's lane.

    Runners do this for every task they start; use it where tasks are run by
    hand (a sequential loop) so that both draw the same way.
    """
    token = _TASK.set((runner, task_id, label, group))
    try:
        yield
    finally:
        _TASK.reset(token)


def mark(message: str) -> None:
    """Record a ``MARK`` on the lane of the task running now, if tracing.

    Charts draw marks on the task's bar (the HTTP backend marks each retry).
    Outside a task, or with no trace active, it does nothing.
    """
    trace = _CURRENT.get()
    if trace is None:
        return
    task = _TASK.get()
    runner, task_id, label, group = task if task is not None else (None, None, None, None)
    trace.record(
        EventKind.MARK, runner=runner, task_id=task_id, label=label, group=group, message=message
    )


@dataclass
class Trace:
    """An append-only list of :class:`TraceEvent` with a context manager.

    ``meta`` is free-form information for whoever reads the trace (the
    notebooks store the backends' ``time_scale`` there so charts can be drawn
    in model seconds). ``clock`` is :func:`time.perf_counter` unless a test
    supplies another monotonic clock.
    """

    meta: dict[str, Any] = field(default_factory=dict)
    events: list[TraceEvent] = field(default_factory=list)
    clock: Any = time.perf_counter
    started_at: float = field(default=0.0)
    _tokens: list[contextvars.Token] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.started_at:
            self.started_at = self.clock()

    # -- activation ---------------------------------------------------------
    def __enter__(self) -> Trace:
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._tokens.pop())

    # -- recording ----------------------------------------------------------
    def record(self, kind: EventKind, **fields: Any) -> None:
        self.events.append(TraceEvent(self.clock(), kind, **fields))

    # -- reading ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def of_kind(self, *kinds: EventKind | str) -> list[TraceEvent]:
        wanted = {EventKind(k) for k in kinds}
        return [e for e in self.events if e.kind in wanted]

    def relative(self, t: float) -> float:
        """Seconds since the trace was created."""
        return t - self.started_at

    def in_use_series(self) -> dict[str, list[tuple[float, int]]]:
        """Units in use per capacity source over time, as step points.

        Each series starts at ``(0.0, 0)`` and gains a point at every change;
        times are relative to :attr:`started_at`.
        """
        counts: dict[str, int] = {}
        series: dict[str, list[tuple[float, int]]] = {}
        for e in self.events:
            if e.kind in (EventKind.ACQUIRE, EventKind.GRANT):
                delta = 1
            elif e.kind is EventKind.RELEASE:
                delta = -1
            else:
                continue
            t = self.relative(e.t)
            for name in e.path:
                counts[name] = counts.get(name, 0) + delta
                series.setdefault(name, [(0.0, 0)]).append((t, counts[name]))
        return series


def merge_traces(parts: Iterable[tuple[str, Trace]]) -> Trace:
    """One trace of several processes: ``parts`` are ``(process tag, trace)`` pairs.

    Every trace must have been recorded on the same wall clock
    (``Trace(clock=time.time)``), or their times mean nothing together.
    Runner keys are only unique inside one process (every process has its
    ``image-gen#1``), so each event's runner becomes ``runner@tag``; capacity
    source names are kept, so a limit shared by the processes under one name
    (the global one) adds up across them, as it does on the scheduler.
    ``limits`` in the metadata are merged; other metadata come from the first
    trace that has them.
    """
    parts = list(parts)
    meta: dict[str, Any] = {}
    limits: dict[str, int] = {}
    events: list[TraceEvent] = []
    for tag, trace in parts:
        for key, value in trace.meta.items():
            if key != "limits":
                meta.setdefault(key, value)
        limits.update(trace.meta.get("limits", {}))
        for e in trace.events:
            events.append(replace(e, runner=f"{e.runner}@{tag}") if e.runner else e)
    meta["limits"] = limits
    events.sort(key=lambda e: e.t)  # stable: one process's own order is kept on ties
    started = min((t.started_at for _, t in parts), default=time.time())
    return Trace(meta=meta, events=events, clock=time.time, started_at=started)
