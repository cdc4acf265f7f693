"""Reads made from ``run_impl`` right after ``append_call`` created a child
while another process holds the graph's write lock: the parent's children,
a child retrieved by name, the parent's own data, the subtree. They are
answered at once, the new child included, instead of waiting on the event
loop for the lock so as to write that child first.

On both stores (``target``): a real process holds the lock for ``HOLD``
seconds and then lets it go by itself. On SQLite that is the file's write
lock (``BEGIN EXCLUSIVE``); a server graph has no graph-wide write lock, so
there the other process keeps an open transaction that writes the node the
test's run writes under (its row stays locked to that commit), and holds the
lock of any name the test decides. A ticker task notes the time of each of
its turns. What is judged is that the reads ended while the lock
was still held, and that the loop never stood still for a good part of the
hold (never an absolute speed).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from storylab.entities import Return, RunnableEntity
from tests.entities.conformance.conftest import store_target
from tests.entities.conformance.holders import PG_NODE_HOLDER, SQLITE_WRITE_HOLDER
from tests.entities.conformance.test_loop_free import Ticker


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """Each store in turn (as the conformance suite's ``target``)."""
    yield from store_target(request.param, tmp_path)


HOLD = 3.0  # seconds the other process keeps the lock


EVENTS: dict[str, dict[str, asyncio.Event]] = {}


def events_for(node_id: str) -> dict[str, asyncio.Event]:
    return EVENTS.setdefault(node_id, {k: asyncio.Event() for k in ("ready", "locked", "read")})


class Held:
    """Another process holding the graph's write lock for ``HOLD`` s: the file's
    on SQLite; on PostgreSQL the rows of the nodes ``rows`` and the locks of
    the ``names`` (``(parent id or None, key)``), in an open transaction."""

    def __init__(self, target, rows: tuple[str, ...] = (), names: tuple = ()) -> None:
        if target.kind == "sqlite":
            cmd, env = [sys.executable, "-c", SQLITE_WRITE_HOLDER, target.url, str(HOLD)], None
        else:
            what = [f"row:{id}" for id in rows]
            what += [f"name:{parent or '-'}:{key}" for parent, key in names]
            cmd = [sys.executable, "-c", PG_NODE_HOLDER, target.schema, str(HOLD), *what]
            env = {**os.environ, "HOLD_URL": target.base}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        self.locked_at = 0.0

    async def locked(self) -> None:
        assert await asyncio.to_thread(self.proc.stdout.readline) == "locked\n"
        self.locked_at = time.monotonic()

    async def released_at(self) -> float:
        line = await asyncio.to_thread(self.proc.stdout.readline)
        at = time.monotonic()
        assert line == "releasing\n"
        await asyncio.to_thread(self.proc.wait)
        return at

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Leaf(RunnableEntity, type_name="ReadsUnderLockLeaf"):
    async def run_impl(self):
        yield Return(self.data["n"] * 10)


class Reader(RunnableEntity, type_name="ReadsUnderLockReader"):
    """Makes one child before the lock; while it is held, makes another and
    reads the tree back in every way a run reads it."""

    async def run_impl(self):
        ev = events_for(self.id)
        old = self.append_call(Leaf, "old", {"n": 1})
        ev["ready"].set()
        await ev["locked"].wait()
        new = self.append_call(Leaf, "new", {"n": 2})  # not written: the lock is not ours
        again = self.append_or_retrieve_call(Leaf, "old", {"n": 99})
        seen = {
            "children": [(c.name, c.status, c.data) for c in self.children()],
            "retrieved": [again.id == old.id, again.status, again.data],
            "own data": self.data,
            "subtree": [n.name for n in self.graph.descendants(self.id)],
            "new": self.graph.get_node(new.id).call_path,
            "edges": len(self.graph.edges(self.id)),
        }
        ev["read"].set()
        values = []
        for child in (old, new):
            values.append((yield self.delegate(child)))
        yield Return({"seen": seen, "values": values})


@pytest.mark.timeout(120)
async def test_reading_the_tree_after_append_call_under_a_foreign_lock_keeps_the_loop_moving(
    target,
):
    with target.open() as g:  # the default busy timeout: 30 s, longer than the hold
        parent = g.create(Reader, "reader", {"k": "v"})
        ev = events_for(parent.id)
        task = asyncio.create_task(parent.run())
        await ev["ready"].wait()
        g.flush()  # "old" is on disk before the lock is taken
        ticker = Ticker()
        await ticker.started()
        held = Held(target, rows=(parent.id,))
        try:
            await held.locked()
            release = asyncio.create_task(held.released_at())
            begun = time.monotonic()
            ev["locked"].set()
            await asyncio.wait_for(ev["read"].wait(), timeout=HOLD * 20)
            done = time.monotonic()
            freed = await release
        finally:
            ticker.stop()
            held.kill()
        # The reads were answered while the other process still held the lock...
        assert done < freed, f"the reads waited {done - begun:.2f} s for the lock"
        # ...and the loop kept turning meanwhile.
        gap = ticker.largest_gap(begun, freed)
        assert gap < (freed - held.locked_at) / 2, f"the loop stood still {gap:.2f} s of {HOLD} s"
        result = await asyncio.wait_for(task, timeout=60)
        assert result == {
            "seen": {
                "children": [("old", "Pending", {"n": 1}), ("new", "Pending", {"n": 2})],
                "retrieved": [True, "Pending", {"n": 1}],
                "own data": {"k": "v"},
                "subtree": ["old", "new"],
                "new": "new",
                "edges": 2,
            },
            "values": [10, 20],
        }
        assert [(c.name, c.status) for c in g.children(parent.id)] == [
            ("old", "Completed"),
            ("new", "Completed"),
        ]
    assert target.rows("SELECT count(*) FROM nodes") == [(3,)]


class Logger(RunnableEntity, type_name="ReadsUnderLockLogger"):
    """Logs progress (and makes a child) while the lock is held."""

    async def run_impl(self):
        ev = events_for(self.id)
        ev["ready"].set()
        await ev["locked"].wait()
        self.append_call(Leaf, "made", {"n": 3})
        yield self.progress({"step": 1}, "first")
        yield self.progress({"step": 2}, "second")
        ev["read"].set()
        await asyncio.sleep(HOLD * 2)  # past the hold: the log is read meanwhile
        yield Return("done")


@pytest.mark.timeout(120)
async def test_reading_the_progress_log_under_a_foreign_lock_keeps_the_loop_moving(target):
    with target.open() as g:
        parent = g.create(Logger, "logger")
        ev = events_for(parent.id)
        task = asyncio.create_task(parent.run())
        await ev["ready"].wait()
        g.flush()
        ticker = Ticker()
        await ticker.started()
        held = Held(target, rows=(parent.id,))
        try:
            await held.locked()
            release = asyncio.create_task(held.released_at())
            begun = time.monotonic()
            ev["locked"].set()
            await asyncio.wait_for(ev["read"].wait(), timeout=HOLD * 20)
            log = g.progress(parent.id)  # the envelopes are not stored yet
            done = time.monotonic()
            freed = await release
        finally:
            ticker.stop()
            held.kill()
        assert done < freed, f"reading the log waited {done - begun:.2f} s for the lock"
        gap = ticker.largest_gap(begun, freed)
        assert gap < (freed - held.locked_at) / 2, f"the loop stood still {gap:.2f} s of {HOLD} s"
        assert [(e.type, e.status, e.message) for e in log] == [
            ("STATUS", "STARTED", None),
            ("VALUE", None, "first"),
            ("VALUE", None, "second"),
        ]
        assert await asyncio.wait_for(task, timeout=60) == "done"
        # Read again once stored: the same envelopes, then the end.
        again = g.progress(parent.id)
        assert [(e.message, e.value) for e in again[:3]] == [(e.message, e.value) for e in log]
        assert [e.status for e in again[3:]] == [None, "COMPLETED"]


RUNS: list[str] = []


class Again(RunnableEntity, type_name="ReadsUnderLockAgain"):
    async def run_impl(self):
        RUNS.append(self.id)
        yield Return(len(RUNS))


@pytest.mark.timeout(120)
async def test_a_root_reopened_under_a_foreign_lock_runs_again_once_the_lock_is_free(target):
    RUNS.clear()
    with target.open() as g:
        root = g.create(Again, "again")
        assert await root.run() == 1
        ticker = Ticker()
        await ticker.started()
        held = Held(target, rows=(root.id,))
        try:
            await held.locked()
            release = asyncio.create_task(held.released_at())
            begun = time.monotonic()
            record = g.reopen(root.id)  # left to the next transaction
            seen = (record.status, root.status, root.output, g.get_node(root.id).finished_at)
            rerun = asyncio.create_task(root.run())  # waits for the lock, awaited
            await asyncio.sleep(0.2)
            assert not rerun.done() and RUNS == [root.id]
            freed = await release
            assert await asyncio.wait_for(rerun, timeout=60) == 2
        finally:
            ticker.stop()
            held.kill()
        assert seen == ("Pending", "Pending", None, None)
        gap = ticker.largest_gap(begun, freed)
        assert gap < (freed - held.locked_at) / 2, f"the loop stood still {gap:.2f} s of {HOLD} s"
        assert RUNS == [root.id, root.id]
        assert g.get_node(root.id).status == "Completed"
