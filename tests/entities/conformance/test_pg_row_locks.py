"""The PostgreSQL store without a graph-wide write lock.

Writers lock what they decide about: a node's row before its lease is read
or changed, a name under its parent before it is looked up and created. So a
process in the middle of a write on one story holds up no other story, and
two processes creating the same name still get one node. Each test keeps a
real transaction open in another process (raw SQL, what a writer of the
store holds mid-batch) and watches what this process can and cannot do
meanwhile.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest

from storylab.entities import Return, RunnableEntity

from .conftest import ROOT_ENV

# Holds, in one open transaction, what argv asks: "graph" the advisory key
# the store's writers all took before (its graph-wide lock), "row ID" one
# node's row as a writer under its lease does, "root NAME ID" a root
# created under the name's lock, not committed yet. Commits on a line in.
HOLDER = """
import os, sys, time, psycopg
from storylab.entities.postgres.schema import lock_key, name_key
schema, what = sys.argv[1], sys.argv[2:]
conn = psycopg.connect(os.environ["HOLD_URL"])
conn.execute(f'SET search_path = "{schema}"')
if what[0] == "graph":
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
    conn.execute("SELECT 1 FROM nodes WHERE id = %s FOR NO KEY UPDATE", (what[1],))
else:
    name, node_id = what[1], what[2]
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (name_key(schema, None, name),))
    conn.execute(
        "INSERT INTO nodes (id, name, type, status, data, parent_id, created_at) "
        "VALUES (%s, %s, 'ConformanceRowLockStory', 'Pending', '{}', NULL, %s)",
        (node_id, name, time.time()),
    )
print("holding", flush=True)
sys.stdin.readline()
conn.commit()
print("committed", flush=True)
"""


class RowLockStory(RunnableEntity, type_name="ConformanceRowLockStory"):
    async def run_impl(self):
        parts = [self.append_call(RowLockPart, f"part-{i}", {"n": i}) for i in range(3)]
        values = []
        for part in parts:
            values.append((yield self.delegate(part)))
        yield Return(values)


class RowLockPart(RunnableEntity, type_name="ConformanceRowLockPart"):
    async def run_impl(self):
        yield self.progress({"part": self.data["n"]})
        yield Return(self.data["n"] * 10)


def _hold(target, *what: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, target.schema, *what],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**ROOT_ENV, "HOLD_URL": target.base},
    )
    assert holder.stdout.readline() == "holding\n"
    return holder


def _let_go(holder: subprocess.Popen) -> None:
    if holder.poll() is None:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "committed\n"
        holder.wait(timeout=30)


@pytest.mark.timeout(120)
async def test_a_write_held_open_on_one_story_holds_up_no_other_story(pg_target):
    # A short busy timeout: any wait for the other process's transaction
    # would fail this story's writes instead of passing unseen.
    graph = pg_target.open(busy_timeout=0.5)
    first = graph.create(RowLockStory, "first")
    graph.flush()
    holder = _hold(pg_target, "graph", first.id)
    try:
        second = graph.create(RowLockStory, "second")
        assert await asyncio.wait_for(second.run(), timeout=60) == [0, 10, 20]
        # Committed, for any other connection, while that transaction is open.
        assert holder.poll() is None
        assert pg_target.rows(
            "SELECT name, status FROM nodes WHERE parent_id = ? ORDER BY name", (second.id,)
        ) == [("part-0", "Completed"), ("part-1", "Completed"), ("part-2", "Completed")]
        assert pg_target.rows("SELECT status FROM nodes WHERE id = ?", (second.id,)) == [
            ("Completed",)
        ]
    finally:
        _let_go(holder)
    assert await first.run() == [0, 10, 20]  # and the held story runs once it is let go


@pytest.mark.timeout(120)
def test_a_root_another_process_is_creating_is_waited_for_and_shared(pg_target):
    graph = pg_target.open()
    graph.flush()
    theirs = "0192c0de-0000-7000-8000-000000000001"
    holder = _hold(pg_target, "root", "shared", theirs)
    got: list = []

    def create() -> None:
        got.append(graph.create_or_retrieve(RowLockStory, "shared"))

    try:
        thread = threading.Thread(target=create)
        thread.start()
        # It waits for the name, not past it: nothing is decided meanwhile.
        time.sleep(0.5)
        assert thread.is_alive() and got == []
    finally:
        _let_go(holder)
    thread.join(timeout=30)
    assert not thread.is_alive()
    (node,) = got
    assert node.id == theirs  # the other process's node, not a second one
    graph.flush()  # and no commit fails on the unique index
    assert pg_target.rows("SELECT id FROM nodes WHERE name = 'shared'") == [(theirs,)]
