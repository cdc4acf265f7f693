"""Many runners under one limit, all started at once.

Every runner has its own story limit under one shared root. Whatever the
number of runners, the kind of source (a synchronous list of thunks, or an
async iterable that must be awaited) and the policy, every task must run,
every unit must be back at the end, nobody may be left waiting, and no
error may be reported to the event loop (a release must never call back into
a runner on its own stack, which is how a deep recursion used to start).

A hang shows up as the test's own timeout, not as a time measurement.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj
from storylab.scheduling.sources import SourceFromIterable

TASKS_PER_RUNNER = 3


async def _no_op(i: int) -> int:
    return i


async def _yield_once(i: int) -> int:
    await asyncio.sleep(0)
    return i


def _thunks(runner: int, body) -> list:
    return [lambda k=k: body(runner * TASKS_PER_RUNNER + k) for k in range(TASKS_PER_RUNNER)]


async def _async_iter(thunks):
    for thunk in thunks:
        await asyncio.sleep(0)
        yield thunk


def _source(kind: str, thunks: list):
    if kind == "sync":
        return SourceBufferObj(thunks)
    return SourceFromIterable(_async_iter(thunks))


async def _run_many(n: int, kind: str, policy: str, body, per_story: int) -> dict:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    root = CapacitySource(10, name="global", policy=policy)
    if per_story is None:  # every runner directly on the shared root
        stories = [root] * n
    else:
        stories = [CapacitySource(per_story, root, name=f"story-{i}") for i in range(n)]
    seen: list[int] = []

    async def consume(i: int) -> None:
        runner = HierarchicalTaskPoolRunner(f"r{i}", _source(kind, _thunks(i, body)), stories[i])
        async with runner.run_tasks() as results:
            async for envelope in results:
                assert envelope.type == "FINAL", envelope
                seen.append(envelope.value)

    await asyncio.gather(*(consume(i) for i in range(n)))
    return {
        "seen": sorted(seen),
        "root_in_use": root.in_use,
        "root_waiting": root.waiting,
        "stories_in_use": sum(s.in_use for s in set(stories)),
        "holders": [h for s in set(stories) for h in s.statistics().holders],
        "loop_errors": loop_errors,
    }


def _check(result: dict, n: int, caplog) -> None:
    assert result["loop_errors"] == []
    assert "RecursionError" not in caplog.text
    assert result["root_in_use"] == 0
    assert result["stories_in_use"] == 0
    assert result["root_waiting"] == 0
    assert result["holders"] == []
    assert result["seen"] == list(range(n * TASKS_PER_RUNNER))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("per_story", [3, None], ids=["story-limit-3", "on-the-root"])
@pytest.mark.parametrize("policy", ["fair", "fifo"])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("n", [1_000, 3_000])
def test_many_runners_finish_and_give_every_unit_back(n, kind, policy, per_story, caplog):
    caplog.set_level(logging.DEBUG)
    result = asyncio.run(_run_many(n, kind, policy, _no_op, per_story=per_story))
    _check(result, n, caplog)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", ["fair", "fifo"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_many_runners_with_tasks_that_yield(kind, policy, caplog):
    # Tasks that yield keep the root full while runners queue behind it.
    caplog.set_level(logging.DEBUG)
    result = asyncio.run(_run_many(1_000, kind, policy, _yield_once, per_story=1))
    _check(result, 1_000, caplog)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy", ["fair", "fifo"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ten_thousand_runners(kind, policy, caplog):
    caplog.set_level(logging.DEBUG)
    result = asyncio.run(_run_many(10_000, kind, policy, _no_op, per_story=3))
    _check(result, 10_000, caplog)
