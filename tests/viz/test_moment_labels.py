"""Key-moment labels never cover each other, and stacked timelines share one scale.

A run in which many pictures fail within a second (an HTTP service refusing
them all) used to pile one "✗ ... failed" label per failure on top of each
other at the top of the timeline. The labels are now laid out in rows and
merged into counted labels where rows run out; these tests draw real traces
with the Agg renderer and measure the labels' boxes.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re

import pytest

from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, Trace
from storylab.viz import (
    Moment,
    figure_summary,
    key_moments,
    makespan,
    mark_moments,
    plot_timeline,
    plot_timelines,
)

SCALE = 0.004


async def _refused_trace(stories: int = 2, pictures: int = 5, failing: int = 4) -> Trace:
    """``stories`` stories of ``pictures`` 8 s pictures started together; in each, the
    last ``failing`` pictures raise at the end of their run (all at about 8 s)."""
    trace = Trace(meta={"time_scale": SCALE})
    root = CapacitySource(100, name="global")
    # The failing pictures all raise in one turn of the loop, 8 model s in, however slow
    # the machine is: a shared event set by one timer, not one sleep each.
    refuse = asyncio.Event()

    async def story(name: str) -> None:
        cap = CapacitySource(10, root, name=f"story:{name}")
        thunks = []
        for i in range(1, pictures + 1):
            async def one(i: int = i) -> str:
                if i > pictures - failing:
                    await refuse.wait()
                    raise RuntimeError(f"429 for picture {i}")
                await asyncio.sleep(8 * SCALE)
                return f"picture {i}"
            one.label = f"image-{{{{IMAGE_{i}}}}}"
            thunks.append(one)
        runner = HierarchicalTaskPoolRunner(name, thunks, cap)
        async with runner.run_tasks() as envelopes:
            async for _ in envelopes:
                pass

    with trace:
        asyncio.get_running_loop().call_later(8 * SCALE, refuse.set)
        await asyncio.gather(*(story(chr(ord("a") + s)) for s in range(stories)))
    return trace


def _moment_labels(ax) -> list:
    """The key-moment labels of an axes: annotations anchored at its top edge."""
    return [t for t in ax.texts
            if getattr(t, "xy", None) is not None and t.xy[1] == 1.0 and t.get_text()]


def _overlaps(fig, ax) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _moment_labels(ax)]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
            if box_a.overlaps(box_b)]


async def test_many_failures_at_once_get_labels_that_do_not_overlap(tmp_path):
    trace = await _refused_trace()
    moments = key_moments(trace)
    assert sum(m.kind == "failed" for m in moments) == 8
    fig = plot_timeline(trace)
    (ax,) = fig.axes
    fig.savefig(tmp_path / "refused.png")  # lays the figure out as a notebook shows it
    assert _overlaps(fig, ax) == []
    # Nobody waited here (no limit held anyone back), so the split is not marked. Every
    # other moment keeps its own line, and failures close together share one dashed line,
    # the same mark as a lone failure's; the labels account for every moment shown.
    shown = [m for m in moments if m.kind != "split"]
    kinds = [ln.get_gid().split(":")[1] for ln in ax.lines
             if (ln.get_gid() or "").startswith("moment:")]
    assert not [p for p in ax.patches if (p.get_gid() or "").startswith("moment-band:")]
    # the eight refusals came within a moment of each other: one line for all of them
    assert kinds.count("failed") == 1
    assert sorted(k for k in kinds if k != "failed") == sorted(
        m.kind for m in shown if m.kind != "failed")
    counted = [int(t.get_gid().split(":")[1]) for t in _moment_labels(ax)]
    assert sum(counted) == len(shown)
    texts = [t.get_text() for t in _moment_labels(ax)]
    # Failures that share a label are counted, and none is shown with raw braces.
    assert any(re.fullmatch(r"✗ \d tasks failed.*", t) for t in texts), texts
    assert not any("{{" in t for t in texts), texts
    # The text equivalent names the failed pictures as their lanes read, with their story.
    summary = figure_summary(fig)
    assert "{{" not in summary and "story B image-5" in summary, summary


async def test_a_lone_failure_is_named_as_its_lane_reads():
    trace = await _refused_trace(stories=1, failing=1)
    fig = plot_timeline(trace)
    texts = [t.get_text() for t in _moment_labels(fig.axes[0])]
    assert "✗ image-5 failed" in texts


def test_crowded_hand_made_moments_share_rows_then_labels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
    ax.set_xlim(0, 10)
    moments = [(0.5, "split 5,1")] + [(4 + 0.05 * i, "kill") for i in range(5)] + [
        (4.3, "lease expired"), (4.4, "worker restarted"), (4.5, "resumed"), (9.8, "end")]
    drawn = mark_moments(ax, moments)
    fig.savefig(io.BytesIO())
    assert _overlaps(fig, ax) == []
    lines = [d for d in drawn if (d.get_gid() or "").startswith("moment:")]
    assert len(lines) == len(moments)
    texts = [t.get_text() for t in _moment_labels(ax)]
    assert "split 5,1" in texts and "end" in texts
    assert any("kill ×5" in t for t in texts), texts
    # A long run with a failure every few seconds: rows fill up, then labels merge.
    fig3, ax3 = plt.subplots(figsize=(10, 3), layout="constrained")
    ax3.set_xlim(0, 600)
    many = [Moment(5.0 * i, f"✗ story {'AB'[i % 2]} image-{i} failed", "failed")
            for i in range(120)]
    drawn = mark_moments(ax3, many)
    fig3.savefig(io.BytesIO())
    assert _overlaps(fig3, ax3) == []
    assert sum(int(t.get_gid().split(":")[1]) for t in _moment_labels(ax3)) == 120
    assert len([d for d in drawn if (d.get_gid() or "").startswith("moment:")]) == 120
    plt.close(fig3)
    # Far-apart moments keep the simple [line, label, line, label] shape.
    fig2, ax2 = plt.subplots(figsize=(6, 2))
    ax2.set_xlim(0, 30)
    two = mark_moments(ax2, [(12.0, "kill"), (20.5, "lease expired")])
    assert [d.get_text() for d in two[1::2]] == ["kill", "lease expired"]
    plt.close(fig)
    plt.close(fig2)


async def test_stacked_timelines_share_one_axis_one_legend_and_honest_brackets(tmp_path):
    short = await _refused_trace(failing=4)
    longer = await _refused_trace(failing=0, pictures=3)
    fig = plot_timelines({"refused": short, "served": longer}, title="two runs")
    fig.savefig(tmp_path / "stacked.png")
    axes = fig.axes
    assert len(axes) == 2
    assert axes[0].get_xlim() == axes[1].get_xlim()
    longest = max(makespan(short), makespan(longer))
    assert axes[0].get_xlim()[1] == pytest.approx(longest * 1.02)
    # Each panel's makespan bracket runs from 0 to its own run's makespan.
    for ax, trace in zip(axes, (short, longer), strict=True):
        (bracket,) = [t for t in ax.texts if t.get_gid() == "makespan"]
        assert bracket.xy[0] == 0
        assert bracket.xyann[0] == pytest.approx(makespan(trace))
        assert ax.get_legend() is None
        assert _overlaps(fig, ax) == []
    # One legend for the figure, naming both outcomes seen in either panel.
    (legend,) = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert "ran, completed" in entries and "ran, failed" in entries


def test_no_other_moment_line_runs_through_a_label():
    """Two moments close together (FIFO's first hand-off and the queue moving again, as
    notebook 3 marks them): the first label goes to the left of its line when the second
    line would cross it on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    ax.set_xlim(0, 40)
    drawn = mark_moments(ax, [(9.1, "FIFO: A frees a unit"), (11.0, "FIFO: the queue moves again")])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lines = [d for d in drawn if (d.get_gid() or "").startswith("moment:")]
    xs = [ax.transData.transform((line.get_xdata()[0], 0))[0] for line in lines]
    for label in _moment_labels(ax):
        box = label.get_window_extent(renderer)
        crossing = [x for x in xs if box.x0 + 1 < x < box.x1 - 1]
        assert crossing == [], f"{label.get_text()!r} is crossed by a moment line"
    assert _overlaps(fig, ax) == []
    plt.close(fig)


