"""The PostgreSQL store: two processes taking over a parent and its child at
the same moment, in opposite orders, finish without waiting for each other.

Each pair (a parent and the child its run delegates to) is left InProgress
under leases that expired (a crashed owner on another host). Two real
processes then start together, and each runs every node of every pair at
once: one starts the parents first, the other the children first. A claim
that waited for the row another process holds locked would let each wait
for the other (one holds the parent and wants the child, the other holds
the child and wants the parent), and the server would break the cycle by
failing one transaction ("deadlock detected"). The store's claims skip a
row being written elsewhere and wait for it by polling instead, so every
run ends with its value, each child's body runs once, and nothing is left
leased.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT_ENV
from .takeover_worker import TakeoverChild, TakeoverParent

WORKER = Path(__file__).resolve().parent / "takeover_worker.py"
PAIRS = 6


def _leave_stale(target, ids: list[str]) -> None:
    """Mark ``ids`` InProgress under leases of a gone host that expired a
    minute ago, as a crash of their owner leaves them."""
    import psycopg

    now = time.time()
    with psycopg.connect(target.base, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{target.schema}"')
        with conn.transaction():
            for id in ids:
                conn.execute(
                    "UPDATE nodes SET status = 'InProgress', started_at = %s WHERE id = %s",
                    (now - 120, id),
                )
                conn.execute(
                    "INSERT INTO leases (node_id, owner, host, pid, token, taken_at, "
                    "heartbeat_at, expires_at) VALUES (%s, 'gone-host:1', 'gone-host', 1, "
                    "'dead0000dead0000', %s, %s, %s)",
                    (id, now - 120, now - 70, now - 60),
                )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_processes_taking_over_parents_and_children_in_opposite_orders(pg_target, tmp_path):
    graph = pg_target.open()
    parents, kids = [], []
    for n in range(PAIRS):
        parent = graph.create(TakeoverParent, f"pair-{n}", {"n": n})
        kid = graph.insert_node(TakeoverChild, "kid", {"n": n}, parent.id)
        parents.append(parent.id)
        kids.append(kid.id)
    graph.flush()
    _leave_stale(pg_target, parents + kids)
    go = tmp_path / "go"
    orders = {
        "parents first": [i for pair in zip(parents, kids, strict=True) for i in pair],
        "children first": [i for pair in zip(kids, parents, strict=True) for i in pair],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(WORKER), pg_target.url, str(go), *ids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ROOT_ENV,
        )
        for name, ids in orders.items()
    }
    time.sleep(1.0)  # both are waiting for the signal (a late one only lowers the odds)
    go.touch()
    outputs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=150)
        assert "deadlock" not in (out + err).lower(), f"{name}: {err[-2000:]}"
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"
        outputs[name] = json.loads(out.strip().splitlines()[-1])
    for name, got in outputs.items():
        assert got["errors"] == {}, f"{name}: {got['errors']}"
        for n in range(PAIRS):
            assert got["results"][parents[n]] == n * 3 + 1, name
            assert got["results"][kids[n]] == n * 3, name
    every = parents + kids
    marks = ", ".join("?" for _ in every)
    statuses = pg_target.rows(
        f"SELECT DISTINCT status FROM nodes WHERE id IN ({marks})", tuple(every)
    )
    assert statuses == [("Completed",)]
    assert pg_target.rows("SELECT node_id FROM leases") == []
    # Each node was taken over once, by one of the two: no body ran twice.
    starts = pg_target.rows(
        f"SELECT node_id, count(*) FROM progress WHERE type = 'STATUS' AND status = 'STARTED' "
        f"AND node_id IN ({marks}) GROUP BY node_id",
        tuple(every),
    )
    assert sorted(starts) == sorted((i, 1) for i in every)
