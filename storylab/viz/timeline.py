"""Timelines of a traced run: who waited, who ran, and how full each limit was.

A :class:`~storylab.scheduling.trace.Trace` is a flat list of facts
(``WAIT``, ``GRANT``, ``TASK_START``...). Reading it as a picture answers the
questions a learner actually has: *why did image 4 start late?* (it waited,
and the bar says whether its own story's limit or the global one held it),
*did we ever exceed the limits?* (the capacity steps stay under the dashed
lines), and *what did parallelism buy?* (the same story run sequentially and
in parallel, side by side, with the measured makespans).

Time is shown in **model seconds**: the simulated backends sleep ``model
seconds x time_scale`` wall seconds, so every chart divides wall seconds by
the time scale. It is taken from the ``time_scale`` argument if given, else
from ``trace.meta["time_scale"]``, else 1.0.

The data functions (:func:`timeline_lanes`, :func:`capacity_series`,
:func:`makespan`) need no plotting library; the ``plot_*`` functions import
matplotlib when called.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from storylab.scheduling.trace import EventKind, Trace
from storylab.viz._figure import new_figure
from storylab.viz._palette import (
    COLOURS,
    MARK_COLOUR,
    OKABE_ITO,
    REUSED_COLOUR,
    WAIT_COLOURS,
    Status,
    series_style,
)
from storylab.viz.labels import plain_source, source_labels, task_label
from storylab.viz.readings import Moment, in_use_series, key_moments, root_source, time_origin

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from storylab.viz.readings import ChildCounter

__all__ = [
    "CapacityLine",
    "TaskLane",
    "capacity_series",
    "makespan",
    "mark_moments",
    "plot_capacity",
    "plot_children",
    "plot_in_use",
    "plot_sequential_vs_parallel",
    "figure_summary",
    "plot_timeline",
    "plot_timelines",
    "timeline_lanes",
    "timeline_summary",
]

TIME_LABEL = "time (model seconds)"
# A limit is a rule, not a status: black dashes, apart from every data colour.
LIMIT_COLOUR = "#000000"

_END_KINDS = {
    EventKind.TASK_END: Status.COMPLETED,
    EventKind.TASK_ERROR: Status.FAILED,
    EventKind.TASK_CANCEL: Status.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class TaskLane:
    """One task's life, in model seconds since the trace began.

    ``wait`` is ``(start, end)`` of the time it waited for a unit of capacity
    (``None`` when a unit was free at once), and ``wait_level`` the capacity
    source that held it back when the wait began (the task's own ``group`` or
    an ancestor such as ``"global"``); ``wait_parts`` cuts the wait where that
    cause changed. ``run`` is ``(start, end)`` of its execution; ``outcome``
    is completed, failed, cancelled, or running if the trace ended first.
    """

    runner: str
    task_id: int
    label: str
    group: str
    wait: tuple[float, float] | None
    wait_level: str | None
    run: tuple[float, float]
    outcome: Status
    error: str | None = None
    # (model time, message) of each MARK recorded inside the task, e.g. a retry
    marks: tuple[tuple[float, str], ...] = ()
    # The wait cut where its cause changed: ``(start, end, level)`` pieces in
    # time order. A task can start waiting for its story's limit and, once its
    # story has room, go on waiting for the global one: two pieces, two colours.
    wait_parts: tuple[tuple[float, float, str | None], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.runner}:{self.task_id}"


@dataclass(frozen=True, slots=True)
class CapacityLine:
    """Units in use of one capacity source as step points, and its limit."""

    name: str
    points: tuple[tuple[float, int], ...]
    limit: int | None
    depth: int  # 0 for a root ("global"), 1 for its children, ...

    @property
    def peak(self) -> int:
        return max(n for _, n in self.points)


# -- data ----------------------------------------------------------------------
def _scale(trace: Trace, time_scale: float | None) -> float:
    scale = trace.meta.get("time_scale", 1.0) if time_scale is None else time_scale
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"time_scale must be a number > 0, got {scale!r}")
    return float(scale)


def _check_trace(trace: Any) -> Trace:
    if not isinstance(trace, Trace):
        raise TypeError(f"trace must be a storylab Trace, got {type(trace).__name__}")
    return trace


def timeline_lanes(trace: Trace, *, time_scale: float | None = None) -> list[TaskLane]:
    """The tasks of ``trace`` as lanes, grouped by ``group`` in order of first start.

    A task's wait is matched by owner: the runner takes a unit for task *n*
    (``WAIT`` ... ``GRANT`` or a single ``ACQUIRE`` with ``runner``/``task_id``)
    before it starts task *n*. A unit taken for a task that never started (the
    source turned out to be empty) makes no lane. Tasks recorded without a
    capacity (a sequential run) simply have no wait.
    """
    _check_trace(trace)
    scale = _scale(trace, time_scale)

    origin = time_origin(trace)

    def model(t: float) -> float:
        return (t - origin) / scale

    waits: dict[tuple[str, int], tuple[float, float | None, str | None]] = {}
    # Replaying the units in use tells which level holds a waiter back at each
    # instant: the first full one on its path, leaf first (the runner's rule).
    limits = trace.meta.get("limits", {})
    counts: dict[str, int] = {}
    waiting: dict[tuple[str, int], tuple[str, ...]] = {}  # key -> its path, while it waits
    parts: dict[tuple[str, int], list[list[Any]]] = {}  # key -> [[t0, t1, level], ...]
    starts: dict[tuple[str, int], Any] = {}
    ends: dict[tuple[str, int], Any] = {}
    marks: dict[tuple[str, int], list[tuple[float, str]]] = {}
    last_t = origin
    for e in trace.events:
        last_t = max(last_t, e.t)
        delta = _UNIT_DELTA.get(e.kind, 0)
        if delta:
            for name in e.path:
                counts[name] = counts.get(name, 0) + delta
        key = (e.runner, e.task_id) if e.runner is not None and e.task_id is not None else None
        if key is not None and e.kind is EventKind.GRANT and key in waiting:
            del waiting[key]
            parts[key][-1][1] = e.t
        if delta and waiting:
            for other, path in waiting.items():
                now = _blocking(path, counts, limits)
                current = parts[other][-1]
                if now is not None and now != current[2]:
                    current[1] = e.t
                    parts[other].append([e.t, None, now])
        if key is None:
            continue
        if e.kind is EventKind.WAIT:
            waits[key] = (e.t, None, e.level)
            waiting[key] = e.path
            parts[key] = [[e.t, None, e.level]]
        elif e.kind is EventKind.GRANT and key in waits:
            t0, _, level = waits[key]
            waits[key] = (t0, e.t, level)
        elif e.kind is EventKind.WAIT_CANCELLED:
            waits.pop(key, None)
            waiting.pop(key, None)
            parts.pop(key, None)
        elif e.kind is EventKind.TASK_START:
            starts[key] = e
        elif e.kind in _END_KINDS and key in starts:
            ends[key] = e
        elif e.kind is EventKind.MARK:
            marks.setdefault(key, []).append((model(e.t), e.message or ""))

    by_group: dict[str, list[TaskLane]] = {}
    for key, start in starts.items():  # dicts keep start order
        end = ends.get(key)
        group = start.group or start.runner
        wait = level = None
        pieces: tuple[tuple[float, float, str | None], ...] = ()
        if key in waits:
            w0, w1, level = waits[key]
            wait = (model(w0), model(w1 if w1 is not None else start.t))
            pieces = _wait_pieces(parts.get(key, []), wait, model, end_of=start.t,
                                  tiny=(last_t - origin) / scale * _BURST)
        lane = TaskLane(
            runner=start.runner,
            task_id=start.task_id,
            label=start.label or f"task {start.task_id}",
            group=group,
            wait=wait,
            wait_level=level,
            run=(model(start.t), model(end.t if end is not None else last_t)),
            outcome=_END_KINDS[end.kind] if end is not None else Status.RUNNING,
            error=end.error if end is not None else None,
            marks=tuple(marks.get(key, ())),
            wait_parts=pieces,
        )
        by_group.setdefault(group, []).append(lane)
    return [lane for lanes in by_group.values() for lane in lanes]


_UNIT_DELTA = {EventKind.ACQUIRE: 1, EventKind.GRANT: 1, EventKind.RELEASE: -1}


def _blocking(path: tuple[str, ...], counts: Mapping[str, int],
              limits: Mapping[str, int]) -> str | None:
    """The first full level on ``path`` (leaf first), or ``None`` if all have room."""
    for name in path:
        limit = limits.get(name)
        if limit is not None and counts.get(name, 0) >= limit:
            return name
    return None


def _wait_pieces(raw: list[list[Any]], wait: tuple[float, float], model: Any, *,
                 end_of: float, tiny: float) -> tuple[tuple[float, float, str | None], ...]:
    """``raw`` pieces of one wait in model seconds; a piece shorter than ``tiny``
    (a unit handed on within an instant) joins the piece before it."""
    out: list[list[Any]] = []
    for t0, t1, level in raw:
        a, b = model(t0), model(t1 if t1 is not None else end_of)
        if out and (b - a <= tiny or level == out[-1][2]):
            out[-1][1] = b
            continue
        if out and out[-1][1] - out[-1][0] <= tiny:  # the piece before was a flicker
            out[-1][1:] = [b, level]
            continue
        out.append([a, b, level])
    if not out:
        return ((wait[0], wait[1], None),)
    out[0][0], out[-1][1] = wait[0], wait[1]
    # Two neighbours of one level, once a flicker between them is gone, are one piece.
    merged: list[list[Any]] = [out[0]]
    for piece in out[1:]:
        if piece[2] == merged[-1][2]:
            merged[-1][1] = piece[1]
        else:
            merged.append(piece)
    return tuple((a, b, level) for a, b, level in merged)


def makespan(trace: Trace, *, time_scale: float | None = None) -> float:
    """Model seconds from the time origin to the last task's end (0.0 if none).

    The origin is :func:`storylab.viz.readings.time_origin` (the trace's first
    event), the same instant every chart's time axis starts from, so a chart
    whose title states the makespan has its last bar end right there.
    """
    _check_trace(trace)
    scale = _scale(trace, time_scale)
    ends = [e.t for e in trace.events if e.kind in _END_KINDS]
    if not ends:
        return 0.0
    return (max(ends) - time_origin(trace)) / scale


def _limits_from(limits: Any, trace: Trace) -> dict[str, int]:
    """Normalise the ``limits`` argument (or ``trace.meta["limits"]``)."""
    if limits is None:
        limits = trace.meta.get("limits", {})
    if isinstance(limits, Mapping):
        pairs = list(limits.items())
    elif isinstance(limits, Iterable) and not isinstance(limits, str | bytes):
        pairs = []
        for item in limits:  # CapacitySource objects (or anything with name/capacity)
            if not (hasattr(item, "name") and hasattr(item, "capacity")):
                raise TypeError(
                    "limits must be a mapping {source name: limit} or an iterable of "
                    f"capacity sources; got an item of type {type(item).__name__}"
                )
            pairs.append((item.name, item.capacity))
    else:
        raise TypeError(
            "limits must be a mapping {source name: limit} or an iterable of capacity "
            f"sources; got {type(limits).__name__}"
        )
    out: dict[str, int] = {}
    for name, n in pairs:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"limits[{name!r}] must be an integer >= 1, got {n!r}")
        out[str(name)] = n
    return out


def capacity_series(
    trace: Trace,
    *,
    limits: Any = None,
    time_scale: float | None = None,
) -> list[CapacityLine]:
    """Units in use per capacity source, in model seconds, roots first.

    ``limits`` is a mapping ``{source name: capacity}`` or an iterable of
    :class:`~storylab.scheduling.CapacitySource`; when omitted,
    ``trace.meta["limits"]`` is used (the trace itself does not record
    capacities). A source named in ``limits`` that never took a unit still
    gets a flat line, so an idle story is visible too.
    """
    _check_trace(trace)
    scale = _scale(trace, time_scale)
    limit_of = _limits_from(limits, trace)
    raw = in_use_series(trace, time_scale=scale)
    depth: dict[str, int] = {}
    for e in trace.events:
        for i, name in enumerate(e.path):  # leaf first, root last
            depth.setdefault(name, len(e.path) - 1 - i)
    order = list(raw) + [n for n in limit_of if n not in raw]
    first_seen = {name: i for i, name in enumerate(order)}
    order.sort(key=lambda n: (depth.get(n, 0), first_seen[n]))
    return [
        CapacityLine(
            name=name,
            points=tuple(raw.get(name, [(0.0, 0)])),
            limit=limit_of.get(name),
            depth=depth.get(name, 0),
        )
        for name in order
    ]


# -- drawing -------------------------------------------------------------------
# Changes that undo themselves within this fraction of the run (a unit handed
# from a finished task to a waiter, or the runner's probe for a next task when
# the source is already empty) are drawn as one step; peaks are still counted
# from the raw data.
_BURST = 0.005


def _merge_bursts(
    points: tuple[tuple[float, int], ...], window: float
) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    burst_start = None
    for t, v in points:
        if out and burst_start is not None and t - burst_start <= window:
            out[-1] = (out[-1][0], v)
            continue
        out.append((t, v))
        burst_start = t
    # Drop steps that changed nothing after merging.
    flat = [out[0]]
    for t, v in out[1:]:
        if v != flat[-1][1]:
            flat.append((t, v))
    return flat


def _step_to(points: list[tuple[float, int]], end: float) -> tuple[list[float], list[int]]:
    """Step coordinates that hold the last value until ``end``, never going back in time.

    The last release of a run comes a hair after its last task's end (the
    makespan); a closing point at the makespan would then step backwards.
    """
    xs = [t for t, _ in points]
    ys = [v for _, v in points]
    if end > xs[-1]:
        xs.append(end)
        ys.append(ys[-1])
    return xs, ys


_LABEL_CHARS = 40


def _short_label(text: str, limit: int = _LABEL_CHARS) -> str:
    """A group header that does not eat half the figure's width."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A wait or a run shorter than this share of the chart's time span is not a bar
