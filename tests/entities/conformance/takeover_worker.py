"""Runs parents and children of the take-over test, in the order given:

    python takeover_worker.py URL GO_FILE ID [ID ...]

Waits until GO_FILE exists (so that two such processes start together),
then runs every node ID at once on one event loop and prints one JSON line:
``{"results": {id: value}, "errors": {id: "Type: message"}}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from storylab.entities import EntityGraph, Return, RunnableEntity


class TakeoverChild(RunnableEntity, type_name="ConformanceTakeoverChild"):
    async def run_impl(self):
        for step in range(3):
            yield self.progress({"step": step})
            await asyncio.sleep(0.01)
        yield Return(self.data["n"] * 3)


class TakeoverParent(RunnableEntity, type_name="ConformanceTakeoverParent"):
    async def run_impl(self):
        kid = self.append_or_retrieve_call(TakeoverChild, "kid", {"n": self.data["n"]})
        value = yield self.delegate(kid)
        yield Return(value + 1)


async def _run_all(graph, ids: list[str]) -> dict:
    async def one(id: str):
        return await graph.entity(id).run()

    outcomes = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
    results, errors = {}, {}
    for id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            errors[id] = f"{type(outcome).__name__}: {outcome}"
        else:
            results[id] = outcome
    return {"results": results, "errors": errors}


def main(url: str, go: str, ids: list[str]) -> int:
    graph = EntityGraph.open(url, create=False, lease_ttl=5.0, commit_interval=0.05)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                print(json.dumps({"results": {}, "errors": {"": "never told to go"}}))
                return 1
            time.sleep(0.002)
        out = asyncio.run(_run_all(graph, ids))
    finally:
        graph.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
