"""Scrub a finished run: a time slider over a recorded trace.

A live panel is gone the moment the run ends, and a learner who blinked
missed the interesting second: five stories sharing ten units as 3, 3, 3,
1, 0, then the unit story C gives back going to story E, who had none. The
replay keeps that second. Give it a :class:`~storylab.scheduling.Trace` and
a time ``t`` (model seconds from the trace's time origin, the same 0 as
every chart and :func:`~storylab.viz.makespan`) and it shows:

* the **capacity-tree gauge**: the root (``global 10/10``) and a row of dots
  per story (``A ●●● B ●●● C ●●● D ●○○ E ○○○``: filled is a unit in use,
  hollow a free one), with every waiting task marked by the level that
  blocks it: its own *story* limit (the story is full) or the *global* one
  (the story has room, the pool has none);
* the **progress panel** at that moment (per story: done of total, and a
  glyph per picture: ``·`` waiting, ``▶`` running, ``✓`` done, ``✗`` failed);
* the **timeline** of the whole run with a cursor at ``t``.

Two layers, so the numbers can be tested without a display:

:func:`replay_state` (pure, no display library)::

    state = replay_state(trace, 12.5)
    state.split            # (3, 3, 3, 1, 0): units in use per story, in story order
    state.counts           # {"story A": 3, ...}
    state.waits            # (WaitState(task=..., story="story D", blocked_by="global"), ...)
    state.gauge_text()     # "global 10/10 · A ●●● B ●●● C ●●● D ●○○ E ○○○"
    state.summary()        # the one-line text equivalent (alt text)

:func:`replay` (the widget; ipywidgets and matplotlib load when called)::

    from storylab.viz import replay
    replay(run.trace, names=story_labels(run))          # last line of a cell: shown
    r = replay(run.trace, t="split"); r.t = 25.0         # start at a key moment, move it

In JupyterLab the result is a live widget (a play button, a slider in
model seconds, one button per key moment: the split, the hand-off, a
failure, a mark). Right under it a plain-HTML snapshot of the same state is
displayed too; JupyterLab hides it (the widget is right above), while a
notebook executed by papermill or exported by nbconvert, which keeps no
live kernel, shows it: gauge, panel and the timeline with its cursor. Outside
a kernel ``replay`` prints the state as text.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storylab.scheduling.trace import EventKind, Trace
from storylab.viz._palette import COLOURS, WAIT_COLOURS, Status
from storylab.viz.labels import short_label, source_labels, task_label
from storylab.viz.progress.model import PipelineProgress, RowState
from storylab.viz.progress.widget import SNAPSHOT_STYLE, glyph_strip, pipeline_html
from storylab.viz.readings import Moment, key_moments, root_source, story_sources, time_origin

__all__ = [
    "LevelState",
    "ReplayState",
    "TraceReplay",
    "WaitState",
    "replay",
    "replay_state",
]

REPLAY_SNAPSHOT_CLASS = "storylab-replay-snapshot"
_ENDS = {
    EventKind.TASK_END: Status.COMPLETED,
    EventKind.TASK_ERROR: Status.FAILED,
    EventKind.TASK_CANCEL: Status.CANCELLED,
}
# Events at most this far (model seconds) after t still count as "at t", so a
# time read from the trace (a hand-off's moment) lands after its own event.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class LevelState:
    """One capacity source at the moment: units in use of its limit, and who waits on it.

    ``label`` is the readable name (``story A``), ``short`` the gauge's
    (``A``); ``waiting`` counts tasks blocked *by this level*.
    """

    name: str
    label: str
    short: str
    in_use: int
    limit: int | None
    depth: int
    waiting: int = 0

    @property
    def full(self) -> bool:
        return self.limit is not None and self.in_use >= self.limit

    def dots(self) -> str:
        """``●●○``: a filled dot per unit in use, a hollow one per free unit."""
        free = max((self.limit or self.in_use) - self.in_use, 0)
        return "●" * self.in_use + "○" * free


@dataclass(frozen=True, slots=True)
class WaitState:
    """A task waiting for a unit at the moment, and the level that blocks it.

    ``blocked_by`` is ``"story"`` when its own (leaf) limit is full, else
    the label of the full ancestor (``"global"``), or ``"queue"`` when no
    level is full and it waits behind an earlier waiter (the FIFO policy),
    or ``"share"`` when the root is leased from a cluster's scheduler
    (``trace.meta["shared_roots"]``) and no level is full: the process used
    up its share, and other processes hold the rest of the limit;
    ``level`` is the source's machine name (the level recorded when the wait
    began, for a queue wait); ``since`` when the wait began (model seconds).
    """

    task: str
    runner: str
    task_id: int
    story: str
    level: str
    blocked_by: str
    since: float
    story_source: str = ""  # the machine name of ``story`` (its capacity source)


@dataclass(frozen=True, slots=True)
class ReplayState:
    """Everything the replay shows at model second ``t`` (see the module doc)."""

    t: float
    end: float
    root: LevelState | None
    stories: tuple[LevelState, ...]
    waits: tuple[WaitState, ...]
    pipelines: tuple[PipelineProgress, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Units in use per story, by readable label, in story order."""
        return {s.label: s.in_use for s in self.stories}

    @property
    def split(self) -> tuple[int, ...]:
        """Units in use per story in story order: ``(3, 3, 3, 1, 0)``."""
        return tuple(s.in_use for s in self.stories)

    def waits_on(self, blocked_by: str) -> list[str]:
        """Short names of the stories with a task blocked by ``"story"`` or ``"global"``."""
        by_label = {s.label: s.short for s in self.stories}
        return [by_label.get(w.story, w.story) for w in self.waits if w.blocked_by == blocked_by]

    def gauge_text(self) -> str:
        """``global 10/10 · A ●●● B ●●● C ●●● D ●○○ E ○○○``."""
        parts = []
        if self.root is not None:
            limit = f"/{self.root.limit}" if self.root.limit is not None else ""
            parts.append(f"{self.root.label} {self.root.in_use}{limit}")
        stories = " ".join(f"{s.short} {s.dots()}" for s in self.stories)
        if stories:
            parts.append(stories)
        return " · ".join(parts)

    def waits_text(self) -> str:
        """``waiting on their story limit: A, B, C; on the global limit: D, E``."""
        if not self.waits:
            return "nobody waiting"
        levels: dict[str, list[str]] = {}
        by_label = {s.label: s.short for s in self.stories}
        for w in self.waits:
            levels.setdefault(w.blocked_by, []).append(by_label.get(w.story, w.story))
        # With no unit of the root held in this trace yet, nobody holds one
        # elsewhere either: the process is still asking the scheduler for a share.
        first_share = self.root is not None and self.root.in_use == 0
        said = [
            ("behind an earlier waiter: " if level == "queue" else
             "for its process's first share of the global limit, from the scheduler: "
             if level == "share" and first_share else
             "for a unit of the global limit held by another process: " if level == "share"
             else f"on {'their story' if level == 'story' else 'the ' + level} limit: ")
            + ", ".join(who)
            for level, who in levels.items()
        ]
        return "waiting " + "; ".join(said)

    def summary(self) -> str:
        """One line that says what the picture shows (its text equivalent)."""
        done = sum(p.done for p in self.pipelines)
        total = sum(p.total for p in self.pipelines)
        gauge = self.gauge_text() or "no capacity recorded"
        return (f"At {self.t:.1f} of {self.end:.1f} model s: {gauge}; "
                f"{self.waits_text()}; {done}/{total} tasks finished.")

    # -- drawing (plain HTML, no widget library) -----------------------------
    def gauge_html(self) -> str:
        """The gauge as HTML; every level carries ``data-level``/``data-in-use``/``data-limit``."""
        rows = []
        levels = ([self.root] if self.root is not None else []) + list(self.stories)
        waits: dict[str, list[WaitState]] = {}
        for w in self.waits:
            waits.setdefault(w.story, []).append(w)
        for lv in levels:
            dots = "".join(
                f"<span style='color:{_IN_USE}'>●</span>" if i < lv.in_use
                else "<span style='color:#8a8a8a'>○</span>"
                for i in range(max(lv.limit or 0, lv.in_use))
            )
            limit = f"/{lv.limit}" if lv.limit is not None else ""
            badges = "".join(_wait_badge(w) for w in waits.get(lv.label, []))
            name = html.escape(lv.label if lv.depth == 0 else lv.short)
            title = html.escape(lv.label)
            rows.append(
                f"<div class='storylab-level' data-level='{html.escape(lv.name, quote=True)}' "
                f"data-label='{title}' data-in-use='{lv.in_use}' "
                f"data-limit='{lv.limit if lv.limit is not None else ''}' "
                f"data-waiting='{len(waits.get(lv.label, []))}' title='{title}' "
                "style='display:inline-flex;align-items:center;gap:4px;margin:2px 10px 2px 0;"
                "font-size:15px'>"
                f"<b>{name}</b><span style='letter-spacing:1px'>{dots}</span>"
                f"<span style='color:#555;font-size:12px'>{lv.in_use}{limit}</span>"
                f"{badges}</div>"
            )
            if lv.depth == 0:
                rows.append("<br>")
        legend = (
            "<div style='font-size:12px;color:#444;margin-top:2px'>"
            f"<span style='color:{_IN_USE}'>●</span> unit in use · ○ free unit · "
            f"{_wait_badge(None, 'story')} a task waits: its story is full · "
            f"{_wait_badge(None, 'global')} a task waits: the global pool is full"
            + (f" · {_wait_badge(None, 'queue')} a task waits behind an earlier one"
               if any(w.blocked_by == "queue" for w in self.waits) else "")
            + (f" · {_wait_badge(None, 'share')} a task waits: its process's share of "
               "the global limit is used up or not granted yet"
               if any(w.blocked_by == "share" for w in self.waits) else "")
            + "</div>"
        )
        return (f"<div class='storylab-gauge' data-t='{self.t:.3f}'>"
                f"{''.join(rows)}{legend}</div>")

    def panel_html(self) -> str:
        """The progress panel at ``t``: per story a bar, the counts and a glyph per task."""
        return "".join(_compact_pipeline_html(p) for p in self.pipelines)

    def html(self, *, timeline: str = "") -> str:
        """Gauge, summary line, timeline (pre-drawn HTML, optional) and panel in one block."""
        return (f"<div class='storylab-replay-state' data-t='{self.t:.3f}'>"
                f"{self.gauge_html()}"
                f"<div class='storylab-summary' style='font-size:13px;margin:4px 0'>"
                f"{html.escape(self.summary())}</div>{timeline}{self.panel_html()}</div>")


