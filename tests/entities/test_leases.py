"""Leases on running entities, in one process: what a run does when it meets
a lease held elsewhere, who may store a result, heartbeats, the schema-4
upgrade, and a graph file that disappears under a running process.

Other processes are played by a second SQLite connection writing the rows
another storylab would write (a lease of another host, a result stored by the
owner); tests/entities/test_crash_resume.py and tests/story/test_cli_processes.py
use real processes."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from storylab.entities import (
    EntityGraph,
    GraphFileGoneError,
    LeaseLostError,
    Return,
    RunnableEntity,
    SchemaVersionError,
)
from storylab.entities.graph import HOST, SCHEMA_VERSION

RUNS: collections.Counter = collections.Counter()
GATES: dict[str, asyncio.Event] = {}


class LeaseWork(RunnableEntity):
    async def run_impl(self):
        RUNS[self.id] += 1
        yield self.status("RUNNING", "working")
        gate = GATES.get(self.id)
        if gate is not None:
            self.graph.flush()  # our lease is on disk: the "other process" sees it
            await gate.wait()
        await asyncio.sleep(self.data.get("sleep", 0))
        yield Return({"by": "this process", "n": RUNS[self.id]})


def other_connection(path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=30)


def plant_lease(path, node_id: str, *, host: str, pid: int, ttl: float, token="theirs") -> None:
    """Make ``node_id`` InProgress under a lease, as another process would."""
    now = time.time()
    conn = other_connection(path)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE nodes SET status = 'InProgress', started_at = ? WHERE id = ?", (now, node_id)
        )
        conn.execute(
            "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (node_id, f"{host}:{pid}", host, pid, token, now, now, now + ttl),
        )
        conn.execute("COMMIT")
    conn.close()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def collect(run) -> list:
    return [env async for env in run]


def messages(envs, status: str) -> list[str]:
    return [e.message for e in envs if e.type == "STATUS" and e.status == status]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "graph.sqlite"


async def test_a_live_lease_of_another_host_is_waited_for_then_taken_over_when_it_expires(path):
    with EntityGraph.open(path) as g:
        e = g.create(LeaseWork, "w")
        g.flush()
        plant_lease(path, e.id, host="elsewhere", pid=4242, ttl=0.4)
        t0 = time.time()
        envs = await collect(run := e.start())
        assert time.time() - t0 >= 0.3  # it waited for the expiry, not less
        assert messages(envs, "RUNNING")[0] == "waiting for elsewhere:4242, which is running it"
        assert messages(envs, "STARTED") == ["taken over from elsewhere:4242 (expired)"]
        assert run.result == {"by": "this process", "n": 1}
        assert RUNS[e.id] == 1
        assert g.get_node(e.id).status == "Completed"
        assert g.lease(e.id) is None  # released with the result


async def test_a_waiting_run_yields_the_owners_result_and_does_not_run(path):
    with EntityGraph.open(path) as g:
        e = g.create(LeaseWork, "w")
        g.flush()
        plant_lease(path, e.id, host="elsewhere", pid=4242, ttl=30)

        async def owner_finishes() -> None:
            await asyncio.sleep(0.3)
            conn = other_connection(path)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE nodes SET status = 'Completed', output = ?, finished_at = ? WHERE id = ?",
                (json.dumps({"by": "the owner"}), time.time(), e.id),
            )
            conn.execute("DELETE FROM leases WHERE node_id = ?", (e.id,))
            conn.execute("COMMIT")
            conn.close()

        owner = asyncio.create_task(owner_finishes())
        run = e.start()
        envs = await collect(run)
        await owner
        assert run.result == {"by": "the owner"}
        assert RUNS[e.id] == 0  # never ran here
        assert messages(envs, "STARTED") == []
        assert envs[-1].type == "VALUE" and envs[-1].sub_type == "return"


async def test_a_lease_whose_owner_process_is_gone_is_taken_over_at_once(path):
    with EntityGraph.open(path, lease_ttl=3600) as g:
        e = g.create(LeaseWork, "w")
        g.flush()
        pid = dead_pid()
        plant_lease(path, e.id, host=HOST, pid=pid, ttl=3600)
        envs = await collect(e.start())
        assert messages(envs, "RUNNING") == ["working"]  # no waiting at all
        assert messages(envs, "STARTED") == [f"taken over from {HOST}:{pid} (owner gone)"]
        assert RUNS[e.id] == 1


async def test_a_lease_of_a_live_process_on_this_host_is_waited_for_until_it_expires(path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with EntityGraph.open(path) as g:
            e = g.create(LeaseWork, "w")
            g.flush()
            plant_lease(path, e.id, host=HOST, pid=sleeper.pid, ttl=0.4)
            envs = await collect(e.start())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert messages(envs, "RUNNING")[0] == f"waiting for {HOST}:{sleeper.pid}, which is running it"
    assert messages(envs, "STARTED") == [f"taken over from {HOST}:{sleeper.pid} (expired)"]
    assert RUNS[e.id] == 1


async def test_a_run_whose_lease_was_taken_over_stores_nothing(path):
    with EntityGraph.open(path) as g:
        e = g.create(LeaseWork, "w")
        GATES[e.id] = gate = asyncio.Event()
        run = e.start()
        task = asyncio.create_task(collect(run))
        while g.lease(e.id) is None or g.get_node(e.id).status != "InProgress":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        # Another process decided we were dead and took the node over.
        plant_lease(path, e.id, host="elsewhere", pid=7, ttl=30, token="new-owner")
        gate.set()
        with pytest.raises(LeaseLostError, match="taken over by another process"):
            await task
        node = g.get_node(e.id)
        assert (node.status, node.output) == ("InProgress", None)  # the new owner's to finish
        assert g.lease(e.id).token == "new-owner"


async def test_the_heartbeat_keeps_a_long_run_leased(path):
    # The run lasts twice the lease; renewals every 0.05 s keep it a whole lease
    # ahead, so only a stall of about a second (not a busy machine's usual
    # 0.1-0.3 s) could let it lapse.
    with EntityGraph.open(path, lease_ttl=1.0, lease_heartbeat=0.05) as g:
        e = g.create(LeaseWork, "w", {"sleep": 2.0})
        task = asyncio.create_task(e.run())
        expiries = []
        conn = other_connection(path)
        while not task.done():
            row = conn.execute(
                "SELECT expires_at FROM leases WHERE node_id = ?", (e.id,)
            ).fetchone()
            if row is not None:
                assert row[0] > time.time() - 0.05  # never left to expire
                expiries.append(row[0])
            await asyncio.sleep(0.05)
        conn.close()
        await task
    assert len(set(expiries)) >= 5  # renewed again and again, not once
    assert RUNS[e.id] == 1


async def test_an_abandoned_run_gives_its_lease_back(path):
    with EntityGraph.open(path) as g:
        e = g.create(LeaseWork, "w", {"sleep": 10})
        run = e.start()
        async for env in run:
            if env.status == "RUNNING":  # inside run_impl
                break
        await run.aclose()
        assert g.get_node(e.id).status == "InProgress"
        assert g.lease(e.id) is None  # stale: anyone may take it over now
        await e.update_data({"sleep": 0})
    with EntityGraph.open(path) as g:
        envs = await collect(g.entity(e.id).start())
    assert messages(envs, "RUNNING") == ["working"]  # run again at once, no waiting
    assert RUNS[e.id] == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lease_ttl": 0}, "lease_ttl must be a positive number of seconds; got 0"),
        ({"lease_ttl": "10"}, "lease_ttl must be a positive number"),
        ({"lease_ttl": 1, "lease_heartbeat": 1}, "lease_heartbeat must be a number of seconds"),
        ({"lease_heartbeat": -1}, "below lease_ttl"),
    ],
)
def test_bad_lease_settings_are_refused_naming_the_setting(path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        EntityGraph.open(path, **kwargs)
    assert not path.exists()


# ----------------------------------------------------------- schema 3 -> 4


def write_schema_3_graph(path, *, block_upgrade: bool = False) -> str:
    """A graph as schema 3 left it: no leases table, one node stale InProgress."""
    with EntityGraph.open(path) as g:
        e = g.create(LeaseWork, "old")
        node_id = e.id
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE leases")
    if block_upgrade:  # something in the way: the upgrade cannot create its table
        conn.execute("CREATE VIEW leases AS SELECT 1")
    conn.execute("UPDATE nodes SET status = 'InProgress', started_at = 1.0")
    conn.execute("PRAGMA user_version=3")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return node_id


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_schema_3_graph_is_upgraded_and_its_in_progress_node_is_stale(path):
    node_id = write_schema_3_graph(path)
    with EntityGraph.open(path, create=False) as g:
        assert g.lease(node_id) is None
        envs = await collect(g.entity(node_id).start())
        assert messages(envs, "STARTED") == [None]  # stale: taken at once, nobody to wait for
        assert RUNS[node_id] == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_schema_3_graph_that_cannot_be_upgraded_is_left_alone(path):
    write_schema_3_graph(path, block_upgrade=True)
    before = digest(path)
    with pytest.raises(SchemaVersionError, match="schema 3; upgrading it to 4 failed"):
        EntityGraph.open(path)
    assert digest(path) == before


# ------------------------------------------------------ the file goes away


def test_a_deleted_graph_file_fails_the_next_operations_clearly(path):
    g = EntityGraph.open(path)
    kept = g.create(LeaseWork, "kept")
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{path}{suffix}")
    g.create(LeaseWork, "lost")  # outside a loop: committed at once, which finds it gone
    with pytest.raises(GraphFileGoneError, match=f"{path} was deleted while this process"):
        g.flush()
    with pytest.raises(GraphFileGoneError, match="nothing more is stored"):
        g.create(LeaseWork, "refused")
    g.close()
    assert kept.id and not path.exists()  # nothing was written into a new file either


def test_a_replaced_graph_file_is_detected_and_the_new_file_is_untouched(path, tmp_path):
    g = EntityGraph.open(path)
    g.create(LeaseWork, "ours")
    g._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a quiet moment: all in the main file
    other = tmp_path / "other.sqlite"
    with EntityGraph.open(other) as o:
        o.create(LeaseWork, "theirs")
    os.replace(other, path)
    before = digest(path)
    g.create(LeaseWork, "after the swap")
    with pytest.raises(GraphFileGoneError, match="was replaced by another file"):
        g.flush()
    g.close()
    assert digest(path) == before
    with EntityGraph.open(path, create=False) as o:
        assert [r.name for r in o.roots()] == ["theirs"]


class LeaseParent(RunnableEntity):
    """Two children through the runner with one capacity unit between them."""

    async def run_impl(self):
        from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceFromIterable

        items = [{"name": n} for n in ("held elsewhere", "free")]
        source = SourceFromIterable(self.parallel_calls(LeaseWork, items))
        runner = HierarchicalTaskPoolRunner("lease", source, CapacitySource(1, name="one"))
        done = {}
        async for env in runner.run_tasks():
            if env.type == "FINAL":
                done[env.task_id] = env.value
            elif env.type == "ERROR":
                raise env.error
        yield Return([done[1], done[2]])


async def test_a_child_met_by_a_second_parent_run_waits_for_its_owner_and_is_not_run_again(path):
    with EntityGraph.open(path) as g:
        parent = g.create(LeaseParent, "p")
        held = parent.append_call(LeaseWork, "held elsewhere")
        g.flush()
        # Another process runs this child (its run of the parent lost the
        # parent's lease, say): ours must not run it a second time.
        plant_lease(path, held.id, host="elsewhere", pid=4242, ttl=30)

        async def owner_finishes() -> None:
            await asyncio.sleep(0.4)
            conn = other_connection(path)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE nodes SET status = 'Completed', output = ? WHERE id = ?",
                (json.dumps({"by": "the owner"}), held.id),
            )
            conn.execute("DELETE FROM leases WHERE node_id = ?", (held.id,))
            conn.execute("COMMIT")
            conn.close()

        owner = asyncio.create_task(owner_finishes())
        # The waiting child holds the only unit meanwhile; the owner needs
        # none of ours, so the wait ends and the other child runs after it.
        result = await asyncio.wait_for(parent.run(), timeout=30)
        await owner
        assert result == [{"by": "the owner"}, {"by": "this process", "n": 1}]
        assert RUNS[held.id] == 0
        free = next(k for k in g.children(parent.id) if k.name == "free")
        assert RUNS[free.id] == 1
