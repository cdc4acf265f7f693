"""One time origin: makespan, every chart axis, every title and every reading
count from the trace's first event, and every figure says what it shows."""

from __future__ import annotations

import asyncio
import re

import pytest
from vizkit import in_virtual_time

from storylab.scheduling import (
    CapacitySource,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    Trace,
    mark,
)
from storylab.viz import (
    figure_summary,
    first_full,
    in_use_at,
    key_moments,
    makespan,
    mark_moments,
    plot_capacity,
    plot_in_use,
    plot_sequential_vs_parallel,
    plot_timeline,
    plot_timelines,
    pool_use,
    time_origin,
    timeline_lanes,
)

SCALE = 0.004


@in_virtual_time
async def _late_trace(before: float = 6.0, policy: str = "fair", pictures: int = 3) -> Trace:
    """Two stories of ``pictures`` 10 s pictures under 3 per story and 4 in total, in a trace
    opened ``before`` model seconds earlier (a writer at work, say). In virtual
    time, so the hairs between events are exact, not a loaded machine's."""
    trace = Trace(meta={"time_scale": SCALE}, clock=asyncio.get_running_loop().time)
    root = CapacitySource(4, name="global", policy=policy)

    async def story(name: str) -> None:
        cap = CapacitySource(3, root, name=f"story:{name}")
        thunks = []
        for i in range(1, pictures + 1):
            async def one() -> None:
                await asyncio.sleep(10 * SCALE)
            one.label = f"{name}-picture-{i}"
            thunks.append(one)
        async for _ in HierarchicalTaskPoolRunner(name, SourceBufferObj(thunks), cap).run_tasks():
            pass

    with trace:
        await asyncio.sleep(before * SCALE)
        await asyncio.gather(story("a"), story("b"))
    return trace


def _bars(ax, prefix: str):
    return [p for p in ax.patches if (p.get_gid() or "").startswith(prefix)]


async def test_the_title_the_bars_and_the_axis_agree_on_the_makespan():
    trace = await _late_trace()
    span = makespan(trace)
    fig = plot_timeline(trace)
    (ax,) = fig.axes
    runs = _bars(ax, "run:")
    ends = [b.get_x() + b.get_width() for b in runs]
    # The last bar ends at the makespan the title states, and the axis starts
    # where the first task started, not 6 model seconds earlier.
    stated = float(re.search(r"makespan ([\d.]+) model s", ax.get_title()).group(1))
    assert max(ends) == pytest.approx(span, abs=1e-9)
    assert stated == pytest.approx(span, abs=0.05)
    assert ax.get_xlim()[0] == 0
    assert min(b.get_x() for b in runs) < 1.0
    assert span < max(e.t for e in trace.events) / SCALE - trace.started_at / SCALE
    # The readings count from the same origin.
    assert pool_use(trace, "global").span == pytest.approx(span)
    lanes = timeline_lanes(trace)
    assert first_full(trace, "global", 4) == pytest.approx(
        sorted(lane.wait[0] if lane.wait else lane.run[0] for lane in lanes)[3], abs=0.5)
    assert in_use_at(trace, span + 1)["global"] == 0
    assert time_origin(trace) == trace.events[0].t
    # The makespan bracket spans 0 .. makespan.
    (bracket,) = [t for t in ax.texts if t.get_gid() == "makespan"]
    assert bracket.xy[0] == 0 and bracket.xyann[0] == pytest.approx(span)


async def test_capacity_and_in_use_charts_end_at_the_makespan_without_stray_segments():
    fair, fifo = await _late_trace(), await _late_trace(policy="fifo")
    fig = plot_capacity(fair)
    for ax in fig.axes:
        assert ax.get_xlim()[0] == 0
        assert ax.get_xlim()[1] == pytest.approx(makespan(fair) * 1.02)
    fig = plot_in_use({"fair": fair, "FIFO": fifo}, limit=4)
    (ax,) = fig.axes
    for line, trace in zip([ln for ln in ax.lines if (ln.get_gid() or "").startswith("in_use:")],
                           (fair, fifo), strict=True):
        xs = list(line.get_xdata())
        # Time never goes backwards along a line, and no line runs past its run's end
        # by more than the hair between the last task's end and its unit's release.
        assert xs == sorted(xs)
        assert xs[-1] == pytest.approx(makespan(trace), abs=0.05)