# anyone can see: a wait that short is not called a wait, a run that short gets a tick.
_VISIBLE = 0.004


def _visible_wait(lane: TaskLane, end: float) -> bool:
    """Whether ``lane`` waited long enough to see, on a chart whose lanes end at ``end``."""
    return lane.wait is not None and lane.wait[1] - lane.wait[0] > end * _VISIBLE


def _lanes_end(lanes: list[TaskLane]) -> float:
    return max((lane.run[1] for lane in lanes), default=0.0)


def _pieces(lane: TaskLane) -> tuple[tuple[float, float, str | None], ...]:
    """The pieces of ``lane``'s wait (one piece for a lane built by hand)."""
    if lane.wait is None:
        return ()
    return lane.wait_parts or ((lane.wait[0], lane.wait[1], lane.wait_level),)


def _wait_levels(lanes: list[TaskLane]) -> dict[str, str]:
    """Legend text per blocking level: the task's own limit vs an ancestor's.

    A wait is cut where its cause changed (the story had room again but the
    global limit was full), and each piece is named by the level that was full
    during it."""
    names: dict[str, str] = {}
    end = _lanes_end(lanes)
    for lane in lanes:
        if not _visible_wait(lane, end):
            continue  # a unit granted (almost) at once is no wait a reader could see
        for _, _, level in _pieces(lane):
            if level is None:
                continue
            if level == lane.group:
                own = ("its story's limit" if lane.group.startswith("story:")
                       else f"its own limit ({lane.group.split(' (')[0]})")
                names.setdefault("__own__", f"waiting: {own} was full")
            else:
                names.setdefault(level, f"waiting: the {plain_source(level)} limit was full")
    return names


