"""``append_call`` from ``run_impl`` while another process holds the graph's
write lock: it returns at once instead of blocking the event loop for up to
``busy_timeout``, the run's progress keeps coming meanwhile, and the child is
stored by the first commit once the lock is free (fenced by the parent's
lease there: a child made under a lease lost meanwhile is not stored).

The lock is held by a real process (``BEGIN EXCLUSIVE`` on the same file).
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from storylab.entities import (
    DuplicateNameError,
    EntityGraph,
    LeaseLostError,
    Return,
    RunnableEntity,
)
from tests.entities.test_fenced_leases import LockHolder, Ticker, poll, take_over

BUSY_TIMEOUT = 0.3  # seconds a synchronous write would wait for the lock, then fail

# Per run (by node id): "locked" is set by the test once the other process
# holds the lock; "appended" by run_impl once its calls returned; "released"
# by the test once the lock is free again.
EVENTS: dict[str, dict[str, asyncio.Event]] = {}


def events_for(node_id: str) -> dict[str, asyncio.Event]:
    return EVENTS.setdefault(
        node_id, {k: asyncio.Event() for k in ("ready", "locked", "appended", "released")}
    )


class Leaf(RunnableEntity):
    async def run_impl(self):
        yield Return(self.data["n"] * 10)


class Parent(RunnableEntity):
    """Makes one child before the lock, three (and a retrieval, and a refused
    duplicate) while it is held, logs progress until it is released, then
    runs its children."""

    async def run_impl(self):
        ev = events_for(self.id)
        before = self.append_call(Leaf, "before", {"n": 0})
        ev["ready"].set()
        await ev["locked"].wait()
        made = [self.append_call(Leaf, f"leaf-{i}", {"n": i}) for i in (1, 2, 3)]
        again = self.append_or_retrieve_call(Leaf, "leaf-1", {"n": 99})
        old = self.append_or_retrieve_call(Leaf, "before", {"n": 99})
        try:
            self.append_call(Leaf, "leaf-2", {"n": 99})
        except DuplicateNameError:
            refused = True
        else:
            refused = False
        # Reading a new child back does not wait for the lock either.
        read_back = (made[0].status, made[0].data, made[0].record.call_path)
        ev["appended"].set()
        while not ev["released"].is_set():
            yield self.progress({"waiting": True})
            await asyncio.sleep(0.01)
        values = []
        for child in [before, *made]:
            values.append((yield self.delegate(child)))
        yield Return(
            {
                "values": values,
                "same": again.id == made[0].id and old.id == before.id,
                "refused": refused,
                "read back": list(read_back),
            }
        )


async def collect_into(run, envs: list) -> None:
    async for env in run:
        envs.append(env)


@pytest.mark.timeout(120)
async def test_append_call_under_a_foreign_lock_does_not_block_and_progress_keeps_moving(tmp_path):
    path = tmp_path / "graph.sqlite"
    ticker = Ticker()
    with EntityGraph.open(path, busy_timeout=BUSY_TIMEOUT) as g:
        parent = g.create(Parent, "parent")
        ev = events_for(parent.id)
        envs: list = []
        run = parent.start()
        task = asyncio.create_task(collect_into(run, envs))
        await ev["ready"].wait()
        async with LockHolder(path) as holder:
            await holder.locked()
            ev["locked"].set()
            # The calls return while the other process still holds the lock.
            await asyncio.wait_for(ev["appended"].wait(), timeout=30)
            assert holder.proc.poll() is None
            assert not task.done()  # (a blocked call would have failed the run)
            seen = len(envs)
            await ticker.wait(60)  # at least 0.6 s: twice the busy timeout
            during = len(envs) - seen
            # Nothing of the new children is on disk yet: the lock is not ours.
            assert poll(path, "SELECT count(*) FROM nodes WHERE name LIKE 'leaf-%'") == [(0,)]
            await holder.release()
        ev["released"].set()
        await asyncio.wait_for(task, timeout=60)
        ticker.task.cancel()
        assert during >= 10  # the run's progress kept coming while the lock was held
        assert run.result == {
            "values": [0, 10, 20, 30],
            "same": True,
            "refused": True,
            "read back": ["Pending", {"n": 1}, "leaf-1"],
        }
        children = g.children(parent.id)
        assert [c.name for c in children] == ["before", "leaf-1", "leaf-2", "leaf-3"]
        assert [c.data["n"] for c in children] == [0, 1, 2, 3]
        assert {c.status for c in children} == {"Completed"}
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM nodes").fetchone()
    assert rows == (5,)


class Orphaned(RunnableEntity):
    """Makes a child while the lock is held, after its lease was taken over."""

    async def run_impl(self):
        ev = events_for(self.id)
        self.graph.flush()  # our lease is on disk
        ev["ready"].set()
        await ev["locked"].wait()
        self.append_call(Leaf, "late", {"n": 1})
        ev["appended"].set()
        await asyncio.sleep(3600)  # stopped by the lease loss
        yield Return("never")


@pytest.mark.timeout(120)
async def test_a_child_made_under_the_lock_after_the_lease_was_lost_is_not_stored(tmp_path):
    path = tmp_path / "graph.sqlite"
    with EntityGraph.open(path, busy_timeout=BUSY_TIMEOUT) as g:
        parent = g.create(Orphaned, "orphaned")
        ev = events_for(parent.id)
        task = asyncio.create_task(parent.run())
        await ev["ready"].wait()
        take_over(path, parent.id)  # another process holds the parent now
        async with LockHolder(path) as holder:
            await holder.locked()
            ev["locked"].set()
            await asyncio.wait_for(ev["appended"].wait(), timeout=30)
            assert not task.done()
        # The commit that would write the child checks the parent's lease first.
        with pytest.raises(LeaseLostError) as lost:
            await asyncio.wait_for(task, timeout=60)
        assert "taken over by another process, elsewhere:7" in str(lost.value)
        assert g.children(parent.id) == []
    assert poll(path, "SELECT count(*) FROM nodes WHERE name = 'late'") == [(0,)]