_IN_USE = COLOURS[Status.RUNNING]


def _wait_badge(w: WaitState | None, blocked_by: str | None = None) -> str:
    level = w.blocked_by if w is not None else blocked_by
    own = level == "story"
    colour = WAIT_COLOURS[0] if own else WAIT_COLOURS[1]
    text = "waits: story" if own else f"waits: {level}"
    if level == "queue":
        colour = WAIT_COLOURS[2]
    elif level == "share":
        text = "waits: global share"
    tip = (f" title='{html.escape(w.task, quote=True)} waits since {w.since:.1f} model s'"
           if w is not None else "")
    return (f"<span class='storylab-wait' data-blocked-by='{html.escape(str(level), quote=True)}'"
            f"{tip} style='background:{colour};color:#000;border-radius:3px;padding:0 4px;"
            f"font-size:12px;{'' if own else 'border:1px dashed #000;'}'>{text}</span>")


def _compact_pipeline_html(p: PipelineProgress) -> str:
    """One pipeline: title, bar, counts, then a glyph per child (no long table)."""
    return pipeline_html(p, 0, rows_html=glyph_strip(p))


# -- the pure function -----------------------------------------------------------
def _check_t(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or math.isnan(t):
        raise ValueError(f"t must be a number of model seconds (or a key moment's kind), "
                         f"got {t!r}")
    return float(t)


def _scale_of(trace: Trace, time_scale: float | None) -> float:
    scale = trace.meta.get("time_scale", 1.0) if time_scale is None else time_scale
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"time_scale must be a number > 0, got {scale!r}")
    return float(scale)


