"""Benchmark: persisted child entities on the PostgreSQL store, against its floor.

What it measures. The workload of ``bench_entities.py`` (a parent fans out N
children that only return, through ``parallel_calls`` ->
``SourceFromIterable`` -> ``HierarchicalTaskPoolRunner``, capacity 10; every
node, edge, status change, lease, output and progress envelope stored, each
result handed on only once committed) on a graph on a PostgreSQL server, in
a fresh schema per run. It reports microseconds per child entity.

Against what. The floor is the cheapest thing that could be called
"persisting an entity" on that server: with psycopg, on one connection, one
row inserted and committed per entity (``INSERT`` then ``COMMIT``), in the
same run on the same server. The goal is a ratio of at most 3 (the SQLite
store's goal against its own floor). Each run is divided by the floor
measured just before it (paired ratios; median [min-max]). With
``--sqlite`` the SQLite store and its floor (one WAL commit per entity) are
measured in the same rounds, side by side. A second PostgreSQL reference,
the same loop with ``synchronous_commit=off`` (commits that do not wait for
the server's disk, so not durable), shows what the round trips alone cost.

Wall time is what counts here: CPU time is this process's only (the
server's own work is not in it), printed for the client's share.

Usage::

    python bench/bench_postgres.py postgresql://USER@127.0.0.1/DB -n 5000 --repeat 5 --sqlite
    (the URL may also come from $STORYLAB_TEST_PG; the password from $PGPASSWORD)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_entities import BenchParent, entities_us  # noqa: E402
from bench_entities import floor_us as sqlite_floor_us  # noqa: E402

from storylab.entities import EntityGraph  # noqa: E402


def _schema_url(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


def pg_floor_us(base: str, n: int, durable: bool = True) -> tuple[float, float]:
    """One INSERT + COMMIT per entity with psycopg, in a schema of its own
    (not ``durable``: ``synchronous_commit=off``, a commit not waiting for
    the server's disk: the round trips alone)."""
    import psycopg

    schema = f"bench_floor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with psycopg.connect(base) as conn:
            conn.execute(f'SET search_path = "{schema}"')
            if not durable:
                conn.execute("SET synchronous_commit = off")
            conn.execute("CREATE TABLE nodes (id text PRIMARY KEY, name text, data text)")
            conn.commit()
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                conn.execute(
                    "INSERT INTO nodes VALUES (%s, %s, %s)",
                    (str(uuid.uuid4()), f"child-{i}", json.dumps({"i": i})),
                )
                conn.commit()
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return elapsed / n * 1e6, cpu / n * 1e6


def pg_entities_us(base: str, n: int, commit: str) -> tuple[float, float]:
    import psycopg

    schema = f"bench_graph_{uuid.uuid4().hex[:10]}"
    try:
        with EntityGraph.open(_schema_url(base, schema), commit=commit) as graph:
            parent = graph.create(BenchParent, "bench-parent", {"n": n})
            t0, c0 = time.perf_counter(), time.process_time()
            done = asyncio.run(parent.run())
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert done == n, done
            assert len(graph.children(parent.id)) == n
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return elapsed / n * 1e6, cpu / n * 1e6


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):4.2f} [{min(values):4.2f}-{max(values):4.2f}]"


def _row(label: str, runs: list[tuple[float, float]], floors=None) -> str:
    w = statistics.median(r[0] for r in runs)
    c = statistics.median(r[1] for r in runs)
    line = f"  {label:<38s}: wall {w:7.1f}  cpu {c:7.1f}"
    if floors is not None:
        rw = [r[0] / f[0] for r, f in zip(runs, floors, strict=True)]
        rc = [r[1] / f[1] for r, f in zip(runs, floors, strict=True)]
        line += f"   ratio wall {_spread(rw)}  cpu {_spread(rc)}"
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", nargs="?", default=os.environ.get("STORYLAB_TEST_PG"))
    ap.add_argument("-n", type=int, default=5_000, help="child entities (default 5000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measure (default 5)")
    ap.add_argument("--commit", choices=["batched", "interval", "operation"], default="batched")
    ap.add_argument("--sqlite", action="store_true", help="also the SQLite store and its floor")
    args = ap.parse_args(argv)
    if not args.url:
        ap.error("give a postgresql:// URL (or set STORYLAB_TEST_PG)")
    import psycopg

    with psycopg.connect(args.url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    floors, results, sq_floors, sq_results, fast = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="storylab-bench-") as tmp:
        for r in range(args.repeat):
            floors.append(pg_floor_us(args.url, args.n))
            results.append(pg_entities_us(args.url, args.n, args.commit))
            fast.append(pg_floor_us(args.url, args.n, durable=False))
            if args.sqlite:
                sub = Path(tmp) / f"r{r}"
                sub.mkdir()
                sq_floors.append(sqlite_floor_us(sub, args.n))
                sq_results.append(entities_us(sub, args.n, args.commit))
    print(
        f"python {sys.version.split()[0]}, PostgreSQL {version} over loopback "
        f"(synchronous_commit={sync}), psycopg {psycopg.__version__}, n={args.n}, "
        f"{args.repeat} runs, commit={args.commit}; microseconds per entity, medians; "
        "ratios paired with the floor measured just before, median [min-max]"
    )
    print(_row("postgres floor, 1 commit per entity", floors))
    print(_row("postgres store", results, floors))
    print(_row("postgres, commits not awaited on disk", fast))
    print(_row("store / that, paired", results, fast))
    if args.sqlite:
        print(_row("sqlite floor, 1 WAL commit per entity", sq_floors))
        print(_row("sqlite store", sq_results, sq_floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