def _level_order(lanes: list[TaskLane]) -> list[str]:
    """Wait levels in colour order: the task's own limit first, then ancestors as met.

    The own limit keeps the first place (and colour) even on a chart where no task
    waited on it, so an ancestor's wait has the same colour on every chart."""
    return ["__own__", *(k for k in _wait_levels(lanes) if k != "__own__")]


def _draw_gantt(
    ax: Axes,
    lanes: list[TaskLane],
    *,
    legend: bool = True,
    names: Mapping[str, str] | None = None,
    level_keys: list[str] | None = None,
) -> None:
    # Level colours: own limit first, then ancestors in order of appearance
    # (given by the caller when several panels must agree on them).
    if level_keys is None:
        level_keys = _level_order(lanes)

    def wait_colour(lane: TaskLane, level: str | None) -> str:
        k = "__own__" if level == lane.group else str(level)
        if k not in level_keys:  # a wait too short to show
            return WAIT_COLOURS[0]
        return WAIT_COLOURS[min(level_keys.index(k), len(WAIT_COLOURS) - 1)]

    # A run too short to see as a bar (a result handed back from the graph) still
    # gets a visible tick at its start, so the lane does not look empty.
    end = max((lane.run[1] for lane in lanes), default=0.0)
    hairline = end * _VISIBLE

    ticks: list[float] = []
    tick_labels: list[str] = []
    headers: list[int] = []
    y = 0.0
    group = None
    band = False
    for lane in lanes:
        if lane.group != group:
            group = lane.group
            if ticks:
                y += 0.4
            ticks.append(y)
            tick_labels.append(_short_label((names or {}).get(group, group)))
            headers.append(len(ticks) - 1)
            band = not band
            y += 1
        if band:
            ax.axhspan(y - 0.5, y + 0.5, color="#f4f4f4", zorder=0, lw=0)
        for i, (w0, w1, level) in enumerate(_pieces(lane)):
            # One hatched bar per cause: the colour changes where the cause did.
            (rect,) = ax.barh(
                y, max(w1 - w0, 0.0), left=w0, height=0.6, color=wait_colour(lane, level),
                edgecolor="#666666", linewidth=0.5, hatch="///", zorder=2,
            ).patches
            rect.set_gid(f"wait:{lane.key}" if i == 0 else f"wait-then:{lane.key}:{i}")
        r0, r1 = lane.run
        (rect,) = ax.barh(
            y, max(r1 - r0, 0.0), left=r0, height=0.6, color=COLOURS[lane.outcome],
            edgecolor="black", linewidth=0.5, zorder=3,
        ).patches
        rect.set_gid(f"run:{lane.key}")
        if _reused(lane, hairline):
            # Handed back from the graph: a marker of its own, named in the legend.
            ax.plot([r0], [y], marker="D", markersize=8, markeredgecolor="black",
                    markeredgewidth=0.8, color=REUSED_COLOUR, linestyle="", zorder=4,
                    clip_on=False, gid=f"reused:{lane.key}")  # whole, even at time 0
        elif r1 - r0 <= hairline:
            ax.plot([r0], [y], marker="|", markersize=12, markeredgewidth=2.5,
                    color=COLOURS[lane.outcome], zorder=4, gid=f"instant:{lane.key}")
        if lane.marks:
            # A mark at the bar's very start (a request refused at once) is drawn about
            # 3 points inside the bar, so that neither the axis nor the bar's edge hides it.
            width_in = ax.get_position().width * cast("Figure", ax.figure).get_figwidth()
            nudge = 3 / 72 / width_in * end if width_in > 0 else 0.0
            ax.scatter(
                [max(t, r0 + nudge) for t, _ in lane.marks], [y] * len(lane.marks),
                marker="v", s=28, color=MARK_COLOUR, edgecolor="white", linewidth=0.5,
                zorder=5, clip_on=False, gid=f"marks:{lane.key}",
            )
        if lane.outcome is Status.FAILED:
            ax.text(r1, y, " ✗", va="center", ha="left", color=COLOURS[Status.FAILED],
                    fontsize=10, fontweight="bold", zorder=4)
        ticks.append(y)
        tick_labels.append(task_label(lane.label))
        y += 1
    ax.set_yticks(ticks, tick_labels, fontsize=10)
    for i, label in enumerate(ax.get_yticklabels()):
        if i in headers:
            label.set_fontweight("bold")
            label.set_fontsize(11)
    ax.set_ylim(y - 0.3, -0.7)  # first lane on top
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(NO_SOURCE_LABEL)  # one wording for every timeline: its headers name the group
    ax.set_xlim(left=0)
    ax.grid(axis="x", color="#dddddd", zorder=0)
    ax.tick_params(axis="y", length=0)
    if any(_reused(lane, hairline) for lane in lanes):
        ax.tick_params(axis="y", pad=9)  # room for the diamonds drawn at time 0
    if not legend:
        return
    handles = _gantt_handles(lanes, level_keys, names)
    if handles:
        # Under the axes, not beside them: the bars keep the figure's width.
        from matplotlib.transforms import offset_copy

        below = offset_copy(ax.transAxes, fig=cast("Figure", ax.figure), y=-34, units="points")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0),
                  bbox_transform=below, ncols=2, fontsize=10, frameon=False)


#: The y label of a timeline whose trace took no unit from any capacity source (a plain loop).
NO_SOURCE_LABEL = "task"  # the group is named in bold above its rows


def _has_capacity(trace: Trace) -> bool:
    """Whether any task of ``trace`` took (or waited for) a unit of a capacity source."""
    return any(ev.kind in (EventKind.ACQUIRE, EventKind.WAIT, EventKind.GRANT)
               for ev in trace.events)


def _reused(lane: TaskLane, hairline: float) -> bool:
    """A completed run too short to draw: a result handed back from the graph."""
    return lane.outcome is Status.COMPLETED and lane.run[1] - lane.run[0] <= hairline


REUSED_LEGEND = "↺ from graph (handed back, not run again)"


