"""Nothing is handed on before it is stored, in every commit mode.

Every check reads the file through a second SQLite connection, which sees
committed transactions only (what a crash would leave), at the very moment a
result or a Completed status reaches someone: a runner's consumer, the caller
of ``run()`` or ``start()``, the reader of the streamed progress.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceFromIterable
from storylab.entities import (
    EntityGraph,
    EntityGraphError,
    Return,
    RunnableEntity,
    UnknownEntityError,
)
from storylab.entities.graph import COMMIT_MODES

# ---------------------------------------------------------------- children


class DurNeverAwaits(RunnableEntity):
    """A no-op child: starts, ends and is handed on without giving the loop a turn."""

    async def run_impl(self):
        yield Return(self.name)


class DurAwaitsOnce(RunnableEntity):
    async def run_impl(self):
        await asyncio.sleep(0)
        yield Return(self.name)


class DurReadsData(RunnableEntity):
    """Reads its stored data (a read on the graph's connection) and never awaits."""

    async def run_impl(self):
        yield Return(self.data["name"])


KINDS = {"never-awaits": DurNeverAwaits, "awaits-once": DurAwaitsOnce, "reads-data": DurReadsData}


class Reader:
    """A second connection on the graph file, and what it saw not yet stored."""

    def __init__(self, path) -> None:
        self.conn = sqlite3.connect(path)
        self.checked = 0
        self.not_stored: list[tuple[str, str, tuple | None]] = []

    def check(self, what: str, sql: str, params: tuple, output: str) -> None:
        row = self.conn.execute(sql, params).fetchone()
        self.checked += 1
        if row is None or row[0] != "Completed" or json.loads(row[1]) != output:
            self.not_stored.append((what, output, row))

    def child(self, what: str, parent_id: str, name: str) -> None:
        self.check(
            what,
            "SELECT status, output FROM nodes WHERE parent_id = ? AND name = ?",
            (parent_id, name),
            name,
        )

    def node(self, what: str, id: str, output) -> None:
        self.check(what, "SELECT status, output FROM nodes WHERE id = ?", (id,), output)


def _is_end(env) -> bool:
    return (env.type == "STATUS" and env.status == "COMPLETED") or (
        env.type == "VALUE" and env.sub_type == "return"
    )


# Set by each test before it runs: what the parents below report to and share.
CONTEXT: dict[str, object] = {}


class DurFanOut(RunnableEntity):
    """Fans its children out through a runner and checks each result on arrival."""

    async def run_impl(self):
        reader: Reader = CONTEXT["reader"]
        cls = KINDS[self.data["kind"]]
        items = [{"name": f"c{i}", "data": {"name": f"c{i}"}} for i in range(self.data["n"])]
        group = CONTEXT.get("global")
        capacity = CapacitySource(3, group) if group is not None else CapacitySource(10)
        runner = HierarchicalTaskPoolRunner(
            self.name, SourceFromIterable(self.parallel_calls(cls, items)), capacity
        )
        finals = 0
        async for env in runner.run_tasks():
            if env.type == "FINAL":
                finals += 1
                reader.child("FINAL", self.id, env.value)
            elif env.type == "ERROR":
                raise env.error
            elif _is_end(env.value):
                # The child's own envelopes, as a progress view or the CLI shows them.
                reader.child(f"{env.value.type} {env.value.status}", self.id, env.value.entity_name)
        yield Return(finals)


def fan_out(path, mode: str, kind: str, groups: int, n: int) -> Reader:
    """``groups`` parents, each with its own runner over ``n`` children; with
    more than one, 3 per parent under one global capacity of 10."""
    with EntityGraph.open(path, commit=mode) as graph:
        parents = [graph.create(DurFanOut, f"p{g}", {"kind": kind, "n": n}) for g in range(groups)]
        reader = CONTEXT["reader"] = Reader(path)

        async def main():
            if groups > 1:
                CONTEXT["global"] = CapacitySource(10, name="global")
            return await asyncio.gather(*(p.run() for p in parents))

        try:
            assert asyncio.run(main()) == [n] * groups
        finally:
            CONTEXT.clear()
    return reader


@pytest.mark.parametrize("shape", ["one runner", "ten groups"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", COMMIT_MODES)
def test_a_runner_hands_on_a_child_only_once_its_completion_is_committed(
    tmp_path, mode, kind, shape
):
    groups, n = (1, 100) if shape == "one runner" else (10, 20)
    reader = fan_out(tmp_path / "g.sqlite", mode, kind, groups, n)
    # FINAL, and the child's VALUE return and STATUS COMPLETED, for every child.
    assert reader.checked == 3 * groups * n
    assert reader.not_stored == []


def test_the_check_sees_results_handed_on_before_their_commit(tmp_path, monkeypatch):
    # The checker above can fail: without the wait for the commit, results
    # of children that never await reach the consumer before they are stored.
    monkeypatch.setattr(EntityGraph, "commit_waiter", lambda self, id=None: None)
    reader = fan_out(tmp_path / "g.sqlite", "batched", "never-awaits", 1, 100)
    finals = [what for what, _, _ in reader.not_stored if what == "FINAL"]
    assert len(finals) > 50  # without the wait: none of the 100 was stored


# ------------------------------------------------- run(), start(), delegate


class DurCaller(RunnableEntity):
    """Runs children every way a parent can, checking each result on arrival."""

    async def run_impl(self):
        reader: Reader = CONTEXT["reader"]
        cls = KINDS[self.data["kind"]]

        child = self.append_call(cls, "by-run", {"name": "by-run"})
        value = await child.run()
        reader.node("run()", child.id, value)

        child = self.append_call(cls, "by-start", {"name": "by-start"})
        run = child.start()
        async for env in run:
            if _is_end(env):
                reader.node(f"start() {env.type} {env.status}", child.id, child.name)
            yield env
        reader.node("start() result", child.id, run.result)

        child = self.append_call(cls, "by-delegate", {"name": "by-delegate"})
        value = yield self.delegate(child)
        reader.node("delegate", child.id, value)

        # Two runs of one child at once: the second attaches to the first or,
        # if that already ended, hands back its stored output.
        child = self.append_call(cls, "twice", {"name": "twice"})

        async def run_and_check():
            value = await child.run()
            reader.node("run() twice", child.id, value)

        await asyncio.gather(run_and_check(), run_and_check())
        yield Return("done")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", COMMIT_MODES)
def test_run_start_and_delegate_hand_on_a_result_only_once_it_is_committed(tmp_path, mode, kind):
    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path, commit=mode) as graph:
        caller = graph.create(DurCaller, "caller", {"kind": kind})
        reader = CONTEXT["reader"] = Reader(path)

        async def main():
            # The caller's stream, as a progress panel reads it: each child's
            # COMPLETED status (forwarded by the caller) must be stored.
            async for env in caller.start():
                if env.entity_id != caller.id and _is_end(env):
                    reader.node(f"progress {env.type} {env.status}", env.entity_id, env.entity_name)

        try:
            asyncio.run(main())
        finally:
            CONTEXT.clear()
    assert reader.checked == 1 + 3 + 1 + 2 + 2 * 2  # run, start, delegate, twice, progress
    assert reader.not_stored == []


class DurFails(RunnableEntity):
    async def run_impl(self):
        raise ValueError(f"{self.name} refuses")
        yield  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize("mode", COMMIT_MODES)
def test_a_failure_is_reported_only_once_it_is_stored(tmp_path, mode):
    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path, commit=mode) as graph:
        reader = Reader(path)
        parent = graph.create(DurCaller, "parent")  # never run: only a parent for the children
        items = [{"name": f"c{i}"} for i in range(30)]
        seen: list[tuple | None] = []

        async def main():
            # A run that stays live meanwhile, as the parent of a fan-out would
            # (the end of the graph's last run is committed at once).
            DurWaits.gate = asyncio.Event()
            other = asyncio.ensure_future(graph.create(DurWaits, "other").run())
            runner = HierarchicalTaskPoolRunner(
                "fails",
                SourceFromIterable(parent.parallel_calls(DurFails, items)),
                CapacitySource(10),
            )
            async for env in runner.run_tasks():
                if env.type == "ERROR":
                    assert isinstance(env.error, ValueError)
                    name = items[env.task_id - 1]["name"]
                    seen.append(
                        reader.conn.execute(
                            "SELECT status, json_extract(error, '$.message') FROM nodes "
                            "WHERE parent_id = ? AND name = ?",
                            (parent.id, name),
                        ).fetchone()
                    )
            DurWaits.gate.set()
            assert await other == "late"

        asyncio.run(main())
    assert seen == [("Failed", f"c{i} refuses") for i in range(30)]


# ----------------------------------------------------------- failed commits

# A real SQLite failure at commit time: progress rows are written by the
# commit, and the row that holds the COMPLETED status of 'doomed' is refused.
_DOOM = """
CREATE TRIGGER doom BEFORE INSERT ON progress
WHEN (SELECT name FROM nodes WHERE id = NEW.node_id) = 'doomed'
     AND (NEW.status = 'COMPLETED' OR NEW.more LIKE '%"COMPLETED"%')
BEGIN SELECT RAISE(ABORT, 'injected: database or disk is full'); END
"""


@pytest.mark.parametrize("mode", COMMIT_MODES)
def test_a_result_whose_commit_fails_is_not_reported_as_done(tmp_path, mode):
    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path, commit=mode) as graph:
        names = [f"r{i}" for i in range(12)] + ["doomed"] + [f"s{i}" for i in range(12)]
        # Roots that await once overlap, so several end in one transaction (a
        # root run alone commits when it ends, being the graph's last run).
        roots = {graph.create(DurAwaitsOnce, name).id: name for name in names}
        with sqlite3.connect(path) as conn:
            conn.execute(_DOOM)
        reader = Reader(path)
        entities = [graph.entity(id) for id in roots]
        outcome: dict[str, object] = {}

        async def main():
            runner = HierarchicalTaskPoolRunner(
                "roots", [e.start for e in entities], CapacitySource(10)
            )
            async for env in runner.run_tasks():
                name = names[env.task_id - 1]
                if env.type == "FINAL":
                    reader.node("FINAL", entities[env.task_id - 1].id, name)
                    outcome[name] = env.value
                elif env.type == "ERROR":
                    outcome[name] = env.error
                elif _is_end(env.value):
                    reader.node(f"{env.value.type} {env.value.status}", env.value.entity_id, name)

        asyncio.run(main())
        assert reader.not_stored == []  # nothing was reported that is not stored
        error = outcome["doomed"]
        assert isinstance(error, EntityGraphError)
        assert "commit" in str(error) and "disk is full" in str(error)
        assert "was rolled back" in str(error)
        stored = dict(reader.conn.execute("SELECT name, status FROM nodes WHERE parent_id IS NULL"))
        assert stored["doomed"] != "Completed"
        done = {name for name, value in outcome.items() if value == name}
        assert done == {name for name, status in stored.items() if status == "Completed"}
        assert len(outcome) == len(names)  # every task ended, FINAL or ERROR


