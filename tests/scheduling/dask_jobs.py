"""Code run inside Dask worker processes by the distributed capacity tests
(sent by value, so the workers need not import the tests)."""

from __future__ import annotations

import asyncio
import time

from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, Trace
from storylab.scheduling.distributed import DistributedCapacityRoot


async def run_traced(
    name: str, capacity: int, story_limit: int, tasks: int, seconds: float, shared: bool
) -> Trace:
    """``tasks`` sleeps of ``seconds`` under a story limit, under the global
    limit: the shared one (a DistributedCapacityRoot) or, as a control, a
    plain per-process CapacitySource with the same name."""
    if shared:
        root: CapacitySource = DistributedCapacityRoot(capacity, name=name)
    else:
        root = CapacitySource(capacity, name=name)
    story = CapacitySource(story_limit, root, name=f"story-{id(root)}")

    async def sleep() -> None:
        await asyncio.sleep(seconds)

    with Trace(clock=time.time) as trace:
        runner = HierarchicalTaskPoolRunner("sleeps", [sleep] * tasks, story)
        async with runner.run_tasks() as results:
            async for _ in results:
                pass
    if shared:
        await root.drain()
    return trace


async def hold_units(name: str, capacity: int, units: int) -> None:
    """Take ``units`` units and keep them until the process dies."""
    root = DistributedCapacityRoot(capacity, name=name)
    story = CapacitySource(units, root)
    for i in range(units):
        await story.acquire(owner=i)
    await asyncio.sleep(3600)
