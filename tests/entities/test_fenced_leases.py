"""Fenced leases with real processes: a ``storylab run`` stopped (SIGSTOP)
past its lease while another run takes the story over and finishes it, then
resumed (SIGCONT), must store nothing more; and the next identical run must
hand back the finished story instead of reopening it.

The graph is read from this process with a plain SQLite connection: every
row of every table is compared before and after the stopped run resumes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import IMAGES, write_lock_is_free
from helpers.cli import storylab_run as shared_storylab_run

from storylab.entities import EntityGraph, LeaseLostError, Return, RunnableEntity
from tests.entities.conformance.holders import SQLITE_WRITE_HOLDER

ROOT = Path(__file__).resolve().parents[2]
TTL = "1.0"  # seconds: the lease of the runs below (STORYLAB_LEASE_TTL)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")


def storylab_run(graph: Path, out: Path, time_scale: str) -> subprocess.Popen:
    return shared_storylab_run(graph, out, time_scale=time_scale, env={"STORYLAB_LEASE_TTL": TTL})


def snapshot(path: Path) -> dict[str, list]:
    """Every row of every table, in a stable order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("nodes", "progress", "leases")
        }
    finally:
        conn.close()


def blob_files(graph: Path) -> dict[str, tuple[int, int]]:
    """The blob folder's files (hidden temporary ones included), each with its
    inode and modification time: a blob written again, even with the same
    bytes, is a new file (blobs are renamed into place)."""
    folder = graph.with_suffix(".blobs")
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def poll(path: Path, sql: str) -> list:
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the file or its tables are not there yet
        return []
    finally:
        conn.close()


