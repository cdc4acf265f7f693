"""On both stores: the store interface, and a run whose ``run_impl`` makes a
child (``append_call``, synchronous) while another process holds the graph's
write lock. The call returns at once instead of waiting on the event loop
for the lock, the run's progress keeps coming, and once the lock is free the
children are stored and run.

The lock is held by a real process: ``BEGIN EXCLUSIVE`` on the SQLite file.
A server graph has no graph-wide write lock: there the other process keeps
a write transaction of its own open on the graph (and takes the advisory
key a graph-wide lock would use), and the children are stored and run while
it is still open, since their rows are not the ones it holds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from storylab.entities import Return, RunnableEntity
from storylab.entities.store import EntityStore
from tests.entities.conformance.holders import PG_WRITE_HOLDER, SQLITE_WRITE_HOLDER

LEAVES = "('leaf-0', 'leaf-1', 'leaf-2')"

EVENTS: dict[str, dict[str, asyncio.Event]] = {}


def events_for(node_id: str) -> dict[str, asyncio.Event]:
    names = ("ready", "locked", "appended", "released")
    return EVENTS.setdefault(node_id, {k: asyncio.Event() for k in names})


class LockLeaf(RunnableEntity, type_name="ConformanceLockLeaf"):
    async def run_impl(self):
        yield Return(self.data["n"] + 1)


class LockParent(RunnableEntity, type_name="ConformanceLockParent"):
    async def run_impl(self):
        ev = events_for(self.id)
        ev["ready"].set()
        await ev["locked"].wait()
        kids = [self.append_call(LockLeaf, f"leaf-{i}", {"n": i}) for i in range(3)]
        ev["appended"].set()
        while not ev["released"].is_set():
            yield self.progress({"waiting": True})
            await asyncio.sleep(0.01)
        values = []
        for kid in kids:
            values.append((yield self.delegate(kid)))
        yield Return(values)


def test_every_store_implements_the_interface(target):
    graph = target.open()
    assert isinstance(graph, EntityStore)


@pytest.mark.timeout(120)
async def test_append_call_under_a_foreign_write_lock_keeps_the_loop_moving(target):
    graph = target.open(busy_timeout=0.3)  # a blocked call would fail after 0.3 s
    parent = graph.create(LockParent, "parent")
    ev = events_for(parent.id)
    envs: list = []

    async def collect():
        async for env in parent.start():
            envs.append(env)

    task = asyncio.create_task(collect())
    await ev["ready"].wait()
    graph.flush()
    if target.kind == "sqlite":
        cmd, extra = [sys.executable, "-c", SQLITE_WRITE_HOLDER, target.url], {}
    else:
        cmd = [sys.executable, "-c", PG_WRITE_HOLDER, target.schema]
        extra = {"HOLD_URL": target.base}
    holder = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **extra}
    )
    try:
        assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
        assert not target.write_lock_is_free()
        ev["locked"].set()
        await asyncio.wait_for(ev["appended"].wait(), timeout=30)
        assert holder.poll() is None and not task.done()
        seen = len(envs)
        for _ in range(60):  # about 0.6 s of loop turns: twice the busy timeout
            await asyncio.sleep(0.01)
        assert len(envs) - seen >= 10  # progress kept coming while the lock was held
        stored = target.rows(f"SELECT count(*) FROM nodes WHERE name IN {LEAVES}")
        if target.kind == "sqlite":
            assert stored == [(0,)]  # they wait for the lock
        else:
            # Nothing to wait for: the leaves are stored, and finish, while
            # the other transaction is still open.
            assert stored == [(3,)]
            assert holder.poll() is None
    finally:
        if holder.poll() is None:
            holder.stdin.write("\n")
            holder.stdin.flush()
            await asyncio.to_thread(holder.wait)
    ev["released"].set()
    await asyncio.wait_for(task, timeout=60)
    assert envs[-2].value == [1, 2, 3]
    rows = target.rows(f"SELECT name, status FROM nodes WHERE name IN {LEAVES} ORDER BY name")
    assert rows == [("leaf-0", "Completed"), ("leaf-1", "Completed"), ("leaf-2", "Completed")]
