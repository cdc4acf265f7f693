"""On both stores: two processes that create the same names in opposite
orders, each in one batch, both succeed, and each name is stored once.

One process creates ``alpha`` then ``beta``, the other ``beta`` then
``alpha``, as root entities or as children of one idle parent. Each
creates its first name and keeps its batch open until the other has done
the same (on a server both get that far: nothing graph-wide is locked), and
only then creates its second name. A store that waited for the second
name's lock while holding the first would wait for the other process, which
waits for it: the server would break the cycle by failing one transaction
("deadlock detected"), or both would wait until their lock timeout. The
store's contract is that both calls return the one node of each name, the
same in both processes, and nothing is lost or stored twice. SQLite lets one
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
ORDERS = {"ab": ["alpha", "beta"], "ba": ["beta", "alpha"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("under", ["roots", "a parent"])
def test_two_processes_creating_names_in_opposite_orders(target, tmp_path, under):
    parent = "-"
    graph = target.open()
    if under == "a parent":
        parent = graph.create(OrderNode, "parent").id
    graph.close()
    procs = {
        tag: subprocess.Popen(
            [sys.executable, str(WORKER), target.url, parent, str(tmp_path / tag), *names],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ROOT_ENV,
        )
        for tag, names in ORDERS.items()
    }
    try:
        # On a server both get there; on SQLite the second waits for the
        # first's write lock, so a short look is enough.
        holding = set()
        deadline = time.monotonic() + (20 if target.kind == "postgres" else 1)
        while len(holding) < len(procs) and time.monotonic() < deadline:
            holding = {t for t in procs if (tmp_path / f"{t}.holding").exists()}
            if any(p.poll() is not None for p in procs.values()):
                break
            time.sleep(0.01)
        if target.kind == "postgres":
            # Both batches are open, each holding its first name: the orders
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
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
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
    assert all(Path(json.loads(data)["by"]).name in ORDERS for (data,) in made)
