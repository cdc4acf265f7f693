"""The capacity chart says what it draws: a blink-long blip is no peak, labels clear the data."""

from __future__ import annotations

from storylab.scheduling import EventKind, Trace
from storylab.viz import plot_capacity

PATH = ("story:a", "global")


def _trace_with_a_blip() -> Trace:
    """Two units held for 100 s; at 50 s a third is taken 0.05 s before one goes back."""
    times = iter([0.0, 0.0, 50.0, 50.05, 100.0, 100.0, 100.0, 100.0])
    trace = Trace(clock=lambda: next(times, 100.0), started_at=-1e-9)
    trace.meta.update(time_scale=1.0, limits={"story:a": 3, "global": 10})
    trace.record(EventKind.ACQUIRE, path=PATH, runner="r", task_id=1, label="p1")
    trace.record(EventKind.ACQUIRE, path=PATH, runner="r", task_id=2, label="p2")
    trace.record(EventKind.ACQUIRE, path=PATH, runner="r", task_id=3, label="p3")
    trace.record(EventKind.RELEASE, path=PATH, runner="r", task_id=1, label="p1")
    trace.record(EventKind.TASK_END, path=(), runner="r", task_id=2, label="p2")
    trace.record(EventKind.TASK_END, path=(), runner="r", task_id=3, label="p3")
    trace.record(EventKind.RELEASE, path=PATH, runner="r", task_id=2, label="p2")
    trace.record(EventKind.RELEASE, path=PATH, runner="r", task_id=3, label="p3")
    return trace


def test_the_words_of_the_chart_use_the_peak_each_panel_draws():
    trace = _trace_with_a_blip()
    fig = plot_capacity(trace, moments=False)
    # the raw trace touches 3 for 0.05 s; the panel (and its title) show 2
    assert fig.storylab_peaks == {"global": 2, "story:a": 2}
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert any("peak 2 in use (limit 10)" in t for t in titles), titles
    assert "global 2/10" in fig.storylab_summary


def test_moment_labels_sit_above_the_highest_line_and_the_end_is_no_limit():
    trace = _trace_with_a_blip()
    fig = plot_capacity(trace, moments=[(50.0, "a moment")] + [(100.0, "end")])
    top = fig.axes[0]
    # the limit (10) sits at no more than 60 % of the first panel's height
    assert 10 / top.get_ylim()[1] <= 0.6 + 1e-9
    fig = plot_capacity(trace)  # the trace's own moments: "last task done" among them
    ends = [line for line in fig.axes[0].get_lines() if (line.get_gid() or "").startswith(
        "moment:end")]
    limits = [line for line in fig.axes[0].get_lines() if (line.get_gid() or "").startswith(
        "limit:")]
    assert ends and limits
    assert ends[0].get_linestyle() != limits[0].get_linestyle()
    assert ends[0].get_color() != limits[0].get_color()
