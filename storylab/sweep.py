"""Sweeping the two limits: how fast do stories finish, and how busy is the pool?

The problem: a per-story limit of 3 and a global limit of 10 are numbers
someone picked. Are they good ones? Change them and two things move: the
*makespan* (how long until the last picture is done) and the *utilisation*
(how much of the global pool was actually busy). Tuning by feel is hard
because the limits interact: a generous global limit buys nothing when every
story is held by its own limit, and vice versa.

This module runs the experiment. :func:`simulate_stories` starts several
stories at once, each a runner over its own per-story
:class:`~storylab.scheduling.CapacitySource` under one shared global source
(the same shape as the story pipeline's image stage), with every image a
sleep of ``image_seconds`` model seconds. Timings are taken from a
:class:`~storylab.scheduling.Trace`, so the numbers are what the scheduler
really did, not a formula. :func:`sweep` repeats that for every pair of
limits in a grid.

Each cell also carries the *ideal bound*: with ``G`` stories of ``M``
images of ``d`` model seconds each, no schedule can beat

    d * max(ceil(M / per_story), ceil(G * M / global))

because each story needs ``ceil(M / per_story)`` rounds on its own, and the
whole pool needs ``ceil(G * M / global)`` rounds for all the pictures. A
measured makespan close to it means the scheduler wasted nothing.

To turn the knobs by hand, :func:`what_if` runs one such simulation at once
(synchronously, in virtual time: a few milliseconds) and hands back the cell
and its trace, and :func:`knobs` puts sliders on it in a notebook (story
limit, global limit, number of stories, fair or FIFO, a failing picture),
redrawing the timeline at every move.

This module measures; the drawing is :mod:`storylab.viz`'s (the charts of a
sweep are :func:`storylab.viz.plot_sweep_heatmaps` and
:func:`storylab.viz.plot_sweep_lines`, the knobs' widget
:class:`storylab.viz.knobs.Knobs`), and the numbers are read from each trace
by :func:`storylab.viz.readings.pool_use`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import selectors
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from storylab._checks import check_positive_int as _positive_int
from storylab.scheduling import (
    CapacitySource,
    HierarchicalTaskPoolRunner,
    SourceFromIterable,
    TaskEventType,
    Trace,
)
from storylab.scheduling.capacity import POLICIES
from storylab.viz.readings import pool_use

__all__ = [
    "SweepCell",
    "SweepResult",
    "WhatIf",
    "ideal_makespan",
    "knobs",
    "simulate_stories",
    "sweep",
    "what_if",
]

TIME_LABEL = "model seconds"
_CLOCKS = ("virtual", "wall")
_FIELDS = ("makespan", "ideal", "utilisation", "efficiency", "peak_in_use")


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _limits(name: str, values: Iterable[int]) -> tuple[int, ...]:
    if isinstance(values, int | str | bytes):
        raise ValueError(f"{name} must be a list of integers >= 1, got {values!r}")
    out = tuple(_positive_int(f"{name} item", v) for v in values)
    if not out:
        raise ValueError(f"{name} must name at least one limit")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a limit, got {list(out)}")
    return out


def ideal_makespan(
    stories: int, images: int, story_limit: int, global_limit: int, image_seconds: float = 10.0
) -> float:
    """The best makespan any schedule could reach, in model seconds (see the module doc)."""
    for name, value in (
        ("stories", stories),
        ("images", images),
        ("story_limit", story_limit),
        ("global_limit", global_limit),
    ):
        _positive_int(name, value)
    d = _positive_number("image_seconds", image_seconds)
    rounds = max(math.ceil(images / story_limit), math.ceil(stories * images / global_limit))
    return d * rounds


@dataclass(frozen=True, slots=True)
class SweepCell:
    """One pair of limits, measured.

    ``makespan`` and ``ideal`` are in model seconds. ``utilisation`` is the
    busy share of the global pool: image-seconds run divided by
    ``global_limit * makespan`` (1.0 means every global unit was busy the
    whole time). ``efficiency`` is ``ideal / makespan`` (1.0 means the
    scheduler matched the bound). ``peak_in_use`` is the most units the
    global source ever had out at once; ``failed`` how many pictures failed
    (see ``fail`` of :func:`simulate_stories`).
    """

    story_limit: int
    global_limit: int
    stories: int
    images: int
    makespan: float
    ideal: float
    utilisation: float
    peak_in_use: int
    failed: int = 0

    @property
    def efficiency(self) -> float:
        return self.ideal / self.makespan if self.makespan > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "efficiency": self.efficiency}


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: when the loop would wait for its next timer, jump the clock there."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None):
        ready = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self.now += timeout
        elif not ready and timeout is None:
            ready = super().select(None)  # nothing scheduled: wait for I/O as usual
        return ready


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every task is waiting for a timer.

    The scheduler is pure asyncio (no threads, no wall clock), so on this
    loop a run of a hundred 10-second sleeps takes a few milliseconds and
    its timings come out exact and repeatable.
    """

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def _run_virtual(make: Callable[[], Any]) -> Any:
    loop = _VirtualTimeLoop()
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