def stop_while_drawing(proc: subprocess.Popen, graph: Path) -> None:
    """SIGSTOP ``proc`` while it draws pictures (one done, others leased), at
    a moment it holds no write transaction (else nobody could take over)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        rows = poll(
            graph,
            "SELECT n.status, l.token IS NOT NULL FROM nodes n LEFT JOIN leases l "
            "ON l.node_id = n.id WHERE n.type = 'ImageGenerationEntity'",
        )
        done = sum(1 for status, _ in rows if status == "Completed")
        leased = sum(1 for status, held in rows if status == "InProgress" and held)
        if done >= 1 and leased >= 1:
            os.kill(proc.pid, signal.SIGSTOP)
            if write_lock_is_free(graph):
                return
            os.kill(proc.pid, signal.SIGCONT)  # stopped inside a commit: try again
        time.sleep(0.02)
    raise AssertionError("the run never got to drawing its pictures")


def wait_for_expiry(graph: Path) -> None:
    """Until every lease in the file has expired (the stopped run's)."""
    while True:
        rows = poll(graph, "SELECT max(expires_at) FROM leases")
        if not rows or rows[0][0] is None or rows[0][0] < time.time():
            return
        time.sleep(0.05)


def root_starts(graph: Path) -> int:
    return poll(
        graph,
        "SELECT count(*) FROM progress p JOIN nodes n ON n.id = p.node_id "
        "WHERE n.parent_id IS NULL AND p.type = 'STATUS' AND p.status = 'STARTED'",
    )[0][0]


@pytest.mark.timeout(300)
def test_a_run_stopped_past_its_lease_stores_nothing_after_the_take_over(tmp_path):
    graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
    stopped = storylab_run(graph, out, time_scale="0.4")  # ~4 s a picture
    try:
        stop_while_drawing(stopped, graph)
        wait_for_expiry(graph)

        taker = storylab_run(graph, out, time_scale="0.02")
        stdout, stderr = taker.communicate(timeout=120)
        assert taker.returncode == 0, stdout + stderr
        assert f"completed: {IMAGES} pictures" in stdout
        finished = snapshot(graph)
        blobs = blob_files(graph)
        assert not finished["leases"]  # the take-over finished everything it took
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    stdout, stderr = stopped.communicate(timeout=120)
    assert stopped.returncode != 0, stdout + stderr

    with EntityGraph.open(graph, create=False) as g:
        (root,) = g.roots()
        assert root.status == "Completed"
        assert root.data["stage"] == "completed" and not root.data.get("failed_images")
        assert root.output["image_count"] == IMAGES and not root.output.get("failed_images")
    # Nothing at all was stored by the resumed run: no data, progress, end,
    # lease, and no blob file (its pictures in flight are not saved).
    assert snapshot(graph) == finished
    after = blob_files(graph)
    assert set(after) <= set(blobs)  # no new file, not even a temporary one
    assert after == {k: v for k, v in blobs.items() if k in after}  # none written again
    # Only the temporary file of a write the stopped run had in flight may be
    # gone: removed when the lease was found lost, never renamed into a blob.
    assert all(Path(k).name.startswith(".") and k.endswith(".tmp") for k in set(blobs) - set(after))
    # It said why, in one line: who took the story over, and that its lease had expired.
    lines = [line for line in stderr.splitlines() if "taken over" in line]
    assert len(lines) == 1, stderr
    assert "after this process's lease on it expired" in lines[0]
    assert f"a lease lasts {float(TTL):g} s" in lines[0]
    assert "went more than" not in stderr
    assert "Traceback" not in stderr, stderr

    # The next identical run hands back the finished story: it is not reopened.
    starts = root_starts(graph)
    again = storylab_run(graph, out, time_scale="0.02")
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stdout + stderr
    assert f"completed: {IMAGES} pictures" in stdout
    assert root_starts(graph) == starts


# ------------------------------------------------- a lock held by another process



class LockHolder:
    """Another process holding the graph's write lock until :meth:`release`."""

    async def __aenter__(self) -> LockHolder:
        return self

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SQLITE_WRITE_HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def locked(self) -> None:
        assert await asyncio.to_thread(self.proc.stdout.readline) == "locked\n"

    async def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert await asyncio.to_thread(self.proc.stdout.readline) == "released\n"
            await asyncio.to_thread(self.proc.wait)

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Ticker:
    """Counts event-loop turns of 10 ms sleeps: it only moves while the loop runs."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    async def wait(self, n: int) -> None:
        """Until ``n`` more ticks have been counted."""
        start = self.ticks
        while self.ticks - start < n:
            await asyncio.sleep(0.01)


def lease_expiry(path: Path, node_id: str) -> float | None:
    rows = poll(path, f"SELECT expires_at FROM leases WHERE node_id = '{node_id}'")
    return rows[0][0] if rows else None


def runs_logged(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def tick_entity(graph: EntityGraph, tmp_path: Path):
    from tests.entities.lease_worker import TickWork

    log, stop = tmp_path / "runs.log", tmp_path / "stop"
    return graph.create(TickWork, "ticks", {"log": str(log), "stop": str(stop)}), log, stop


async def started(graph: EntityGraph, node_id: str, envs: list) -> None:
    while not envs or lease_expiry(graph.path, node_id) is None:
        await asyncio.sleep(0.01)


@pytest.mark.timeout(120)
async def test_a_lock_held_past_the_busy_timeout_freezes_nothing_and_the_heartbeat_survives(
    tmp_path,
):
    path = tmp_path / "graph.sqlite"
    ticker = Ticker()
    with EntityGraph.open(path, lease_ttl=5.0, lease_heartbeat=0.1, busy_timeout=0.2) as g:
        e, log, stop = tick_entity(g, tmp_path)
        envs: list = []
        run = asyncio.create_task(collect_into(e.start(), envs))
        await started(g, e.id, envs)
        before = lease_expiry(path, e.id)
        async with LockHolder(path) as holder:
            await holder.locked()
            ticks, seen = ticker.ticks, len(envs)
            await ticker.wait(60)  # at least 0.6 s: three times the busy timeout
            during = len(envs) - seen
            await holder.release()
        assert during >= 10  # the run's progress kept coming while the lock was held
        # The lock is gone: the heartbeat, still alive, renews the lease again.
        assert g._heartbeat is not None and not g._heartbeat.done()
        while lease_expiry(path, e.id) <= before + 0.5:
            await asyncio.sleep(0.01)
        # Another process meets the live lease: it waits, and never runs the node.
        other = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("lease_worker.py")), str(path), e.id],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")])),
        )
        await ticker.wait(30)
        stop.touch()
        await run
        out, _ = await asyncio.to_thread(other.communicate, timeout=60)
    ticker.task.cancel()
    assert ticker.ticks - ticks >= 60  # and the loop kept turning (it counted the wait)
    assert runs_logged(log) == [f"run {os.getpid()}"]  # ran once, here
    assert other.returncode == 0
    assert json.loads(out)["pid"] == os.getpid()  # the other process got our result
    with EntityGraph.open(path, create=False) as g:
        node = g.get_node(e.id)
        assert node.status == "Completed" and node.data["steps"] == node.output["steps"]
        assert g.lease(e.id) is None


@pytest.mark.timeout(120)
async def test_a_heartbeat_that_cannot_renew_stops_its_run_before_the_lease_expires(tmp_path):
    path = tmp_path / "graph.sqlite"
    # The runs are stopped half a heartbeat (0.2 s) before the lease would expire.
    with EntityGraph.open(path, lease_ttl=2.0, lease_heartbeat=0.4, busy_timeout=0.2) as g:
        e, log, stop = tick_entity(g, tmp_path)
        envs: list = []
        run = e.start()
        task = asyncio.create_task(collect_into(run, envs))
        await started(g, e.id, envs)
        async with LockHolder(path) as holder:
            await holder.locked()
            with pytest.raises(LeaseLostError) as lost:
                await asyncio.wait_for(task, timeout=60)
            stopped_at = time.time()
            expires = lease_expiry(path, e.id)  # a reader is not kept out by the lock
            progress_rows = poll(path, "SELECT count(*) FROM progress")[0][0]
        assert stopped_at < expires  # stopped before the lease could expire under it
        message = str(lost.value)
        assert "could not renew its lease" in message and "before the lease (2 s)" in message
        assert len(message.splitlines()) == 1
        assert run.error is lost.value
        await asyncio.sleep(0.2)  # commits that were waiting for the lock go through now
        # Nothing of the stopped run was stored once it had given up.
        assert poll(path, "SELECT count(*) FROM progress")[0][0] == progress_rows
        assert g.get_node(e.id).status == "InProgress"

        # The next run takes the node over (this process no longer runs it) and finishes it.
        stop.touch()
        again = await asyncio.wait_for(e.run(), timeout=60)
    assert again["pid"] == os.getpid()
    assert len(runs_logged(log)) == 2


async def collect_into(run, envs: list) -> None:
    async for env in run:
        envs.append(env)


# ------------------------------------------- in one process: what is fenced

GATES: dict[str, asyncio.Event] = {}


BLOB = b"drawn after the take-over"


class Fenced(RunnableEntity):
    """Logs, then waits at its gate; once let through it logs again, makes
    the write its data names (``write``), and returns (its end is a write too)."""

    async def run_impl(self):
        yield self.status("RUNNING", "before")
        await self.update_entity_data(step="before")
        self.graph.flush()  # our lease is on disk: the "other process" sees it
        await GATES[self.id].wait()
        yield self.status("RUNNING", "after")  # never stored: the lease is not ours
        write = self.data.get("write")
        if write == "data":
            await self.update_entity_data(step="after")
        elif write == "child":
            self.append_call(Fenced, "child")
        elif write == "blob":
            self.store_blob(BLOB, "text/plain")
        elif write == "replace data":
            await self.update_data({"step": "replaced"})
        elif write == "data path":
            await self.update_data_path(["deep", "step"], "after")
        yield Return("stored anyway")


def take_over(path: Path, node_id: str) -> None:
    """Another process takes ``node_id`` over (its lease replaces ours)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    now = time.time()
    conn.execute(
        "INSERT OR REPLACE INTO leases VALUES "
        "(?, 'elsewhere:7', 'elsewhere', 7, 'theirs', ?, ?, ?)",
        (node_id, now, now, now + 30),
    )
    conn.close()


def stored(path: Path, node_id: str) -> tuple:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        node = conn.execute(
            "SELECT status, data, output, error FROM nodes WHERE id = ?", (node_id,)
        )
        return (
            node.fetchone(),
            conn.execute("SELECT * FROM progress ORDER BY seq").fetchall(),
            conn.execute("SELECT count(*) FROM nodes").fetchone()[0],
        )
    finally:
        conn.close()


@pytest.mark.parametrize("write", ["end", "data", "replace data", "data path", "child", "blob"])
async def test_every_write_after_a_take_over_is_refused_and_the_run_says_why(tmp_path, write):
    path = tmp_path / "graph.sqlite"
    with EntityGraph.open(path, lease_ttl=30) as g:  # the heartbeat stays out of this one
        e = g.create(Fenced, "f", {"write": write})
        GATES[e.id] = gate = asyncio.Event()
        run = e.start()
        task = asyncio.create_task(collect_into(run, []))
        while g.get_node(e.id).data.get("step") != "before":
            await asyncio.sleep(0.01)
        take_over(path, e.id)
        before = stored(path, e.id)
        gate.set()
        with pytest.raises(LeaseLostError) as lost:
            await task
        g.flush()
        assert stored(path, e.id) == before  # no progress, no data, no child, no end
        assert not g.blobs.root.exists() or not list(g.blobs.root.rglob("*.txt"))
    message = str(lost.value)
    assert message.startswith(f"Fenced 'f' (id {e.id}) was taken over by another process, ")
    assert "elsewhere:7" in message
    # Planted while our lease was live: the message does not claim that it expired.
    assert "while this process's lease on it was still live" in message
    assert lost.value.node_id == e.id and len(message.splitlines()) == 1


async def test_a_run_taken_over_is_stopped_by_its_heartbeat_while_it_waits(tmp_path):
    path = tmp_path / "graph.sqlite"
    with EntityGraph.open(path, lease_ttl=0.6, lease_heartbeat=0.05) as g:
        e = g.create(Fenced, "f")
        GATES[e.id] = asyncio.Event()  # never set: only a cancellation ends the wait
        task = asyncio.create_task(collect_into(e.start(), []))
        while g.get_node(e.id).data.get("step") != "before":
            await asyncio.sleep(0.01)
        take_over(path, e.id)
        with pytest.raises(LeaseLostError, match="was taken over by another process, elsewhere:7"):
            await asyncio.wait_for(task, timeout=30)
        assert g.lease(e.id).owner == "elsewhere:7"
        # Its progress stops at the take-over: nothing logged after (not even CANCELLED).
        statuses = [(x.status, x.message) for x in g.progress(e.id)]
        assert statuses[-1] == ("RUNNING", "before")


async def test_a_run_cancelled_after_an_unnoticed_take_over_logs_nothing(tmp_path):
    path = tmp_path / "graph.sqlite"
    with EntityGraph.open(path, lease_ttl=30) as g:  # the heartbeat stays out of this one
        e = g.create(Fenced, "f")
        GATES[e.id] = asyncio.Event()  # never set: the run is cancelled while it waits
        run = e.start()
        task = asyncio.create_task(collect_into(run, []))
        while g.get_node(e.id).data.get("step") != "before":
            await asyncio.sleep(0.01)
        take_over(path, e.id)
        before = stored(path, e.id)
        task.cancel()  # abandoned: it would log CANCELLED and give its lease back
        with pytest.raises(asyncio.CancelledError):
            await task
        g.flush()
        assert stored(path, e.id) == before  # no CANCELLED row, the new owner's lease kept
        assert g.lease(e.id).owner == "elsewhere:7"


def test_the_lease_ttl_comes_from_the_environment_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLAB_LEASE_TTL", "2.5")
    with EntityGraph.open(tmp_path / "a.sqlite") as g:
        assert g.lease_ttl == 2.5
    with EntityGraph.open(tmp_path / "b.sqlite", lease_ttl=4) as g:
        assert g.lease_ttl == 4  # an explicit setting wins
    monkeypatch.setenv("STORYLAB_LEASE_TTL", "soon")
    with pytest.raises(ValueError, match="STORYLAB_LEASE_TTL must be a positive number of sec"):
        EntityGraph.open(tmp_path / "c.sqlite")
    assert not (tmp_path / "c.sqlite").exists()
    with pytest.raises(
        ValueError, match=r"busy_timeout must be a number of seconds in \[0, 3600\]"
    ):
        EntityGraph.open(tmp_path / "c.sqlite", lease_ttl=1, busy_timeout=-1)


FAILING_DISK = """
import asyncio, json, logging, resource, signal, sys
from storylab.entities import EntityGraph, RunnableEntity

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write fails, it does not kill


EXPIRIES = []


class Quiet(RunnableEntity):
    async def run_impl(self):
        await asyncio.sleep(0.3)  # the lease is on disk and renewed
        EXPIRIES.append(self.graph.lease(self.id).expires_at)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # no file may grow now
        await asyncio.sleep(1.0)  # every renewal meanwhile fails: "disk is full"
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        await asyncio.sleep(0.6)  # renewed again
        EXPIRIES.append(self.graph.lease(self.id).expires_at)
        return "done"


with EntityGraph.open(sys.argv[1], lease_ttl=3.0, lease_heartbeat=0.1) as graph:
    entity = graph.create(Quiet, "quiet")

    async def main():
        result = await entity.run()
        return result, graph._heartbeat is None  # the heartbeat ended with the run

    result, stopped = asyncio.run(main())
    node = graph.get_node(entity.id)
    renewed = EXPIRIES[1] - EXPIRIES[0]
    print(json.dumps({"result": result, "status": node.status, "stopped": stopped}))
    print(json.dumps({"renewed": renewed}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_the_heartbeat_retries_a_failing_disk_within_the_lease(tmp_path):
    path = tmp_path / "graph.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_DISK, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcome, renewal = (json.loads(line) for line in proc.stdout.splitlines())
    assert outcome == {"result": "done", "status": "Completed", "stopped": True}
    assert renewal["renewed"] >= 1.0  # renewed again after the window (1.6 s later)
    failures = [line for line in proc.stderr.splitlines() if "lease renewal failed" in line]
    assert failures, proc.stderr  # the disk did refuse the renewals
    assert all("OperationalError" in line for line in failures), failures
    assert "could not renew" not in proc.stderr  # it never had to give up
