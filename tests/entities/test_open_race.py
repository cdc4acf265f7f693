"""Several processes opening a brand-new graph at the same instant all get in.

Leaving rollback mode for WAL needs an exclusive lock; SQLite answers one of two
processes that both hold a shared lock "database is locked" at once, without
its busy handler, so the open must wait and retry by itself."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from storylab import EntityGraph


def _open(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        with EntityGraph.open(path) as graph:
            graph.roots()
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_graph_together_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    outcomes: list[str] = []
    for round_ in range(25):
        path = str(tmp_path / f"graph-{round_}.sqlite")
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(8)]
        for p in procs:
            p.start()
        outcomes += [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    assert [o for o in outcomes if o != "ok"] == []
