"""Benchmarks of the scheduling core, each against a baseline run in the same process.

    python bench/bench_scheduling.py [--rounds 7] [--quick] [--instructions]

1. Overhead: 10 groups x 1,000 no-op tasks, 3 per group under 10 global, through
   HierarchicalTaskPoolRunner vs bare asyncio (two semaphores and a TaskGroup),
   interleaved and repeated; also with every task yielding once.
2. Makespan: 5 groups x 5 tasks sleeping d, all submitted at once, against the
   optimum d * max(ceil(M / per_group), ceil(G * M / global)); plus two groups
   and one group (sequential vs parallel), with bare asyncio alongside.
3. Memory: peak traced memory for 100,000 lazily pulled tasks vs 1,000.
4. Waiting stories: S stories (one runner each, 3 per story under 10 global,
   all started at once) of 20 no-op tasks each, for S = 10, 100, 1,000 and
   3,000: CPU per task, and its ratio to the cost with 10 stories, next to
   bare asyncio doing the same job. With ``--instructions``, the same for
   10 and 3,000 stories counted by callgrind (marginal: 12,000 more tasks
   spread over the stories, so setting up the stories is left out).

Machines are noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import math
import statistics
import sys
import time
import tracemalloc

from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj
from storylab.scheduling.sources import SourceFromIterable


async def noop() -> None:
    return None


async def yield_once() -> None:
    await asyncio.sleep(0)


# -- overhead -----------------------------------------------------------------
async def bare(groups: int, tasks: int, per_group: int, global_limit: int, body) -> None:
    shared = asyncio.Semaphore(global_limit)

    async def one(sem: asyncio.Semaphore) -> None:
        # group first, then global: holding a global unit while waiting for the
        # group's would waste it (the order the runner's capacity tree avoids too)
        async with sem, shared:
            await body()

    async with asyncio.TaskGroup() as tg:
        for _ in range(groups):
            sem = asyncio.Semaphore(per_group)
            for _ in range(tasks):
                tg.create_task(one(sem))


async def with_anyio(groups: int, tasks: int, per_group: int, global_limit: int, body) -> None:
    """The same job with anyio's CapacityLimiter (a dependency of httpx)."""
    import anyio

    shared = anyio.CapacityLimiter(global_limit)

    async def one(limiter) -> None:
        async with limiter, shared:
            await body()

    async with anyio.create_task_group() as tg:
        for _ in range(groups):
            limiter = anyio.CapacityLimiter(per_group)
            for _ in range(tasks):
                tg.start_soon(one, limiter)


async def with_runner(groups: int, tasks: int, per_group: int, global_limit: int, body) -> None:
    shared = CapacitySource(global_limit, name="global")

    async def group(i: int) -> None:
        cap = CapacitySource(per_group, shared, name=f"group-{i}")
        runner = HierarchicalTaskPoolRunner(f"g{i}", SourceBufferObj([body] * tasks), cap)
        async for _ in runner.run_tasks():
            pass

    await asyncio.gather(*(group(i) for i in range(groups)))


def timed(fn, *args) -> float:
    """CPU seconds of one run: the loop is single-threaded, and CPU time is far
    less disturbed than wall time by other processes on a busy machine."""
    gc.collect()
    start = time.process_time()
    asyncio.run(fn(*args))
    return time.process_time() - start


def overhead(rounds: int, groups: int, tasks: int) -> list[tuple]:
    """Per body: median CPU us/task of bare asyncio, the runner and anyio, in
    rotating order within each round; ratios are against bare asyncio."""
    rows = []
    n = groups * tasks
    contenders = (bare, with_runner, with_anyio)
    for label, body in (("no-op", noop), ("yield once", yield_once)):
        times: dict = {fn: [] for fn in contenders}
        for i in range(rounds):
            for k in range(len(contenders)):
                fn = contenders[(i + k) % len(contenders)]
                times[fn].append(timed(fn, groups, tasks, 3, 10, body) / n * 1e6)
        b, r, a = (statistics.median(times[fn]) for fn in contenders)
        # Paired ratios: each round's runner time over the same round's bare
        # time, so slow drifts of the machine cancel out.
        paired = sorted(x / y for x, y in zip(times[with_runner], times[bare], strict=True))
        best = min(times[with_runner]) / min(times[bare])  # timeit's habit: noise only adds
        rows.append((label, b, r, statistics.median(paired), a / b, paired[0], paired[-1], best))
    return rows


