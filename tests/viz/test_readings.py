"""Numbers read from a trace (units in use, peaks, hand-offs, retries, busy
time) and the chart that compares runs by the units they held."""

from __future__ import annotations

import asyncio

import pytest
from vizkit import in_virtual_time

from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    Trace,
    mark,
)
from storylab.viz import (
    first_full,
    handoffs,
    in_use_at,
    marks,
    peaks_in_use,
    plot_in_use,
    pool_use,
    root_source,
)


@in_virtual_time
async def _two_groups(time_scale: float) -> Trace:
    """Group A (limit 2) takes the whole root (2); B waits, then gets A's first unit.

    In virtual time: its timings are exact, so the readings below are checked
    to the model second however loaded the machine is."""
    root = CapacitySource(2, name="root")

    async def group(name: str, seconds: list[float], delay: float) -> None:
        await asyncio.sleep(delay)
        cap = CapacitySource(2, root, name=name)
        thunks = [lambda s=s: asyncio.sleep(s * time_scale) for s in seconds]
        async for _ in HierarchicalTaskPoolRunner(name, SourceBufferObj(thunks), cap).run_tasks():
            pass

    clock = asyncio.get_running_loop().time
    with Trace(meta={"time_scale": time_scale}, clock=clock) as trace:
        await asyncio.gather(group("A", [10, 20], 0), group("B", [10], 2 * time_scale))
    return trace


async def test_trace_readings_find_the_full_moment_and_the_handoff():
    trace = await _two_groups(0.01)
    t_full = first_full(trace, "root", 2)
    assert t_full is not None
    snapshot = in_use_at(trace, t_full)
    assert snapshot["root"] == 2 and snapshot["A"] == 2 and snapshot.get("B", 0) == 0
    first = handoffs(trace, after=t_full, source="root")[0]
    assert (first.released_by, first.taken_by) == ("A", "B")
    # A's 10 s task ends at 10 and B, waiting since 2, takes its unit at once.
    assert first.released_at == pytest.approx(10) and first.taken_at == pytest.approx(10)
    assert first_full(trace, "root", 3) is None
    assert in_use_at(trace, 1000)["root"] == 0


async def test_plot_in_use_draws_one_line_per_run():
    trace = await _two_groups(0.005)
    fig = plot_in_use({"run 1": trace, "run 2": trace}, source="root", limit=2, title="T")
    (ax,) = fig.axes
    assert ax.get_title() == "T" and "model seconds" in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("run 1 (makespan") and labels[-1] == "limit 2"
    with pytest.raises(ValueError, match="no capacity source named 'nope'"):
        plot_in_use({"run": trace}, source="nope")
    with pytest.raises(ValueError, match="at least one"):
        plot_in_use({})


async def test_plot_in_use_defaults_to_each_traces_root():
    async def run(root_name: str, policy: str) -> Trace:
        with Trace(meta={"time_scale": 0.001}) as trace:
            root = CapacitySource(2, name=root_name, policy=policy)
            cap = CapacitySource(2, root, name=f"story-{root_name}")
            tasks = [lambda: asyncio.sleep(0.002)] * 3
            async for _ in HierarchicalTaskPoolRunner("r", tasks, cap).run_tasks():
                pass
        return trace

    fair, fifo = await run("global", "fair"), await run("global-fifo", "fifo")
    fig = plot_in_use({"fair": fair, "fifo": fifo})
    (ax,) = fig.axes
    assert [line.get_label().split(" (")[0] for line in ax.get_lines()] == ["fair", "fifo"]
    assert max(max(line.get_ydata()) for line in ax.get_lines()) == 2
    assert ax.get_title() == "Units in use at the root capacity source over time"


async def test_peaks_pool_use_and_the_root_of_a_trace():
    trace = await _two_groups(0.01)
    peaks = peaks_in_use(trace)
    # B may take a second unit before it finds its source empty: 1 or 2, never more.
    assert (peaks["root"], peaks["A"]) == (2, 2) and peaks["B"] in (1, 2)
    assert trace.meta["time_scale"] == 0.01
    assert root_source(trace) == "root" and root_source(Trace()) is None
    use = pool_use(trace, "root")
    # A runs 10 and 20 model s side by side, B 10 after: 40 busy, over after 20.
    assert use.busy == pytest.approx(40) and use.peak == 2
    assert use.span == pytest.approx(20)
    assert pool_use(trace, "root", time_scale=0.02).busy == pytest.approx(20)
    assert pool_use(trace, "nowhere").peak == 0


async def test_marks_are_the_retries_a_task_noted():
    async def noisy() -> None:
        mark("retry 1")
        await asyncio.sleep(0)

    mark("outside any trace: nothing recorded")
    with Trace() as trace:
        mark("outside any task")  # recorded too, without a lane
        async for _ in HierarchicalTaskPoolRunner("r", SourceBufferObj([noisy, noisy]),
                                                  CapacitySource(1)).run_tasks():
            pass
    found = marks(trace)[1:]
    assert [e.kind for e in found] == [EventKind.MARK, EventKind.MARK]
    assert {e.message for e in found} == {"retry 1"} and all(e.task_id is not None for e in found)
    assert len(marks(trace)) == 3
    assert marks(Trace()) == []