class DurWaits(RunnableEntity):
    gate: asyncio.Event

    async def run_impl(self):
        await DurWaits.gate.wait()
        yield Return("late")


def test_a_child_whose_creation_was_rolled_back_cannot_report_a_result(tmp_path):
    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path) as graph:
        with sqlite3.connect(path) as conn:
            conn.execute(_DOOM)

        async def main():
            DurWaits.gate = asyncio.Event()
            # Both created, and slow started, in the transaction whose commit fails.
            slow = graph.create(DurWaits, "slow")
            doomed = graph.create(DurNeverAwaits, "doomed")
            slow_run = asyncio.ensure_future(slow.run())
            await asyncio.sleep(0)
            with pytest.raises(EntityGraphError, match="commit .* failed"):
                await doomed.run()
            # The next operation on the graph is told as well (here: a flush)...
            with pytest.raises(EntityGraphError, match="commit .* failed"):
                graph.flush()
            # ...and a run that outlived the rollback cannot store its end.
            DurWaits.gate.set()
            with pytest.raises(UnknownEntityError, match="rolled back its creation"):
                await slow_run

        asyncio.run(main())
        assert [r.name for r in graph.roots()] == []


# ------------------------------------------------ cancelled while waiting


def test_a_run_cancelled_while_its_end_is_committed_keeps_that_end(tmp_path):
    path = tmp_path / "g.sqlite"
    # Timers much longer than the few loop steps the test needs: nothing but the
    # explicit flush below may commit (the lease heartbeat included).
    with EntityGraph.open(
        path, commit="interval", commit_interval=1.0, lease_ttl=600.0
    ) as graph:
        reader = Reader(path)

        async def main():
            DurWaits.gate = asyncio.Event()
            # Another run stays live, so the child's end waits for the timer
            # instead of being committed as the graph's last run.
            other = asyncio.ensure_future(graph.create(DurWaits, "other").run())
            child = graph.create(DurNeverAwaits, "child")
            waiting = asyncio.ensure_future(child.run())
            for _ in range(20):  # the child never awaits: a few steps run it to its end
                await asyncio.sleep(0)
            assert not waiting.done()  # its end is written, not yet committed
            reader.node("before the commit", child.id, "child")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            graph.flush()
            reader.node("after the commit", child.id, "child")
            assert await child.run() == "child"  # the stored output, not a re-run
            DurWaits.gate.set()
            assert await other == "late"
            return child

        child = asyncio.run(main())
        assert [what for what, _, _ in reader.not_stored] == ["before the commit"]
        log = [(e.type, e.status) for e in graph.progress(child.id)]
        assert log == [("STATUS", "STARTED"), ("VALUE", None), ("STATUS", "COMPLETED")]


