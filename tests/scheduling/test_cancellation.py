"""Capacity never leaks, whatever stops the consumer of ``run_tasks()``.

The runner's clean-up (cancel what runs, wait, give units back, close the
source) has awaits in it, so a second cancellation can land in the middle of
it: a timeout inside an enclosing scope that is cancelled too, a second
interrupt in a notebook, a cancel while ``aclose()`` is already cleaning up
after a ``break``. Whatever arrives, every unit must be back when the
consumer finishes, and the cancellation must still reach the caller.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import replay

from storylab.scheduling import (
    CapacitySource,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    SourceFromIterable,
    TaskStream,
    Trace,
)


async def quick():
    return "quick"


async def hang():
    await asyncio.Event().wait()


def acquires_at_once(src: CapacitySource) -> bool:
    """True if a fresh ``acquire()`` completes without suspending (then undone)."""
    coro = src.acquire(owner="probe")
    try:
        coro.send(None)
    except StopIteration:
        src.release(owner="probe")
        return True
    coro.close()
    return False


# -- the two minimal cases -----------------------------------------------------


async def test_a_cancel_during_aclose_after_a_break_returns_every_unit():
    # quick ends first; in the very step its unit comes back, hang is started
    # (spawned, not yet run). The consumer then leaves and is cancelled while
    # aclose() waits for hang to go away.
    cap = CapacitySource(1, name="story")
    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([quick, hang]), cap)
    stream = runner.run_tasks()

    async def consumer():
        first = await stream.__anext__()
        assert first.value == "quick"
        asyncio.current_task().cancel()  # lands at aclose()'s first await
        await stream.aclose()

    task = asyncio.ensure_future(consumer())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cap.in_use == 0
    assert cap.statistics().holders == ()
    assert acquires_at_once(cap)


@pytest.mark.parametrize("timeout_at", range(4))
@pytest.mark.parametrize("outer_after", range(4))
async def test_a_timeout_then_a_cancel_of_the_enclosing_scope_returns_every_unit(
    timeout_at, outer_after
):
    # An asyncio.timeout expires, and while the runner cleans up after it the
    # enclosing scope is cancelled too. Where exactly the two land (relative
    # to quick finishing and hang being spawned) is swept step by step.
    cap = CapacitySource(1, name="story")
    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([quick, hang]), cap)
    loop = asyncio.get_running_loop()

    async def consumer():
        async with asyncio.timeout(None) as deadline:
            _after_steps(loop, timeout_at, lambda: deadline.reschedule(loop.time()))
            async with runner.run_tasks() as results:
                async for _ in results:
                    pass

    task = asyncio.ensure_future(consumer())
    _after_steps(loop, timeout_at + 1 + outer_after, task.cancel)
    with pytest.raises((asyncio.CancelledError, TimeoutError)):
        await task
    assert cap.in_use == 0
    assert acquires_at_once(cap)


async def test_many_cancels_during_clean_up_are_held_until_it_ends_then_raised_once():
    cap = CapacitySource(2, name="story")
    ended = asyncio.Event()

    async def stubborn():
        try:
            await asyncio.Event().wait()
        finally:
            # Clean-up that takes a few steps, during which more cancels land.
            for _ in range(5):
                await asyncio.shield(asyncio.sleep(0))
            ended.set()

    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([stubborn, quick]), cap)

    async def consumer():
        async with runner.run_tasks() as results:
            async for _ in results:
                break

    task = asyncio.ensure_future(consumer())
    for _ in range(3):
        await asyncio.sleep(0)
    for _ in range(4):
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()  # the consumer finished only once stubborn had ended
    assert cap.in_use == 0


# -- the stream as an async context manager -----------------------------------


async def test_run_tasks_is_an_async_context_manager_that_closes_on_break():
    cap = CapacitySource(3, name="story")
    closed = []

    def thunks():
        try:
            yield quick
            yield hang
            yield hang
            yield hang
        finally:
            closed.append(True)

    runner = HierarchicalTaskPoolRunner("r", SourceFromIterable(thunks()), cap)
    async with runner.run_tasks() as results:
        assert isinstance(results, TaskStream)
        async for env in results:
            assert env.value == "quick"
            break
        # still inside the block: the run is open, its units are held
        assert cap.in_use == 3
    # leaving the block closed it there and then, not at garbage collection
    assert cap.in_use == 0
    assert closed == [True]
    assert runner.statistics().running is False


async def test_an_exception_in_the_block_closes_the_run_and_propagates():
    cap = CapacitySource(2, name="story")
    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([quick, hang, hang]), cap)
    with pytest.raises(KeyError):
        async with runner.run_tasks() as results:
            async for _ in results:
                raise KeyError("boom")
    assert cap.in_use == 0


async def test_a_stream_left_unopened_starts_nothing():
    cap = CapacitySource(1, name="story")
    started = []

    async def task():
        started.append(1)

    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([task]), cap)
    async with runner.run_tasks():
        pass
    assert started == [] and cap.in_use == 0
    # the runner is free for a real run afterwards
    assert [e.type async for e in runner.run_tasks()] == ["FINAL"]


async def test_the_stream_still_works_with_aclosing_and_anext():
    cap = CapacitySource(1, name="story")
    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([quick, hang]), cap)
    async with aclosing(runner.run_tasks()) as stream:
        env = await anext(stream)
        assert env.value == "quick"
    assert cap.in_use == 0


# -- property test: random consumers that stop in every way --------------------


@dataclass(frozen=True)
class Consumer:
    wrap: str  # "plain", "async_with" or "aclosing"
    tasks: tuple[int, ...]  # per task: steps before it ends; -1 = never ends
    break_after: int | None  # leave after this many envelopes
    first_cancel: int | None  # loop steps until the first cancel (a backstop too)
    second_cancel: int | None  # steps after the first until another one
    as_timeout: bool  # the first cancel is an asyncio.timeout expiring
    cancel_in_aclose: bool  # after a break, cancel ourselves while closing


consumers = st.builds(
    Consumer,
    wrap=st.sampled_from(["plain", "async_with", "aclosing"]),
    tasks=st.lists(st.integers(-1, 3), max_size=6).map(tuple),
    break_after=st.none() | st.integers(0, 4),
    first_cancel=st.none() | st.integers(0, 12),
    second_cancel=st.none() | st.integers(0, 4),
    as_timeout=st.booleans(),
    cancel_in_aclose=st.booleans(),
)


@st.composite
def scenarios(draw):
    root = draw(st.integers(1, 4))
    people = draw(st.lists(st.tuples(st.integers(1, 3), consumers), min_size=1, max_size=4))
    policy = draw(st.sampled_from(["fair", "fifo"]))
    return root, people, policy


def make_task(steps: int):
    async def task():
        if steps < 0:
            await hang()
        for _ in range(steps):
            await asyncio.sleep(0)
        return steps

    return task


async def drive(c: Consumer, runner: HierarchicalTaskPoolRunner) -> None:
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    seen = 0

    async def read(stream) -> None:
        nonlocal seen
        async for _ in stream:
            seen += 1
            if c.break_after is not None and seen >= c.break_after:
                if c.cancel_in_aclose:
                    me.cancel()  # lands inside the clean-up that follows
                return

    async def run() -> None:
        if c.wrap == "async_with":
            async with runner.run_tasks() as stream:
                await read(stream)
        elif c.wrap == "aclosing":
            async with aclosing(runner.run_tasks()) as stream:
                await read(stream)
        else:  # a return inside async for leaves closing to the garbage collector
            await read(runner.run_tasks())

    if c.as_timeout and c.first_cancel is not None:
        async with asyncio.timeout(None) as deadline:
            when = c.first_cancel

            def expire() -> None:
                deadline.reschedule(loop.time())

            _after_steps(loop, when, expire)
            await run()
    else:
        await run()


def _after_steps(loop: asyncio.AbstractEventLoop, steps: int, fn) -> None:
    """Call ``fn`` after ``steps`` iterations of the loop."""
    if steps <= 0:
        loop.call_soon(fn)
    else:
        loop.call_soon(_after_steps, loop, steps - 1, fn)


async def run_scenario(root_cap: int, people, policy: str):
    loop = asyncio.get_running_loop()
    root = CapacitySource(root_cap, name="root", policy=policy)
    leaves = [CapacitySource(cap, root, name=f"leaf{i}") for i, (cap, _) in enumerate(people)]
    with Trace() as trace:
        tasks = []
        for i, (_, c) in enumerate(people):
            thunks = [make_task(s) for s in c.tasks]
            runner = HierarchicalTaskPoolRunner(f"r{i}", SourceBufferObj(thunks), leaves[i])
            task = loop.create_task(drive(c, runner))

            def cancel(task=task):
                task.cancel()

            # Every consumer is cancelled in the end, so that none can hang on a
            # task that never ends; first_cancel=None means "much later".
            first = c.first_cancel if c.first_cancel is not None else 40
            if not (c.as_timeout and c.first_cancel is not None):
                _after_steps(loop, first, cancel)
            else:
                _after_steps(loop, 40, cancel)
            if c.second_cancel is not None:
                _after_steps(loop, first + 1 + c.second_cancel, cancel)
            tasks.append(task)
        done, pending = await asyncio.wait(tasks, timeout=5)
        for _ in range(10):  # let generators closed by the garbage collector finish
            await asyncio.sleep(0)
    return root, leaves, trace, tasks, pending


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_unit_leaks_and_nothing_deadlocks_whatever_stops_the_consumers(scenario):
    root_cap, people, policy = scenario
    root, leaves, trace, tasks, pending = asyncio.run(run_scenario(root_cap, people, policy))
    assert not pending, "a consumer deadlocked"
    for task in tasks:
        # Each consumer ended by finishing, or by a cancellation/timeout that
        # reached it: never by swallowing one or by another error.
        if not task.cancelled():
            exc = task.exception()
            assert exc is None or isinstance(exc, TimeoutError), repr(exc)
    for src in [root, *leaves]:
        assert src.in_use == 0, f"{src.name} leaked: {src.statistics()}"
        assert src.waiting == 0
        assert src.statistics().holders == ()
    for leaf in leaves:
        assert acquires_at_once(leaf), f"a fresh acquire() on {leaf.name} had to wait"
    capacity = {src.name: src.capacity for src in [root, *leaves]}
    assert replay(trace, capacity, fair=policy == "fair") == []


async def test_a_consumer_cancelled_inside_the_wait_sees_the_cancellation():
    """The cancellation is re-raised, not swallowed by the held clean-up."""
    cap = CapacitySource(1, name="story")
    runner = HierarchicalTaskPoolRunner("r", SourceBufferObj([hang]), cap)

    async def consumer():
        async with runner.run_tasks() as results:
            async for _ in results:
                pass
        return "finished normally"

    task = asyncio.ensure_future(consumer())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cap.in_use == 0