async def test_key_moments_are_marked_on_the_figures():
    trace = await _late_trace()
    moments = key_moments(trace)
    kinds = [m.kind for m in moments]
    assert kinds[0] == "split" and moments[0].text == "split 3,1"
    assert "end" in kinds
    fig = plot_timeline(trace)
    (ax,) = fig.axes
    gids = {ln.get_gid() for ln in ax.lines}
    assert {f"moment:{m.kind}:{i}" for i, m in enumerate(moments)} <= gids
    texts = [t.get_text() for t in ax.texts]
    assert "▼ split 3,1" in texts  # at t = 0: the label names its tick above the axis
    # Any moment can be added by hand, e.g. a kill or a lease that expired.
    drawn = mark_moments(ax, [(12.0, "kill"), (20.5, "lease expired")])
    assert [d.get_text() for d in drawn[1::2]] == ["kill", "lease expired"]
    with pytest.raises(ValueError, match=r"moments must be Moment objects or \(model second"):
        mark_moments(ax, ["kill"])
    assert not [ln for ln in plot_timeline(trace, moments=False).axes[0].lines
                if (ln.get_gid() or "").startswith("moment:")]


async def test_a_mark_made_outside_any_task_is_a_key_moment():
    trace = Trace(meta={"time_scale": SCALE})
    cap = CapacitySource(1, name="story:x")

    async def one() -> None:
        await asyncio.sleep(5 * SCALE)
        mark("a lease expired")  # inside the task: drawn on its lane, not a key moment
    one.label = "only"
    with trace:
        async for _ in HierarchicalTaskPoolRunner("x", SourceBufferObj([one]), cap).run_tasks():
            pass
        mark("kill")
    texts = [m.text for m in key_moments(trace)]
    assert "kill" in texts and "a lease expired" not in texts


async def test_several_timelines_share_one_time_axis():
    # Six pictures under 4 take two rounds (20 s), ten take three (30 s).
    short, long_ = await _late_trace(), await _late_trace(policy="fifo", pictures=5)
    assert (makespan(short), makespan(long_)) == (pytest.approx(20), pytest.approx(30))
    three = {"a": short, "b": long_, "c": short}
    fig = plot_timelines(three)
    right = {ax.get_xlim()[1] for ax in fig.axes}
    assert len(right) == 1
    assert right.pop() == pytest.approx(max(makespan(short), makespan(long_)) * 1.02)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == f"a: makespan {makespan(short):.1f} model s"
    assert figure_summary(fig).startswith("Timelines, makespan per run: a ")
    apart = plot_timelines(three, shared=False)
    assert len({ax.get_xlim()[1] for ax in apart.axes}) == 2
    with pytest.raises(ValueError, match="traces must map a title"):
        plot_timelines({})


async def test_every_figure_carries_a_summary_built_from_its_numbers():
    trace = await _late_trace()
    span = f"{makespan(trace):.1f}"
    fig = plot_timeline(trace)
    timeline = figure_summary(fig)
    # In a notebook the figure's text/plain is its summary, not "<Figure size ...>".
    assert repr(fig) == timeline
    assert timeline.startswith("Timeline: 6 tasks in 2 group(s) (story A, story B)")
    assert f"makespan {span} model s" in timeline
    capacity = figure_summary(plot_capacity(trace))
    assert "global 4/4" in capacity and "story A 3/3" in capacity
    assert "no source above its limit" in capacity
    both = figure_summary(plot_sequential_vs_parallel(trace, trace))
    assert both.startswith("Sequential vs parallel: 6 tasks one after another took")
    in_use = figure_summary(plot_in_use({"fair": trace}, limit=4))
    assert in_use == f"Units in use over time: fair peaked at 4 with makespan {span} model s " \
                     "(limit 4)."
    import matplotlib.pyplot as plt

    with pytest.raises(ValueError, match="no summary"):
        figure_summary(plt.figure())


async def test_plot_capacity_can_tick_the_split_with_a_diamond():
    trace = await _late_trace()
    (first, *_) = plot_capacity(trace, tick="D").axes
    labels = [t.get_text() for t in first.texts if (t.get_gid() or "").startswith("moment-label")]
    assert "◆ split 3,1" in labels, labels
    (first, *_) = plot_capacity(trace).axes  # the default tick stays ▼
    assert "▼ split 3,1" in [t.get_text() for t in first.texts]


async def test_plot_capacity_puts_no_tick_above_the_limit_in_the_label_room():
    # The first panel is taller than its limit to fit the moment labels; its ticks stop at
    # the limit, so the axis does not suggest the global source could reach 6 of 4.
    trace = await _late_trace()
    (first, *_) = plot_capacity(trace, limits={"global": 4, "story:a": 3, "story:b": 3},
                                tick="D").axes
    assert first.get_ylim()[1] > 5  # the room for the labels is still there
    assert max(first.get_yticks()) == 4, list(first.get_yticks())
