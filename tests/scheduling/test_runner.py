"""HierarchicalTaskPoolRunner: laziness, completion order, streaming, errors, early exit."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    SourceFromIterable,
    TaskEventType,
    TaskProgressEnvelope,
    Trace,
)


def sleeper(seconds: float, value=None):
    async def run():
        await asyncio.sleep(seconds)
        return value if value is not None else seconds

    return run


async def collect(runner, **kw):
    return [env async for env in runner.run_tasks(**kw)]


async def test_results_come_in_completion_order_with_ids_in_start_order():
    cap = CapacitySource(3)
    source = SourceBufferObj([sleeper(d) for d in (0.3, 0.1, 0.2)])
    runner = HierarchicalTaskPoolRunner("t", source, cap)
    envs = await collect(runner)
    assert [(e.type, e.task_id, e.value) for e in envs] == [
        ("FINAL", 2, 0.1),
        ("FINAL", 3, 0.2),
        ("FINAL", 1, 0.3),
    ]
    assert cap.in_use == 0


async def test_every_task_ends_exactly_once_with_ids_1_to_n():
    cap = CapacitySource(4)
    runner = HierarchicalTaskPoolRunner("t", [sleeper(0.001 * (i % 3)) for i in range(20)], cap)
    ids = [e.task_id for e in await collect(runner)]
    assert sorted(ids) == list(range(1, 21))
    stats = runner.statistics()
    assert (stats.started, stats.finished, stats.failed, stats.in_flight) == (20, 20, 0, 0)


async def test_a_task_is_pulled_only_once_a_unit_is_held():
    created: list[int] = []
    gates = [asyncio.Event() for _ in range(5)]

    async def lazily():
        for i in range(5):
            created.append(i)  # stands for "a child entity is created here"

            async def task(i=i):
                await gates[i].wait()
                return i

            yield task

    cap = CapacitySource(3)
    runner = HierarchicalTaskPoolRunner("lazy", SourceFromIterable(lazily()), cap)
    agen = runner.run_tasks()
    first = asyncio.ensure_future(agen.__anext__())
    await asyncio.sleep(0.01)
    assert created == [0, 1, 2]  # only as many as can run
    gates[1].set()
    env = await first
    assert env.task_id == 2
    await asyncio.sleep(0.01)
    assert created == [0, 1, 2, 3]  # the freed unit pulled exactly one more
    for g in gates:
        g.set()
    rest = [e.task_id async for e in agen]
    assert sorted(rest) == [1, 3, 4, 5]
    assert cap.in_use == 0


async def test_slots_refill_while_the_consumer_is_busy():
    started: list[int] = []
    gates = {i: asyncio.Event() for i in range(1, 7)}
    all_started = asyncio.Event()

    def task(i):
        async def run():
            started.append(i)
            if len(started) == 6:
                all_started.set()
            await gates[i].wait()
            return i

        return run

    cap = CapacitySource(3)
    gates[1].set()
    runner = HierarchicalTaskPoolRunner(
        "eager", SourceBufferObj([task(i) for i in range(1, 7)]), cap
    )
    async with aclosing(runner.run_tasks()) as agen:
        first = await agen.__anext__()
        assert first.task_id == 1
        # Busy with the first result, reading nothing: 2 and 3 end, and their
        # slots must be refilled without the consumer asking for more.
        gates[2].set()
        gates[3].set()
        await asyncio.wait_for(all_started.wait(), 30)
        assert started == [1, 2, 3, 4, 5, 6]
        # 2 and 3 were let go at the same moment: either may be reported first.
        assert sorted([(await agen.__anext__()).task_id for _ in range(2)]) == [2, 3]
    assert cap.in_use == 0


async def test_streaming_tasks_yield_intermediates_then_final_result():
    class Stream:
        def __init__(self, n):
            self.n = n
            self.result = None

        def __aiter__(self):
            return self._gen()

        async def _gen(self):
            for i in range(self.n):
                await asyncio.sleep(0)
                yield f"step {i}"
            self.result = f"done {self.n}"

    cap = CapacitySource(2)
    runner = HierarchicalTaskPoolRunner("s", [lambda: Stream(2), lambda: Stream(3)], cap)
    envs = await collect(runner)
    for tid, n in ((1, 2), (2, 3)):
        mine = [e for e in envs if e.task_id == tid]
        assert [e.type for e in mine] == ["INTERMEDIATE"] * n + ["FINAL"]
        assert [e.value for e in mine[:-1]] == [f"step {i}" for i in range(n)]
        assert mine[-1].value == f"done {n}"


async def test_awaitable_resolving_to_a_stream_is_streamed():
    async def items():
        yield 1
        yield 2

    async def thunk():
        return items()

    runner = HierarchicalTaskPoolRunner("s", [thunk], CapacitySource(1))
    envs = await collect(runner)
    assert [(e.type, e.value) for e in envs] == [
        ("INTERMEDIATE", 1),
        ("INTERMEDIATE", 2),
        ("FINAL", None),  # a plain async generator has no result
    ]


async def test_a_failure_is_isolated_and_reported_once():
    def failing():
        async def run():
            await asyncio.sleep(0.01)
            raise ValueError("image 3 failed")

        return run

    def sync_failing():
        raise KeyError("thunk blew up before returning")

    tasks = [sleeper(0.02), sleeper(0.02), failing(), sleeper(0.02), sync_failing, sleeper(0.01)]
    cap = CapacitySource(3)
    runner = HierarchicalTaskPoolRunner("iso", tasks, cap)
    envs = await collect(runner)
    errors = [e for e in envs if e.type is TaskEventType.ERROR]
    finals = [e for e in envs if e.type is TaskEventType.FINAL]
    assert sorted(e.task_id for e in errors) == [3, 5]
    assert isinstance({e.task_id: e.error for e in errors}[3], ValueError)
    assert len(finals) == 4
    assert cap.in_use == 0
    assert runner.statistics().failed == 2


async def test_stop_on_error_raises_after_cancelling_and_releasing():
    cancelled: list[int] = []

    def slow(i):
        async def run():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(i)
                raise

        return run

    async def boom():
        await asyncio.sleep(0.01)
        raise RuntimeError("first failure")

    shared = CapacitySource(5)
    cap = CapacitySource(3, shared)
    runner = HierarchicalTaskPoolRunner("stop", [slow(1), boom, slow(3), slow(4)], cap)
    seen = []
    with pytest.raises(RuntimeError, match="first failure"):
        async for env in runner.run_tasks(stop_on_error=True):
            seen.append(env)
    assert seen == []  # no ERROR envelope for the raised failure
    assert sorted(cancelled) == [1, 3]
    assert (cap.in_use, shared.in_use) == (0, 0)
    assert not runner.statistics().running


async def test_breaking_out_cancels_in_flight_tasks_and_returns_every_unit():
    cancelled = []

    def task(i, seconds):
        async def run():
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            return i

        return run

    shared = CapacitySource(10)
    cap = CapacitySource(3, shared)
    tasks = [task(1, 0.01)] + [task(i, 10) for i in range(2, 8)]
    runner = HierarchicalTaskPoolRunner("early", SourceBufferObj(tasks), cap)
    async with aclosing(runner.run_tasks()) as agen:
        async for env in agen:
            assert env.task_id == 1
            break
    # aclose() has returned: nothing left running, nothing held
    # 2 and 3 were running; 4 took task 1's slot and may not have begun yet
    assert {2, 3} <= set(cancelled) <= {2, 3, 4}
    assert (cap.in_use, shared.in_use) == (0, 0)
    assert runner.statistics().in_flight == 0


async def test_cancelling_the_consumer_task_cleans_up_like_a_stopped_cell():
    shared = CapacitySource(10)
    cap = CapacitySource(3, shared)
    runner = HierarchicalTaskPoolRunner("cell", [sleeper(10) for _ in range(6)], cap)

    async def cell():
        async for _ in runner.run_tasks():
            pass

    t = asyncio.ensure_future(cell())
    await asyncio.sleep(0.02)
    assert cap.in_use == 3
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert (cap.in_use, shared.in_use) == (0, 0)
    assert runner.statistics().in_flight == 0


async def test_an_unclosed_generator_is_finalised_by_the_loop():
    cap = CapacitySource(2)
    runner = HierarchicalTaskPoolRunner("gc", [sleeper(0), sleeper(10), sleeper(10)], cap)
    async for _ in runner.run_tasks():
        break  # no aclose: the loop's async-generator hook closes it
    for _ in range(20):
        await asyncio.sleep(0)
        if cap.in_use == 0:
            break
    assert cap.in_use == 0


async def test_empty_source_ends_at_once():
    cap = CapacitySource(1)
    runner = HierarchicalTaskPoolRunner("empty", SourceBufferObj([]), cap)
    assert await collect(runner) == []
    assert cap.in_use == 0


async def test_a_failing_source_raises_out_of_run_tasks_and_releases():
    async def broken():
        yield sleeper(0.01)
        raise OSError("disk full while creating the next task")

    cap = CapacitySource(2)
    runner = HierarchicalTaskPoolRunner("src", SourceFromIterable(broken()), cap)
    with pytest.raises(OSError, match="disk full"):
        await collect(runner)
    assert cap.in_use == 0


async def test_one_run_at_a_time():
    runner = HierarchicalTaskPoolRunner("once", [sleeper(0.05)], CapacitySource(1))
    first = runner.run_tasks()
    pending = asyncio.ensure_future(first.__anext__())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await runner.run_tasks().__anext__()
    await pending
    await first.aclose()


def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError, match="name"):
        HierarchicalTaskPoolRunner("", [], CapacitySource(1))
    with pytest.raises(TypeError, match="capacity must be a CapacitySource"):
        HierarchicalTaskPoolRunner("x", [], 3)


async def test_trace_tells_waits_starts_and_ends_with_labels():
    shared = CapacitySource(2, name="global")
    story = CapacitySource(3, shared, name="story")
    labelled = []
    for i in range(3):
        t = sleeper(0.01)
        t.label = f"image-{i + 1}"
        labelled.append(t)
    with Trace() as trace:
        runner = HierarchicalTaskPoolRunner("image-gen", labelled, story)
        await collect(runner)
    starts = trace.of_kind(EventKind.TASK_START)
    assert [e.label for e in starts] == ["image-1", "image-2", "image-3"]
    assert {e.group for e in starts} == {"story"} and {e.runner for e in starts} == {runner.key}
    waits = [(w.task_id, w.level) for w in trace.of_kind(EventKind.WAIT)]
    assert waits[0] == (3, "global")  # the story allows 3, the global limit only 2
    # the runner may also wait for a unit for a 4th task that the source then lacks
    assert set(waits[1:]) <= {(4, "global")}
    grant = trace.of_kind(EventKind.GRANT)[0]
    assert grant.task_id == 3
    assert len(trace.of_kind(EventKind.TASK_END)) == 3
    # acquire/grant/release balance at every level
    series = trace.in_use_series()
    assert series["global"][-1][1] == 0 and max(n for _, n in series["global"]) == 2


async def test_a_task_cancelled_before_its_first_step_still_returns_its_unit():
    started: list[int] = []
    gate = asyncio.Event()

    def task(i, wait):
        async def run():
            started.append(i)
            if wait:
                await gate.wait()
            return i

        return run

    cap = CapacitySource(2)
    runner = HierarchicalTaskPoolRunner(
        "unstarted", [task(1, False), task(2, True), task(3, True)], cap
    )
    async with aclosing(runner.run_tasks()) as agen:
        first = await agen.__anext__()
        assert first.task_id == 1
        # task 1's unit goes to the filler, which starts task 3 on its next
        # step; we leave right after that, before task 3 has run at all
        while runner.statistics().started < 3:
            await asyncio.sleep(0)
        assert 3 not in started
    assert 3 not in started  # cancelled before it ever ran...
    assert cap.in_use == 0  # ...and its unit came back all the same


def test_envelopes_are_frozen_records_that_compare_by_value():
    from dataclasses import FrozenInstanceError

    from storylab.scheduling.runner import _envelope

    env = _envelope(TaskEventType.FINAL, 7, "v")
    assert env == TaskProgressEnvelope(TaskEventType.FINAL, 7, "v", None)
    assert env.type == "FINAL" and env.error is None
    with pytest.raises(FrozenInstanceError):
        env.value = "changed"


async def test_marks_inside_a_task_land_on_that_task():
    from storylab.scheduling import mark, task_scope

    def task(i):
        async def run():
            await asyncio.sleep(0.001 * i)
            mark(f"note from {i}")
            return i

        run.label = f"t{i}"
        return run

    cap = CapacitySource(2, name="story")
    with Trace() as trace:
        runner = HierarchicalTaskPoolRunner("marks", [task(i) for i in (1, 2, 3)], cap)
        await collect(runner)
        with task_scope("by-hand", 9, "manual", "story"):
            mark("inside a scope")
        mark("outside any task")
    marks = [(e.runner, e.task_id, e.label, e.group, e.message) for e in trace.of_kind("mark")]
    assert sorted(marks[:3], key=lambda m: m[1]) == [
        (runner.key, i, f"t{i}", "story", f"note from {i}") for i in (1, 2, 3)
    ]
    assert marks[3] == ("by-hand", 9, "manual", "story", "inside a scope")
    assert marks[4] == (None, None, None, None, "outside any task")


def test_mark_without_an_active_trace_records_nothing():
    from storylab.scheduling import mark

    idle = Trace()  # created but never entered
    mark("nobody listens")
    assert len(idle) == 0


async def test_a_cancelled_error_raised_inside_a_task_is_that_tasks_failure():
    async def cancelled_from_inside():
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)  # a library cancels its own future
        await future

    cap = CapacitySource(3)
    runner = HierarchicalTaskPoolRunner("inner", [sleeper(0.01), cancelled_from_inside], cap)
    envs = {e.task_id: e for e in await collect(runner)}
    assert envs[1].type is TaskEventType.FINAL
    assert envs[2].type is TaskEventType.ERROR
    assert isinstance(envs[2].error, asyncio.CancelledError)
    stats = runner.statistics()
    assert (stats.finished, stats.failed, stats.in_flight, cap.in_use) == (1, 1, 0, 0)


async def test_stop_on_error_pulls_nothing_after_the_failure():
    pulled: list[int] = []

    async def boom():
        raise ValueError("first task fails")

    def tasks():
        for i in range(10):
            pulled.append(i)
            yield boom if i == 0 else sleeper(1)

    for source in (SourceFromIterable(tasks()), SourceFromIterable(_async(tasks()))):
        pulled.clear()
        runner = HierarchicalTaskPoolRunner("stop", source, CapacitySource(1))
        with pytest.raises(ValueError, match="first task fails"):
            await collect(runner, stop_on_error=True)
        assert pulled == [0] and runner.statistics().started == 1


async def _async(iterable):
    for item in iterable:
        yield item


async def test_leaving_early_closes_an_async_generator_source():
    log: list[str] = []

    async def source():
        try:
            for _ in range(100):
                yield sleeper(0.001)
        finally:
            log.append("source closed")

    runner = HierarchicalTaskPoolRunner("close", source(), CapacitySource(2))
    async with aclosing(runner.run_tasks()) as agen:
        async for _ in agen:
            break
    assert log == ["source closed"]


# -- tasks that end without suspending, and tasks that suspend ---------------

_SEEN = __import__("contextvars").ContextVar("seen", default=None)


async def test_each_task_has_its_own_context_even_when_it_ends_at_once():
    seen: list = []

    def task(i):
        async def run():
            seen.append(_SEEN.get())  # what the previous task set must not show
            _SEEN.set(i)
            if i % 3 == 0:
                await asyncio.sleep(0)
                seen.append(("after", _SEEN.get()))
            return i

        return run

    runner = HierarchicalTaskPoolRunner(
        "ctx", SourceBufferObj([task(i) for i in range(12)]), CapacitySource(2)
    )
    envs = await collect(runner)
    assert sorted(e.value for e in envs) == list(range(12))
    assert [s for s in seen if not isinstance(s, tuple)] == [None] * 12
    assert sorted(s[1] for s in seen if isinstance(s, tuple)) == [0, 3, 6, 9]
    assert _SEEN.get() is None


async def test_tasks_that_end_at_once_still_let_the_loop_run_every_capacity_tasks():
    turns = 0
    done = False

    async def count_turns():
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    async def noop():
        return None

    counter = asyncio.ensure_future(count_turns())
    await asyncio.sleep(0)
    cap = CapacitySource(3)
    runner = HierarchicalTaskPoolRunner("quick", SourceBufferObj([noop] * 300), cap)
    at_start = turns
    n = len(await collect(runner))
    done = True
    await counter
    assert n == 300 and cap.in_use == 0
    # at most 3 tasks between two turns of the loop: at least 100 turns
    assert turns - at_start >= 100


async def test_a_task_that_suspends_keeps_one_asyncio_task_and_its_own_timeout():
    tasks: dict[int, tuple] = {}

    def task(i, seconds):
        async def run():
            first = asyncio.current_task()
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(seconds)
            finally:
                tasks[i] = (first, asyncio.current_task())
            return i

        return run

    cap = CapacitySource(2)
    thunks = [task(1, 10), task(2, 0), task(3, 10), task(4, 0)]
    envs = await collect(HierarchicalTaskPoolRunner("deadline", SourceBufferObj(thunks), cap))
    outcome = {e.task_id: (e.type, type(e.error).__name__ if e.error else e.value) for e in envs}
    assert outcome == {
        1: ("ERROR", "TimeoutError"),
        2: ("FINAL", 2),
        3: ("ERROR", "TimeoutError"),
        4: ("FINAL", 4),
    }
    assert all(first is last and first is not None for first, last in tasks.values())
    assert cap.in_use == 0
