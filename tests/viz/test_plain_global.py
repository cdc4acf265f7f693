"""A global source named after its limit (``global-4``) reads "global" on charts."""

from __future__ import annotations

import asyncio

import matplotlib.pyplot as plt

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj, Trace
from storylab.viz import plot_capacity, plot_timeline, source_labels


def _traced_run() -> Trace:
    async def main() -> Trace:
        glob = CapacitySource(1, name="global-1")
        with Trace() as trace:
            async def story(n: int) -> None:
                async def task() -> None:
                    await asyncio.sleep(0.01)
                runner = HierarchicalTaskPoolRunner(
                    f"r{n}", SourceBufferObj([task, task]),
                    CapacitySource(2, glob, name=f"story:{n}"))
                async with runner.run_tasks() as results:
                    async for _ in results:
                        pass
            await asyncio.gather(story(1), story(2))
        return trace
    return asyncio.run(main())


def test_global_named_after_its_limit_reads_global_in_legends_and_titles():
    trace = _traced_run()
    assert source_labels(trace)["global-1"] == "global"
    fig = plot_timeline(trace)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend()
              for t in ax.get_legend().get_texts()]
    plt.close(fig)
    assert "waiting: the global limit was full" in legend
    assert not any("global-1" in text for text in legend)
    fig = plot_capacity(trace, limits={"global-1": 1, "story:1": 2, "story:2": 2})
    titles = [ax.get_title(loc="left") + ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert any(t.startswith("global:") for t in titles) and not any("global-1" in t for t in titles)
