"""A task handed back from the graph at once gets a marker and a legend entry of its own."""

from __future__ import annotations

import asyncio

from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj, Trace
from storylab.viz import plot_timeline
from storylab.viz._palette import REUSED_COLOUR
from storylab.viz.timeline import REUSED_LEGEND


def _task(label: str, seconds: float):
    async def work():
        if seconds:
            await asyncio.sleep(seconds)

    work.label = label
    return work


async def _run(thunks) -> Trace:
    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj(thunks), CapacitySource(5, name="s"))
    trace = Trace(meta={"time_scale": 0.01})
    with trace:
        async with runner.run_tasks() as results:
            async for _ in results:
                pass
    return trace


async def test_reused_results_get_a_diamond_and_their_own_legend_entry():
    trace = await _run([_task("image-1", 0), _task("image-2", 0), _task("image-3", 0.1)])
    fig = plot_timeline(trace, title="retry")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert REUSED_LEGEND in legend and "ran, completed" in legend  # image-3 really ran
    reused = [line for line in ax.lines if str(line.get_gid()).startswith("reused:")]
    assert len(reused) == 2
    assert all(line.get_marker() == "D" and line.get_color() == REUSED_COLOUR for line in reused)


async def test_a_run_of_real_work_has_no_reused_entry():
    trace = await _run([_task("image-1", 0.05), _task("image-2", 0.06)])
    ax = plot_timeline(trace, title="t").axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert REUSED_LEGEND not in legend and "ran, completed" in legend