def _gantt_handles(lanes: list[TaskLane], level_keys: list[str],
                   names: Mapping[str, str] | None = None) -> list[Any]:
    """Legend entries for what the lanes show: outcomes, waits by level (``names``
    renames a level, as it does the groups), marks."""
    from matplotlib.patches import Patch

    handles: list[Any] = []  # Patch and Line2D legend entries
    end = max((lane.run[1] for lane in lanes), default=0.0)
    outcomes = [s for s in Status if s is not Status.WAITING and any(
        lane.outcome is s and not _reused(lane, end * _VISIBLE) for lane in lanes)]
    for s in outcomes:
        text = "still running at the end of the trace" if s is Status.RUNNING else f"ran, {s}"
        handles.append(Patch(facecolor=COLOURS[s], edgecolor="black", label=text))
    for k, text in sorted(_wait_levels(lanes).items(), key=lambda kv: level_keys.index(kv[0])):
        if names and k in names:
            text = f"waiting: the {names[k]} limit was full"
        handles.append(Patch(facecolor=WAIT_COLOURS[min(level_keys.index(k),
                                                        len(WAIT_COLOURS) - 1)],
                             edgecolor="#666666", hatch="///", label=text))
    if any(_reused(lane, end * _VISIBLE) for lane in lanes):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="D", linestyle="", color=REUSED_COLOUR,
                              markeredgecolor="black", markersize=7, label=REUSED_LEGEND))
    if any(lane.marks for lane in lanes):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="v", linestyle="", color=MARK_COLOUR,
                              markersize=6, label="marked inside the task (e.g. a retry)"))
    return handles


_MOMENT_COLOURS = {"split": "#0072B2", "handoff": "#009E73", "failed": "#D55E00",
                   "mark": "#CC79A7", "end": "#666666"}
# Moment lines are dashed; the end of the run is dotted and grey, so it is never
# read as a limit (black dashes).
_MOMENT_STYLES: dict[str, Any] = {"end": ":"}


def _moments(trace: Trace, moments: Any, names: Mapping[str, str] | None) -> list[Moment]:
    if moments is None or moments is False:
        return []
    if moments is True:
        found = key_moments(trace, names=dict(names) if names else None)
        return [_readable_failure(trace, m, names) for m in found]
    return _as_moments(moments)


def _readable_failure(trace: Trace, m: Moment, names: Mapping[str, str] | None) -> Moment:
    """A failure named as its lane reads: ``✗ story B image-5 failed``, not the raw label."""
    if m.kind != "failed" or m.index is None or not 0 <= m.index < len(trace.events):
        return m
    e = trace.events[m.index]
    groups = {ev.group for ev in trace.events if ev.kind is EventKind.TASK_START}
    where = ""
    if len(groups) > 1 and e.group:
        where = source_labels(trace, names).get(e.group, e.group) + " "
    what = task_label(e.label) if e.label else f"task {e.task_id}"
    return Moment(m.t, f"✗ {where}{what} failed", m.kind, m.index)


def _as_moments(moments: Iterable[Any]) -> list[Moment]:
    out = []
    for m in moments:
        if isinstance(m, Moment):
            out.append(m)
        elif isinstance(m, tuple) and len(m) in (2, 3) and isinstance(m[0], int | float) \
                and not isinstance(m[0], bool) and isinstance(m[1], str):
            out.append(Moment(float(m[0]), m[1], *(m[2:] or ("note",))))
        else:
            raise ValueError("moments must be Moment objects or (model second, text) pairs, "
                             f"got {m!r}")
    return out


# The glyph of a moment that sits on the axis itself: the marker drawn above the
# axis and the same glyph in front of its label. A timeline whose bars carry ▼
# marks (a backend's retries) uses the diamond, so ▼ keeps one meaning per figure.
_TICK_GLYPHS = {"v": "▼", "D": "◆"}


def _tick_for(*traces: Trace) -> str:
    """``"D"`` when any trace has marks made inside a task (drawn ▼ on bars), else ``"v"``."""
    inside = any(e.kind is EventKind.MARK and e.task_id is not None
                 for t in traces for e in t.events)
    return "D" if inside else "v"


