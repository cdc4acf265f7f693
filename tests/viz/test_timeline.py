"""Timelines and capacity charts drawn from real traced runs (headless Agg)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from matplotlib.colors import to_hex
from vizkit import in_virtual_time

from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    Trace,
)
from storylab.viz import (
    makespan,
    plot_capacity,
    plot_sequential_vs_parallel,
    plot_timeline,
    timeline_lanes,
)
from storylab.viz._palette import COLOURS, Status
from storylab.viz.timeline import TIME_LABEL, capacity_series

SCALE = 0.002


# Every run here is in virtual time: the lanes, waits and makespans read from
# its trace are exact, so they are checked to the model second, and no
# verdict depends on how loaded the machine is.
@pytest.fixture
def stories(virtual_stories):
    return virtual_stories


@pytest.fixture
def sequential(virtual_sequential):
    return virtual_sequential


def _patches(fig, prefix: str) -> dict[str, object]:
    return {
        p.get_gid()[len(prefix) :]: p
        for ax in fig.axes
        for p in ax.patches
        if (p.get_gid() or "").startswith(prefix)
    }


def _model(trace: Trace, t: float) -> float:
    # Model seconds from the shared origin: the trace's first event.
    return (t - trace.events[0].t) / trace.meta["time_scale"]


async def _two_levels(stories):
    """Story A fills its own limit (3) and story B then hits the global limit (4)."""
    return await stories(
        {"A": [10, 10, (4, True), 10], "B": [10, 10]},
        story_limit=3,
        global_limit=4,
        time_scale=SCALE,
    )


async def test_lanes_match_the_trace_one_per_started_task(stories):
    trace, _ = await _two_levels(stories)
    lanes = timeline_lanes(trace)
    starts = trace.of_kind(EventKind.TASK_START)
    assert [(lane.runner, lane.task_id) for lane in lanes] == [
        (e.runner, e.task_id) for e in sorted(starts, key=lambda e: (e.group, e.t))
    ]
    assert [lane.group for lane in lanes] == ["story:A"] * 4 + ["story:B"] * 2
    assert [lane.label for lane in lanes[:4]] == [f"A-image-{i}" for i in range(1, 5)]
    ends = {
        (e.runner, e.task_id): e for e in trace.of_kind(EventKind.TASK_END, EventKind.TASK_ERROR)
    }
    for lane, start in zip(lanes, sorted(starts, key=lambda e: (e.group, e.t)), strict=True):
        end = ends[(lane.runner, lane.task_id)]
        assert lane.run == pytest.approx((_model(trace, start.t), _model(trace, end.t)))
        assert lane.run[1] - lane.run[0] == pytest.approx(4 if lane.label == "A-image-3" else 10)
    outcomes = {lane.label: lane.outcome for lane in lanes}
    assert outcomes["A-image-3"] is Status.FAILED
    assert "A-image-3 broke" in next(lane.error for lane in lanes if lane.label == "A-image-3")
    assert {s for k, s in outcomes.items() if k != "A-image-3"} == {Status.COMPLETED}


async def test_waits_are_matched_by_owner_and_name_the_blocking_level(stories):
    trace, _ = await _two_levels(stories)
    lanes = {lane.label: lane for lane in timeline_lanes(trace)}
    waits = {(e.runner, e.task_id): e for e in trace.of_kind(EventKind.WAIT)}
    grants = {(e.runner, e.task_id): e for e in trace.of_kind(EventKind.GRANT)}
    acquired = {(e.runner, e.task_id) for e in trace.of_kind(EventKind.ACQUIRE)}
    for lane in lanes.values():
        key = (lane.runner, lane.task_id)
        if lane.wait is None:
            assert key in acquired and key not in waits
        else:
            assert lane.wait == pytest.approx(
                (_model(trace, waits[key].t), _model(trace, grants[key].t))
            )
            assert lane.wait_level == waits[key].level
            assert lane.wait[1] <= lane.run[0]
    # The fourth image of A waited for its own story's limit, the second of B
    # for the global one. The unit A's failing image frees at 4 goes to B (it
    # holds fewer), so A's fourth waits until A's first images end at 10.
    assert lanes["A-image-4"].wait_level == "story:A"
    assert lanes["B-image-2"].wait_level == "global"
    assert lanes["B-image-2"].wait == pytest.approx((0, 4))
    assert lanes["B-image-2"].run == pytest.approx((4, 14))
    assert lanes["A-image-4"].wait == pytest.approx((0, 10))
    assert lanes["A-image-1"].wait is None


async def test_timeline_figure_draws_the_lanes_with_status_colours(stories, tmp_path):
    trace, _ = await _two_levels(stories)
    lanes = timeline_lanes(trace)
    fig = plot_timeline(trace)
    fig.savefig(tmp_path / "timeline.png", dpi=80)
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs, waits = _patches(fig, "run:"), _patches(fig, "wait:")
    assert set(runs) == {lane.key for lane in lanes}
    assert set(waits) == {lane.key for lane in lanes if lane.wait is not None}
    for lane in lanes:
        bar = runs[lane.key]
        assert bar.get_x() == pytest.approx(lane.run[0])
        assert bar.get_width() == pytest.approx(lane.run[1] - lane.run[0])
        assert to_hex(bar.get_facecolor()) == COLOURS[lane.outcome]
        if lane.wait is not None:
            assert waits[lane.key].get_x() == pytest.approx(lane.wait[0])
            assert waits[lane.key].get_hatch()
    own = waits[next(lane.key for lane in lanes if lane.wait_level == "story:A")]
    glob = waits[next(lane.key for lane in lanes if lane.wait_level == "global")]
    assert to_hex(own.get_facecolor()) != to_hex(glob.get_facecolor())
    (ax,) = [a for a in fig.axes if a.patches]
    assert ax.get_xlabel() == TIME_LABEL and "model seconds" in ax.get_xlabel()
    assert ax.get_title().startswith("Task timeline")
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == "story A" and "story B" in ticks and "A-image-4" in ticks
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "waiting: the global limit was full" in legend
    assert "waiting: its story's limit was full" in legend
    assert "ran, failed" in legend


async def test_a_wait_kind_keeps_its_colour_on_a_chart_without_the_other_kind(stories):
    # Two levels: both kinds of wait. Then a run where only the global limit binds:
    # its waits keep the global colour, not the colour of the first legend entry.
    two = (await _two_levels(stories))[0]
    both = plot_timeline(two)
    global_keys = {lane.key for lane in timeline_lanes(two) if lane.wait_level == "global"}
    (only_global, _) = await stories({"A": [10, 10], "B": [10, 10]}, story_limit=3,
                                     global_limit=2, time_scale=SCALE)
    lanes = timeline_lanes(only_global)
    assert {lane.wait_level for lane in lanes if lane.wait} == {"global"}

    def colours(fig):
        return {to_hex(p.get_facecolor()) for p in _patches(fig, "wait:").values()}

    glob = {to_hex(p.get_facecolor()) for k, p in _patches(both, "wait:").items()
            if k in global_keys}
    assert len(glob) == 1 and colours(plot_timeline(only_global)) == glob


async def test_time_scale_comes_from_meta_or_argument(stories):
    trace, _ = await stories({"A": [10]}, time_scale=SCALE)
    (lane,) = timeline_lanes(trace)
    assert lane.run[1] - lane.run[0] == pytest.approx(10)
    (raw,) = timeline_lanes(trace, time_scale=1.0)
    assert raw.run[1] - raw.run[0] == pytest.approx((lane.run[1] - lane.run[0]) * SCALE)
    for bad in (0, -1.0, "fast", True):
        with pytest.raises(ValueError, match="time_scale"):
            timeline_lanes(trace, time_scale=bad)
    with pytest.raises(TypeError, match="trace must be"):
        plot_timeline([])


@in_virtual_time
async def _a_task_seen_while_running():
    cap = CapacitySource(2, name="story:live")

    async def slow():
        await asyncio.sleep(0.05)

    slow.label = "slow"
    runner = HierarchicalTaskPoolRunner("live", SourceBufferObj([slow]), cap)
    trace = Trace(meta={"time_scale": 0.01}, clock=asyncio.get_running_loop().time)
    with trace:
        consumer = asyncio.ensure_future(anext(runner.run_tasks()))
        await asyncio.sleep(0.01)
        (while_running,) = timeline_lanes(trace)
        await consumer
    return while_running, trace


async def test_a_task_still_running_is_drawn_up_to_the_last_event():
    lane, trace = await _a_task_seen_while_running()
    assert lane.outcome is Status.RUNNING
    assert lane.run[1] - lane.run[0] == pytest.approx(0)  # the last event: its start
    (lane,) = timeline_lanes(trace)
    assert lane.outcome is Status.COMPLETED and lane.run[1] - lane.run[0] == pytest.approx(5)


@in_virtual_time
async def _one_done_then_the_consumer_leaves():
    cap = CapacitySource(2, name="story:stop")
    thunks = []
    for i, d in enumerate([0.001, 0.2], start=1):

        async def t(d=d):
            await asyncio.sleep(d)

        t.label = f"t{i}"
        thunks.append(t)
    runner = HierarchicalTaskPoolRunner("stop", SourceBufferObj(thunks), cap)
    with Trace(clock=asyncio.get_running_loop().time) as trace:
        gen = runner.run_tasks()
        await anext(gen)
        await gen.aclose()  # the consumer leaves: the slow task is cancelled
    return trace


async def test_cancelled_tasks_are_marked_cancelled():
    trace = await _one_done_then_the_consumer_leaves()
    outcomes = {lane.label: lane.outcome for lane in timeline_lanes(trace)}
    assert outcomes == {"t1": Status.COMPLETED, "t2": Status.CANCELLED}


async def test_capacity_chart_draws_every_source_and_its_limit(stories, tmp_path):
    trace, caps = await stories(
        {name: [10] * 5 for name in "ABCDE"}, story_limit=3, global_limit=10, time_scale=SCALE
    )
    series = {line.name: line for line in capacity_series(trace)}
    assert list(series)[0] == "global" and series["global"].depth == 0
    assert set(series) == {"global", *(f"story:{n}" for n in "ABCDE")}
    # The invariants the picture must show: global never above 10, stories never above 3.
    assert series["global"].peak == 10
    assert all(line.peak <= 3 for name, line in series.items() if name != "global")
    assert max(line.peak for name, line in series.items() if name != "global") == 3

    fig = plot_capacity(trace)
    fig.savefig(tmp_path / "capacity.png", dpi=80)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    for name, cap in caps.items():
        in_use = lines[f"in_use:{name}"]
        assert max(in_use.get_ydata()) <= cap.capacity
        assert in_use.get_ydata()[-1] == 0  # every unit came back
        assert list(lines[f"limit:{name}"].get_ydata()) == [cap.capacity, cap.capacity]
    assert "Capacity in use" in fig.get_suptitle()
    assert fig.axes[-1].get_xlabel() == TIME_LABEL
    assert fig.axes[0].get_title(loc="left") == "global: peak 10 in use (limit 10)"
    assert all(ax.get_ylabel() == "units in use" for ax in fig.axes)


async def test_capacity_limits_argument_wins_over_meta_and_is_validated(stories):
    trace, caps = await stories({"A": [10, 10]}, story_limit=3, global_limit=10, time_scale=SCALE)
    from_sources = {line.name: line.limit for line in capacity_series(trace, limits=caps.values())}
    assert from_sources == {"global": 10, "story:A": 3}
    explicit = {
        line.name: line.limit
        for line in capacity_series(trace, limits={"global": 7, "story:idle": 2})
    }
    assert explicit == {"global": 7, "story:A": None, "story:idle": 2}
    del trace.meta["limits"]
    assert {line.limit for line in capacity_series(trace)} == {None}
    fig = plot_capacity(trace)  # no limit known: drawn without limit lines, still titled
    assert not any(
        (ln.get_gid() or "").startswith("limit:") for ax in fig.axes for ln in ax.get_lines()
    )
    assert "limit unknown" in fig.axes[0].get_title(loc="left")
    with pytest.raises(ValueError, match=r"limits\['global'\] must be an integer >= 1"):
        capacity_series(trace, limits={"global": 0})
    with pytest.raises(TypeError, match="limits must be"):
        capacity_series(trace, limits=3)
    with pytest.raises(TypeError, match="limits must be"):
        capacity_series(trace, limits=["global"])


async def test_sequential_vs_parallel_titles_carry_measured_makespans(
    stories, sequential, tmp_path
):
    seq = await sequential("A", [10] * 5, time_scale=SCALE)
    par, _ = await stories({"A": [10] * 5}, story_limit=3, time_scale=SCALE)
    seq_span, par_span = makespan(seq), makespan(par)
    assert seq_span == pytest.approx(50)  # five 10 s images one after another
    assert par_span == pytest.approx(20)  # two rounds under a limit of 3
    fig = plot_sequential_vs_parallel(seq, par)
    fig.savefig(tmp_path / "sequential_vs_parallel.png", dpi=80)
    left, right = [ax for ax in fig.axes if ax.patches]
    assert left.get_title() == f"Sequential: makespan {seq_span:.1f} model s"
    assert right.get_title() == f"Parallel: makespan {par_span:.1f} model s"
    assert left.get_xlabel() == right.get_xlabel() == TIME_LABEL
    assert left.get_xlim() == right.get_xlim()  # same time axis, so lengths compare
    assert f"{seq_span / par_span:.1f}x" in fig.get_suptitle()
    assert len(_patches(fig, "run:")) == 10  # five lanes in each panel
    assert sum(1 for p in left.patches if (p.get_gid() or "").startswith("run:")) == 5
    assert sum(1 for p in right.patches if (p.get_gid() or "").startswith("wait:")) >= 1


async def test_empty_trace_draws_titled_empty_charts():
    trace = Trace()
    assert timeline_lanes(trace) == [] and makespan(trace) == 0.0
    fig = plot_timeline(trace)
    assert fig.axes[0].get_title() and fig.axes[0].get_xlabel() == TIME_LABEL
    fig = plot_capacity(trace)
    assert fig.get_suptitle() and fig.axes[-1].get_xlabel() == TIME_LABEL


def test_importing_viz_imports_no_plotting_widget_or_story_module():
    code = (
        "import sys, storylab, storylab.viz\n"
        "heavy = [m for m in ('matplotlib', 'networkx', 'ipywidgets', 'IPython', "
        "'storylab.story') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_viz_sources_never_import_the_story_layer():
    import ast
    from pathlib import Path

    import storylab.viz

    for path in Path(storylab.viz.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith("storylab.story") for n in names), path.name


async def test_marks_are_drawn_on_their_own_lane(tmp_path):
    import asyncio

    from matplotlib.collections import PathCollection

    from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, Trace, mark
    from storylab.viz import plot_timeline
    from storylab.viz.timeline import timeline_lanes

    def task(label, retries):
        async def run():
            for n in range(retries):
                await asyncio.sleep(0.002)
                mark(f"retry {n + 1}")
            return label

        run.label = label
        return run

    with Trace(meta={"time_scale": 0.001}) as trace:
        cap = CapacitySource(2, name="story:x")
        tasks = [task("quiet", 0), task("retried", 2)]
        async for _ in HierarchicalTaskPoolRunner("r", tasks, cap).run_tasks():
            pass
    lanes = {lane.label: lane for lane in timeline_lanes(trace)}
    assert lanes["quiet"].marks == ()
    assert [m for _, m in lanes["retried"].marks] == ["retry 1", "retry 2"]
    r0, r1 = lanes["retried"].run
    assert all(r0 <= t <= r1 for t, _ in lanes["retried"].marks)
    fig = plot_timeline(trace)
    drawn = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert [c.get_gid() for c in drawn] == [f"marks:{lanes['retried'].key}"]
    assert len(drawn[0].get_offsets()) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("retry" in text for text in legend)
    fig.savefig(tmp_path / "timeline_marks.png")


async def test_renamed_story_panels_follow_their_labels(stories):
    # Lettered against the order the trace met them (as a cluster run may letter them):
    # the panels read A, B, not B, A.
    trace, _ = await stories({"A": [10, 10], "B": [10]}, story_limit=3, global_limit=10,
                             time_scale=SCALE)
    fig = plot_capacity(trace, names={"story:A": "story B (a fox)", "story:B": "story A (an owl)"})
    titles = [ax.get_title(loc="left").split(":")[0] for ax in fig.axes]
    assert titles == ["global", "story A (an owl)", "story B (a fox)"]


async def test_a_renamed_limit_reads_its_new_name_in_the_wait_legend(stories):
    trace, _ = await stories({"A": [10] * 3, "B": [10] * 3}, story_limit=3, global_limit=4,
                             time_scale=SCALE)
    fig = plot_timeline(trace, names={"global": "shared pool (4)"})
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "waiting: the shared pool (4) limit was full" in legend, legend


async def test_names_rename_groups_and_panels_for_the_reader(stories):
    trace, _ = await stories({"A": [10, 10], "B": [10]}, story_limit=3, global_limit=10,
                             time_scale=SCALE)
    names = {"story:A": "story A (a fox)", "story:B": "story B (an owl)"}
    fig = plot_timeline(trace, names=names)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "story A (a fox)" in ticks and "story B (an owl)" in ticks and "story:A" not in ticks
    fig = plot_capacity(trace, names=names)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0].startswith("global: ") and titles[1].startswith("story A (a fox): peak 2")
    fig = plot_sequential_vs_parallel(trace, trace, names=names)
    left, right = fig.axes[:2]
    assert "story B (an owl)" in [t.get_text() for t in left.get_yticklabels()]
    # The same rows on both sides are named once, on the left: no band of repeated labels.
    assert list(right.get_yticks()) == list(left.get_yticks())
    assert not right.yaxis.majorTicks[0].label1.get_visible()


async def test_every_timeline_has_one_y_label_that_claims_no_capacity_source(
    stories, sequential
):
    from storylab.viz.timeline import NO_SOURCE_LABEL

    seq = await sequential("A", [10] * 3, time_scale=SCALE)  # a plain loop: no source at all
    par, _ = await stories({"A": [10] * 3}, story_limit=2, time_scale=SCALE)
    (plain,) = plot_timeline(seq).axes
    assert plain.get_ylabel() == NO_SOURCE_LABEL
    assert "capacity source" not in plain.get_ylabel()
    (limited,) = [ax for ax in plot_timeline(par).axes if ax.patches]
    assert limited.get_ylabel() == NO_SOURCE_LABEL == "task"  # one wording for every timeline
    left, right = [ax for ax in plot_sequential_vs_parallel(seq, par).axes if ax.patches]
    assert left.get_ylabel() == NO_SOURCE_LABEL and right.get_ylabel() == ""