def test_a_moment_on_the_axis_gets_a_tick_and_close_failures_one_dashed_line():
    from storylab.viz import Moment
    from storylab.viz._figure import new_figure
    from storylab.viz.timeline import mark_moments

    fig, ax = new_figure(figsize=(8, 3))
    ax.set_xlim(0, 30)
    mark_moments(ax, [Moment(0.0, "split 3,1", "split"), Moment(12.0, "✗ a", "failed"),
                      Moment(12.3, "✗ b", "failed")])
    ticks = [ln.get_gid() for ln in ax.lines if (ln.get_gid() or "").startswith("moment-tick:")]
    assert ticks == ["moment-tick:split:0"]  # only the moment hidden in the axis
    labels = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("moment-label")]
    assert "▼ split 3,1" in labels, labels  # the label names its tick
    # Close failures: one dashed line, drawn like a lone failure's, and no shaded band.
    assert not [p for p in ax.patches if (p.get_gid() or "").startswith("moment-band:")]
    (line,) = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("moment:failed")]
    lone_fig, lone_ax = new_figure(figsize=(8, 3))
    lone_ax.set_xlim(0, 30)
    mark_moments(lone_ax, [Moment(12.0, "✗ a", "failed")])
    (lone,) = [ln for ln in lone_ax.lines if (ln.get_gid() or "").startswith("moment:failed")]
    assert line.get_linestyle() == lone.get_linestyle() == "--"
    assert line.get_color() == lone.get_color() and line.get_linewidth() == lone.get_linewidth()