def mark_moments(ax: Axes, moments: Iterable[Any], *, tick: str | None = "v") -> list[Any]:
    """Mark key moments on a chart whose x axis is model seconds: a dotted line and a label.

    ``moments`` are :class:`~storylab.viz.readings.Moment` objects (from
    :func:`~storylab.viz.readings.key_moments`, say) or ``(t, text)`` pairs
    such as ``(31.0, "kill")`` or ``(12.0, "lease expired")``. Every moment
    gets its own line (gid ``moment:<kind>:<i>``, ``i`` its rank in time),
    except failures close together (within 5 % of the axis), which share one
    dashed line at the first of them: a failure is marked the same way on
    every chart, whether alone or in a crowd.
    Labels sit at the top of the axes in up to three rows and never overlap:
    moments too close together for separate labels share one, which counts
    them (``"✗ 6 tasks failed"``, ``"retry ×4"``). A moment on the axis itself
    gets a marker above the axis, named again in its label: ``tick="v"`` (▼,
    the default) or ``"D"`` (◆); ``tick=None`` draws no marker, the label
    alone names the line. Returns the artists drawn: each
    line, followed by its label after the last line it stands for (so two
    moments far apart give ``[line, label, line, label]``).
    """
    marks = sorted(_as_moments(moments), key=lambda m: m.t)
    if not marks:
        return []
    lo, hi = ax.get_xlim()
    span = (hi - lo) or 1.0
    width = _axes_width_points(ax)
    groups = _label_groups(marks, lo, span, width)
    drawn: list[Any] = []
    i = 0
    for members, row, right in groups:
        ticked = False  # a moment on the axis itself: its label names the tick (▼)
        close = members[-1].t - members[0].t <= 0.05 * span
        if len(members) > 1 and close and {m.kind for m in members} == {"failed"}:
            # Failures close together: one dashed line, like a lone failure's (the same
            # mark for a failure on every chart), at the first of them; its label counts
            # them, and each bar still ends in its own ✗.
            drawn.append(ax.axvline(members[0].t, color=_MOMENT_COLOURS["failed"],
                                    ls=_MOMENT_STYLES.get("failed", (0, (4, 2))), lw=1.4,
                                    zorder=6, gid=f"moment:failed:{i}"))
            i += len(members)
        else:
            for m in members:
                colour = _MOMENT_COLOURS.get(m.kind, "#555555")
                drawn.append(ax.axvline(m.t, color=colour,
                                        ls=_MOMENT_STYLES.get(m.kind, (0, (4, 2))),
                                        lw=1.4, zorder=6, gid=f"moment:{m.kind}:{i}"))
                if tick is not None and m.t - lo <= 0.01 * span:
                    # A line on the axis itself hides in it: a tick above the axes shows it.
                    drawn.append(ax.plot([m.t], [1.0], marker=tick, ms=9 if tick == "v" else 7,
                                         color=colour,
                                         transform=ax.get_xaxis_transform(), clip_on=False,
                                         zorder=8, gid=f"moment-tick:{m.kind}:{i}")[0])
                    ticked = True
                i += 1
        anchor = members[-1] if right else members[0]
        kinds = {m.kind for m in members}
        colour = _MOMENT_COLOURS.get(kinds.pop(), "#555555") if len(kinds) == 1 else "#000000"
        text = ax.annotate(
            (_TICK_GLYPHS.get(tick or "", "") + " " if ticked and not right else "")
            + _group_text(members),
            xy=(anchor.t, 1.0), xycoords=("data", "axes fraction"),
            xytext=(-_LABEL_PAD if right else _LABEL_PAD, -4 - _ROW_POINTS * row),
            textcoords="offset points", ha="right" if right else "left", va="top",
            fontsize=_MOMENT_FONT, color=colour, zorder=7,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
        text.set_gid(f"moment-label:{len(members)}")
        drawn.append(text)
    return drawn


_MOMENT_FONT = 10
_ROW_POINTS = 15  # one row of moment labels, in points
_ROWS = 3  # rows of labels at the top of an axes before labels are merged
_LABEL_PAD = 3  # points between a moment's line and its label
_LABEL_GAP = 6  # points kept free between two labels of one row


@functools.lru_cache(maxsize=512)
def _text_points(text: str) -> float:
    """Width of ``text`` at the moment-label font size, in points (no renderer needed)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    w, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=_MOMENT_FONT), ismath=False)
    return w + 2 * 0.15 * _MOMENT_FONT + 1  # the label's white box adds its padding


def _axes_width_points(ax: Axes) -> float:
    """The axes' drawn width in points, after the figure's layout engine has placed it."""
    fig = cast("Figure", ax.figure)  # a sub-figure's axes are measured as a figure's
    engine = fig.get_layout_engine() if hasattr(fig, "get_layout_engine") else None
    try:
        if engine is not None:
            engine.execute(fig)
        box = ax.get_window_extent()
        return float(box.width) * 72.0 / float(fig.dpi)
    except Exception:  # pragma: no cover - a backend without a renderer: a safe guess
        return fig.get_figwidth() * 72.0 * ax.get_position().width * 0.85


def _group_text(members: list[Moment]) -> str:
    """One label for moments that share it: counts instead of a pile of names."""
    if len(members) == 1:
        return members[0].text
    parts: list[str] = []
    by_kind: dict[str, list[Moment]] = {}
    for m in members:
        by_kind.setdefault(m.kind, []).append(m)
    for kind, ms in by_kind.items():
        if kind == "failed" and len(ms) > 1:
            parts.append(f"✗ {len(ms)} tasks failed")
            continue
        counts: dict[str, int] = {}
        for m in ms:
            counts[m.text] = counts.get(m.text, 0) + 1
        parts += [text if n == 1 else f"{text} ×{n}" for text, n in counts.items()]
    return " · ".join(parts)


def _crossed(box: tuple[float, float], members: list[Moment], marks: list[Moment],
             lo: float, span: float, width: float) -> bool:
    """Whether a moment line other than the label's own runs through the label ``box``."""
    own = {id(m) for m in members}
    return any(box[0] < (m.t - lo) / span * width < box[1] for m in marks if id(m) not in own)


def _label_groups(marks: list[Moment], lo: float, span: float,
                  width: float) -> list[tuple[list[Moment], int, bool]]:
    """Which moments share a label, and each label's row and side, so that none overlap.

    Labels are placed left to right in the first of ``_ROWS`` rows with room;
    a label that finds none is merged with the label it collides with (its
    moments then share one counted label) and the placement starts again.
    Each merge removes a label, so this ends, at worst with one label.
    """
    # Failures (or repeats of one text) whose labels would run into each other share
    # one at once ("✗ 6 tasks failed" over six lines), not a staircase of near-twins.
    groups: list[list[Moment]] = []
    for m in marks:
        last = groups[-1] if groups else None
        alike = last is not None and last[-1].kind == m.kind and (
            m.kind == "failed" or last[-1].text == m.text)
        if last is not None and alike and (m.t - last[0].t) / span * width \
                < _LABEL_PAD + _text_points(_group_text(last)) + _LABEL_GAP:
            last.append(m)
        else:
            groups.append([m])
    while True:
        placed: list[tuple[list[Moment], int, bool]] = []
        rows: list[list[tuple[float, float, int]]] = [[] for _ in range(_ROWS)]
        clash = None
        for gi, members in enumerate(groups):
            w = _text_points(_group_text(members))
            x0 = (members[0].t - lo) / span * width
            x1 = (members[-1].t - lo) / span * width
            right = x0 + _LABEL_PAD + w > width  # no room on the right: label ends at the line
            box = (x1 - _LABEL_PAD - w, x1) if right else (x0, x0 + _LABEL_PAD + w)
            if _crossed(box, members, marks, lo, span, width):
                # Another moment's line would run through the label: the other side, if
                # it fits and is clear.
                other = (x0, x0 + _LABEL_PAD + w) if right else (x1 - _LABEL_PAD - w, x1)
                if 0 <= other[0] and other[1] <= width \
                        and not _crossed(other, members, marks, lo, span, width):
                    right, box = not right, other
            for r, row in enumerate(rows):
                if all(box[1] + _LABEL_GAP <= a or b + _LABEL_GAP <= box[0] for a, b, _ in row):
                    row.append((*box, gi))
                    placed.append((members, r, right))
                    break
            else:  # every row is taken here: share a label with the nearest one in the way
                blockers = [g for row in rows for a, b, g in row
                            if not (box[1] + _LABEL_GAP <= a or b + _LABEL_GAP <= box[0])]
                clash = (max(blockers), gi)
                break
        if clash is None:
            return placed
        keep, gone = clash
        # Merge the two and everything between them, so a label covers a stretch of time.
        merged = [m for g in groups[keep:gone + 1] for m in g]
        groups = groups[:keep] + [merged] + groups[gone + 1:]


def _draw_makespan(ax: Axes, span: float, top: float) -> None:
    """A bracket from 0 to the makespan above the lanes, labelled with its length."""
    if span <= 0:
        return
    ax.annotate("", xy=(0, top), xytext=(span, top),
                arrowprops={"arrowstyle": "|-|", "color": "#000000", "lw": 1.2,
                            "shrinkA": 0, "shrinkB": 0}, annotation_clip=False,
                gid="makespan")
    text = f"makespan {span:.1f} model s"
    lo, hi = ax.get_xlim()
    if span > 0.6 * (hi - lo):  # room inside the bracket
        ax.text(span / 2, top, text, ha="center", va="center", fontsize=10, zorder=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none"})
    else:  # a short bracket keeps its ends visible: the label goes after it
        ax.annotate(text, xy=(span, top), xytext=(6, 0), textcoords="offset points",
                    ha="left", va="center", fontsize=10, zorder=8)


def plot_timeline(
    trace: Trace,
    *,
    time_scale: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    names: Mapping[str, str] | None = None,
    moments: Any = True,
    xmax: float | None = None,
    tick: str | None = None,
) -> Figure:
    """A Gantt chart of the traced tasks: one lane per task, grouped by capacity source.

    Hatched bars are time spent waiting for a unit, coloured by the level
    that held the task (its own story limit, or the global one), changing
    colour where the cause of the wait changed; solid bars
    are running time, coloured by how the task ended (a ✗ marks failures).
    The axis starts at the trace's time origin, and a bracket above the
    lanes spans the makespan, so the bars end where the bracket (and the
    default title) says.

    ``names`` renames groups for the reader (``{"story:<long name>": "story A"}``;
    by default ``story:…`` groups read ``story A``, ``story B``…).
    ``moments`` marks key moments: ``True`` (default) those found by
    :func:`~storylab.viz.readings.key_moments` (the split, the first
    hand-off, failures, marks, the end), ``False`` none, or a list of
    ``Moment`` / ``(t, text)`` pairs (``[(31, "kill")]``); more can be added
    later with :func:`mark_moments`. ``xmax`` fixes the right end of the
    axis (several timelines on one scale). Returns the matplotlib figure
    (draws into ``ax`` if given); ``fig.storylab_summary`` holds its
    one-line text equivalent. ``tick`` is the marker of a moment on the axis
    itself (see :func:`mark_moments`); by default ◆ when the bars carry ▼
    marks, else ▼.
    """
    lanes = timeline_lanes(trace, time_scale=time_scale)
    if ax is None:
        n_rows = len(lanes) + len({lane.group for lane in lanes})
        fig, ax = new_figure(figsize=(10, min(2.6 + 0.3 * n_rows, 40)), layout="constrained")
    else:
        fig = ax.figure
    _timeline_panel(ax, trace, lanes, time_scale=time_scale, title=title, names=names,
                    moments=moments, xmax=xmax, tick=tick)
    _attach_summary(fig, timeline_summary(trace, time_scale=time_scale, names=names))
    return fig


def _timeline_panel(ax: Axes, trace: Trace, lanes: list[TaskLane], *,
                    time_scale: float | None, title: str | None,
                    names: Mapping[str, str] | None, moments: Any, xmax: float | None,
                    legend: bool = True, level_keys: list[str] | None = None,
                    tick: str | None = None) -> None:
    """Draw one timeline into ``ax`` (the body of :func:`plot_timeline`)."""
    labels = source_labels(trace, names)
    _draw_gantt(ax, lanes, names=labels, legend=legend, level_keys=level_keys)
    if lanes and not _has_capacity(trace):
        ax.set_ylabel(NO_SOURCE_LABEL)  # no source took a unit: the rows only share a story
    span = makespan(trace, time_scale=time_scale)
    if title is None:
        title = f"Task timeline: waiting for capacity vs running (makespan {span:.1f} model s)"
    ax.set_title(title)
    _finish_axes(ax, span, xmax)
    if not lanes:
        ax.text(0.5, 0.5, "no tasks in this trace", transform=ax.transAxes,
                ha="center", va="center", color="#888888")
    found = _moments(trace, moments, names)
    if moments is True and not any(_visible_wait(lane, _lanes_end(lanes)) for lane in lanes):
        # Nobody waited: no limit held anyone back, so how the units were first split
        # says nothing (every task simply started).
        found = [m for m in found if m.kind != "split"]
    _make_label_room(ax, found, first_lane_top=0.5 if lanes else None)
    mark_moments(ax, found, tick=tick or _tick_for(trace))


def _finish_axes(ax: Axes, span: float, xmax: float | None) -> None:
    """x from the origin to just past the makespan (or ``xmax``), bracket under the lanes.

    Room is made at the bottom for the makespan bracket, so it covers no bar.
    The top gets only what the key moments' labels need (:func:`_make_label_room`),
    so a chart without labels has no empty band above its first lane.
    """
    right = xmax if xmax is not None else span
    ax.set_xlim(0, right * 1.02 if right > 0 else 1.0)
    bottom, top = ax.get_ylim()  # inverted: first lane on top
    ax.set_ylim(bottom + 1.1, top)
    _draw_makespan(ax, span, bottom + 0.55)


def _make_label_room(ax: Axes, moments: list[Any], *, first_lane_top: float | None) -> None:
    """Raise the top of a timeline just enough for the rows of labels ``moments`` will use.

    The labels hang from the top edge, one row every ``_ROW_POINTS`` points.
    The strip above the first lane (its group's header row, empty in the plot)
    already holds some; only what is missing is added, measured in points on
    the laid-out axes, so the band is as tall as the labels and no taller.
    """
    marks = sorted(_as_moments(moments), key=lambda m: m.t)
    if not marks or first_lane_top is None:
        return
    lo, hi = ax.get_xlim()
    groups = _label_groups(marks, lo, (hi - lo) or 1.0, _axes_width_points(ax))
    rows = 1 + max(row for _, row, _ in groups)
    needed = 4 + _ROW_POINTS * rows + 3  # offset, rows, a little air above the bars
    bottom, top = ax.get_ylim()  # inverted: top < bottom
    fig = cast("Figure", ax.figure)
    height = float(ax.get_window_extent().height) * 72.0 / float(fig.dpi)
    units = bottom - top
    free = first_lane_top - top  # data units between the top edge and the first lane
    if height <= needed * 1.5:  # a very flat axes: fall back to a generous fixed room
        ax.set_ylim(bottom, top - 1.4)
        return
    # (free + extra) * height / (units + extra) >= needed, solved for extra
    extra = (needed * units - free * height) / (height - needed)
    if extra > 0:
        ax.set_ylim(bottom, top - extra)


def figure_summary(fig: Any) -> str:
    """The one-line text equivalent of a figure drawn by this layer (its alt text).

    Built from the numbers the figure was drawn from (makespan, peaks, who
    waited, what failed), so a notebook can print it under the picture and a
    screen reader, a text export or a test can read what the picture says.
    """
    text = getattr(fig, "storylab_summary", None)
    if not isinstance(text, str):
        raise ValueError("this figure has no summary: it was not drawn by storylab.viz")
    return text


def plot_timelines(
    traces: Mapping[str, Trace],
    *,
    time_scale: float | None = None,
    title: str | None = None,
    names: Mapping[str, str] | None = None,
    moments: Any = True,
    shared: bool = True,
) -> Figure:
    """Several timelines stacked, one panel per trace, on one time scale when ``shared``.

    ``traces`` maps a panel title (``"no limits"``, ``"3 per story"``) to a
    trace; each panel's title gets its makespan. With ``shared=True`` (the
    default) every panel's axis runs to the longest makespan, so lengths
    compare at a glance. Other arguments as in :func:`plot_timeline`.
    """
    if not traces:
        raise ValueError("traces must map a title to at least one Trace")
    for label, trace in traces.items():
        if not isinstance(trace, Trace):
            raise TypeError(f"traces[{label!r}] must be a storylab Trace, "
                            f"got {type(trace).__name__}")
    spans = {label: makespan(t, time_scale=time_scale) for label, t in traces.items()}
    lanes = {label: timeline_lanes(t, time_scale=time_scale) for label, t in traces.items()}
    rows = [len(ls) + len({lane.group for lane in ls}) + 3 for ls in lanes.values()]
    fig, axes = new_figure(len(traces), 1, squeeze=False, sharex=shared,
                             figsize=(10, min(2.2 + 0.3 * sum(rows), 60)),
                             gridspec_kw={"height_ratios": rows}, layout="constrained")
    xmax = max(spans.values()) if shared else None
    # One legend for all panels, under the last one, with one colour per wait level.
    every_lane = [lane for ls in lanes.values() for lane in ls]
    level_keys = _level_order(every_lane)
    summaries = []
    for ax, (label, trace) in zip((row[0] for row in axes), traces.items(), strict=True):
        _timeline_panel(ax, trace, lanes[label], time_scale=time_scale, names=names,
                        moments=moments, xmax=xmax, legend=False, level_keys=level_keys,
                        tick=_tick_for(*traces.values()),
                        title=f"{label}: makespan {spans[label]:.1f} model s")
        summaries.append(f"{label} {spans[label]:.1f} model s")
        if shared and ax is not axes[-1][0]:
            ax.set_xlabel("")  # one time axis, labelled once at the bottom
    handles = _gantt_handles(every_lane, level_keys)
    if handles:
        fig.legend(handles=handles, loc="outside lower left", ncols=2, fontsize=10,
                   frameon=False)
    if title:
        fig.suptitle(title)
    fig.storylab_summary = "Timelines, makespan per run: " + "; ".join(summaries) + "."
    return fig


def _attach_summary(fig: Any, text: str) -> None:
    """Keep a figure's one-line text equivalent on it (read by notebooks and tests)."""
    previous = getattr(fig, "storylab_summary", None)
    fig.storylab_summary = f"{previous} {text}" if previous else text


def timeline_summary(trace: Trace, *, time_scale: float | None = None,
                     names: Mapping[str, str] | None = None) -> str:
    """One line that says what :func:`plot_timeline` shows, built from the trace's numbers."""
    lanes = timeline_lanes(trace, time_scale=time_scale)
    if not lanes:
        return "Timeline: no tasks in this trace."
    labels = source_labels(trace, names)
    span = makespan(trace, time_scale=time_scale)
    groups = list(dict.fromkeys(lane.group for lane in lanes))
    several = len({lane.group for lane in lanes}) > 1
    failed = [(f"{labels.get(lane.group, lane.group)} " if several else "")
              + task_label(lane.label) for lane in lanes if lane.outcome is Status.FAILED]
    end = _lanes_end(lanes)
    waited = [lane for lane in lanes if _visible_wait(lane, end)]
    levels = [{level == lane.group for _, _, level in _pieces(lane)} for lane in waited]
    own = sum(1 for seen in levels if seen == {True})
    turn = sum(1 for seen in levels if len(seen) == 2)
    busy = sum(lane.run[1] - lane.run[0] for lane in lanes)
    text = (f"Timeline: {len(lanes)} tasks in {len(groups)} group(s) "
            f"({', '.join(labels.get(g, g) for g in groups[:6])}"
            f"{', …' if len(groups) > 6 else ''}); makespan {span:.1f} model s; "
            f"{busy:.1f} task-seconds of work")
    if waited:
        text += (f"; {len(waited)} waited for capacity ({own} on their own limit, "
                 f"{len(waited) - own - turn} on a shared one"
                 + (f", {turn} on both in turn" if turn else "") + ")")
    if failed:
        text += f"; failed: {', '.join(failed)}"
    return text + "."


def plot_capacity(
    trace: Trace,
    *,
    limits: Any = None,
    time_scale: float | None = None,
    title: str | None = None,
    names: Mapping[str, str] | None = None,
    moments: Any = True,
    tick: str | None = "v",
) -> Figure:
    """Units in use over time for every capacity source, one panel each, limits dashed.

    ``tick`` is the marker of a moment on the axis itself (see :func:`mark_moments`):
    ``"D"`` (◆) keeps ▼ free for retries when the notebook draws those too.

    Limits come from ``limits`` (a mapping ``{source name: capacity}`` or an
    iterable of capacity sources) or, when that is omitted, from
    ``trace.meta["limits"]``; a source with no known limit is drawn without a
    limit line. Roots (the global limit) come first, then their children.
    ``names`` renames sources in the panel titles (``{"story:<long name>": "story A"}``;
    given ``names``, the children are ordered by their labels;
    by default ``story:…`` reads ``story A``…). ``moments`` marks key moments
    as in :func:`plot_timeline` (the lines cross every panel, the labels sit
    on the top one, above its highest line). The time axis starts at the
    trace's origin and ends at its makespan, as the timeline's does. Changes
    that undo each other within a blink (a unit handed from one picture to the
    next) are drawn merged; ``fig.storylab_peaks`` maps each source to the
    peak its panel draws and its title states.
    """
    lines = capacity_series(trace, limits=limits, time_scale=time_scale)
    readable = source_labels(trace, names)
    if names:  # renamed stories in the order of their labels (story A, story B...); roots stay
        lines.sort(key=lambda line: (line.depth, "" if line.depth == 0
                                     else readable.get(line.name, line.name)))
    n = max(len(lines), 1)
    fig, axes = new_figure(n, 1, sharex=True, squeeze=False,
                             figsize=(10, 1.0 + 1.55 * n), layout="constrained")
    axes = [row[0] for row in axes]
    # The axis ends at the makespan (the timeline's end); a trace with no
    # task, only units, ends at its last change.
    end = makespan(trace, time_scale=time_scale) or max(
        (p[-1][0] for p in (line.points for line in lines)), default=0.0)
    window = end * _BURST
    shown: dict[str, int] = {}  # each panel's peak, as drawn (the title says it)
    for ax, line in zip(axes, lines, strict=False):
        points = _merge_bursts(line.points, window)
        xs, ys = _step_to(points, end)
        colour = OKABE_ITO["blue"] if line.depth == 0 else OKABE_ITO["bluish green"]
        (drawn,) = ax.step(xs, ys, where="post", color=colour, lw=1.8, label="units in use")
        drawn.set_gid(f"in_use:{line.name}")
        ax.fill_between(xs, ys, step="post", color=colour, alpha=0.15)
        shown_peak = shown[line.name] = max(ys)
        top = max(shown_peak, line.limit or 0)
        if line.limit is not None:
            lim = ax.axhline(line.limit, color=LIMIT_COLOUR, ls="--", lw=1.2,
                             zorder=5, label="limit")
            lim.set_gid(f"limit:{line.name}")
        ax.set_ylim(0, top + max(1, math.ceil(top * 0.15)))
        limit_text = f"limit {line.limit}" if line.limit is not None else "limit unknown"
        shown_name = readable.get(line.name, line.name)
        ax.set_title(f"{shown_name}: peak {shown_peak} in use ({limit_text})", fontsize=10,
                     loc="left")
        ax.set_ylabel("units in use", fontsize=10)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", color="#eeeeee")
    if lines:
        handles, labels = axes[0].get_legend_handles_labels()
        if not any(line.limit is not None for line in lines[:1]):
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], color=LIMIT_COLOUR, ls="--"))
            labels.append("limit")
        fig.legend(handles, labels, loc="outside upper right", ncols=2, fontsize=10,
                   frameon=False)
    else:
        axes[0].text(0.5, 0.5, "no capacity events in this trace", ha="center", va="center",
                     transform=axes[0].transAxes, color="#888888")
        axes[0].set_ylabel("units in use")
    axes[-1].set_xlabel(TIME_LABEL)
    axes[-1].set_xlim(left=0, right=end * 1.02 if end > 0 else None)
    found = _moments(trace, moments, names)
    if found:
        # The labels sit at the top of the first panel: give them room above its
        # highest line, so they hide no data at the moments they mark.
        first_top = max(shown.get(lines[0].name, 0), lines[0].limit or 0) if lines else 0
        axes[0].set_ylim(0, max(axes[0].get_ylim()[1], first_top / 0.6))
        if first_top > 0:  # that room is for labels: no tick above the limit or peak
            from matplotlib.ticker import MaxNLocator

            ticks = MaxNLocator(integer=True, nbins=5).tick_values(0, first_top)
            axes[0].set_yticks([t for t in ticks if 0 <= t <= first_top])
        mark_moments(axes[0], found, tick=tick)
        for ax in axes[1:]:
            for m in found:
                ax.axvline(m.t, color=_MOMENT_COLOURS.get(m.kind, "#555555"),
                           ls=_MOMENT_STYLES.get(m.kind, (0, (4, 2))), lw=1.2, zorder=6)
    fig.suptitle(title or "Capacity in use over time (dashed: each source's limit)")
    fig.storylab_peaks = shown
    peaks = ", ".join(f"{readable.get(line.name, line.name)} {shown.get(line.name, line.peak)}"
                      + (f"/{line.limit}" if line.limit is not None else "")
                      for line in lines[:8])
    over = [line for line in lines if line.limit is not None and line.peak > line.limit]
    verdict = "a source went above its limit" if over else "no source above its limit"
    _attach_summary(fig, f"Capacity: peak units in use per source ({peaks}"
                         f"{', …' if len(lines) > 8 else ''}); makespan "
                         f"{makespan(trace, time_scale=time_scale):.1f} model s; {verdict}.")
    return fig


