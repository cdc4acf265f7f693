"""A process that makes many small commits to a graph, for the contention
tests:

    python commit_worker.py GRAPH TAG COUNT

It runs COUNT root entities named ``TAG-<i>`` one after another, each of
which logs a few progress envelopes and returns, and prints how many it ran.
``$STORYLAB_LEASE_TTL`` sets its leases' lifetime as for any process.
"""

from __future__ import annotations

import asyncio
import sys

from storylab.entities import EntityGraph, Return, RunnableEntity


class Bump(RunnableEntity, type_name="ContentionBump"):
    async def run_impl(self):
        for i in range(self.data["steps"]):
            yield self.progress({"step": i})
            await asyncio.sleep(0)
        await self.update_entity_data(done=True)
        yield Return(self.data["steps"])


async def run(graph_url: str, tag: str, count: int) -> int:
    with EntityGraph.open(graph_url, create=False) as graph:
        for i in range(count):
            entity = graph.create(Bump, f"{tag}-{i}", {"steps": 5})
            await entity.run()
    return count


if __name__ == "__main__":
    done = asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(done, flush=True)
