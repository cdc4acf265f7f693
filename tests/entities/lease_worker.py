"""An entity that works until told to stop, for the lease tests that need a
second process:

    python lease_worker.py GRAPH NODE_ID     run (or wait for) the node; print its result

Every execution of ``run_impl`` appends ``run <pid>`` to the file named by
the node's data ``log``; it stops once the file named by ``stop`` exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from storylab.entities import EntityGraph, Return, RunnableEntity


class TickWork(RunnableEntity):
    async def run_impl(self):
        data = self.data
        with open(data["log"], "a") as f:
            f.write(f"run {os.getpid()}\n")
        stop = Path(data["stop"])
        steps = 0
        while not stop.exists():
            steps += 1
            yield self.progress({"step": steps})
            await asyncio.sleep(0.01)
        await self.update_entity_data(steps=steps)
        yield Return({"steps": steps, "pid": os.getpid()})


def main(graph_path: str, node_id: str) -> int:
    with EntityGraph.open(graph_path, create=False) as graph:
        result = asyncio.run(graph.entity(node_id).run())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