def test_a_figure_whose_bars_carry_retry_marks_ticks_the_split_with_a_diamond():
    from storylab.scheduling.trace import EventKind, Trace, TraceEvent
    from storylab.viz._figure import new_figure
    from storylab.viz.timeline import _tick_for, mark_moments

    fig, ax = new_figure(figsize=(8, 3))
    ax.set_xlim(0, 30)
    mark_moments(ax, [Moment(0.0, "split 3,1", "split")], tick="D")
    labels = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("moment-label")]
    assert labels == ["◆ split 3,1"]  # ▼ stays the glyph of a retry on a bar
    (tick,) = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("moment-tick:")]
    assert tick.get_marker() == "D"
    plain = Trace()
    plain.events.append(TraceEvent(0.0, EventKind.MARK, message="kill"))  # outside any task
    retried = Trace()
    retried.events.append(TraceEvent(0.0, EventKind.MARK, task_id=1, message="retry 1"))
    assert _tick_for(plain) == "v" and _tick_for(retried) == "D"
    assert _tick_for(plain, retried) == "D"  # one glyph for every panel of a figure



def test_close_failures_are_marked_like_a_lone_failure_on_any_axis_length():
    # The same failures, 0.1 model s apart, on a 12 s and a 32 s axis: one dashed line,
    # drawn exactly as a lone failure's, never a band that is wide on one chart and a
    # hairline on another.
    from storylab.viz import Moment
    from storylab.viz._figure import new_figure
    from storylab.viz.timeline import mark_moments

    def failure_lines(ax):
        return [ln for ln in ax.lines if (ln.get_gid() or "").startswith("moment:failed:")]

    for right in (12, 32):
        fig, ax = new_figure(figsize=(8, 3))
        ax.set_xlim(0, right)
        mark_moments(ax, [Moment(6.2, "✗ a", "failed"), Moment(6.3, "✗ b", "failed")])
        (line,) = failure_lines(ax)
        assert line.get_xdata()[0] == 6.2
        assert not ax.patches
        _, lone_ax = new_figure(figsize=(8, 3))
        lone_ax.set_xlim(0, right)
        mark_moments(lone_ax, [Moment(6.2, "✗ a", "failed")])
        (lone,) = failure_lines(lone_ax)
        assert (line.get_linestyle(), line.get_color(), line.get_linewidth()) == (
            lone.get_linestyle(), lone.get_color(), lone.get_linewidth())
