"""Writes entities in one batch, in the order given, for the opposite-order
tests:

    python order_worker.py URL WHERE TAG NAME [NAME ...]

WHERE is ``-`` to create root entities called NAME, ``update`` to merge
``{TAG's name: True}`` into the data of the idle nodes whose ids are given
as NAMEs, ``reopen`` to make those nodes Pending again, else the id of an
idle parent (no run holds it) to create the children called NAME under.
Inside a running event loop, so that every write joins one open transaction
(a batch), it writes the first NAME, touches ``TAG.holding`` and then
waits, blocking the loop so the batch stays open, until ``TAG.go`` exists;
then it writes the other names, commits, and prints one JSON line:
``{"ids": {NAME: its id, or its status after a reopen}}``, or
``{"error": "Type: message"}`` (exit status 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from storylab.entities import EntityGraph, Return, RunnableEntity


class OrderNode(RunnableEntity, type_name="ConformanceOrderNode"):
    async def run_impl(self):
        yield Return(self.name)


def _wait_for(path: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


async def _write_all(graph, where: str, tag: str, names: list[str]) -> dict:
    ids = {}
    for i, name in enumerate(names):
        if where == "update":
            graph.update_data(name, "merge", {os.path.basename(tag): True})
            ids[name] = name
        elif where == "reopen":
            ids[name] = graph.reopen(name).status
        else:
            parent = None if where == "-" else where
            ids[name] = graph.insert_or_get_node(OrderNode, name, {"by": tag}, parent).id
        if i == 0:
            open(f"{tag}.holding", "w").close()
            _wait_for(f"{tag}.go")  # no await: the batch stays open meanwhile
    await graph.settle()
    return ids


def main(url: str, where: str, tag: str, names: list[str]) -> int:
    graph = EntityGraph.open(url, create=False, busy_timeout=20.0)
    try:
        ids = asyncio.run(_write_all(graph, where, tag, names))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    finally:
        graph.close()
    print(json.dumps({"ids": ids}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
