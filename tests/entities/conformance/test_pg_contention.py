"""The PostgreSQL store under many processes: a lease is renewed however
busy the graph is.

A heartbeat that had to wait behind the transactions of every other
process sharing the graph could wait past its lease's lifetime and then
stop a healthy run. Here a run holds a lease of 1 s while other processes
make many small commits and one more keeps a write transaction open on the
graph for three lease lifetimes, holding the advisory key the store once
took for every write (its graph-wide lock, which it no longer has): the run
keeps its lease, is run once, and every process finishes without losing one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.entities.conformance.holders import PG_WRITE_HOLDER

HERE = Path(__file__).resolve().parent
COMMIT_WORKER = HERE.parent / "commit_worker.py"
ROOT = HERE.parents[2]
TTL = 1.0
COMMITTERS = 3



def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.mark.timeout(180)
async def test_a_lease_is_renewed_while_other_processes_hold_the_write_lock(pg_target, tmp_path):
    from tests.entities.lease_worker import TickWork

    log, stop = tmp_path / "runs.log", tmp_path / "stop"
    graph = pg_target.open(lease_ttl=TTL)
    node = graph.create(TickWork, "held", {"log": str(log), "stop": str(stop)})
    graph.flush()
    run = asyncio.create_task(graph.entity(node.id).run())

    async def until(check, what: str, timeout: float = 60.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if run.done():
                run.result()  # a run that ended early says why
                raise AssertionError(f"the leased run ended before {what}")
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def leased() -> bool:
        return bool(pg_target.rows("SELECT 1 FROM leases WHERE node_id = ?", (node.id,)))

    committers: list[subprocess.Popen] = []
    holder = None
    try:
        await until(leased, "the lease to be committed")
        committers = [
            subprocess.Popen(
                [sys.executable, str(COMMIT_WORKER), pg_target.url, f"c{i}", "40"],
                env=_env(STORYLAB_LEASE_TTL=str(TTL)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(COMMITTERS)
        ]

        def committed() -> bool:
            return bool(pg_target.rows("SELECT 1 FROM nodes WHERE name LIKE ? LIMIT 1", ("c%",)))

        await until(committed, "the other processes' first commits")
        holder = subprocess.Popen(
            [sys.executable, "-c", PG_WRITE_HOLDER, pg_target.schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(HOLD_URL=pg_target.base),
        )
        assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
        # Three lease lifetimes with that transaction open: a heartbeat that
        # waited for it would lose the lease.
        for _ in range(int(3 * TTL / 0.05)):
            await asyncio.sleep(0.05)
            assert not run.done(), run.exception()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert await asyncio.to_thread(holder.stdout.readline) == "released\n"
        results = [await asyncio.to_thread(p.communicate, timeout=120) for p in committers]
        for proc, (out, err) in zip(committers, results, strict=True):
            assert proc.returncode == 0, err
            assert out.strip() == "40"
            assert "LeaseLostError" not in err, err
        assert not run.done(), run.exception()
    finally:
        stop.touch()
        for proc in [*committers, holder]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    result = await asyncio.wait_for(run, timeout=60)
    assert result["pid"] == os.getpid()
    assert log.read_text().splitlines() == [f"run {os.getpid()}"]  # run once
    started = pg_target.rows(
        "SELECT count(*) FROM progress WHERE node_id = ? AND status = 'STARTED'", (node.id,)
    )
    assert started == [(1,)]
    done = pg_target.rows(
        "SELECT count(*) FROM nodes WHERE name LIKE ? AND status = 'Completed'", ("c%",)
    )
    assert done == [(COMMITTERS * 40,)]
    assert pg_target.rows("SELECT count(*) FROM leases") == [(0,)]
    stored = pg_target.rows("SELECT status, output FROM nodes WHERE id = ?", (node.id,))
    assert stored[0][0] == "Completed" and json.loads(stored[0][1])["pid"] == os.getpid()
