"""Benchmarks of the global limit held on Dask distributed, against the local one.

    python bench/bench_distributed.py [--rounds 5] [--cycles 500] [--workers 4]

1. The cost of one unit: ``await story.acquire(); story.release()`` through a
   per-story CapacitySource(3) under the global limit of 10, measured inside a
   Dask worker process (where stories run): with a local root, and with a
   DistributedCapacityRoot whose lease travels over TCP to the scheduler
   (the returned lease is awaited every cycle, so a cycle is both round trips).
   Median of ``--rounds`` rounds of ``--cycles`` cycles each.
2. Makespan: 5 stories x 5 images, each image a sleep of d, 3 per story and
   10 in total, against the optimum d * max(ceil(5 / 3), ceil(25 / 10)):
   in one process (five runners under one local tree), and as five Dask tasks
   over ``--workers`` worker processes under the distributed root (measured
   from the first image start to the last image end in the merged trace; the
   time to submit and gather is shown beside it).

Machines are noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time

from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    Trace,
    merge_traces,
)
from storylab.scheduling.distributed import DistributedCapacityRoot

STORIES, IMAGES, PER_STORY, GLOBAL = 5, 5, 3, 10


# -- 1. one unit -------------------------------------------------------------------
async def unit_cost(cycles: int, distributed: bool, name: str) -> float:
    """Seconds per acquire+release cycle (runs inside a worker process)."""
    root: CapacitySource = (
        DistributedCapacityRoot(GLOBAL, name=name) if distributed else CapacitySource(GLOBAL)
    )
    story = CapacitySource(PER_STORY, root)
    drain = root.drain if distributed else None
    await story.acquire()  # the first one registers the semaphore: not timed
    story.release()
    if drain is not None:
        await drain()
    started = time.perf_counter()
    for _ in range(cycles):
        await story.acquire()
        story.release()
        if drain is not None:
            await drain()
    return (time.perf_counter() - started) / cycles


# -- 2. makespan ---------------------------------------------------------------------
def optimum(d: float) -> float:
    return d * max(math.ceil(IMAGES / PER_STORY), math.ceil(STORIES * IMAGES / GLOBAL))


async def one_story(story: CapacitySource, d: float) -> None:
    async def image() -> None:
        await asyncio.sleep(d)

    runner = HierarchicalTaskPoolRunner("images", [image] * IMAGES, story)
    async with runner.run_tasks() as results:
        async for _ in results:
            pass


async def local_makespan(d: float) -> float:
    root = CapacitySource(GLOBAL, name="global")
    with Trace(clock=time.time) as trace:
        await asyncio.gather(
            *(one_story(CapacitySource(PER_STORY, root), d) for _ in range(STORIES))
        )
    return span(trace)


async def story_on_worker(d: float, name: str) -> Trace:
    root = DistributedCapacityRoot(GLOBAL, name=name)
    with Trace(clock=time.time) as trace:
        await one_story(CapacitySource(PER_STORY, root), d)
    await root.drain()
    return trace


def span(trace: Trace) -> float:
    starts = [e.t for e in trace.events if e.kind is EventKind.TASK_START]
    ends = [e.t for e in trace.events if e.kind is EventKind.TASK_END]
    return max(ends) - min(starts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.2, help="d, seconds per image")
    args = parser.parse_args()

    import distributed

    from storylab.story.cluster import open_cluster

    print(
        f"python {sys.version.split()[0]}, distributed {distributed.__version__}, "
        f"rounds={args.rounds}, cycles={args.cycles}, workers={args.workers}\n"
    )
    # The same local cluster storylab run --cluster local:N starts.
    with open_cluster(f"local:{args.workers}", lease_timeout=10.0) as client:
        worker = sorted(client.scheduler_info()["workers"])[0]
        local, remote = [], []
        for r in range(args.rounds):
            for distributed_root, into in ((False, local), (True, remote)):
                future = client.submit(
                    unit_cost, args.cycles, distributed_root, f"bench-unit-{r}",
                    workers=[worker], pure=False,
                )  # fmt: skip
                into.append(future.result())
        lo, re_ = statistics.median(local), statistics.median(remote)
        print("## One unit: acquire + release, per-story 3 under global 10, in a worker\n")
        print("| root | us per cycle (median) [range] | ratio to local |")
        print("|---|---|---|")
        print(f"| local CapacitySource | {lo * 1e6:.1f} [{min(local) * 1e6:.1f}-"
              f"{max(local) * 1e6:.1f}] | 1 |")  # fmt: skip
        print(f"| DistributedCapacityRoot (TCP to the scheduler) | {re_ * 1e6:.0f} "
              f"[{min(remote) * 1e6:.0f}-{max(remote) * 1e6:.0f}] | {re_ / lo:,.0f} |")  # fmt: skip

        d = args.sleep
        best = optimum(d)
        alone, spread, whole = [], [], []
        for r in range(args.rounds):
            alone.append(asyncio.run(local_makespan(d)))
            started = time.perf_counter()
            futures = [
                client.submit(story_on_worker, d, f"bench-makespan-{r}", pure=False)
                for _ in range(STORIES)
            ]
            traces = client.gather(futures)
            whole.append(time.perf_counter() - started)
            spread.append(span(merge_traces((str(i), t) for i, t in enumerate(traces))))
        print(
            f"\n## Makespan: {STORIES} stories x {IMAGES} images of d = {d * 1000:.0f} ms, "
            f"{PER_STORY}/story, {GLOBAL} global; optimum {best:.3f} s\n"
        )
        print("| run | makespan (s, median) | / optimum [range] |")
        print("|---|---|---|")
        for label, xs in (
            ("one process, local tree", alone),
            (f"Dask, {args.workers} worker processes, first start to last end", spread),
            (f"Dask, {args.workers} worker processes, submit to gather", whole),
        ):
            m = statistics.median(xs)
            print(f"| {label} | {m:.3f} | {m / best:.3f} [{min(xs) / best:.3f}-"
                  f"{max(xs) / best:.3f}] |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
