"""Helpers for the viz tests: real traced runs on plain coroutines.

Figures are drawn with the headless Agg backend; every test closes what it
opens so pyplot does not keep figures alive between tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from storylab.scheduling import (
    CapacitySource,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    Trace,
)


@pytest.fixture(autouse=True)
def _agg_backend():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def _thunk(label: str, seconds: float, fail: bool):
    async def run() -> str:
        await asyncio.sleep(seconds)
        if fail:
            raise RuntimeError(f"{label} broke")
        return label

    run.label = label
    return run


async def run_stories(
    stories: dict[str, Sequence[float | tuple[float, bool]]],
    *,
    story_limit: int = 3,
    global_limit: int = 10,
    time_scale: float = 0.002,
    policy: str = "fair",
) -> tuple[Trace, dict[str, CapacitySource]]:
    """Run each story's tasks (model seconds, optionally ``(seconds, fails)``) in parallel.

    Each story gets a ``CapacitySource(story_limit, global)`` named ``story:<name>``
    and its own runner; all stories start together. Returns the trace (with
    ``time_scale`` and ``limits`` in its meta) and the capacity sources by name.
    """
    shared = CapacitySource(global_limit, name="global", policy=policy)
    caps = {"global": shared}
    limits = {"global": global_limit}
    trace = Trace(meta={"time_scale": time_scale, "limits": limits})

    async def story(name: str, tasks) -> None:
        cap = CapacitySource(story_limit, shared, name=f"story:{name}")
        caps[cap.name] = cap
        limits[cap.name] = story_limit
        thunks = []
        for i, spec in enumerate(tasks, start=1):
            seconds, fail = spec if isinstance(spec, tuple) else (spec, False)
            thunks.append(_thunk(f"{name}-image-{i}", seconds * time_scale, fail))
        runner = HierarchicalTaskPoolRunner(f"story-{name}", SourceBufferObj(thunks), cap)
        async for _ in runner.run_tasks():
            pass

    with trace:
        await asyncio.gather(*(story(n, t) for n, t in stories.items()))
    assert all(c.in_use == 0 for c in caps.values())
    return trace, caps


async def run_sequential(
    name: str, seconds: Sequence[float], *, time_scale: float = 0.002
) -> Trace:
    """Run tasks one after another, recording TASK_* events like a sequential pipeline."""
    from storylab.scheduling import EventKind, current_trace

    trace = Trace(meta={"time_scale": time_scale})
    with trace:
        for i, s in enumerate(seconds, start=1):
            tr = current_trace()
            label = f"{name}-image-{i}"
            fields = dict(runner=f"sequential:{name}", task_id=i, label=label,
                          group=f"story:{name}")
            tr.record(EventKind.TASK_START, **fields)
            await asyncio.sleep(s * time_scale)
            tr.record(EventKind.TASK_END, **fields)
    return trace


@pytest.fixture
def stories():
    return run_stories


@pytest.fixture
def sequential():
    return run_sequential