# -- makespan -----------------------------------------------------------------
async def makespan_runner(groups: int, tasks: int, d: float, per_group: int, glob: int) -> float:
    shared = CapacitySource(glob, name="global")
    loop = asyncio.get_running_loop()

    async def group(i: int) -> None:
        cap = CapacitySource(per_group, shared, name=f"group-{i}")
        thunks = [lambda: asyncio.sleep(d)] * tasks
        runner = HierarchicalTaskPoolRunner(f"g{i}", SourceBufferObj(thunks), cap)
        async for _ in runner.run_tasks():
            pass

    start = loop.time()
    await asyncio.gather(*(group(i) for i in range(groups)))
    return loop.time() - start


async def makespan_bare(groups: int, tasks: int, d: float, per_group: int, glob: int) -> float:
    shared = asyncio.Semaphore(glob)
    loop = asyncio.get_running_loop()

    async def one(sem):
        async with sem, shared:
            await asyncio.sleep(d)

    start = loop.time()
    async with asyncio.TaskGroup() as tg:
        for _ in range(groups):
            sem = asyncio.Semaphore(per_group)
            for _ in range(tasks):
                tg.create_task(one(sem))
    return loop.time() - start


def makespans(rounds: int, d: float) -> list[tuple[str, float, float, float, float]]:
    cases = [
        ("5 groups x 5, 3/group, 10 global", 5, 5, 3, 10),
        ("2 groups x 5, 3/group, 10 global", 2, 5, 3, 10),
        ("1 group x 5, parallel (3/group)", 1, 5, 3, 10),
        ("1 group x 5, sequential (1/group)", 1, 5, 1, 10),
    ]
    rows = []
    for label, g, m, per, glob in cases:
        optimum = d * max(math.ceil(m / per), math.ceil(g * m / glob))
        r = statistics.median(
            asyncio.run(makespan_runner(g, m, d, per, glob)) for _ in range(rounds)
        )
        b = statistics.median(asyncio.run(makespan_bare(g, m, d, per, glob)) for _ in range(rounds))
        rows.append((label, optimum, r, r / optimum, b / optimum))
    return rows


# -- memory -------------------------------------------------------------------
async def lazily(n: int) -> None:
    shared = CapacitySource(10, name="global")
    cap = CapacitySource(3, shared, name="group")

    def thunks():
        for _ in range(n):
            yield noop

    runner = HierarchicalTaskPoolRunner("mem", SourceFromIterable(thunks()), cap)
    async for _ in runner.run_tasks():
        pass


