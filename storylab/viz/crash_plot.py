"""One figure for a crash and its resume: both runs of a story's pictures, the kill marked.

A run killed with ``SIGKILL`` records no trace, but the graph keeps what it
committed: each picture's stored start and finish times. Read them right
after the crash (:func:`picture_times`), note the wall time of the kill and
of the resume, and :func:`plot_kill_and_resume` draws the killed run up to
the kill, the resumed run from its start, and what became of each picture.

matplotlib is imported when a figure is drawn, never at import time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["picture_times", "plot_kill_and_resume"]

_PLACEHOLDER = re.compile(r"IMAGE_(\d+)")


def picture_times(graph: Any, pipeline_id: str) -> dict[str, tuple[float | None,
                                                                           float | None]]:
    """``{picture name: (started_at, finished_at)}`` as stored now (epoch seconds)."""
    return {n.name: (n.started_at, n.finished_at) for n in graph.children(pipeline_id)
            if n.type == "ImageGenerationEntity"}


def _short(name: str) -> str:
    """The picture as the progress panel names it: ``image-{{IMAGE_3}}`` reads ``image-3``."""
    found = _PLACEHOLDER.search(name)
    return f"image-{found.group(1)}" if found else name


def plot_kill_and_resume(
    graph: Any,
    pipeline_id: str,
    *,
    states: Mapping[str, str],
    first_run: Mapping[str, tuple[float | None, float | None]],
    killed_at: float,
    resumed_at: float,
    time_scale: float,
    title: str | None = None,
) -> Any:
    """Two panels on one row per picture: the killed run (left), the resumed run (right).

    ``states`` maps every planned picture to its state after the crash
    (``Completed``, ``stale``, ``not stored``), ``first_run`` its stored times
    then (:func:`picture_times`); ``killed_at`` and ``resumed_at`` are wall
    times (``time.time()``); ``time_scale`` turns wall seconds into model
    seconds. The left axis starts at the first stored start of the killed
    run and ends with the kill, marked; the right one starts at the resume.
    """
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
    if not states:
        raise ValueError("states must name at least one picture")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from storylab.viz._figure import new_figure
    from storylab.viz._palette import REUSED_COLOUR, Status, status_colour
    from storylab.viz.timeline import mark_moments

    names = list(states)
    now = picture_times(graph, pipeline_id)
    starts = [s for s, _ in first_run.values() if s is not None]
    origin = min(starts) if starts else killed_at
    kill = (killed_at - origin) / time_scale
    done, running = status_colour(Status.COMPLETED), status_colour(Status.RUNNING)
    redraw_ends = [(f - resumed_at) / time_scale for n in names
                   for s, f in [now.get(n, (None, None))]
                   if s is not None and f is not None and s >= resumed_at]
    # At least a third of the left panel's span, so the "↺ reused" labels fit even
    # when run 2 redrew little or nothing (both panels keep one scale).
    right_end = max(max(redraw_ends, default=1.0), kill / 3)
    fig, (left, right) = new_figure(
        1, 2, sharey=True, figsize=(10, 1.0 + 0.5 * len(names)),
        gridspec_kw={"width_ratios": [max(kill, 1.0), max(right_end, 1.0)], "wspace": 0.08},
    )
    rows = {n: i for i, n in enumerate(names)}
    for n in names:
        y, state = rows[n], states[n]
        start, finish = first_run.get(n, (None, None))
        if state == "Completed" and start is not None and finish is not None:
            left.barh(y, (finish - start) / time_scale, left=(start - origin) / time_scale,
                      height=0.55, color=done, edgecolor="black", lw=0.6)
        elif state == "stale" and start is not None:
            x0 = (start - origin) / time_scale
            left.barh(y, kill - x0, left=x0, height=0.55, color=running, edgecolor="black",
                      lw=0.6, hatch="//", alpha=0.9)
            left.annotate("stale: cut off", (x0, y), xytext=(-5, 0), textcoords="offset points",
                          ha="right", va="center", fontsize=10, color="#333333")
        else:  # never reached the graph
            left.plot([kill], [y], marker="o", ms=11, mfc="white", mec="#555555", mew=1.6,
                      ls="none", zorder=8)
            left.annotate("not stored", (kill, y), xytext=(-10, 0), textcoords="offset points",
                          ha="right", va="center", fontsize=10, color="#333333")
        s2, f2 = now.get(n, (None, None))
        if s2 is not None and f2 is not None and s2 >= resumed_at:
            right.barh(y, (f2 - s2) / time_scale, left=(s2 - resumed_at) / time_scale,
                       height=0.55, color=done, edgecolor="black", lw=0.6)
        elif state == "Completed":
            right.annotate("↺ reused", (0, y), xytext=(4, 0),
                           textcoords="offset points", va="center", fontsize=10,
                           color=REUSED_COLOUR, fontweight="bold")
    left.set_xlim(0, kill * 1.04 + 0.2)
    right.set_xlim(0, right_end * 1.04 + 0.2)
    left.set_ylim(len(names) - 0.4, -1.1)  # room above the first row for the kill's label
    left.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=11)
    mark_moments(left, [(kill, "SIGKILL: run 1 dies")])
    mark_moments(right, [(0.0, "run 2 starts")], tick=None)  # inside the axes, no ▼ by the title
    left.set_title("run 1: storylab run, killed", fontsize=11)
    right.set_title("run 2: the same request, resumed", fontsize=11)
    # Each axis says where its 0 is: run 1's first picture (not the process start), run 2's start.
    left.set_xlabel("model s since run 1's first picture started", fontsize=10)
    right.set_xlabel("model s since run 2 started", fontsize=10)
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    left.set_ylabel("picture", fontsize=11)
    counts = {s: list(states.values()).count(s) for s in ("Completed", "stale", "not stored")}
    redrawn = len(redraw_ends)
    fig.suptitle(title or (f"Killed {kill:.1f} model s after run 1's first picture: "
                           f"{counts['Completed']} pictures "
                           f"done, {counts['stale']} stale, {counts['not stored']} not stored; "
                           f"run 2 draws {redrawn}"), fontsize=12)
    # Only what the figure shows: a crash with no "not stored" picture names none.
    handles = [
        (counts["Completed"], Patch(facecolor=done, edgecolor="black",
                                    label="drawn and stored (Completed)")),
        (counts["stale"], Patch(facecolor=running, edgecolor="black", hatch="//",
                                label="started, cut off by the kill (stale)")),
        (counts["not stored"], Line2D([], [], marker="o", ms=10, mfc="white", mec="#555555",
                                      ls="none", label="planned, no node stored")),
        (counts["Completed"], Line2D([], [], marker="$↺$", ms=11, color=REUSED_COLOUR,
                                     ls="none", label="reused in run 2: stored output "
                                                      "handed back, not redrawn")),
    ]
    fig.legend(handles=[h for n, h in handles if n], loc="lower center", ncol=2,
               frameon=False, fontsize=10, bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.3 if len(names) <= 5 else 0.22, top=0.8)
    fig.storylab_summary = (
        f"run 1 was killed {kill:.1f} model s after its first picture started, with "
        f"{counts['Completed']} pictures done, {counts['stale']} stale and "
        f"{counts['not stored']} not stored; run 2 drew {redrawn} pictures and reused "
        f"{counts['Completed']}"
    )
    return fig