def plot_sequential_vs_parallel(
    sequential: Trace,
    parallel: Trace,
    *,
    time_scale: float | None = None,
    title: str | None = None,
    names: Mapping[str, str] | None = None,
) -> Figure:
    """The same work run one task at a time and in parallel, side by side.

    Both panels share the time axis, so the shorter parallel run is visibly
    shorter; each title carries the makespan measured from its trace.
    ``names`` renames groups as in :func:`plot_timeline`.
    """
    seq_lanes = timeline_lanes(sequential, time_scale=time_scale)
    par_lanes = timeline_lanes(parallel, time_scale=time_scale)
    names = {**source_labels(sequential, names), **source_labels(parallel, names)}
    seq_span = makespan(sequential, time_scale=time_scale)
    par_span = makespan(parallel, time_scale=time_scale)
    rows = max(len(seq_lanes), len(par_lanes)) + 2
    fig, (left, right) = new_figure(1, 2, sharex=True, figsize=(14, min(2.4 + 0.3 * rows, 30)),
                                      layout="constrained")
    _draw_gantt(left, seq_lanes, legend=False, names=names)
    _draw_gantt(right, par_lanes, names=names)
    if not _has_capacity(sequential):
        left.set_ylabel(NO_SOURCE_LABEL)
    left.set_title(f"Sequential: makespan {seq_span:.1f} model s")
    right.set_title(f"Parallel: makespan {par_span:.1f} model s")
    right.set_ylabel("")
    if [t.get_text() for t in left.get_yticklabels()] == [
            t.get_text() for t in right.get_yticklabels()]:
        # The same rows on both sides: name them once, on the left, so no empty band of
        # repeated labels separates the panels.
        right.tick_params(axis="y", labelleft=False)
    if title is None:
        speedup = f" ({seq_span / par_span:.1f}x faster in parallel)" if par_span > 0 else ""
        title = f"Sequential vs parallel run of the same work{speedup}"
    fig.suptitle(title)
    for ax, span in ((left, seq_span), (right, par_span)):
        _finish_axes(ax, span, max(seq_span, par_span))
    _attach_summary(fig, f"Sequential vs parallel: {len(seq_lanes)} tasks one after another "
                         f"took {seq_span:.1f} model s, {len(par_lanes)} in parallel "
                         f"{par_span:.1f} model s"
                         + (f" ({seq_span / par_span:.1f}x faster)." if par_span > 0 else "."))
    return fig