def replay_state(
    trace: Trace,
    t: float,
    *,
    names: Mapping[str, str] | None = None,
    limits: Mapping[str, int] | None = None,
    time_scale: float | None = None,
    upto: int | None = None,
) -> ReplayState:
    """The run at model second ``t``: units per level, who waits on which level, progress.

    Every event at or before ``t`` counts; with ``upto`` (an index into
    ``trace.events``, as a :class:`~storylab.viz.readings.Moment` carries)
    only events up to that one do, which tells apart the events of one
    instant of a simulated clock. A task whose unit was granted is shown
    running (the runner starts it at once). ``names`` relabels sources
    (``{"story:<name>": "story A (a fox)"}``); ``limits`` defaults to
    ``trace.meta["limits"]``. A waiting task is blocked by its story when
    the story's limit is full at ``t``, else by the first full level above
    (usually ``global``), and by the ``queue`` when no level is full (an
    earlier waiter goes first, as FIFO does). Tasks that have not asked for
    a unit yet count as waiting in the panel (the runner asks for a unit
    before it takes the next task).
    """
    if not isinstance(trace, Trace):
        raise TypeError(f"trace must be a storylab Trace, got {type(trace).__name__}")
    t = _check_t(t)
    scale = _scale_of(trace, time_scale)
    limit_of = dict(trace.meta.get("limits", {}))
    limit_of.update(limits or {})
    labels = source_labels(trace, names)
    origin = time_origin(trace)

    def model(x: float) -> float:
        return (x - origin) / scale

    started = {(e.runner, e.task_id) for e in trace.events if e.kind is EventKind.TASK_START}
    in_use: dict[str, int] = {}
    waits: dict[tuple[str, int], tuple[tuple[str, ...], str | None, float]] = {}
    status: dict[tuple[str, int], tuple[Status, str | None]] = {}
    tasks: dict[str, dict[tuple[str, int], str]] = {}  # group -> task key -> label
    depth: dict[str, int] = {}
    end = 0.0
    if upto is not None and (isinstance(upto, bool) or not isinstance(upto, int)):
        raise ValueError(f"upto must be an index into trace.events or None, got {upto!r}")
    # At the last task's end the run is over: the units its tasks give back a
    # hair later (after the end events) count as given back already.
    last_end = max((i for i, e in enumerate(trace.events) if e.kind in _ENDS), default=None)
    over = last_end is not None and (
        upto >= last_end if upto is not None
        else model(trace.events[last_end].t) <= t + _EPS)
    for index, e in enumerate(trace.events):
        at = model(e.t)
        for pos, name in enumerate(e.path):
            depth.setdefault(name, len(e.path) - 1 - pos)
        key = (e.runner, e.task_id) if e.runner is not None and e.task_id is not None else None
        # A unit taken for a task that never started (the source was empty) is
        # no row of the panel; it can still be a wait, shown as "the next task".
        if key in started and e.kind in (EventKind.TASK_START, EventKind.WAIT,
                                         EventKind.ACQUIRE):
            group = str(e.group or e.runner)
            tasks.setdefault(group, {}).setdefault(key, task_label(e.label or f"task {e.task_id}"))
            if e.label:
                tasks[group][key] = task_label(e.label)
        if e.kind in _ENDS:
            end = max(end, at)
        if at > t + _EPS or (upto is not None and index > upto):
            if not (over and last_end is not None and index > last_end
                    and e.kind is EventKind.RELEASE):
                continue
        if e.kind in (EventKind.ACQUIRE, EventKind.GRANT):
            for name in e.path:
                in_use[name] = in_use.get(name, 0) + 1
            if key is not None:
                waits.pop(key, None)
                if key in started and key not in status:
                    status[key] = (Status.RUNNING, None)  # granted: starts at once
        elif e.kind is EventKind.RELEASE:
            for name in e.path:
                in_use[name] = in_use.get(name, 0) - 1
        elif e.kind is EventKind.WAIT and key is not None:
            waits[key] = (e.path, e.level, at)
        elif e.kind is EventKind.WAIT_CANCELLED and key is not None:
            waits.pop(key, None)
        elif e.kind is EventKind.TASK_START and key is not None:
            status[key] = (Status.RUNNING, None)
        elif e.kind in _ENDS and key is not None:
            status[key] = (_ENDS[e.kind], e.error)

    root_name = root_source(trace)
    stories = story_sources(trace)
    if names:  # the stories in the order of their labels (story A, story B...)
        stories.sort(key=lambda name: labels.get(name, name))
    # Roots whose units a cluster's scheduler leases out (see storylab.story.cluster).
    shared = set(trace.meta.get("shared_roots", ()))
    # Who blocks each waiter now: the first full level from its leaf up.
    wait_states = []
    blocked_count: dict[str, int] = {}
    for (runner, task_id), (path, recorded, since) in waits.items():
        full = next((n for n in path if n in limit_of and in_use.get(n, 0) >= limit_of[n]),
                    None)
        level = full or recorded or path[0]
        if full is None and path[-1] in shared:
            # A root leased from a cluster's scheduler, and no level here is
            # full: the gate holds it. This process's share is used up, and the
            # rest of the limit is held by other processes, which this trace
            # may not see (their units count on the scheduler).
            blocked_by = "share"
        elif full is None and limit_of.keys() >= set(path):
            # Every level has room, yet it waits: an earlier waiter is served
            # first (FIFO), or the unit is being handed over at this instant.
            blocked_by = "queue"
        else:
            blocked_by = "story" if level == path[0] else labels.get(level, level)
        story = labels.get(path[0], path[0])
        label = next((lb for g in tasks.values() for k, lb in g.items()
                      if k == (runner, task_id)), "the next task")
        wait_states.append(WaitState(label, runner, task_id, story, level, blocked_by, since,
                                     path[0]))
        blocked_count[level] = blocked_count.get(level, 0) + 1

    order = {name: i for i, name in enumerate(stories)}
    wait_states.sort(key=lambda w: (order.get(w.story_source, len(order)), w.since))

    def level_state(name: str, index: int | None) -> LevelState:
        label = labels.get(name, name)
        short = label if index is None else short_label(label, index)
        return LevelState(name, label, short, in_use.get(name, 0),
                          limit_of.get(name), depth.get(name, 0), blocked_count.get(name, 0))

    root = level_state(root_name, None) if root_name is not None and stories else None
    story_levels = tuple(level_state(s, i) for i, s in enumerate(stories))
    # The panel: one pipeline per task group (a story), every task of the run a row.
    pipelines = []
    for group, members in tasks.items():
        rows = tuple(
            RowState(label, None, f"{k[0]}:{k[1]}", status.get(k, (Status.WAITING, None))[0],
                     status.get(k, (Status.WAITING, None))[1], True)
            for k, label in members.items()
        )
        finished = all(r.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
                       for r in rows)
        running = any(r.status is not Status.WAITING for r in rows)
        p_status = (Status.COMPLETED if finished else
                    Status.RUNNING if running else Status.WAITING)
        pipelines.append(PipelineProgress(group, None, None, labels.get(group, group), p_status,
                                          None, None, len(rows), rows))
    if names:
        pipelines.sort(key=lambda p: p.name or p.key)
    return ReplayState(t, end, root, story_levels, tuple(wait_states), tuple(pipelines))


