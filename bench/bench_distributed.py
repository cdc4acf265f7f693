"""Benchmarks of the global limit held on Dask distributed, against the local one.

    python bench/bench_distributed.py [--rounds 5] [--cycles 20000] [--workers 4]

1. The cost of one unit: ``await story.acquire(); story.release()`` through a
   per-story CapacitySource(3) under the global limit of 10, measured inside a
   Dask worker process (where stories run): with a local root, and with a
   DistributedCapacityRoot, whose share of the limit comes from the
   scheduler. Amortised: ``--cycles`` cycles, then the share handed back to
   the scheduler and awaited, all timed (the root's one-time registration is
   not). Median of ``--rounds`` rounds, the two roots in turn.
2. Makespan: S stories x 5 images (S = 5 and 20), each image a sleep of d,
   3 per story and 10 in total, against the ideal bound
   d * max(ceil(5 / 3), ceil(S * 5 / 10)): in one process (S runners under
   one local tree), and as S Dask tasks over ``--workers`` worker processes
   under the distributed root, one root per worker as ``storylab run
   --cluster`` has (measured from the first image start to the last image
   end in the merged trace; the time to submit and gather is shown beside it).

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

IMAGES, PER_STORY, GLOBAL = 5, 3, 10
_ROOTS: dict[str, DistributedCapacityRoot] = {}


def worker_root(name: str) -> DistributedCapacityRoot:
    """One root per worker process and name, shared by its stories."""
    root = _ROOTS.get(name)
    if root is None:
        root = _ROOTS[name] = DistributedCapacityRoot(GLOBAL, name=name)
    return root


# -- 1. one unit -------------------------------------------------------------------
async def unit_cost(cycles: int, distributed: bool, name: str) -> float:
    """Seconds per acquire+release cycle (runs inside a worker process)."""
    root: CapacitySource = (
        DistributedCapacityRoot(GLOBAL, name=name) if distributed else CapacitySource(GLOBAL)
    )
    story = CapacitySource(PER_STORY, root)
    if isinstance(root, DistributedCapacityRoot):
        await story.acquire()  # the first one registers with the allocator: not timed
        story.release()
        await root.drain()
    started = time.perf_counter()
    for _ in range(cycles):
        await story.acquire()
        story.release()
    if isinstance(root, DistributedCapacityRoot):
        await root.drain()  # the share is back on the scheduler
        elapsed = time.perf_counter() - started
        await root.close()
        return elapsed / cycles
    return (time.perf_counter() - started) / cycles


# -- 2. makespan ---------------------------------------------------------------------
def optimum(d: float, stories: int) -> float:
    return d * max(math.ceil(IMAGES / PER_STORY), math.ceil(stories * IMAGES / GLOBAL))


async def one_story(story: CapacitySource, d: float) -> None:
    async def image() -> None:
        await asyncio.sleep(d)

    runner = HierarchicalTaskPoolRunner("images", [image] * IMAGES, story)
    async with runner.run_tasks() as results:
        async for _ in results:
            pass


async def local_makespan(d: float, stories: int) -> float:
    root = CapacitySource(GLOBAL, name="global")
    with Trace(clock=time.time) as trace:
        await asyncio.gather(
            *(one_story(CapacitySource(PER_STORY, root), d) for _ in range(stories))
        )
    return span(trace)


async def story_on_worker(d: float, name: str) -> Trace:
    root = worker_root(name)
    with Trace(clock=time.time) as trace:
        async with root.guard():
            await one_story(CapacitySource(PER_STORY, root), d)
    return trace


def span(trace: Trace) -> float:
    starts = [e.t for e in trace.events if e.kind is EventKind.TASK_START]
    ends = [e.t for e in trace.events if e.kind is EventKind.TASK_END]
    return max(ends) - min(starts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=20000)
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
        print("| root | us per cycle, amortised (median) [range] | ratio to local |")
        print("|---|---|---|")
        print(f"| local CapacitySource | {lo * 1e6:.1f} [{min(local) * 1e6:.1f}-"
              f"{max(local) * 1e6:.1f}] | 1 |")  # fmt: skip
        print(f"| DistributedCapacityRoot (a share from the scheduler) | {re_ * 1e6:.1f} "
              f"[{min(remote) * 1e6:.1f}-{max(remote) * 1e6:.1f}] | {re_ / lo:,.2f} "
              "(goal <= 10) |")  # fmt: skip

        d = args.sleep
        for stories in (5, 20):
            best = optimum(d, stories)
            alone, spread, whole = [], [], []
            for r in range(args.rounds):
                alone.append(asyncio.run(local_makespan(d, stories)))
                started = time.perf_counter()
                futures = [
                    client.submit(story_on_worker, d, f"bench-makespan-{stories}-{r}", pure=False)
                    for _ in range(stories)
                ]
                traces = client.gather(futures)
                whole.append(time.perf_counter() - started)
                spread.append(span(merge_traces((str(i), t) for i, t in enumerate(traces))))
            print(
                f"\n## Makespan: {stories} stories x {IMAGES} images of d = {d * 1000:.0f} ms, "
                f"{PER_STORY}/story, {GLOBAL} global; ideal bound {best:.3f} s\n"
            )
            print("| run | makespan (s, median) | / bound, median [range] (goal <= 1.05) |")
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