# ------------------------------------------------------- a real crash


class DurLogged(RunnableEntity):
    """Notes every execution in the file named by $DUR_LOG, then returns its name."""

    async def run_impl(self):
        with open(os.environ["DUR_LOG"], "a") as log:
            log.write(self.name + "\n")
        if self.data["awaits"]:
            await asyncio.sleep(0)
        yield Return(self.name)


class DurKilledParent(RunnableEntity):
    """Prints each child it is handed as done; with $DUR_KILL_AFTER set, the
    process kills itself with SIGKILL right after printing that many."""

    async def run_impl(self):
        items = [
            {"name": f"c{i}", "data": {"awaits": self.data["awaits"]}}
            for i in range(self.data["n"])
        ]
        runner = HierarchicalTaskPoolRunner(
            "killed", SourceFromIterable(self.parallel_calls(DurLogged, items)), CapacitySource(10)
        )
        done = 0
        async for env in runner.run_tasks():
            if env.type == "FINAL":
                print(f"done {env.value}", flush=True)
                done += 1
                if str(done) == os.environ.get("DUR_KILL_AFTER"):
                    os.kill(os.getpid(), signal.SIGKILL)
        yield Return(done)


@pytest.mark.parametrize("awaits", [False, True], ids=["never-awaits", "awaits-once"])
@pytest.mark.parametrize("mode", COMMIT_MODES)
def test_a_child_printed_as_done_survives_a_sigkill_right_after(tmp_path, mode, awaits):
    path, log = tmp_path / "g.sqlite", tmp_path / "runs.log"
    data = {"n": 40, "awaits": awaits}
    proc = subprocess.run(
        [sys.executable, __file__, str(path), mode, json.dumps(data)],
        env=dict(os.environ, DUR_LOG=str(log), DUR_KILL_AFTER="5"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    printed = [line.split()[1] for line in proc.stdout.splitlines()]
    assert len(printed) == 5
    os.environ["DUR_LOG"] = str(log)
    try:
        with EntityGraph.open(path, commit=mode) as graph:
            stored = {
                r[0]: r[1] for r in Reader(path).conn.execute("SELECT name, status FROM nodes")
            }
            assert {name: stored.get(name) for name in printed} == dict.fromkeys(
                printed, "Completed"
            )
            # Resumed (the killed parent is stale): what was printed as done
            # is handed back from the store, not done again.
            parent = graph.find_root("killed-parent")
            assert parent.status == "InProgress"
            assert asyncio.run(graph.entity(parent.id).run()) == 40
    finally:
        del os.environ["DUR_LOG"]
    runs = log.read_text().split()
    assert sorted(set(runs)) == sorted(f"c{i}" for i in range(40))
    assert [name for name in printed if runs.count(name) != 1] == []


if __name__ == "__main__":  # the process that test_a_child_printed_as_done... kills
    graph_path, commit, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with EntityGraph.open(Path(graph_path), commit=commit) as graph:
        parent = graph.create(DurKilledParent, "killed-parent", data)
        asyncio.run(parent.run())
