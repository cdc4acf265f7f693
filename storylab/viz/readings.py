"""Numbers read from a traced run: who held how many units when, who handed a
unit to whom, how busy a pool was, what the graph held while it ran.

A :class:`~storylab.scheduling.Trace` records facts in wall seconds; every
reading here answers in **model seconds** (wall seconds divided by
``trace.meta["time_scale"]``, 1.0 when absent), like the charts of this
layer.

**One time origin.** Every reading, every chart axis and every title of
this layer counts from the same instant, :func:`time_origin`: the trace's
first event (the first unit asked for or the first task started). A trace
is often opened before the interesting part begins (a story writes its text
before its pictures ask for capacity); counting from there would make a
chart's bars end later than the makespan its title states.

No plotting library is needed: these are the numbers a notebook prints
next to a chart, or that a test checks the chart against.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from storylab.scheduling.trace import EventKind, Trace, TraceEvent
from storylab.viz.labels import _LETTERED, short_label, source_labels

__all__ = [
    "ChildCounter",
    "Handoff",
    "Moment",
    "PoolUse",
    "all_asked_at",
    "first_full",
    "handoffs",
    "in_use_at",
    "key_moments",
    "marks",
    "model_time",
    "peaks_in_use",
    "pool_use",
    "root_source",
    "story_sources",
    "time_origin",
]


def _time_scale(trace: Trace) -> float:
    scale = trace.meta.get("time_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"trace.meta['time_scale'] must be a number > 0, got {scale!r}")
    return float(scale)


def time_origin(trace: Trace) -> float:
    """The instant (on the trace's clock) that is model second 0 of every reading and chart.

    The time of the trace's first event; the trace's creation time when it
    recorded nothing.
    """
    return min((e.t for e in trace.events), default=trace.started_at)


def model_time(trace: Trace, t: float, *, time_scale: float | None = None) -> float:
    """Model seconds from :func:`time_origin` to the instant ``t`` of the trace's clock."""
    scale = _time_scale(trace) if time_scale is None else time_scale
    return (t - time_origin(trace)) / scale


def in_use_series(trace: Trace, *, time_scale: float | None = None,
                  ) -> dict[str, list[tuple[float, int]]]:
    """Units in use per capacity source as step points, in model seconds from the origin.

    Each series starts at ``(0.0, 0)`` and gains a point at every change.
    """
    scale = _time_scale(trace) if time_scale is None else time_scale
    # The trace counts from its creation; move every point to the shared origin
    # (the opening (0, 0) stays at 0).
    shift = time_origin(trace) - trace.started_at
    return {
        name: [(max((t - shift) / scale, 0.0), n) for t, n in points]
        for name, points in trace.in_use_series().items()
    }


def in_use_at(trace: Trace, t: float) -> dict[str, int]:
    """Units in use per capacity source just after model second ``t`` of the trace."""
    out: dict[str, int] = {}
    for name, points in in_use_series(trace).items():
        value = 0
        for when, n in points:
            if when > t:
                break
            value = n
        out[name] = value
    return out


def peaks_in_use(trace: Trace) -> dict[str, int]:
    """The most units each capacity source of the trace ever had in use at once."""
    return {
        name: max((n for _, n in points), default=0)
        for name, points in trace.in_use_series().items()
    }


def first_full(trace: Trace, source: str, limit: int) -> float | None:
    """The model second at which ``source`` first had ``limit`` units in use (or ``None``)."""
    for when, n in in_use_series(trace).get(source, []):
        if n >= limit:
            return when
    return None


def root_source(trace: Trace) -> str | None:
    """The top capacity source of the trace: the last level of the first path it recorded."""
    for event in trace.events:
        if event.path:
            return event.path[-1]
    return None


def all_asked_at(trace: Trace, sources: Iterable[str]) -> float:
    """The model second by which every one of ``sources`` had asked for its first unit.

    A source "asks" when a unit is taken through it at once or a wait begins
    (``ACQUIRE`` or ``WAIT`` with the source as the leaf of the path).
    """
    wanted = list(sources)
    if not wanted:
        raise ValueError("sources must name at least one capacity source")
    first: dict[str, float] = {}
    for e in trace.events:
        if e.kind in (EventKind.ACQUIRE, EventKind.WAIT) and e.path and e.path[0] in wanted:
            first.setdefault(e.path[0], model_time(trace, e.t))
    never = [name for name in wanted if name not in first]
    if never:
        raise ValueError(f"these sources never asked for a unit in the trace: {never}")
    return max(first.values())


@dataclass(frozen=True)
class Handoff:
    """A unit given back by one task and taken next by another, through ``source``."""

    released_at: float  # model seconds
    taken_at: float
    released_by: str  # leaf capacity source (the story) of each side
    taken_by: str
    label: str | None  # the task the unit was taken for


def handoffs(trace: Trace, *, after: float = 0.0, source: str = "global") -> list[Handoff]:
    """Each unit released at ``source`` after model second ``after`` and who took it next.

    Releases and takes are paired in order: the first take after a release is
    the freed unit moving on. Releases nobody took (the end of a run) are
    left out.
    """
    labels = {
        (e.runner, e.task_id): e.label for e in trace.events if e.kind is EventKind.TASK_START
    }
    free: list[tuple[float, str]] = []
    out: list[Handoff] = []
    for e in trace.events:
        t = model_time(trace, e.t)
        if t < after or source not in e.path:
            continue
        if e.kind is EventKind.RELEASE:
            free.append((t, e.path[0]))
        elif e.kind in (EventKind.ACQUIRE, EventKind.GRANT) and free:
            released_at, by = free.pop(0)
            label = e.label or labels.get((e.runner, e.task_id))
            out.append(Handoff(released_at, t, by, e.path[0], label))
    return out


@dataclass(frozen=True, slots=True)
class Moment:
    """A moment worth marking on a figure: model second ``t``, a short ``text``, a ``kind``.

    Kinds: ``"split"`` (every story has asked for capacity: how the units
    were shared out), ``"handoff"`` (the first unit a story gave back that
    another story took), ``"failed"`` (a task raised), ``"mark"`` (something
    recorded with :func:`storylab.scheduling.mark` outside any task: a kill,
    a lease that expired), ``"end"`` (the last task ended: the makespan), or
    anything a caller passes to a chart's ``moments=``.

    ``index`` (when known) is the position in ``trace.events`` of the event
    that makes the moment: on a simulated clock many events share one
    instant (every first-round picture ends at 10.0), and the replay uses it
    to show the state right after that event rather than after the whole
    instant.
    """

    t: float
    text: str
    kind: str = "note"
    index: int | None = None


def story_sources(trace: Trace) -> list[str]:
    """The leaf capacity sources below a root (the stories), in order of first appearance."""
    out: list[str] = []
    for e in trace.events:
        if len(e.path) > 1 and e.path[0] not in out:
            out.append(e.path[0])
    return out


def key_moments(trace: Trace, *, names: dict[str, str] | None = None) -> list[Moment]:
    """The moments a learner should see marked on a chart of ``trace``, in time order.

    The split (``"split 3,3,3,1,0"``: units per story once every story has
    asked), the first hand-off after it (``"unit freed by C → E"``), every
    failed task, every :func:`~storylab.scheduling.mark` made outside a task
    (``"kill"``, ``"lease expired"``) and the end of the last task. Story
    letters are those of :func:`storylab.viz.labels.source_labels`.
    """
    labels = source_labels(trace, names)
    stories = story_sources(trace)
    letter = {s: short_label(labels.get(s, s), i) for i, s in enumerate(stories)}
    out: list[Moment] = []
    if len(stories) > 1:
        t_split = all_asked_at(trace, stories)
        now = in_use_at(trace, t_split)
        # With lettered names ("story A (a fox)") the split reads in the order of the
        # letters, as the chart's panels do, not in the trace's order of first appearance.
        lettered = [s for s in stories if names and s in names
                    and _LETTERED.match(names[s])]
        in_order = (sorted(stories, key=lambda s: letter[s]) if len(lettered) == len(stories)
                    else stories)
        out.append(Moment(t_split, "split " + ",".join(str(now.get(s, 0)) for s in in_order),
                          "split"))
        root = root_source(trace)
        scarce = _releases_at_limit(trace, root or "global")
        for h in handoffs(trace, after=t_split, source=root or "global"):
            # A take with no task behind it is the runner checking for a next
            # task when its source is empty: no picture got the unit. A unit
            # given back while the root still had room was nobody's to hand
            # on (the taker could have had a free one anyway): not a hand-off.
            if (h.taken_by != h.released_by and h.label is not None
                    and (scarce is None or h.released_at in scarce)):
                index = next((i for i, e in enumerate(trace.events)
                              if e.kind in (EventKind.ACQUIRE, EventKind.GRANT)
                              and e.path and e.path[0] == h.taken_by
                              and model_time(trace, e.t) == h.taken_at), None)
                out.append(Moment(h.taken_at, f"unit freed by {letter.get(h.released_by, '?')}"
                                  f" → {letter.get(h.taken_by, '?')}", "handoff", index))
                break
    for i, e in enumerate(trace.events):
        if e.kind is EventKind.TASK_ERROR:
            out.append(Moment(model_time(trace, e.t), f"✗ {e.label or 'a task'} failed",
                              "failed", i))
        elif e.kind is EventKind.MARK and e.task_id is None:
            out.append(Moment(model_time(trace, e.t), e.message or "mark", "mark", i))
    ends = [e.t for e in trace.events if e.kind in _ENDS]
    if ends:
        out.append(Moment(model_time(trace, max(ends)), "last task done", "end"))
    out.sort(key=lambda m: m.t)
    return out


_ENDS = (EventKind.TASK_END, EventKind.TASK_ERROR, EventKind.TASK_CANCEL)


def _releases_at_limit(trace: Trace, root: str) -> set[float] | None:
    """Model seconds of the releases at ``root`` made while it was at its limit.

    ``None`` when the trace does not record the root's limit.
    """
    limit = (trace.meta.get("limits") or {}).get(root)
    if not isinstance(limit, int):
        return None
    in_use, out = 0, set()
    for e in trace.events:
        if root not in e.path:
            continue
        if e.kind in (EventKind.ACQUIRE, EventKind.GRANT):
            in_use += 1
        elif e.kind is EventKind.RELEASE:
            if in_use >= limit:
                out.add(model_time(trace, e.t))
            in_use -= 1
    return out


def marks(trace: Trace) -> list[TraceEvent]:
    """The ``MARK`` events of the trace (a backend's retries...), in the order they happened."""
    return [e for e in trace.events if e.kind is EventKind.MARK]


@dataclass(frozen=True, slots=True)
class PoolUse:
    """How a run used one capacity source, in model seconds.

    ``span`` runs from the trace's time origin to the end of its last task
    (the makespan);
    ``busy`` adds up every task's run time (two tasks of 10 s at once are 20
    busy seconds); ``peak`` is the most units ``source`` had in use at once.
    """

    source: str
    span: float
    busy: float
    peak: int


def pool_use(trace: Trace, source: str, *, time_scale: float | None = None) -> PoolUse:
    """Span, busy task-seconds and peak of ``source``, read from the trace's task events.

    ``time_scale`` overrides ``trace.meta["time_scale"]``.
    """
    scale = _time_scale(trace) if time_scale is None else time_scale
    starts: dict[tuple[str, int], float] = {}
    busy = 0.0
    origin = time_origin(trace)
    last = origin
    for e in trace.events:
        if e.runner is None or e.task_id is None:
            continue
        key = (e.runner, e.task_id)
        if e.kind is EventKind.TASK_START:
            starts[key] = e.t
        elif e.kind in (EventKind.TASK_END, EventKind.TASK_ERROR, EventKind.TASK_CANCEL):
            busy += e.t - starts.pop(key, e.t)
            last = max(last, e.t)
    peak = max((n for _, n in trace.in_use_series().get(source, [(0.0, 0)])), default=0)
    return PoolUse(source, (last - origin) / scale, busy / scale, peak)


# -- what the graph held while a run went on ---------------------------------------
@dataclass
class ChildCounter:
    """Counts a parent's children in the graph, again and again, while a run goes on.

    Use it as ``async with ChildCounter(graph, parent, trace):`` around the
    run. ``samples`` are ``(model second, children)``; :meth:`most_before`
    answers "how many children existed before model second t?", and
    :attr:`first_finish` is when the first task of the trace ended.
    ``graph`` is any entity graph store with ``children(parent_id)``.
    """

    graph: Any
    parent: Any
    trace: Trace
    every: float | None = None  # wall seconds between samples (default 0.1 model s)
    # (trace clock time, children): turned into model seconds from the time
    # origin when read, since the origin (the first event) may come later.
    _raw: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self._parent_id = self.parent if isinstance(self.parent, str) else self.parent.id
        self._scale = _time_scale(self.trace)
        if self.every is None:
            self.every = 0.1 * self._scale
        if isinstance(self.every, bool) or not isinstance(self.every, int | float) \
                or not self.every > 0:
            raise ValueError(f"every must be a number of seconds > 0, got {self.every!r}")

    def sample(self) -> None:
        self._raw.append((self.trace.clock(), len(self.graph.children(self._parent_id))))

    @property
    def samples(self) -> list[tuple[float, int]]:
        """``(model second, children)``, counted from the trace's time origin like every
        chart; samples taken before the first event are at 0."""
        origin = time_origin(self.trace)
        return [(max((t - origin) / self._scale, 0.0), n) for t, n in self._raw]

    async def _loop(self) -> None:
        every = self.every
        if every is None:  # set and checked before the loop is started
            raise RuntimeError("the sampling interval is not set")
        while True:
            await asyncio.sleep(every)
            self.sample()

    async def __aenter__(self) -> ChildCounter:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample()

    @property
    def first_finish(self) -> float | None:
        ends = [model_time(self.trace, e.t, time_scale=self._scale) for e in self.trace.events
                if e.kind in (EventKind.TASK_END, EventKind.TASK_ERROR)]
        return min(ends) if ends else None

    def most_before(self, t: float) -> int:
        return max((n for when, n in self.samples if when < t), default=0)

    @property
    def most_before_first_finish(self) -> int:
        t = self.first_finish
        return self.most_before(t if t is not None else math.inf)

    @property
    def final(self) -> int:
        return self._raw[-1][1] if self._raw else 0
