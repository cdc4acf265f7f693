"""A pipeline run in its own process by the crash and race tests.

    python crash_worker.py run GRAPH LOG CHILDREN_JSON   run (or resume) the parent
    python crash_worker.py race GRAPH NAMES_JSON GO_FILE  create children by name, racing

With STORYLAB_TEST_BLOCK=1, children whose data has "block": true hang, so the
test can kill the process while they are InProgress. A child with
"flaky": true fails on its first run ever (a marker file remembers it).
Every execution of a child (and of the parent) appends a line to LOG, so the
test can count runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceFromIterable
from storylab.entities import EntityGraph, Return, RunnableEntity

LOG: Path


def note(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")


class CrashChild(RunnableEntity):
    async def reset(self):
        note(f"reset {self.name}")

    async def run_impl(self):
        note(f"run {self.name} {os.getpid()}")
        yield self.status("RUNNING", f"working on {self.name}")
        if self.data.get("block") and os.environ.get("STORYLAB_TEST_BLOCK") == "1":
            await asyncio.sleep(3600)
        await asyncio.sleep(0.02)
        marker = LOG.with_name(f"failed-once-{self.name}")
        if self.data.get("flaky") and not marker.exists():
            marker.touch()
            raise RuntimeError(f"{self.name}: first attempt fails")
        yield Return({"name": self.name, "pid": os.getpid()})


class CrashParent(RunnableEntity):
    async def run_impl(self):
        note(f"parent {os.getpid()}")
        items = [{"name": c["name"], "data": c} for c in self.data["children"]]
        source = SourceFromIterable(self.parallel_calls(CrashChild, items))
        runner = HierarchicalTaskPoolRunner("crash", source, CapacitySource(2, name="crash"))
        done, failed = [], []
        async for env in runner.run_tasks():
            if env.type == "INTERMEDIATE":
                yield env.value
            elif env.type == "FINAL":
                done.append(env.value["name"])
            else:
                failed.append(str(env.error))
        if failed:
            raise RuntimeError(f"{len(failed)} child(ren) failed: {failed}")
        yield Return(sorted(done))


def run(graph_path: str, children: list[dict]) -> int:
    with EntityGraph.open(graph_path) as graph:
        parent = graph.create_or_retrieve(CrashParent, "crash-parent", {"children": children})
        try:
            result = asyncio.run(parent.run())
        except RuntimeError as exc:
            print(f"failed: {exc}", flush=True)
            return 3
    print(json.dumps(result), flush=True)
    return 0


def race(graph_path: str, names: list[str], go_file: str) -> int:
    with EntityGraph.open(graph_path) as graph:
        parent = graph.create_or_retrieve(CrashParent, "race-parent", {"children": []})
        Path(f"{go_file}.ready-{os.getpid()}").touch()  # at the starting line
        while not os.path.exists(go_file):
            time.sleep(0.001)

        async def create() -> dict[str, str]:
            ids = {}
            for name in names:
                ids[name] = parent.append_or_retrieve_call(CrashChild, name, {"by": os.getpid()}).id
                await asyncio.sleep(0)  # let the batched commit happen between creations
            return ids

        print(json.dumps(asyncio.run(create())), flush=True)
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "run":
        LOG = Path(sys.argv[3])
        sys.exit(run(sys.argv[2], json.loads(sys.argv[4])))
    if mode == "race":
        LOG = Path(os.devnull)
        sys.exit(race(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]))
    sys.exit(f"unknown mode {mode!r}")
