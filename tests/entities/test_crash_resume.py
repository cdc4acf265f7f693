"""Resume after a real crash: a pipeline process is killed with SIGKILL while
children are running, and a new process starts the same parent again."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storylab.entities import EntityGraph

WORKER = Path(__file__).with_name("crash_worker.py")


def start_worker(graph: Path, log: Path, children: list[dict], block: bool):
    env = dict(os.environ, STORYLAB_TEST_BLOCK="1" if block else "0")
    return subprocess.Popen(
        [sys.executable, str(WORKER), "run", str(graph), str(log), json.dumps(children)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def children_by_name(graph_path: Path) -> dict:
    with EntityGraph.open(graph_path, create=False) as g:
        root = g.find_root("crash-parent")
        if root is None:
            return {}
        return {c.name: c for c in g.children(root.id)}


def wait_for(graph_path: Path, proc, want: dict[str, str], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if graph_path.exists():
            kids = children_by_name(graph_path)
            if all(n in kids and kids[n].status == s for n, s in want.items()):
                return kids
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {want}; have {children_by_name(graph_path)}")


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def finish(proc) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def runs(log: Path) -> collections.Counter:
    lines = log.read_text().splitlines()
    return collections.Counter(line.split()[1] for line in lines if line.startswith("run "))


def resets(log: Path) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("reset ")]


@pytest.mark.timeout(90)
def test_sigkill_mid_run_then_resume_runs_only_what_is_left(tmp_path):
    graph, log = tmp_path / "graph.sqlite", tmp_path / "runs.log"
    children = [{"name": f"c{i}", "block": i in (2, 3)} for i in range(6)]

    first = start_worker(graph, log, children, block=True)
    try:
        before = wait_for(
            graph,
            first,
            {"c0": "Completed", "c1": "Completed", "c2": "InProgress", "c3": "InProgress"},
        )
    finally:
        kill(first)
    # capacity 2 and lazy creation: the last two children were never created
    assert sorted(before) == ["c0", "c1", "c2", "c3"]

    second = start_worker(graph, log, children, block=False)
    code, output = finish(second)
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1]) == [f"c{i}" for i in range(6)]

    with EntityGraph.open(graph, create=False) as g:
        root = g.find_root("crash-parent")
        assert root.status == "Completed"
        kids = g.children(root.id)
        edges = g.edges(root.id)
    assert [k.name for k in kids] == [f"c{i}" for i in range(6)]  # no duplicate, in order
    assert len(edges) == 6
    assert all(k.status == "Completed" for k in kids)
    after = {k.name: k for k in kids}
    for name in ("c0", "c1"):  # finished before the crash: untouched
        assert after[name] == before[name]
    for name in ("c2", "c3"):  # stale: reset and run again in the new process
        assert after[name].started_at > before[name].started_at
        assert after[name].output["pid"] == second.pid
    assert runs(log) == {"c0": 1, "c1": 1, "c2": 2, "c3": 2, "c4": 1, "c5": 1}
    assert sorted(resets(log)) == ["c2", "c3"]


def parent_runs(log: Path) -> list[int]:
    return [
        int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("parent ")
    ]


@pytest.mark.timeout(90)
def test_a_second_process_waits_for_the_lease_holder_and_takes_over_when_it_is_killed(tmp_path):
    graph, log = tmp_path / "graph.sqlite", tmp_path / "runs.log"
    children = [{"name": f"c{i}", "block": i in (2, 3)} for i in range(6)]
    first = start_worker(graph, log, children, block=True)
    second = None
    try:
        wait_for(
            graph,
            first,
            {"c0": "Completed", "c1": "Completed", "c2": "InProgress", "c3": "InProgress"},
        )
        second = start_worker(graph, log, children, block=False)
        # The second process meets the first one's live lease on the parent
        # and waits: it runs nothing while the first is alive.
        time.sleep(1.5)
        assert second.poll() is None, finish(second)
        with EntityGraph.open(graph, create=False) as g:
            root = g.find_root("crash-parent")
            lease = g.lease(root.id)
            assert lease.pid == first.pid and g.lease_state(lease) == "live"
        assert parent_runs(log) == [first.pid]
    finally:
        kill(first)
    # Its owner is gone: the waiting process takes the parent over at once,
    # and the children the dead process held.
    code, output = finish(second)
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1]) == [f"c{i}" for i in range(6)]
    assert parent_runs(log) == [first.pid, second.pid]
    assert runs(log) == {"c0": 1, "c1": 1, "c2": 2, "c3": 2, "c4": 1, "c5": 1}
    with EntityGraph.open(graph, create=False) as g:
        root = g.find_root("crash-parent")
        kids = g.children(root.id)
        assert root.status == "Completed" and all(k.status == "Completed" for k in kids)
        assert all(g.lease(n.id) is None for n in (root, *kids))  # every lease given back
        started = [e.message for e in g.progress(root.id) if e.status == "STARTED"]
    assert f"taken over from {lease.owner} (owner gone)" in started


@pytest.mark.timeout(90)
def test_child_failing_first_then_crash_then_resume_succeeds(tmp_path):
    graph, log = tmp_path / "graph.sqlite", tmp_path / "runs.log"
    children = [
        {"name": "flaky", "flaky": True},
        {"name": "steady"},
        {"name": "slow", "block": True},
    ]
    first = start_worker(graph, log, children, block=True)
    try:
        before = wait_for(
            graph, first, {"flaky": "Failed", "steady": "Completed", "slow": "InProgress"}
        )
    finally:
        kill(first)
    assert before["flaky"].error["type"] == "RuntimeError"
    assert "first attempt fails" in before["flaky"].error["message"]

    second = start_worker(graph, log, children, block=False)
    code, output = finish(second)
    assert code == 0, output
    kids = children_by_name(graph)
    assert {n: k.status for n, k in kids.items()} == dict.fromkeys(kids, "Completed")
    assert kids["flaky"].error is None and kids["flaky"].output["pid"] == second.pid
    assert kids["steady"] == before["steady"]
    assert runs(log) == {"flaky": 2, "steady": 1, "slow": 2}

    with EntityGraph.open(graph, create=False) as g:
        log_types = [(e.type, e.status) for e in g.progress(kids["flaky"].id)]
    assert log_types[:2] == [("STATUS", "STARTED"), ("STATUS", "RUNNING")]
    assert ("ERROR", None) in log_types and ("STATUS", "FAILED") in log_types
    assert log_types[-2:] == [("VALUE", None), ("STATUS", "COMPLETED")]


@pytest.mark.timeout(60)
def test_failed_run_exits_with_error_and_the_next_process_completes_it(tmp_path):
    graph, log = tmp_path / "graph.sqlite", tmp_path / "runs.log"
    children = [{"name": "a"}, {"name": "flaky", "flaky": True}, {"name": "b"}]
    code, output = finish(start_worker(graph, log, children, block=False))
    assert code == 3 and "first attempt fails" in output
    with EntityGraph.open(graph, create=False) as g:
        assert g.find_root("crash-parent").status == "Failed"
    code, output = finish(start_worker(graph, log, children, block=False))
    assert code == 0, output
    assert runs(log) == {"a": 1, "flaky": 2, "b": 1}
    assert resets(log) == ["flaky"]


@pytest.mark.timeout(60)
def test_two_processes_creating_the_same_children_never_duplicate(tmp_path):
    graph, go = tmp_path / "graph.sqlite", tmp_path / "go"
    EntityGraph.open(graph).close()
    names = [f"child-{i}" for i in range(40)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "race", str(graph), json.dumps(names), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    # Both at the starting line (each says so with a file) before the start.
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("go.ready-*"))) < 2:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the racers never reached the starting line"
        time.sleep(0.01)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0] == results[1]  # every name maps to the same id in both processes
    with EntityGraph.open(graph, create=False) as g:
        roots = g.roots()
        assert [r.name for r in roots] == ["race-parent"]
        kids = g.children(roots[0].id)
        assert [k.name for k in kids] == names
        assert sorted(e["position"] for e in g.edges(roots[0].id)) == list(range(40))
        creators = {k.data["by"] for k in kids}
    assert creators <= {p.pid for p in procs}
