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

Pictures of the results (:meth:`SweepResult.plot_heatmaps`,
:meth:`SweepResult.plot_lines`) import matplotlib only when called.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceFromIterable,
    TaskEventType,
    Trace,
)
from storylab.scheduling.capacity import POLICIES
from storylab.scheduling.capacity import check_positive_int as _positive_int

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["SweepCell", "SweepResult", "ideal_makespan", "simulate_stories", "sweep"]

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
    global source ever had out at once.
    """

    story_limit: int
    global_limit: int
    stories: int
    images: int
    makespan: float
    ideal: float
    utilisation: float
    peak_in_use: int

    @property
    def efficiency(self) -> float:
        return self.ideal / self.makespan if self.makespan > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "efficiency": self.efficiency}


def _measure(trace: Trace, time_scale: float, global_name: str) -> tuple[float, float, int]:
    """(makespan, busy image-seconds, global peak) from a trace, in model seconds."""
    starts: dict[tuple[str, int], float] = {}
    busy = 0.0
    last = trace.started_at
    for e in trace.events:
        if e.runner is None or e.task_id is None:
            continue
        key = (e.runner, e.task_id)
        if e.kind is EventKind.TASK_START:
            starts[key] = e.t
        elif e.kind in (EventKind.TASK_END, EventKind.TASK_ERROR, EventKind.TASK_CANCEL):
            busy += e.t - starts.pop(key, e.t)
            last = max(last, e.t)
    peak = max((n for _, n in trace.in_use_series().get(global_name, [(0.0, 0)])), default=0)
    return (last - trace.started_at) / time_scale, busy / time_scale, peak


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: when the loop would wait for its next timer, jump the clock there."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None):  # type: ignore[override]
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

    __slots__ = ("label", "seconds")

    def __init__(self, label: str, seconds: float) -> None:
        self.label = label
        self.seconds = seconds

    def __call__(self) -> Any:
        return asyncio.sleep(self.seconds)


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
    virtual time its clock becomes the virtual one.
    """
    _positive_int("stories", stories)
    _positive_int("images", images)
    _positive_int("story_limit", story_limit)
    _positive_int("global_limit", global_limit)
    d = _positive_number("image_seconds", image_seconds)
    scale = _positive_number("time_scale", time_scale)
    _check_choice("policy", policy, POLICIES)
    _check_choice("clock", clock, _CLOCKS)
    if trace is None:
        trace = Trace()
    if clock == "wall":
        return await _simulate(stories, images, story_limit, global_limit, d, scale, policy, trace)
    return await _in_virtual_time(
        lambda: _simulate(stories, images, story_limit, global_limit, d, None, policy, trace)
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
) -> SweepCell:
    if scale is None:  # virtual time: one loop second is one model second
        loop = asyncio.get_running_loop()
        trace.clock = loop.time
        trace.started_at = loop.time()
        scale = 1.0
    trace.meta.setdefault("time_scale", scale)
    root = CapacitySource(global_limit, name="global", policy=policy)  # type: ignore[arg-type]
    limits = {"global": global_limit}

    async def one_story(k: int) -> None:
        cap = CapacitySource(story_limit, root, name=f"story:{k}")
        limits[cap.name] = story_limit
        pictures = [_Image(f"story {k} image {i}", d * scale) for i in range(1, images + 1)]
        runner = HierarchicalTaskPoolRunner(f"story-{k}", SourceFromIterable(pictures), cap)
        async with runner.run_tasks(stop_on_error=False) as results:
            async for envelope in results:
                if envelope.type is TaskEventType.ERROR:  # a sleep never fails; say so if it did
                    raise RuntimeError(f"simulated image failed: {envelope.error!r}")

    with trace:
        await asyncio.gather(*(one_story(k) for k in range(1, stories + 1)))
    trace.meta.setdefault("limits", limits)
    span, busy, peak = _measure(trace, scale, "global")
    return SweepCell(
        story_limit=story_limit,
        global_limit=global_limit,
        stories=stories,
        images=images,
        makespan=span,
        ideal=ideal_makespan(stories, images, story_limit, global_limit, d),
        utilisation=busy / (global_limit * span) if span > 0 else 0.0,
        peak_in_use=peak,
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

    # -- pictures (matplotlib imported on call) ---------------------------------------
    def plot_heatmaps(self, *, title: str | None = None) -> Figure:
        """Makespan (model seconds) and utilisation side by side, one square per cell."""
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(
            1, 2, figsize=(12, 0.9 + 0.75 * len(self.story_limits)), layout="constrained"
        )
        panels = (
            (left, "makespan", "makespan (model seconds)", "viridis_r", "{:.0f}"),
            (right, "utilisation", "utilisation of the global pool", "magma", "{:.0%}"),
        )
        for ax, field, label, cmap, fmt in panels:
            values = self.grid(field)
            vmax = 1.0 if field == "utilisation" else None
            image = ax.imshow(values, cmap=cmap, aspect="auto", vmin=0, vmax=vmax)
            for i, row in enumerate(values):
                for j, v in enumerate(row):
                    rgba = image.cmap(image.norm(v))
                    dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                    ax.text(
                        j,
                        i,
                        fmt.format(v),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
            ax.set_xticks(range(len(self.global_limits)), [str(g) for g in self.global_limits])
            ax.set_yticks(range(len(self.story_limits)), [str(p) for p in self.story_limits])
            ax.set_xlabel("global limit (images at once, all stories)")
            ax.set_ylabel("per-story limit (images at once, one story)")
            ax.set_title(label)
            fig.colorbar(image, ax=ax, label=label, shrink=0.9)
        fig.suptitle(
            title
            or f"{self.stories} stories x {self.images} images of "
            f"{self.image_seconds:g} model s each, started together"
        )
        return fig

    def plot_lines(self, *, title: str | None = None) -> Figure:
        """Makespan against the global limit: one small panel per per-story limit.

        Each panel draws the measured makespan (dots) over the ideal bound
        (a wide grey line) and shades where the measurement sits above the
        bound. Panels share both axes, so a legend of two entries is enough.
        """
        import math

        import matplotlib.pyplot as plt

        n = len(self.story_limits)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, sharex=True, sharey=True, squeeze=False,
                                 figsize=(3.6 * cols + 1, 2.4 * rows + 1), layout="constrained")
        flat = [ax for row in axes for ax in row]
        top = max(max(c.makespan, c.ideal) for c in self.cells) * 1.1
        for ax, p in zip(flat, self.story_limits, strict=False):
            cells = [self.cell(p, g) for g in self.global_limits]
            xs = list(self.global_limits)
            bound = [c.ideal for c in cells]
            measured = [c.makespan for c in cells]
            ax.plot(xs, bound, "-", color="#bbbbbb", lw=6, solid_capstyle="round",
                    label="ideal bound (wide, grey)", gid=f"bound:{p}")
            ax.fill_between(xs, bound, measured, where=[m > b + 1e-9 for m, b in
                                                        zip(measured, bound, strict=True)],
                            color="#d62728", alpha=0.25, interpolate=True, lw=0,
                            label="above the bound")
            ax.plot(xs, measured, "o-", color="#1f77b4", lw=1.5, ms=4, label="measured",
                    gid=f"measured:{p}")
            misses = sum(1 for m, b in zip(measured, bound, strict=True) if m > b + 1e-9)
            note = "on the bound everywhere" if not misses else f"{misses} cell(s) above"
            ax.set_title(f"per-story limit {p}: {note}", fontsize=9)
            ax.set_xticks(xs)
            ax.set_ylim(0, top)
            ax.grid(color="#e5e5e5")
        for ax in flat[n:]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("global limit")
        for row in axes:
            row[0].set_ylabel("makespan (model s)")
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8,
                   frameon=False)
        fig.suptitle(title or "Measured makespan against the ideal bound, per per-story limit")
        return fig


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
