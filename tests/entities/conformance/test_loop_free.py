"""On both stores: creating a story (a root entity) from a coroutine while
another process holds the graph's write lock never stops the event loop.

A real process holds the lock (``BEGIN EXCLUSIVE`` on the SQLite file) for
a few seconds, then lets it go by itself. A server graph has no graph-wide
write lock: there the other process keeps a write transaction of its own
open on the graph (and the advisory key a graph-wide lock would use), and
the creation is judged not to wait for it at all. Meanwhile a ticker task counts its turns.
A synchronous wait for the lock inside the loop lets no tick happen until the
lock is free; an awaited wait lets the ticker run all along. What is judged
is events (ticks counted while the creation was under way and the lock was
still held), plus the largest gap between ticks measured against the length
of the hold, never an absolute speed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from storylab.entities import Return, RunnableEntity
from tests.entities.conformance.holders import PG_WRITE_HOLDER, SQLITE_WRITE_HOLDER

HOLD = 3.0  # seconds the other process keeps the lock
TICK = 0.05




class LoopRoot(RunnableEntity, type_name="ConformanceLoopRoot"):
    async def run_impl(self):
        yield Return(self.data["n"])


class Ticker:
    """A task that notes the time of each of its turns, every ``TICK``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.times.append(time.monotonic())
            await asyncio.sleep(TICK)

    async def started(self) -> None:
        while len(self.times) < 3:
            await asyncio.sleep(TICK)

    def stop(self) -> None:
        self.task.cancel()

    def ticks_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.times if start < t < end)

    def largest_gap(self, start: float, end: float) -> float:
        times = [start, *(t for t in self.times if start < t < end), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


async def hold_lock(target) -> tuple[subprocess.Popen, float]:
    """Start a process holding the graph's write lock for ``HOLD`` seconds;
    returns once it holds it (and when, on our clock)."""
    if target.kind == "sqlite":
        cmd, extra = [sys.executable, "-c", SQLITE_WRITE_HOLDER, target.url, str(HOLD)], {}
    else:
        cmd = [sys.executable, "-c", PG_WRITE_HOLDER, target.schema, str(HOLD)]
        extra = {"HOLD_URL": target.base}
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **extra})
    assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
    assert not target.write_lock_is_free()
    return holder, time.monotonic()


async def released_at(holder: subprocess.Popen) -> float:
    """When (on our clock, at the latest) the holder began letting go."""
    line = await asyncio.to_thread(holder.stdout.readline)
    at = time.monotonic()
    assert line == "releasing\n"
    await asyncio.to_thread(holder.wait)
    return at


async def check_loop_kept_moving(target, make) -> object:
    """Run ``make()`` (a coroutine creating something on the graph) while
    another process holds the write lock; assert the ticker kept turning
    all along; return what ``make`` returned."""
    ticker = Ticker()
    await ticker.started()
    holder, locked = await hold_lock(target)
    try:
        release = asyncio.create_task(released_at(holder))
        begun = time.monotonic()
        made = await asyncio.wait_for(make(), timeout=HOLD * 20)
        done = time.monotonic()
        freed = await release
    finally:
        ticker.stop()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    if target.kind == "postgres":
        # No graph-wide lock: the creation did not wait for the other
        # process's write at all.
        assert done < freed, "the creation waited for another process's unrelated write"
        gap = ticker.largest_gap(begun, done)
        assert gap < (freed - locked) / 3, f"the loop stood still {gap:.2f} s"
        return made
    # The creation really waited for the lock: it ended after the release began.
    assert done >= freed
    # While it waited and the lock was held, the loop went on turning...
    ticks = ticker.ticks_between(begun, freed)
    assert ticks >= 10, f"only {ticks} ticks while the lock was held for {freed - begun:.2f} s"
    # ...with no pause as long as a good part of the hold.
    gap = ticker.largest_gap(begun, freed)
    assert gap < (freed - locked) / 3, f"the loop stood still {gap:.2f} s of a {HOLD} s hold"
    return made


@pytest.mark.timeout(180)
async def test_creating_a_root_under_a_foreign_lock_keeps_the_loop_moving(target):
    target.open().flush()  # the graph exists before the lock is taken
    opened = []

    async def make():
        # As a cluster worker does: open the graph on the loop, then create.
        graph = target.open()
        opened.append(graph)
        await graph.writable()
        return graph.create_or_retrieve(LoopRoot, "root", {"n": 7})

    root = await check_loop_kept_moving(target, make)
    (graph,) = opened
    graph.flush()
    # Idempotent by name: the same root again, through another handle too.
    assert graph.create_or_retrieve(LoopRoot, "root", {"n": 8}).id == root.id
    other = target.open()
    assert other.create_or_retrieve(LoopRoot, "root", {"n": 9}).id == root.id
    assert target.rows("SELECT count(*) FROM nodes WHERE name = 'root'") == [(1,)]
    assert await root.run() == 7


@pytest.mark.timeout(180)
async def test_generating_a_story_under_a_foreign_lock_keeps_the_loop_moving(target):
    from storylab.story.backends.images import SimulatedImageBackend
    from storylab.story.backends.text import SimulatedTextBackend
    from storylab.story.entities import generate_story
    from storylab.story.settings import StorySettings

    graph = target.open()
    graph.flush()
    settings = StorySettings(
        images=SimulatedImageBackend(time_scale=0.001), text=SimulatedTextBackend(time_scale=0.001)
    )

    def make():
        return generate_story("a lighthouse keeper's cat", graph=graph, settings=settings)

    result = await check_loop_kept_moving(target, make)
    assert result["stage"] == "completed"
    # Run again: the same story, found by name, not a second one.
    again = await generate_story("a lighthouse keeper's cat", graph=graph, settings=settings)
    assert again == result
    assert len(graph.roots()) == 1