async def _in_virtual_time(make: Callable[[], Any]) -> Any:
    # A fresh loop needs a thread of its own when called from a running loop
    # (a notebook cell); the caller's loop stays responsive meanwhile.
    return await asyncio.to_thread(_run_virtual, make)


class _Image:
    """One simulated picture: a thunk the runner calls, with a label for the trace."""

    __slots__ = ("fails", "label", "seconds", "story")

    def __init__(self, label: str, seconds: float, fails: bool = False, story: str = "") -> None:
        self.label = label  # image-1, as the pipeline's pictures read on a chart
        self.seconds = seconds
        self.fails = fails
        self.story = story

    def __call__(self) -> Any:
        return self._refused() if self.fails else asyncio.sleep(self.seconds)

    async def _refused(self) -> None:
        # A refusal comes halfway through: the unit was held, the picture is lost.
        await asyncio.sleep(self.seconds / 2)
        where = f"story {self.story}, " if self.story else ""
        raise RuntimeError(f"{where}{self.label}: the image model refused this picture")


def story_letter(k: int) -> str:
    """``A`` for story 1, ``B`` for story 2... (the letters the charts and the gauge use)."""
    return chr(ord("A") + k - 1) if 1 <= k <= 26 else str(k)


def _check_fail(fail: Any, stories: int, images: int) -> tuple[int, int] | None:
    if fail is None:
        return None
    ok = (isinstance(fail, tuple | list) and len(fail) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in fail)
          and 1 <= fail[0] <= stories and 1 <= fail[1] <= images)
    if not ok:
        raise ValueError(
            f"fail must be None or (story, picture) with 1 <= story <= {stories} and "
            f"1 <= picture <= {images}; got {fail!r}"
        )
    return int(fail[0]), int(fail[1])


async def simulate_stories(
    stories: int = 5,
    images: int = 5,
    story_limit: int = 3,
    global_limit: int = 10,
    *,
    image_seconds: float = 10.0,
    clock: str = "virtual",
    time_scale: float = 0.01,
    policy: str = "fair",
    trace: Trace | None = None,
    fail: tuple[int, int] | None = None,
) -> SweepCell:
    """Run ``stories`` stories of ``images`` pictures at once and measure them.

    Every story gets ``CapacitySource(story_limit, global)``, named
    ``story:<k>``, and its own runner; the global source (named ``global``)
    is fresh for this run, so nothing else in the process competes for it.

    ``clock="virtual"`` (the default) runs on an event loop of its own whose
    clock jumps from timer to timer: the result is exact and takes
    milliseconds. ``clock="wall"`` sleeps ``image_seconds * time_scale`` real
    seconds per picture on the running loop, to check the simulation against
    real time. Pass a fresh ``trace`` to keep the events for a timeline: its
    ``meta`` gets ``time_scale`` (1.0 in virtual time) and the limits, and in
    virtual time its clock becomes the virtual one. ``fail=(k, i)`` makes
    picture ``i`` of story ``k`` (both 1-based) fail halfway through its
    time, as a model that refuses it would; the others go on.
    """
    _positive_int("stories", stories)
    _positive_int("images", images)
    _positive_int("story_limit", story_limit)
    _positive_int("global_limit", global_limit)
    d = _positive_number("image_seconds", image_seconds)
    scale = _positive_number("time_scale", time_scale)
    _check_choice("policy", policy, POLICIES)
    _check_choice("clock", clock, _CLOCKS)
    failing = _check_fail(fail, stories, images)
    if trace is None:
        trace = Trace()
    if clock == "wall":
        return await _simulate(stories, images, story_limit, global_limit, d, scale, policy,
                               trace, failing)
    return await _in_virtual_time(
        lambda: _simulate(stories, images, story_limit, global_limit, d, None, policy, trace,
                          failing)
    )


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


