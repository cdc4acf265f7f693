"""Benchmark: persisted child entities through parallel_calls and the runner.

What it measures. A parent entity fans out N children whose ``run_impl`` does
nothing but return, through ``parallel_calls`` -> ``SourceFromIterable`` ->
``HierarchicalTaskPoolRunner`` (capacity 10), with every node, edge, status
change, output and progress envelope persisted to a fresh SQLite graph. It
reports microseconds per child entity.

Against what. The floor is the cheapest thing that could be called
"persisting an entity": one row inserted and committed per entity, in WAL
mode with ``synchronous=NORMAL``, measured in the same run on the same disk.
The goal is a ratio of at most 3. Each run is compared with the floor
measured just before it, so that a machine whose speed drifts (shared cores)
does not skew the ratio; the median and the range of these paired ratios
are printed.

Commit modes (see ``EntityGraph.open``): ``batched`` (the default; a
finished entity is committed by the end of the event-loop iteration),
``interval`` (group commit every 5 ms only) and ``operation`` (one commit
per operation). In every mode a child hands its result on only once it is
committed, so under ``interval`` each child waits for the next 5 ms commit.
With more than one mode, each is also divided by ``batched`` measured in the
same run (paired, median [min-max]).

Usage::

    python bench/bench_entities.py                  # 10,000 children, every commit mode
    python bench/bench_entities.py -n 2000 --repeat 3 --commit batched
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceFromIterable
from storylab.entities import EntityGraph, Return, RunnableEntity
from storylab.entities.graph import COMMIT_MODES


class BenchChild(RunnableEntity):
    async def run_impl(self):
        yield Return(None)


class BenchParent(RunnableEntity):
    async def run_impl(self):
        n = self.data["n"]
        items = [{"name": f"child-{i}", "data": {"i": i}} for i in range(n)]
        source = SourceFromIterable(self.parallel_calls(BenchChild, items))
        runner = HierarchicalTaskPoolRunner("bench", source, CapacitySource(10, name="bench"))
        done = 0
        async for env in runner.run_tasks():
            if env.type == "FINAL":
                done += 1
            elif env.type == "ERROR":
                raise env.error
        yield Return(done)


def floor_us(folder: Path, n: int) -> tuple[float, float]:
    """One INSERT + COMMIT per entity, WAL, synchronous=NORMAL."""
    conn = sqlite3.connect(folder / "floor.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE nodes (id TEXT PRIMARY KEY, name TEXT, data TEXT)")
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO nodes VALUES (?, ?, ?)",
            (str(uuid.uuid4()), f"child-{i}", json.dumps({"i": i})),
        )
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.close()
    return elapsed / n * 1e6, cpu / n * 1e6


def entities_us(folder: Path, n: int, commit: str) -> tuple[float, float]:
    with EntityGraph.open(folder / f"graph-{commit}.sqlite", commit=commit) as graph:
        parent = graph.create(BenchParent, "bench-parent", {"n": n})

        async def main() -> int:
            return await parent.run()

        t0, c0 = time.perf_counter(), time.process_time()
        done = asyncio.run(main())
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert done == n, done
        assert len(graph.children(parent.id)) == n
    return elapsed / n * 1e6, cpu / n * 1e6


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):4.2f} [{min(values):4.2f}-{max(values):4.2f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="child entities (default 10000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measure (default 5)")
    ap.add_argument(
        "--commit",
        choices=[*COMMIT_MODES, "all"],
        default="all",
        help="entity-graph commit mode(s) to measure (default: all)",
    )
    args = ap.parse_args(argv)
    modes = list(COMMIT_MODES) if args.commit == "all" else [args.commit]
    with tempfile.TemporaryDirectory(prefix="storylab-bench-") as tmp:
        folder = Path(tmp)
        floors, results = [], {m: [] for m in modes}
        for r in range(args.repeat):
            sub = folder / f"r{r}"
            sub.mkdir()
            floors.append(floor_us(sub, args.n))
            for m in modes:
                results[m].append(entities_us(sub, args.n, m))
        print(
            f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, n={args.n}, "
            f"{args.repeat} runs; wall and CPU (user+sys) microseconds per entity, medians; "
            "ratios are paired (each run against the floor measured just before it), "
            "median [min-max]"
        )
        fw = statistics.median(f[0] for f in floors)
        fc = statistics.median(f[1] for f in floors)
        print(f"  floor, 1 WAL commit per entity : wall {fw:7.1f}  cpu {fc:7.1f}")
        for m in modes:
            w = statistics.median(r[0] for r in results[m])
            c = statistics.median(r[1] for r in results[m])
            rw = [r[0] / f[0] for r, f in zip(results[m], floors, strict=True)]
            rc = [r[1] / f[1] for r, f in zip(results[m], floors, strict=True)]
            print(
                f"  entities, commit={m:<9s}     : wall {w:7.1f}  cpu {c:7.1f}   "
                f"ratio wall {_spread(rw)}  cpu {_spread(rc)}"
            )
        if "batched" in modes and len(modes) > 1:
            base = results["batched"]
            for m in modes:
                if m == "batched":
                    continue
                rw = [r[0] / b[0] for r, b in zip(results[m], base, strict=True)]
                rc = [r[1] / b[1] for r, b in zip(results[m], base, strict=True)]
                label = f"{m} / batched, paired"
                print(f"  {label:<31s}: wall {_spread(rw)}  cpu {_spread(rc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