# -- the widget ------------------------------------------------------------------
class TraceReplay:
    """A time slider over a trace (build it with :func:`replay`).

    ``t`` (model seconds) is the position; setting it moves the slider and
    redraws. ``state`` is the :class:`ReplayState` at ``t``; ``moments`` the
    key moments (:func:`storylab.viz.readings.key_moments`) offered as
    buttons. ``html()`` is the static snapshot (gauge, timeline with cursor,
    panel) and ``summary()`` its one-line text equivalent.
    """

    def __init__(self, trace: Trace, *, t: float | str | None = None,
                 names: Mapping[str, str] | None = None,
                 limits: Mapping[str, int] | None = None,
                 time_scale: float | None = None, title: str | None = None,
                 timeline: bool = True) -> None:
        if not isinstance(trace, Trace):
            raise TypeError(f"trace must be a storylab Trace, got {type(trace).__name__}")
        self.trace = trace
        self.names = dict(names) if names else None
        self.limits = dict(limits) if limits else None
        self.time_scale = time_scale
        self.title = title or "Replay of the run"
        self.moments: list[Moment] = key_moments(trace, names=self.names)
        # The slider runs to the last event: the last unit goes back a hair
        # after the last task ends, and the end of the slider shows it back.
        scale = _scale_of(trace, time_scale)
        last = max((e.t for e in trace.events), default=time_origin(trace))
        self.end = (last - time_origin(trace)) / scale
        self._timeline_on = bool(timeline)
        self._timeline: tuple[str, int, int, tuple[float, float, float, float],
                              tuple[float, float]] | None = None
        self._moving_to: int | None = None
        self._t, self._upto = self._resolve(t)
        self._widgets: dict[str, Any] | None = None
        self._snapshot_handle: Any = None

    # -- position ------------------------------------------------------------
    def _resolve(self, t: float | str | Moment | None) -> tuple[float, int | None]:
        """(model second, event index or None) for a position given as a time or a moment."""
        if t is None:
            split = [m for m in self.moments if m.kind == "split"]
            return (split[0].t, split[0].index) if split else (0.0, None)
        if isinstance(t, Moment):
            return min(max(t.t, 0.0), self.end), t.index
        if isinstance(t, str):
            for m in self.moments:
                if m.kind == t:
                    return m.t, m.index
            kinds = sorted({m.kind for m in self.moments})
            raise ValueError(f"t must be a number of model seconds or one of the key moments "
                             f"{', '.join(kinds) or '(none in this trace)'}; got {t!r}")
        t = _check_t(t)
        return min(max(t, 0.0), self.end), None

    @property
    def t(self) -> float:
        return self._t

    @t.setter
    def t(self, value: float | str | Moment) -> None:
        self._go(*self._resolve(value))

    def _go(self, t: float, upto: int | None) -> None:
        self._t, self._upto = t, upto
        if self._widgets is not None and abs(self._widgets["slider"].value - t) > 1e-12:
            self._moving_to = upto
            self._widgets["slider"].value = t  # its observer redraws
        else:
            self._redraw()

    @property
    def state(self) -> ReplayState:
        return replay_state(self.trace, self._t, names=self.names, limits=self.limits,
                            time_scale=self.time_scale, upto=self._upto)

    def summary(self) -> str:
        return self.state.summary()

    # -- the timeline picture, drawn once ------------------------------------
    def _draw_timeline(self) -> None:
        if self._timeline is not None or not self._timeline_on:
            return
        from matplotlib.text import Annotation

        from storylab.viz.timeline import plot_timeline

        fig = plot_timeline(self.trace, names=self.names, time_scale=self.time_scale,
                            moments=self.moments)
        fig.canvas.draw()  # settles the constrained layout, so the axes box is final
        ax = fig.axes[0]
        box = ax.get_position()
        xlim = ax.get_xlim()
        bottom = box.y0
        bracket = [t for t in ax.texts
                   if isinstance(t, Annotation) and t.get_gid() == "makespan"]
        if bracket:
            # The cursor stops half a row above the makespan bracket, so it never runs
            # through the bracket's text.
            stop = fig.transFigure.inverted().transform(
                ax.transData.transform((0.0, bracket[0].xy[1] - 0.5)))[1]
            bottom = min(max(stop, box.y0), box.y1)
        buf = io.BytesIO()
        dpi = 80
        fig.savefig(buf, format="png", dpi=dpi)
        width, height = (round(v * dpi) for v in fig.get_size_inches())
        import matplotlib.pyplot as plt

        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        self._timeline = (png, width, height, (box.x0, bottom, box.x1, box.y1), xlim)

    def _cursor_html(self, *, with_image: bool) -> str:
        if self._timeline is None:
            return ""
        png, width, height, (x0, y0, x1, y1), (lo, hi) = self._timeline
        frac = (self._t - lo) / (hi - lo) if hi > lo else 0.0
        left = round((x0 + min(max(frac, 0.0), 1.0) * (x1 - x0)) * width)
        top, bottom = round((1 - y1) * height), round((1 - y0) * height)
        image = (f"<img alt='{html.escape(self.summary(), quote=True)}' "
                 f"src='data:image/png;base64,{png}' "
                 f"style='position:absolute;left:0;top:0;width:{width}px;height:{height}px'>"
                 if with_image else "")
        # No label beside the cursor: the time is in the heading and the summary, and a
        # label on the picture would sit on a moment's text or on the makespan bracket.
        return (
            f"<div class='storylab-timeline' style='position:relative;width:{width}px;"
            f"height:{height}px;pointer-events:none'>{image}"
            f"<div class='storylab-cursor' data-t='{self._t:.3f}' style='position:absolute;"
            f"left:{left - 1}px;top:{top}px;height:{bottom - top}px;width:0;"
            "border-left:3px solid #000'></div>"
            "</div>"
        )

    def html(self) -> str:
        """The static snapshot: title, gauge, summary, timeline with its cursor, panel."""
        self._draw_timeline()
        state = self.state
        return (f"<div class='{REPLAY_SNAPSHOT_CLASS}'><b>{html.escape(self.title)}</b> "
                f"(t = {self._t:.1f} model s)"
                f"{state.html(timeline=self._cursor_html(with_image=True))}</div>")

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return f"<TraceReplay t={self._t:.1f}> {self.summary()}"

    # -- live widget -----------------------------------------------------------
    def widget(self) -> Any:
        """The ipywidgets box (built once): controls, gauge, timeline with cursor, panel."""
        if self._widgets is not None:
            return self._widgets["box"]
        import ipywidgets as w

        self._draw_timeline()
        # No step: a key moment's exact time (a hand-off at 10.0) must not be
        # snapped to a grid, or the state shown would be a hair before it.
        slider = w.FloatSlider(value=self._t, min=0.0, max=max(self.end, 0.1), step=None,
                               description="t (model s)", continuous_update=True,
                               readout_format=".1f",
                               style={"description_width": "initial"},
                               layout=w.Layout(width="520px"))
        play = w.Play(value=0, min=0, max=400, step=1, interval=100,
                      description="play", layout=w.Layout(width="auto"))
        play.observe(lambda ch: setattr(slider, "value", self.end * ch["new"] / 400),
                     names="value")
        buttons = []
        for m in self.moments:
            b = w.Button(description=f"{m.text} ({m.t:.1f})", tooltip=f"jump to {m.text}",
                         layout=w.Layout(width="auto"))
            b.on_click(lambda _b, m=m: self._go(*self._resolve(m)))
            b.add_class(f"storylab-moment-{m.kind}")
            buttons.append(b)
        state = w.HTML()
        panel = w.HTML()
        # The style comes with the widget's own HTML, so it reaches the page only
        # when the widget is drawn (any live front end: JupyterLab, Notebook 7,
        # VS Code, classic); a page with no widget manager keeps the snapshot.
        hide_snapshot = f"<style>.{REPLAY_SNAPSHOT_CLASS}{{display:none}}</style>"
        parts: list[Any] = [
            w.HTML(f"{hide_snapshot}<b style='font-size:15px'>{html.escape(self.title)}</b>"),
            w.HBox([play, slider], layout=w.Layout(align_items="center")),
            w.HBox(buttons, layout=w.Layout(flex_flow="row wrap")),
            state,
        ]
        cursor = None
        if self._timeline is not None:
            png, width, height, _, _ = self._timeline
            image = w.Image(value=base64.b64decode(png), format="png",
                            layout=w.Layout(width=f"{width}px", height=f"{height}px",
                                            grid_area="stack"))
            cursor = w.HTML(layout=w.Layout(grid_area="stack", width=f"{width}px",
                                            height=f"{height}px"))
            # One grid cell for both: the cursor's HTML lies over the picture, so
            # moving the slider re-sends a few bytes, not the picture.
            parts.append(w.GridBox([image, cursor],
                                   layout=w.Layout(grid_template_areas='"stack"',
                                                   width=f"{width}px")))
        parts.append(panel)
        box = w.VBox(parts)
        box.add_class("storylab-replay")
        self._widgets = {"box": box, "slider": slider, "state": state, "panel": panel,
                         "cursor": cursor, "buttons": buttons, "play": play}
        slider.observe(self._on_slider, names="value")
        self._redraw()
        return box

    def _on_slider(self, change: dict[str, Any]) -> None:
        # A move made by a key moment keeps that moment's event; a learner's drag
        # does not. The frontend may echo the value it was sent: same time, same
        # state, so the moment's event is kept.
        new = float(change["new"])
        if self._moving_to is not None or abs(new - self._t) > 1e-6:
            self._upto = self._moving_to
        self._t, self._moving_to = new, None
        self._redraw()

    def _redraw(self) -> None:
        if self._widgets is None:
            return
        state = self.state
        self._widgets["state"].value = (
            f"{state.gauge_html()}<div class='storylab-summary' "
            f"style='font-size:13px;margin:4px 0'>{html.escape(state.summary())}</div>")
        self._widgets["panel"].value = state.panel_html()
        if self._widgets["cursor"] is not None:
            self._widgets["cursor"].value = self._cursor_html(with_image=False)
        if self._snapshot_handle is not None:
            self._snapshot_handle.update({"text/html": self._snapshot_html()}, raw=True)

    def _snapshot_html(self) -> str:
        hide = SNAPSHOT_STYLE.replace("storylab-progress-snapshot", REPLAY_SNAPSHOT_CLASS)
        return hide + self.html()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        from storylab.viz.progress.panel import in_jupyter_kernel

        if not in_jupyter_kernel():
            display({"text/plain": repr(self), "text/html": self.html()}, raw=True)
            return
        box = self.widget()
        display(_Bundle(box, self.summary()))
        # Under the widget, the same state as plain HTML: hidden in JupyterLab,
        # shown by a page that has no live kernel (papermill, nbconvert).
        self._snapshot_handle = display({"text/html": self._snapshot_html()}, raw=True,
                                        display_id=True)


class _Bundle:
    def __init__(self, widget: Any, text: str) -> None:
        self.widget, self.text = widget, text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = self.text
        return data


def replay(
    trace: Trace,
    *,
    t: float | str | None = None,
    names: Mapping[str, str] | None = None,
    limits: Mapping[str, int] | None = None,
    time_scale: float | None = None,
    title: str | None = None,
    timeline: bool = True,
) -> TraceReplay:
    """A time slider over ``trace``: gauge, progress panel and timeline cursor at any ``t``.

    ``t`` is where it starts: model seconds, or the kind of a key moment
    (``"split"``, ``"handoff"``, ``"failed"``, ``"mark"``, ``"end"``);
    default the split when there is one, else 0. ``names`` relabels
    sources and groups as in every chart (``story_labels(run)``);
    ``limits`` overrides ``trace.meta["limits"]``; ``timeline=False`` leaves
    the timeline picture out. Show it by making it the last expression of a
    cell (or ``display(r)``); move it from code with ``r.t = 30`` or
    ``r.t = "handoff"``. Nothing is imported or drawn until it is shown.
    """
    return TraceReplay(trace, t=t, names=names, limits=limits, time_scale=time_scale,
                       title=title, timeline=timeline)
