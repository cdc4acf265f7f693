"""The store contract, run against every store (see conftest.py): the same
tests, the same real processes, on a SQLite file and on a PostgreSQL server.

* idempotency: two processes creating the same children get one node each;
* crash and resume: a process killed with SIGKILL mid-run, resumed by another,
  runs only what was not finished;
* leases and fencing: an owner stopped past its lease is taken over, and
  stores nothing once it wakes up;
* durability before seen: a result handed on is already committed (read on a
  connection of its own);
* blobs written by one process are read by another;
* a graph of a newer schema is refused, unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storylab.entities import Return, RunnableEntity, SchemaVersionError

HERE = Path(__file__).resolve().parent
CRASH_WORKER = HERE.parent / "crash_worker.py"
LEASE_WORKER = HERE.parent / "lease_worker.py"
ROOT = HERE.parents[2]
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


def env(**extra: str) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    )


def children_by_name(target, root_name: str) -> dict[str, tuple]:
    rows = target.rows(
        "SELECT c.name, c.status, c.started_at, c.output FROM nodes c "
        "JOIN nodes p ON c.parent_id = p.id WHERE p.parent_id IS NULL AND p.name = ?",
        (root_name,),
    )
    return {r[0]: r for r in rows}


def wait_until(check, proc=None, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.poll() is None, proc.communicate()
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


def runs(log: Path) -> collections.Counter:
    lines = log.read_text().splitlines()
    return collections.Counter(line.split()[1] for line in lines if line.startswith("run "))


# ------------------------------------------------------------------ idempotency


@pytest.mark.timeout(90)
def test_two_processes_creating_the_same_children_get_one_node_each(target, tmp_path):
    target.open().close()
    go = tmp_path / "go"
    names = [f"child-{i}" for i in range(40)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(CRASH_WORKER), "race", target.url, json.dumps(names), str(go)],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both wait at the starting line
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0] == results[1]  # each name is the same node in both processes
    g = target.open(create=False)
    roots = g.roots()
    assert [r.name for r in roots] == ["race-parent"]
    kids = g.children(roots[0].id)
    assert [k.name for k in kids] == names
    assert sorted(e["position"] for e in g.edges(roots[0].id)) == list(range(40))
    assert {k.data["by"] for k in kids} <= {p.pid for p in procs}


# ------------------------------------------------------------------ crash and resume


@pytest.mark.timeout(120)
def test_a_killed_run_resumed_by_another_process_redoes_only_what_was_unfinished(target, tmp_path):
    log = tmp_path / "runs.log"
    children = [{"name": f"c{i}", "block": i in (2, 3)} for i in range(6)]

    def worker(block: bool) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(CRASH_WORKER), "run", target.url, str(log), json.dumps(children)],
            env=env(STORYLAB_TEST_BLOCK="1" if block else "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    want = {"c0": "Completed", "c1": "Completed", "c2": "InProgress", "c3": "InProgress"}
    first = worker(block=True)
    try:
        before = wait_until(
            lambda: (
                kids
                if all(
                    n in (kids := children_by_name(target, "crash-parent")) and kids[n][1] == s
                    for n, s in want.items()
                )
                else None
            ),
            first,
            what=str(want),
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert sorted(before) == ["c0", "c1", "c2", "c3"]

    second = worker(block=False)
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, out + err
    assert json.loads(out.strip().splitlines()[-1]) == [f"c{i}" for i in range(6)]
    after = children_by_name(target, "crash-parent")
    assert sorted(after) == [f"c{i}" for i in range(6)]
    assert all(row[1] == "Completed" for row in after.values())
    for name in ("c0", "c1"):  # finished before the kill: untouched
        assert after[name] == before[name]
    for name in ("c2", "c3"):  # left InProgress by the dead process: run again
        assert after[name][2] > before[name][2]
        assert json.loads(after[name][3])["pid"] == second.pid
    assert runs(log) == {"c0": 1, "c1": 1, "c2": 2, "c3": 2, "c4": 1, "c5": 1}
    assert target.rows("SELECT count(*) FROM leases") == [(0,)]  # every lease given back


# ------------------------------------------------------------------ leases and fencing


@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_an_owner_stopped_past_its_lease_is_taken_over_and_then_stores_nothing(target, tmp_path):
    from tests.entities.lease_worker import TickWork

    log, stop = tmp_path / "runs.log", tmp_path / "stop"
    g = target.open()
    node = g.create(TickWork, "tick", {"log": str(log), "stop": str(stop)})
    g.close()

    def worker() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(LEASE_WORKER), target.url, node.id],
            env=env(STORYLAB_LEASE_TTL="1.0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    first = worker()
    second = None
    try:
        wait_until(lambda: lines() == [f"run {first.pid}"], first, what="the first run")
        wait_until(
            lambda: (
                target.rows("SELECT pid FROM leases WHERE node_id = ?", (node.id,))
                == [(first.pid,)]
            ),
            first,
            what="the first lease to be committed",
        )
        # Stop it at a moment it holds no write transaction (else nobody could
        # take over), then wait out its lease.
        for _ in range(200):
            first.send_signal(signal.SIGSTOP)
            if target.write_lock_is_free():
                break
            first.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        else:
            raise AssertionError("the first run never let go of the write lock")
        wait_until(
            lambda: target.rows(
                "SELECT 1 FROM leases WHERE node_id = ? AND expires_at < ?", (node.id, time.time())
            ),
            what="the stopped owner's lease to expire",
        )
        second = worker()
        wait_until(lambda: f"run {second.pid}" in lines(), second, what="the takeover")
        stop.touch()
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, out + err
        taken = json.loads(out.strip().splitlines()[-1])
        assert taken["pid"] == second.pid
        stored = target.rows("SELECT status, data, output FROM nodes WHERE id = ?", (node.id,))
    finally:
        first.send_signal(signal.SIGCONT)
    # The first one wakes up past its lease: its writes are refused.
    out, err = first.communicate(timeout=60)
    assert first.returncode != 0, out + err
    assert "LeaseLostError" in err and "taken over by another process" in err, err
    after = target.rows("SELECT status, data, output FROM nodes WHERE id = ?", (node.id,))
    assert after == stored  # nothing of the stopped owner was stored after the takeover
    status, data, output = after[0]
    assert status == "Completed" and json.loads(output)["pid"] == second.pid
    assert json.loads(data)["steps"] == json.loads(output)["steps"]
    started = target.rows(
        "SELECT message FROM progress WHERE node_id = ? AND status = 'STARTED' ORDER BY seq",
        (node.id,),
    )
    assert len(started) == 2 and "(expired)" in started[1][0]
    assert target.rows("SELECT count(*) FROM leases") == [(0,)]


# ------------------------------------------------------------------ durability


class Leaf(RunnableEntity, type_name="ConformanceLeaf"):
    async def run_impl(self):
        yield Return({"leaf": self.name})


class Seer(RunnableEntity, type_name="ConformanceSeer"):
    """Runs children one by one and records what another connection sees of
    each child at the moment its result is handed on."""

    seen: list = []

    async def run_impl(self):
        target = self.data_target
        for i in range(3):
            child = self.append_call(Leaf, f"leaf-{i}")
            value = await child.run()
            Seer.seen.append(
                (value, target.rows("SELECT status, output FROM nodes WHERE id = ?", (child.id,)))
            )
        yield Return(len(Seer.seen))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("commit", ["batched", "interval"])
def test_a_result_is_committed_before_anyone_sees_it(target, commit):
    # A long commit interval: a store that handed results on before their
    # commit would show them as InProgress on the other connection.
    g = target.open(commit=commit, commit_interval=0.3)
    Seer.seen = []
    Seer.data_target = target
    root = g.create(Seer, "seer")
    assert asyncio.run(root.run()) == 3
    assert len(Seer.seen) == 3
    for i, (value, rows) in enumerate(Seer.seen):
        assert value == {"leaf": f"leaf-{i}"}
        assert rows and rows[0][0] == "Completed", rows
        assert json.loads(rows[0][1]) == value


# ------------------------------------------------------------------ blobs


@pytest.mark.timeout(60)
def test_a_blob_written_by_one_process_is_read_by_another(target):
    target.open().close()
    code = (
        "import sys\n"
        "from storylab.entities import EntityGraph\n"
        "with EntityGraph.open(sys.argv[1]) as g:\n"
        "    print(g.blobs.put(sys.stdin.buffer.read(), 'image/png'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, target.url],
        input=PNG,
        capture_output=True,
        env=env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.decode().strip()
    assert key.endswith(".png")
    g = target.open()
    assert g.blobs.exists(key) and g.blobs.get(key) == PNG
    assert g.blobs.content_type(key) == "image/png"
    assert g.blobs.put(PNG, "image/png") == key  # content-addressed: the same key again
    assert not g.blobs.exists("0" * 64 + ".png")
    with pytest.raises(LookupError, match="no blob"):
        g.blobs.get("0" * 64 + ".png")
    with pytest.raises(ValueError, match="content_type must be one of"):
        g.blobs.put(b"x", "image/bmp")


def test_a_deleted_blob_is_gone_for_every_handle_and_its_neighbours_stay(target):
    g = target.open()
    page = b"<html><body>a page</body></html>"
    key, kept = g.blobs.put(PNG, "image/png"), g.blobs.put(page, "text/html")
    assert g.blobs.delete(key) is True
    assert g.blobs.delete(key) is False  # nothing left under it
    assert g.blobs.delete("../../etc/passwd") is False  # not a key: nothing touched
    other = target.open()  # another handle (another connection) sees it gone
    assert not other.blobs.exists(key)
    with pytest.raises(LookupError, match="no blob"):
        other.blobs.get(key)
    assert other.blobs.get(kept) == page
    assert g.blobs.put(PNG, "image/png") == key  # and it can be stored again
    assert other.blobs.get(key) == PNG


# ------------------------------------------------------------------ schema


def test_a_graph_of_a_newer_schema_is_refused_and_left_unchanged(target):
    g = target.open()
    g.create(Leaf, "kept")
    g.close()
    target.set_schema_version(99)
    with pytest.raises(SchemaVersionError) as info:
        target.open()
    message = str(info.value)
    assert "99" in message and "newer" in message and "\n" not in message
    assert target.rows("SELECT name FROM nodes") == [("kept",)]
