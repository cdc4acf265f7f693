"""On both stores: two processes that write the same nodes in opposite
orders, each in one batch, both succeed, and nothing is lost or doubled.

One process writes ``alpha`` then ``beta``, the other ``beta`` then
``alpha``: creating them as root entities, as children of one idle parent,
merging into the data of two idle nodes, or reopening two finished ones.
Each writes its first node and keeps its batch open until the other has
done the same (on a server both get that far: nothing graph-wide is
locked), and only then writes its second. A store that waited for the
second node's lock while holding the first would wait for the other
process, which waits for it: the server would break the cycle by failing
one transaction ("deadlock detected"), or both would wait until their lock
timeout. The store's contract is that both calls succeed: each name is
created once and both processes get its one node, both changes of each
node's data are kept, and the reopened nodes are Pending. SQLite lets one
writer at a time in, so there the second process simply waits its turn.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT_ENV
from .order_worker import OrderNode

WORKER = Path(__file__).resolve().parent / "order_worker.py"
TAGS = ("ab", "ba")


def _cross(target, tmp_path: Path, where: str, first: str, second: str) -> dict[str, dict]:
    """Run the two processes (``ab`` writes ``first`` then ``second``, ``ba``
    the other way round) with their batches crossing; what each printed."""
    orders = {"ab": [first, second], "ba": [second, first]}
    procs = {
        tag: subprocess.Popen(
            [sys.executable, str(WORKER), target.url, where, str(tmp_path / tag), *names],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ROOT_ENV,
        )
        for tag, names in orders.items()
    }
    try:
        # On a server both get there; on SQLite the second waits for the
        # first's write lock, so a short look is enough.
        holding: set[str] = set()
        deadline = time.monotonic() + (20 if target.kind == "postgres" else 0.3)
        while len(holding) < len(procs) and time.monotonic() < deadline:
            holding = {t for t in procs if (tmp_path / f"{t}.holding").exists()}
            if any(p.poll() is not None for p in procs.values()):
                break
            time.sleep(0.01)
        if target.kind == "postgres":
            # Both batches are open, each holding its first node: the orders
            # really cross.
            assert holding == set(procs), {t: p.poll() for t, p in procs.items()}
        for tag in procs:
            (tmp_path / f"{tag}.go").touch()
        outputs = {}
        for tag, proc in procs.items():
            out, err = proc.communicate(timeout=90)
            assert "deadlock" not in (out + err).lower(), f"{tag}: {out} {err[-2000:]}"
            assert proc.returncode == 0, f"{tag}: {out} {err[-2000:]}"
            outputs[tag] = json.loads(out.strip().splitlines()[-1])["ids"]
        return outputs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("under", ["roots", "a parent"])
def test_two_processes_creating_names_in_opposite_orders(target, tmp_path, under):
    graph = target.open()
    parent = graph.create(OrderNode, "parent").id if under == "a parent" else "-"
    graph.close()
    outputs = _cross(target, tmp_path, parent, "alpha", "beta")
    # The same node of each name in both processes, stored once.
    assert outputs["ab"] == outputs["ba"], outputs
    where = "parent_id IS NULL" if parent == "-" else "parent_id = ?"
    params = () if parent == "-" else (parent,)
    stored = target.rows(
        f"SELECT name, id FROM nodes WHERE {where} AND name IN ('alpha', 'beta') ORDER BY name",
        params,
    )
    assert stored == sorted(outputs["ab"].items())
    # Each node holds the data of the process that created it.
    made = target.rows(f"SELECT data FROM nodes WHERE {where} AND name <> 'parent'", params)
    assert len(made) == 2
    assert all(Path(json.loads(data)["by"]).name in TAGS for (data,) in made)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_processes_changing_data_in_opposite_orders(target, tmp_path):
    graph = target.open()
    alpha = graph.create(OrderNode, "alpha", {"kept": 1}).id
    beta = graph.create(OrderNode, "beta", {"kept": 2}).id
    graph.close()
    _cross(target, tmp_path, "update", alpha, beta)
    stored = dict(target.rows("SELECT id, data FROM nodes"))
    assert json.loads(stored[alpha]) == {"kept": 1, "ab": True, "ba": True}
    assert json.loads(stored[beta]) == {"kept": 2, "ab": True, "ba": True}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_processes_reopening_nodes_in_opposite_orders(target, tmp_path):
    graph = target.open()
    ids = [graph.create(OrderNode, name).id for name in ("alpha", "beta")]
    for id in ids:
        assert await graph.entity(id).run() in ("alpha", "beta")
    graph.close()
    outputs = _cross(target, tmp_path, "reopen", *ids)
    assert outputs["ab"] == outputs["ba"] == dict.fromkeys(ids, "Pending")
    marks = ", ".join("?" for _ in ids)
    assert target.rows(f"SELECT DISTINCT status FROM nodes WHERE id IN ({marks})", tuple(ids)) == [
        ("Pending",)
    ]