async def _simulate(
    stories: int,
    images: int,
    story_limit: int,
    global_limit: int,
    d: float,
    scale: float | None,
    policy: str,
    trace: Trace,
    fail: tuple[int, int] | None = None,
) -> SweepCell:
    if scale is None:  # virtual time: one loop second is one model second
        loop = asyncio.get_running_loop()
        trace.clock = loop.time
        trace.started_at = loop.time()
        scale = 1.0
    trace.meta.setdefault("time_scale", scale)
    root = CapacitySource(global_limit, name="global", policy=policy)  # type: ignore[arg-type]
    limits = {"global": global_limit}
    failed = 0

    async def one_story(k: int) -> None:
        nonlocal failed
        cap = CapacitySource(story_limit, root, name=f"story:{k}")
        limits[cap.name] = story_limit
        pictures = [_Image(f"image-{i}", d * scale, fail == (k, i), story_letter(k))
                    for i in range(1, images + 1)]
        runner = HierarchicalTaskPoolRunner(f"story-{k}", SourceFromIterable(pictures), cap)
        async with runner.run_tasks(stop_on_error=False) as results:
            async for envelope in results:
                if envelope.type is TaskEventType.ERROR:
                    if fail is None:  # a sleep never fails; say so if it did
                        raise RuntimeError(f"simulated image failed: {envelope.error!r}")
                    failed += 1

    with trace:
        await asyncio.gather(*(one_story(k) for k in range(1, stories + 1)))
    trace.meta.setdefault("limits", limits)
    use = pool_use(trace, "global", time_scale=scale)
    span, busy, peak = use.span, use.busy, use.peak
    return SweepCell(
        story_limit=story_limit,
        global_limit=global_limit,
        stories=stories,
        images=images,
        makespan=span,
        ideal=ideal_makespan(stories, images, story_limit, global_limit, d),
        utilisation=busy / (global_limit * span) if span > 0 else 0.0,
        peak_in_use=peak,
        failed=failed,
    )