def plot_in_use(
    traces: Mapping[str, Trace],
    *,
    source: str | None = None,
    limit: int | None = None,
    title: str | None = None,
    moments: Iterable[Any] | None = None,
) -> Figure:
    """One step line per trace: units in use at ``source`` over model seconds.

    Handy to compare runs of the same work (two policies, two limits). Each
    legend entry carries the run's makespan; ``limit`` draws a dashed line.
    ``source`` defaults to each trace's root capacity source (the last level
    of the paths it recorded), so runs whose global sources have different
    names (``global`` and ``global-fifo``) still share one chart. Each line
    holds its last value until its own makespan and no further (no stray
    segment along zero); ``moments`` (``Moment`` or ``(t, text)``) are marked.
    """
    if not traces:
        raise ValueError("traces must map a label to at least one Trace")
    fig, ax = new_figure(figsize=(10, 3.6), layout="constrained")
    peaks: dict[str, int] = {}
    spans: dict[str, float] = {}
    for i, (label, trace) in enumerate(traces.items()):
        name = source if source is not None else root_source(trace)
        lines = [c for c in capacity_series(trace) if c.name == name]
        if not lines:
            raise ValueError(f"no capacity source named {name!r} in the trace {label!r}")
        span = makespan(trace)
        peaks[label], spans[label] = lines[0].peak, span
        # A unit handed straight from a finished task to a waiter is one step, not a dip.
        points = _merge_bursts(lines[0].points, span * _BURST)
        xs, ys = _step_to(points, span)
        colour, style = series_style(i)
        ax.step(xs, ys, where="post", lw=2, color=colour, ls=style,
                label=f"{label} (makespan {span:.1f} model s)", gid=f"in_use:{label}")
    if limit is not None:
        ax.axhline(limit, color=LIMIT_COLOUR, ls="--", lw=1.2, label=f"limit {limit}")
        ax.set_ylim(0, limit * 1.25)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(f"units in use ({source or 'root'})")
    ax.set_xlim(left=0)
    ax.grid(color="#eeeeee")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3, fontsize=10,
              frameon=False)
    default = (
        f"Units in use at {source!r}" if source else "Units in use at the root capacity source"
    )
    ax.set_title(title or f"{default} over time")
    mark_moments(ax, _as_moments(moments or ()))
    _attach_summary(fig, "Units in use over time: " + "; ".join(
        f"{label} peaked at {peaks[label]} with makespan {spans[label]:.1f} model s"
        for label in traces) + (f" (limit {limit})." if limit is not None else "."))
    return fig


