"""``storylab demo``: the capacity tree at work on plain coroutines."""

from __future__ import annotations

import argparse
import asyncio

from storylab._sync import run_sync
from storylab.cli.args import EXIT_OK, int_in_range, non_negative_float, positive_int
from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj


def configure(parser: argparse.ArgumentParser) -> None:
    # The upper bounds keep a typo from printing a million lines.
    many = int_in_range(1, 1000)
    parser.add_argument("--groups", type=many, default=5, help="number of groups (default 5)")
    parser.add_argument("--tasks", type=many, default=5, help="tasks per group (default 5)")
    parser.add_argument(
        "--per-group", type=positive_int, default=3, help="limit per group (default 3)"
    )
    parser.add_argument(
        "--global-limit", type=positive_int, default=10, help="shared limit (default 10)"
    )
    parser.add_argument(
        "--seconds",
        type=non_negative_float,
        default=0.2,
        help="how long each task takes, in seconds >= 0 (default 0.2)",
    )


async def _demo(args: argparse.Namespace) -> list[str]:
    shared = CapacitySource(args.global_limit, name="global")
    lines: list[str] = []
    peak = 0

    def task(group: str, n: int):
        async def run() -> str:
            nonlocal peak
            peak = max(peak, shared.in_use)
            await asyncio.sleep(args.seconds)
            return f"{group}-{n}"

        return run

    async def group(index: int) -> None:
        name = chr(ord("A") + index) if index < 26 else f"G{index}"
        cap = CapacitySource(args.per_group, shared, name=f"group-{name}")
        source = SourceBufferObj([task(name, n) for n in range(1, args.tasks + 1)])
        runner = HierarchicalTaskPoolRunner(f"demo-{name}", source, cap)
        async with runner.run_tasks() as results:
            async for env in results:
                line = (
                    f"{env.type:<5} group {name} task {env.task_id}  "
                    f"(global in use {shared.in_use})"
                )
                lines.append(line)
                print(line, flush=True)

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(group(i) for i in range(args.groups)))
    print(
        f"{args.groups * args.tasks} tasks in {loop.time() - start:.2f}s; "
        f"peak global in use {peak}/{args.global_limit}"
    )
    return lines


def main(args: argparse.Namespace) -> int:
    # Every value was checked while parsing (argparse exits 2 with the flag's name).
    run_sync(_demo(args))
    return EXIT_OK