@dataclass(frozen=True)
class SweepResult:
    """Every cell of a sweep, with the grid it was run on.

    ``grid(field)`` gives a row per story limit and a column per global limit
    (the layout of the heatmaps); ``cell(story_limit, global_limit)`` one cell.
    """

    story_limits: tuple[int, ...]
    global_limits: tuple[int, ...]
    stories: int
    images: int
    image_seconds: float
    cells: tuple[SweepCell, ...]

    def cell(self, story_limit: int, global_limit: int) -> SweepCell:
        for c in self.cells:
            if c.story_limit == story_limit and c.global_limit == global_limit:
                return c
        raise KeyError(
            f"no cell for story_limit={story_limit}, global_limit={global_limit}; "
            f"the sweep covered story limits {list(self.story_limits)} and global limits "
            f"{list(self.global_limits)}"
        )

    def grid(self, field: str) -> list[list[float]]:
        if field not in _FIELDS:
            raise ValueError(f"field must be one of {', '.join(_FIELDS)}; got {field!r}")
        return [
            [float(getattr(self.cell(p, g), field)) for g in self.global_limits]
            for p in self.story_limits
        ]

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per cell (for a table or a DataFrame)."""
        return [c.to_json() for c in self.cells]


async def sweep(
    story_limits: Sequence[int] = (1, 2, 3, 4, 5),
    global_limits: Sequence[int] = (2, 4, 6, 8, 10, 12),
    *,
    stories: int = 5,
    images: int = 5,
    image_seconds: float = 10.0,
    clock: str = "virtual",
    time_scale: float = 0.01,
    policy: str = "fair",
    on_cell: Callable[[SweepCell], Any] | None = None,
) -> SweepResult:
    """Run :func:`simulate_stories` for every (story limit, global limit) pair.

    Cells run one after another so they never compete for the event loop
    (which matters with ``clock="wall"``). ``on_cell`` is called with each
    finished cell, on the caller's loop (a progress bar, a log line).
    """
    ps = _limits("story_limits", story_limits)
    gs = _limits("global_limits", global_limits)
    _positive_int("stories", stories)
    _positive_int("images", images)
    d = _positive_number("image_seconds", image_seconds)
    _positive_number("time_scale", time_scale)
    _check_choice("policy", policy, POLICIES)
    _check_choice("clock", clock, _CLOCKS)
    cells = []
    for p in ps:
        for g in gs:
            cell = await simulate_stories(
                stories,
                images,
                p,
                g,
                image_seconds=d,
                clock=clock,
                time_scale=time_scale,
                policy=policy,
            )
            cells.append(cell)
            if on_cell is not None:
                on_cell(cell)
    return SweepResult(ps, gs, stories, images, d, tuple(cells))


# -- turning the knobs ----------------------------------------------------------
@dataclass(frozen=True)
class WhatIf:
    """One simulated run for a set of knobs: its measured cell and its trace."""

    cell: SweepCell
    trace: Trace
    policy: str
    fail: tuple[int, int] | None

    def summary(self) -> str:
        """One line of numbers: makespan against the bound, utilisation, peak, failures."""
        c = self.cell
        fails = f"; {c.failed} picture failed" if c.failed else ""
        return (f"{_plural(c.stories, 'story', 'stories')} x {_plural(c.images, 'picture')}, "
                f"{c.story_limit} per story, "
                f"{c.global_limit} in total, {_POLICY_WORD.get(self.policy, self.policy)}: "
                f"makespan {c.makespan:.1f} model s "
                f"(bound {c.ideal:.1f}), global pool {c.utilisation:.0%} busy, "
                f"peak {c.peak_in_use} in use{fails}")


# Policies as the knobs' buttons name them.
_POLICY_WORD = {"fair": "fair", "fifo": "FIFO"}


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def what_if(
    story_limit: int = 3,
    global_limit: int = 10,
    stories: int = 5,
    *,
    images: int = 5,
    image_seconds: float = 10.0,
    policy: str = "fair",
    fail: tuple[int, int] | None = None,
) -> WhatIf:
    """Simulate one run now, in virtual time, and return its cell and trace.

    The function behind :func:`knobs`: synchronous (it runs its own event
    loop, in a worker thread when the caller's thread already runs one, as a
    notebook's does) and exact, so the same knobs always give the same
    numbers. ``fail=(k, i)`` makes picture ``i`` of story ``k`` fail.

    >>> what_if(3, 12).cell.makespan
    30.0
    """
    trace = Trace()

    def make() -> Any:
        return simulate_stories(stories, images, story_limit, global_limit,
                                image_seconds=image_seconds, policy=policy, trace=trace,
                                fail=fail)

    # simulate_stories checks the knobs; run_virtual hands back its errors.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        cell = _run_virtual(make)
    else:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cell = pool.submit(_run_virtual, make).result()
    return WhatIf(cell, trace, policy, _check_fail(fail, stories, images))


def knobs(
    story_limit: int = 3,
    global_limit: int = 10,
    stories: int = 5,
    *,
    images: int = 5,
    policy: str = "fair",
    fail: tuple[int, int] | None = None,
    max_stories: int = 8,
    max_limit: int = 20,
    moments: Callable[[WhatIf], list[Any]] | None = None,
    tick: str | None = None,
) -> Any:
    """Sliders over :func:`what_if`: move one and the timeline is redrawn at once.

    Story limit, global limit, number of stories, fair or FIFO, and which
    picture (if any) fails. Returns a :class:`storylab.viz.knobs.Knobs`; make
    it the last expression of a cell to show it (a static picture of its
    current setting stays in papermill/nbconvert output). ``k.set(global_limit=12)``
    turns a knob from code; ``k.result`` is the :class:`WhatIf` on show.
    ``moments``, if given, maps the run on show to extra moments to mark on its
    chart (``Moment`` objects or ``(model second, text)`` pairs), redrawn with it.
    ``tick="D"`` marks a moment at 0 (the split) with ◆ instead of ▼, for a
    notebook where ▼ already means something else.
    """
    from storylab.viz.knobs import Knobs

    return Knobs(what_if, story_limit=story_limit, global_limit=global_limit,
                 stories=stories, images=images, policy=policy, fail=fail,
                 max_stories=max_stories, max_limit=max_limit, moments=moments, tick=tick)