def peak_memory(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    asyncio.run(lazily(n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


# -- many waiting stories ----------------------------------------------------
async def stories_runner(stories: int, tasks: int, body=noop) -> None:
    shared = CapacitySource(10, name="global")

    async def story(i: int) -> None:
        cap = CapacitySource(3, shared, name=f"story-{i}")
        runner = HierarchicalTaskPoolRunner(f"s{i}", SourceBufferObj([body] * tasks), cap)
        async for _ in runner.run_tasks():
            pass

    await asyncio.gather(*(story(i) for i in range(stories)))


async def stories_bare(stories: int, tasks: int, body=noop) -> None:
    await bare(stories, tasks, 3, 10, body)


STORY_COUNTS = (10, 100, 1_000, 3_000)


def waiting_stories(rounds: int, tasks: int = 20) -> list[tuple[int, float, float]]:
    """Median CPU us/task of the runner and of bare asyncio for each story count;
    within a round every count runs once, runner and bare in turn."""
    times: dict = {(fn, s): [] for fn in (stories_runner, stories_bare) for s in STORY_COUNTS}
    for i in range(rounds):
        for s in STORY_COUNTS:
            pair = (stories_runner, stories_bare) if i % 2 == 0 else (stories_bare, stories_runner)
            for fn in pair:
                times[(fn, s)].append(timed(fn, s, tasks) / (s * tasks) * 1e6)
    return [
        (
            s,
            statistics.median(times[(stories_runner, s)]),
            statistics.median(times[(stories_bare, s)]),
        )
        for s in STORY_COUNTS
    ]


def story_instructions_per_task(variant: str, stories: int, extra: int = 12_000) -> float:
    """Marginal callgrind instructions per task with ``stories`` stories waiting:
    4 tasks a story against 4 + extra / stories, so every story count adds
    the same number of tasks (few extra tasks would leave the count to noise)."""
    return _marginal(["stories-" + variant, str(stories)], 4, 4 + extra // stories, stories)


# -- instructions (valgrind) -------------------------------------------------------
VARIANTS = {"bare": bare, "runner": with_runner, "anyio": with_anyio}
# The same job with tasks that suspend once (each needs an asyncio task of its
# own in the runner too, and the limits are contended), counted as well.
BODIES = {"": noop, "-yield": yield_once}
STORY_VARIANTS = {"stories-runner": stories_runner, "stories-bare": stories_bare}
STORY_VARIANTS |= {
    name + "-yield": functools.partial(fn, body=yield_once) for name, fn in STORY_VARIANTS.items()
}


def _marginal(child: list[str], small: int, large: int, groups: int) -> float:
    import re
    import subprocess

    counts = []
    for n in (small, large):
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--child", *child, str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        counts.append(int(re.search(r"Collected : (\d+)", proc.stderr).group(1)))
    return (counts[1] - counts[0]) / (groups * (large - small))


def instructions_per_task(variant: str, small: int = 500, large: int = 2500) -> float:
    """Marginal instructions per no-op task, counted by callgrind.

    Instruction counts do not depend on what else the machine is doing, so this
    ratio is repeatable where time ratios are noisy. Running 10 groups of
    ``small`` and of ``large`` tasks and dividing the difference by the extra
    tasks removes the interpreter's start-up.
    """
    return _marginal([variant], small, large, 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer tasks, for a smoke run")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions with valgrind"
    )
    parser.add_argument(
        "--only-stories", action="store_true", help="run only the waiting-stories section"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] in STORY_VARIANTS:
            variant, stories, n = args.child
            asyncio.run(STORY_VARIANTS[variant](int(stories), int(n)))
        else:
            variant, n = args.child
            name, _, suffix = variant.partition("-")
            asyncio.run(VARIANTS[name](10, int(n), 3, 10, BODIES["-" + suffix if suffix else ""]))
        return 0
    print(f"python {sys.version.split()[0]}, rounds={args.rounds}\n")
    if not args.only_stories:
        others(args)
    stories_section(args)
    return 0


def stories_section(args) -> None:
    print("\n## Waiting stories: S stories x 20 no-op tasks, 3/story under 10 global\n")
    print(
        "| stories | runner CPU us/task | runner / runner with 10 (goal <= 1.5) "
        "| bare asyncio CPU us/task | bare / bare with 10 |"
    )
    print("|---|---|---|---|---|")
    rows = waiting_stories(args.rounds)
    r10, b10 = rows[0][1], rows[0][2]
    for s, r, b in rows:
        print(f"| {s:,} | {r:.2f} | {r / r10:.2f} | {b:.2f} | {b / b10:.2f} |")
    if args.instructions:
        print("\n## Waiting stories in instructions (callgrind, marginal per task)\n")
        print("| stories | runner | runner / runner with 10 | bare asyncio | bare / bare with 10 |")
        print("|---|---|---|---|---|")
        per = {
            (v, s): story_instructions_per_task(v, s)
            for v in ("runner", "bare")
            for s in (STORY_COUNTS[0], STORY_COUNTS[-1])
        }
        for s in (STORY_COUNTS[0], STORY_COUNTS[-1]):
            r, b = per[("runner", s)], per[("bare", s)]
            r10, b10 = per[("runner", STORY_COUNTS[0])], per[("bare", STORY_COUNTS[0])]
            print(f"| {s:,} | {r:,.0f} | {r / r10:.2f} | {b:,.0f} | {b / b10:.2f} |")
        # No-op tasks end inside the filler, so with 10 stories the units are
        # never contended while with 3,000 they are: the same with tasks
        # that yield once compares the fair choice under contention at both.
        print("\n## The same with tasks that yield once (callgrind, marginal per task)\n")
        print("| stories | runner | runner / runner with 10 | bare asyncio | bare / bare with 10 |")
        print("|---|---|---|---|---|")
        per = {
            (v, s): story_instructions_per_task(v + "-yield", s)
            for v in ("runner", "bare")
            for s in (STORY_COUNTS[0], STORY_COUNTS[-1])
        }
        for s in (STORY_COUNTS[0], STORY_COUNTS[-1]):
            r, b = per[("runner", s)], per[("bare", s)]
            r10, b10 = per[("runner", STORY_COUNTS[0])], per[("bare", STORY_COUNTS[0])]
            print(f"| {s:,} | {r:,.0f} | {r / r10:.2f} | {b:,.0f} | {b / b10:.2f} |")


def others(args) -> None:
    tasks = 100 if args.quick else 1000

    print(f"## Overhead: 10 groups x {tasks} tasks, 3/group under 10 global\n")
    print(
        "| tasks | bare asyncio CPU us/task | runner CPU us/task "
        "| runner / bare, best of rounds (goal <= 1.5) "
        "| runner / bare, median of paired rounds [range] "
        "| anyio CapacityLimiter / bare |"
    )
    print("|---|---|---|---|---|---|")
    for label, b, r, ratio, anyio_ratio, lo, hi, best in overhead(args.rounds, 10, tasks):
        print(
            f"| {label} | {b:.2f} | {r:.2f} | {best:.2f} | {ratio:.2f} [{lo:.2f}-{hi:.2f}] "
            f"| {anyio_ratio:.2f} |"
        )

    if args.instructions:
        per = {v: instructions_per_task(v) for v in VARIANTS}
        print("\n## Overhead in instructions (valgrind callgrind), no-op tasks\n")
        print("| variant | instructions per task | ratio to bare asyncio |")
        print("|---|---|---|")
        for v, n in per.items():
            print(f"| {v} | {n:,.0f} | {n / per['bare']:.2f} |")
        per = {v: instructions_per_task(v + "-yield") for v in ("bare", "runner")}
        print("\n## Overhead in instructions (valgrind callgrind), tasks that yield once\n")
        print("| variant | instructions per task | ratio to bare asyncio |")
        print("|---|---|---|")
        for v, n in per.items():
            print(f"| {v} | {n:,.0f} | {n / per['bare']:.2f} |")

    d = 0.05
    print(f"\n## Makespan: tasks sleeping d = {d * 1000:.0f} ms, all submitted at once\n")
    print("| case | optimum (s) | runner (s) | runner / optimum (goal <= 1.05) | bare / optimum |")
    print("|---|---|---|---|---|")
    for label, opt, r, ratio, bratio in makespans(args.rounds, d):
        print(f"| {label} | {opt:.3f} | {r:.3f} | {ratio:.3f} | {bratio:.3f} |")

    small, large = peak_memory(1_000), peak_memory(100_000)
    print("\n## Memory: lazily pulled tasks (SourceFromIterable over a generator)\n")
    print("| tasks | peak traced memory (MB) |")
    print("|---|---|")
    print(f"| 1,000 | {small:.2f} |")
    print(f"| 100,000 | {large:.2f} |")
    print(f"\nDifference: {large - small:.2f} MB (goal <= 10 MB)")


if __name__ == "__main__":
    sys.exit(main())
