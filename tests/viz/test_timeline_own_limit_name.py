"""The legend names a task's own limit after its group: a toy's source is not a story."""

from __future__ import annotations

import asyncio

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj, Trace
from storylab.viz import plot_timeline


def _task(seconds: float):
    async def work() -> float:
        await asyncio.sleep(seconds)
        return seconds
    return work


async def test_the_own_limit_legend_names_a_group_that_is_not_a_story():
    trace = Trace(meta={"time_scale": 0.01})
    with trace:
        limit = CapacitySource(1, name="sketchbook (limit 1)")
        runner = HierarchicalTaskPoolRunner("sketches", SourceBufferObj(
            [_task(0.05), _task(0.05)]), limit)
        async with runner.run_tasks() as results:
            async for _ in results:
                pass
    fig = plot_timeline(trace)
    (ax,) = [a for a in fig.axes if a.patches]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "waiting: its own limit (sketchbook) was full" in legend, legend
    assert not any("(story)" in text for text in legend), legend