def plot_children(counters: Mapping[str, ChildCounter], *, limit: int | None = None,
                  title: str | None = None) -> Figure:
    """Children existing in the graph over model seconds, one step line per counter.

    ``counters`` are :class:`~storylab.viz.readings.ChildCounter` samples of
    runs. A dotted vertical line marks when each run's first task finished,
    and the legend says how many children existed before it.
    """
    if not counters:
        raise ValueError("counters must map a label to at least one ChildCounter")
    fig, ax = new_figure(figsize=(10, 3.6), layout="constrained")
    top = 0
    firsts = [c.first_finish for c in counters.values() if c.first_finish is not None]
    # First finishes less than half a model second apart would draw two lines a pixel
    # or two apart: they are marked once, in black.
    together = len(firsts) > 1 and max(firsts) - min(firsts) < 0.5
    if together:
        ax.axvline(min(firsts), color="black", ls=":", lw=1.2,
                   label="dotted: the first task finished (in every run)")
    for i, (label, counter) in enumerate(counters.items()):
        colour, _ = series_style(i)
        xs = [t for t, _ in counter.samples]
        ys = [n for _, n in counter.samples]
        top = max(top, *ys)
        before = counter.most_before_first_finish
        ax.step(xs, ys, where="post", lw=2, color=colour,
                label=f"{label}: {before} children before the first finished")
        if counter.first_finish is not None and not together:
            ax.axvline(counter.first_finish, color=colour, ls=":", lw=1.2,
                       label="dotted, in a run's colour: its first task finished"
                       if i == 0 else None)
    if limit is not None:
        # Drawn over the step lines (a lazy source's line runs along it) and named at its
        # right end, so it stays visible where a count sits exactly at the limit.
        ax.axhline(limit, color=LIMIT_COLOUR, ls="--", lw=1.4, zorder=5,
                   label=f"capacity {limit}")
        ax.annotate(f"capacity {limit}", (1, limit), xycoords=("axes fraction", "data"),
                    xytext=(-4, 4), textcoords="offset points", ha="right", va="bottom",
                    fontsize=10, color=LIMIT_COLOUR, zorder=6)
    ax.set_ylim(0, top + 1)
    ax.set_xlim(left=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("children in the graph")
    ax.grid(color="#eeeeee")
    ax.legend(loc="lower right", fontsize=10, frameon=False)
    ax.set_title(title or "Children that exist in the graph (dotted: the first task finishes)")
    _attach_summary(fig, "Children in the graph: " + "; ".join(
        f"{label} had {c.most_before_first_finish} before its first task finished and "
        f"{c.final} at the end" for label, c in counters.items()) + ".")
    return fig
