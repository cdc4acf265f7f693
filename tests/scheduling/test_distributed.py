"""DistributedCapacityRoot: one global limit shared out by a real Dask scheduler.

In-process schedulers (``LocalCluster(processes=False)``) check the local
share, the allocator's fair division, errors and cancellation; a scheduler in
its own process checks what a process whose loop stood still does when it
wakes; real LocalClusters of 3 worker processes check the limit across
processes from their merged traces, that a SIGKILLed worker's units come
back, and, with a counting HTTP server on loopback, that workers stopped and
killed at random moments never make the service see more requests at once
than the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
from dataclasses import replace

import pytest

pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
import dask  # noqa: E402
import dask_jobs  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from storylab.scheduling import (  # noqa: E402
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    Trace,
    merge_traces,
)
from storylab.scheduling.distributed import (  # noqa: E402
    DistributedCapacityRoot,
    SharedLimitLost,
    check_lease_rule,
)

cloudpickle.register_pickle_by_value(dask_jobs)


def http_transport():
    """The transport the requests under a shared limit are sent with: it asks
    the share right before each write."""
    from storylab.scheduling.fenced_http import FencedTransport

    return FencedTransport()


LEASES = {
    "distributed.scheduler.locks.lease-timeout": "2s",
    "distributed.scheduler.locks.lease-validation-interval": "0.5s",
}


@contextlib.asynccontextmanager
async def scheduler():
    """An in-process scheduler and an asynchronous client on it."""
    with dask.config.set(LEASES):
        async with (
            LocalCluster(
                n_workers=0, processes=False, asynchronous=True, dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            yield cluster, client


def shares(cluster, name: str) -> dict:
    """The allocator's view of ``name``, read on the scheduler itself."""
    return cluster.scheduler.plugins["storylab-shared-limits"].statistics(name)


def peak(trace: Trace, name: str) -> int:
    return max(v for _, v in trace.in_use_series().get(name, [(0.0, 0)]))


def peak_running(trace: Trace) -> int:
    """Most tasks running at one instant, from their own start and end events."""
    level = top = 0
    for e in trace.events:
        if e.kind is EventKind.TASK_START:
            level += 1
            top = max(top, level)
        elif e.kind in (EventKind.TASK_END, EventKind.TASK_ERROR, EventKind.TASK_CANCEL):
            level -= 1
    return top


async def settle(seconds: float = 0.2) -> None:
    """Let time pass, for checks that something does NOT happen (a slow
    machine only makes them weaker, never wrong); to wait for something that
    must happen, use :func:`until`."""
    await asyncio.sleep(seconds)


async def until(condition, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition()`` (a value or an awaitable) until it is true; fail
    naming ``what`` after ``timeout`` seconds, which only a broken machine reaches."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


def poll(condition, what: str, timeout: float = 60.0) -> None:
    """:func:`until` for code outside an event loop (blocks this thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)


def stand_still(address: str, name: str, member: str, at_least: float) -> float:
    """Block this thread, so that its event loop stands still as under SIGSTOP,
    for at least ``at_least`` seconds AND until the scheduler at ``address``
    has expired ``member``'s share of ``name``. The scheduler is asked from a
    thread with an event loop of its own. Returns how long it stood still."""
    import threading

    from distributed.core import rpc

    start = time.monotonic()
    failure: list[BaseException] = []

    async def expired() -> None:
        async with rpc(address) as scheduler:
            deadline = start + 120
            while True:
                stats = await scheduler.storylab_shared_limit_statistics(name=name)
                if member not in stats["members"] and time.monotonic() - start >= at_least:
                    return
                assert time.monotonic() < deadline, "the scheduler never expired the share"
                await asyncio.sleep(0.05)

    def watch() -> None:
        try:
            asyncio.run(expired())
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    watcher.join()
    if failure:
        raise failure[0]
    return time.monotonic() - start


# -- one process -----------------------------------------------------------------
async def test_a_story_blocked_by_its_own_limit_makes_no_scheduler_call():
    async with scheduler() as (cluster, client):
        root = DistributedCapacityRoot(10, name="g-local-first", client=client)
        story = CapacitySource(1, root, name="story")
        await story.acquire(owner="a")
        asked = root.updates
        assert (root.share, root.leased) == (1, 1)
        second = asyncio.ensure_future(story.acquire(owner="b"))
        await settle()
        assert not second.done()
        # Held back by the story level: the scheduler never heard of it.
        assert root.updates == asked
        assert (story.waiting, root.leased) == (1, 1)
        story.release(owner="a")
        await second
        # The freed unit stayed in this process's share: no call either.
        assert root.updates == asked and root.share == 1
        story.release(owner="b")
        await root.drain()
        assert await root.global_in_use() == 0 and root.share == 0
        await root.close()


async def test_after_the_first_unit_acquire_and_release_stay_local():
    async with scheduler() as (cluster, client):
        root = DistributedCapacityRoot(10, name="g-amortised", client=client)
        story = CapacitySource(3, root, name="story")
        await story.acquire()
        story.release()
        asked = root.updates
        for _ in range(500):
            await story.acquire()
            story.release()
        assert root.updates == asked  # 500 units, not one call to the scheduler
        await root.close()


async def test_an_unused_share_goes_back_after_a_short_idle_time():
    async with scheduler() as (cluster, client):
        root = DistributedCapacityRoot(10, name="g-idle", client=client)
        story = CapacitySource(3, root, name="story")
        await asyncio.gather(*(story.acquire(owner=i) for i in range(3)))
        assert root.share == 3 and shares(cluster, "g-idle")["free"] == 7
        for i in range(3):
            story.release(owner=i)
        await until(lambda: shares(cluster, "g-idle")["free"] == 10, "the idle units went back")
        assert root.share == 0 and shares(cluster, "g-idle")["free"] == 10
        await root.close()


async def test_a_freed_unit_nobody_here_can_take_goes_back_at_once_if_others_want_more():
    async with scheduler() as (cluster, client):
        a = DistributedCapacityRoot(4, name="g-wanted", client=client)
        b = DistributedCapacityRoot(4, name="g-wanted", client=client)
        story_a = CapacitySource(2, a, name="a")
        story_b = CapacitySource(4, b, name="b")
        await asyncio.gather(*(story_a.acquire(owner=i) for i in range(2)))
        await asyncio.gather(*(story_b.acquire(owner=i) for i in range(2)))
        third = asyncio.ensure_future(story_b.acquire(owner=2))
        # 2 and 2: both at their target, B's story could use 2 more.
        # a hears that stories elsewhere want more.
        await until(lambda: a._wanted, "a heard that b's story wants more")
        assert a._wanted and not third.done() and (a.share, b.share) == (2, 2)
        story_a.release(owner=0)  # nothing in a waits: the unit goes back now
        assert a.share == 1
        await asyncio.wait_for(third, 10)
        assert b.share == 3
        story_a.release(owner=1)
        for i in range(3):
            story_b.release(owner=i)
        await a.close()
        await b.close()


async def test_a_full_global_limit_waits_on_the_scheduler_and_is_traced_as_such():
    async with scheduler() as (cluster, client):
        # Two roots with one name are two processes as far as the scheduler knows.
        here = DistributedCapacityRoot(2, name="g-full", client=client)
        there = DistributedCapacityRoot(2, name="g-full", client=client)
        other = CapacitySource(3, there, name="other")
        await other.acquire(owner=1)
        await other.acquire(owner=2)
        story = CapacitySource(3, here, name="story")
        with Trace() as trace:
            waiting = asyncio.ensure_future(story.acquire(owner=("r", 1)))
            # The other process holds the whole limit; once the allocator has
            # heard of the waiting story, it lowers its target to one unit per story.
            await until(
                lambda: len(shares(cluster, "g-full")["members"]) == 2,
                "the waiting story reached the allocator",
            )
            assert not waiting.done()
            (member_there, member_here) = shares(cluster, "g-full")["members"].values()
            assert member_there == (2, 1) and member_here == (0, 1)
            other.release(owner=1)
            await asyncio.wait_for(waiting, 10)
        ours = [e for e in trace.events if e.path[0] == "story"]
        assert [(e.kind, e.level) for e in ours] == [
            (EventKind.WAIT, "g-full"),
            (EventKind.GRANT, None),
        ]
        assert ours[1].path == ("story", "g-full")
        story.release(owner=("r", 1))
        other.release(owner=2)
        await here.drain()
        await there.drain()
        assert await here.global_in_use() == 0
        await here.close()
        await there.close()


async def test_a_cancelled_wait_for_a_lease_holds_nothing_at_any_level():
    async with scheduler() as (cluster, client):
        there = DistributedCapacityRoot(1, name="g-cancel", client=client)
        holder = CapacitySource(1, there)
        await holder.acquire(owner="x")
        here = DistributedCapacityRoot(1, name="g-cancel", client=client)
        story = CapacitySource(2, here, name="story")
        waiting = asyncio.ensure_future(story.acquire(owner="y"))
        # Cancelled once the allocator has heard the ask (so it grants it later).
        await until(
            lambda: len(shares(cluster, "g-cancel")["members"]) == 2,
            "the ask reached the allocator",
        )
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (story.in_use, here.in_use, here.leased) == (0, 0, 0)
        assert story.statistics().holders == ()
        # The scheduler grants the abandoned ask once the holder lets go; that
        # lease is handed straight back, so the limit is whole again.
        holder.release(owner="x")
        await there.drain()

        async def given_back() -> bool:
            await here.drain()
            return await here.global_in_use() == 0

        await until(given_back, "the abandoned grant was handed back")
        await asyncio.wait_for(story.acquire(owner="z"), 10)
        assert await here.global_in_use() == 1


async def test_a_runner_under_a_distributed_root_awaits_its_units_and_keeps_the_limit():
    async with scheduler() as (cluster, client):
        root = DistributedCapacityRoot(4, name="g-runner", client=client)
        stories = [CapacitySource(3, root, name=f"s{i}") for i in range(3)]
        assert not stories[0].sync and CapacitySource(3).sync

        async def one(story):
            async def sleep():
                await asyncio.sleep(0.03)
                return story.name

            runner = HierarchicalTaskPoolRunner("r", [sleep] * 5, story)
            async with runner.run_tasks() as results:
                return [e.value async for e in results]

        with Trace() as trace:
            done = await asyncio.gather(*(one(s) for s in stories))
        assert [len(d) for d in done] == [5, 5, 5]
        assert peak(trace, "g-runner") == 4 and peak_running(trace) == 4
        assert all(peak(trace, s.name) <= 3 for s in stories)
        await root.drain()
        assert await root.global_in_use() == 0 and root.in_use == 0
        await root.close()


async def test_the_limit_is_divided_between_stories_not_between_processes():
    async with scheduler() as (cluster, client):
        many = DistributedCapacityRoot(8, name="g-fair", client=client)
        one = DistributedCapacityRoot(8, name="g-fair", client=client)
        stories = [CapacitySource(3, many, name=f"m{i}") for i in range(3)]
        stories.append(CapacitySource(3, one, name="o"))
        release = asyncio.Event()

        async def hold(story, i):
            await story.acquire(owner=i)
            await release.wait()
            story.release(owner=i)

        # The process with three stories asks first and gets all it wants (8).
        first = [asyncio.ensure_future(hold(s, i)) for s in stories[:3] for i in range(3)]
        await until(lambda: many.leased == 8, "the first process took its 8 units")
        assert (many.share, many.leased) == (8, 8)
        late = [asyncio.ensure_future(hold(stories[3], i)) for i in range(3)]
        # Four stories want 3 each, 8 are there: 2 per story, so the target of
        # the first process is 6 and of the second 2, and the first gives
        # units back as they are released.
        await until(
            lambda: len(shares(cluster, "g-fair")["members"]) == 2, "the late story was heard"
        )
        targets = [t for _, t in shares(cluster, "g-fair")["members"].values()]
        assert targets == [6, 2]
        assert one.leased == 0
        release.set()
        await asyncio.gather(*first, *late)
        assert many.in_use == one.in_use == 0
        await many.drain()
        await one.drain()
        assert shares(cluster, "g-fair")["free"] == 8
        await many.close()
        await one.close()


TURNS = 200


async def test_two_processes_take_turns_fairly_under_a_full_limit():
    async with scheduler() as (cluster, client):
        roots = [DistributedCapacityRoot(4, name="g-turns", client=client) for _ in "ab"]
        stories = [CapacitySource(2, roots[i % 2], name=f"s{i}") for i in range(4)]

        async def one(story):
            async def work():
                # Work measured in turns of the event loop, not in seconds:
                # the allocator's answers also take turns of this loop (the
                # scheduler is in this process), so a busy machine slows both
                # alike and the order of events stays the same.
                for _ in range(TURNS):
                    await asyncio.sleep(0)

            runner = HierarchicalTaskPoolRunner("r", [work] * 8, story)
            async with runner.run_tasks() as results:
                async for _ in results:
                    pass

        with Trace(clock=time.time) as trace:
            await asyncio.gather(*(one(s) for s in stories))
        assert peak_running(trace) <= 4
        # No story waited for the others to finish: when the first story had
        # ended its eight images, every other one had ended most of its own.
        # (Counted in the order of the events, not in seconds: a busy
        # machine stretches the time, not the turns.)
        done: dict[str, int] = {}
        for e in trace.events:
            if e.kind is EventKind.TASK_END:
                story = e.path[0] if e.path else e.group
                done[story] = done.get(story, 0) + 1
                if done[story] == 8:
                    break
        assert len(done) == 4 and min(done.values()) >= 4, done
        for root in roots:
            await root.close()


def test_targets_divide_the_limit_by_story_and_take_fractions_in_turn():
    from storylab.scheduling.distributed import _targets

    # Everyone gets what it wants when that fits.
    assert _targets([[1], [3, 3]], [0, 0], 10) == [1, 6]
    # Four stories wanting 3 under 8: 2 each, whatever process they are in.
    assert _targets([[3, 3, 3], [3]], [0, 0], 8) == [6, 2]
    # A story that wants less keeps it; the others share the rest equally.
    assert _targets([[1, 3], [3]], [0, 0], 7) == [4, 3]
    # 20 stories under 10: 2.5 units per process of 5 stories. The spare
    # units stay where they are...
    stories = [[3] * 5] * 4
    assert _targets(stories, [1, 1, 1, 1], 10, [3, 3, 2, 2]) == [3, 3, 2, 2]
    # ...until a holder's stories are half a unit ahead, then they move.
    assert _targets(stories, [2, 1, 1, 1], 10, [3, 3, 2, 2]) == [2, 3, 3, 2]
    for served in ([0, 5, 2, 9], [3, 3, 3, 3]):
        got = _targets(stories, served, 10, [2, 2, 3, 3])
        assert sum(got) == 10 and all(t in (2, 3) for t in got)


def test_a_spare_unit_goes_by_a_rule_not_by_the_order_in_which_processes_came():
    """Three processes holding 3 units each under 10, one story each that could
    use 5: one unit is spare. However the allocator came to know the processes,
    the spare goes to the one that has gone longest without a spare (never,
    for all three here), then by member name; once its story is ahead, the
    next one by the same rule is due it."""
    from storylab.scheduling.distributed import SharedLimitAllocator, _Limit, _Member

    def targets(order: list[str]) -> list[dict[str, int]]:
        allocator = SharedLimitAllocator()
        limit = _Limit(10)
        for key in order:
            member = limit.members[key] = _Member(30.0)
            member.grant = member.target = 3
            member.wants = [(5, 3, 0)]
        allocator._rebalance(limit)
        first = {k: m.target for k, m in limit.members.items()}
        assert limit.free() == 0  # the spare was handed out at once
        # The holder's story has had its unit: it is ahead of the others now.
        limit.members["p1"].wants = [(5, 4, 1)]
        allocator._rebalance(limit)
        second = {k: m.target for k, m in limit.members.items()}
        return [first, second]

    orders = (["p1", "p2", "p3"], ["p3", "p2", "p1"], ["p2", "p3", "p1"])
    spreads = [targets(order) for order in orders]
    assert spreads[0] == spreads[1] == spreads[2]
    assert spreads[0] == [{"p1": 4, "p2": 3, "p3": 3}, {"p1": 3, "p2": 4, "p3": 3}]


@pytest.mark.parametrize(
    ("lease", "attempt", "match"),
    [
        (3, 2, r"lease_timeout \(3 s\) must be at least twice attempt_timeout \(2 s\)"),
        (0.5, None, "lease_timeout must be at least 1 s"),
        (0, None, "lease_timeout must be a number of seconds > 0"),
        ("10", None, "lease_timeout must be a number of seconds > 0"),
    ],
)
def test_the_lease_timeout_must_outlast_a_request(lease, attempt, match):
    with pytest.raises(ValueError, match=match):
        DistributedCapacityRoot(4, lease_timeout=lease, attempt_timeout=attempt)
    with pytest.raises(ValueError, match="--lease-timeout .* --attempt-timeout"):
        check_lease_rule(3, 2, names=("--lease-timeout", "--attempt-timeout"))
    assert check_lease_rule(4, 2) == 4.0


def address_in(info: str) -> str | None:
    """The address in a scheduler file, or None while it is not (wholly) written."""
    import json

    try:
        with open(info, encoding="utf-8") as f:
            return json.load(f).get("address")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def scheduler_process():
    """A Dask scheduler in a process of its own on loopback (so this process
    can stand still while the scheduler goes on)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        info = os.path.join(tmp, "scheduler.json")
        proc = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", info],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            poll(lambda: address_in(info), "the scheduler wrote its address")
            yield info
        finally:
            proc.terminate()
            proc.wait(30)


async def test_a_process_that_stood_still_past_its_lease_cancels_its_work_and_never_renews_it():
    with scheduler_process() as info:
        async with Client(scheduler_file=info, asynchronous=True) as client:
            root = DistributedCapacityRoot(
                3, name="g-frozen", client=client, lease_timeout=2, attempt_timeout=0.5
            )
            story = CapacitySource(3, root, name="story")
            sent_after_wake = []

            stepped = asyncio.Event()

            async def work():
                await story.acquire(owner=1)
                await story.acquire(owner=2)
                try:
                    while True:
                        sent_after_wake.append(time.monotonic())
                        stepped.set()
                        await asyncio.sleep(0.2)
                finally:
                    story.release(owner=1)
                    story.release(owner=2)

            async def guarded():
                async with root.guard():
                    await work()

            task = asyncio.ensure_future(guarded())
            await asyncio.wait_for(stepped.wait(), 60)
            before = await root.allocator_statistics()
            (old,) = before["members"]
            # A waiting story is offered its whole limit (3), of which it uses 2.
            assert before["members"][old][0] == 3 and root.leased == 2
            # The whole process stands still (as under SIGSTOP) for longer
            # than the lease timeout, while the work waits for its next step;
            # the scheduler goes on without it, and expires the share.
            stepped.clear()
            await stepped.wait()
            stand_still(address_in(info), "g-frozen", old, at_least=2.0)
            woke = time.monotonic()
            with pytest.raises(SharedLimitLost, match="lost its share of 'g-frozen'"):
                await asyncio.wait_for(task, 5)
            # Cancelled at its first step after waking, before doing anything more.
            assert [t for t in sent_after_wake if t >= woke] == []
            assert root.losses == 1 and root.in_use == 0
            after = await root.allocator_statistics()
            # The old share was never renewed: the allocator expired it and
            # does not know it any more.
            assert old not in after["members"]
            # The process goes on with a new share.
            await asyncio.wait_for(story.acquire(owner=3), 10)
            assert root.share >= 1 and root.leased == 1
            story.release(owner=3)
            await root.close()


@contextlib.asynccontextmanager
async def sender(kind: str, url: str):
    """A function that makes one request to ``url`` + path: with httpx and the
    fenced transport, or through the image backends' HttpService (which picks
    the fenced transport itself under a guard)."""
    if kind == "httpx":
        import httpx

        async with httpx.AsyncClient(timeout=1, transport=http_transport()) as http:

            async def get(path: str) -> None:
                async with asyncio.timeout(1):
                    (await http.get(f"{url}{path}")).raise_for_status()

            yield get
    else:
        from storylab.story.backends.http import HttpService

        service = HttpService(url, attempt_timeout=1, max_attempts=1)

        async def get(path: str) -> None:
            await service.post_json(path, {"prompt": "a fox"}, what="a picture")

        try:
            yield get
        finally:
            await service.aclose()


@pytest.mark.parametrize("kind", ["httpx", "service"])
async def test_a_request_due_when_the_process_stopped_is_not_sent_after_its_share_expired(kind):
    # The process stops while a task holds its unit and its next step (the
    # request) is already due; the scheduler expires the share meanwhile and
    # may hand its units on. On waking, that step runs before any timer
    # (the share's watchdog, the attempt deadline): the request must be
    # refused at the write, and the service must never see it.
    with scheduler_process() as info, CountingServer(hold=0.05, keep_alive=True) as server:
        server.limit = 1
        async with Client(scheduler_file=info, asynchronous=True) as client:
            # A lease of 4 s: long enough that a process slowed by a busy
            # machine keeps its share until the stop.
            root = DistributedCapacityRoot(
                2, name="g-due", client=client, lease_timeout=4, attempt_timeout=1
            )
            story = CapacitySource(2, root, name="story")
            loop = asyncio.get_running_loop()
            stood: list[float] = []
            errors: list[BaseException] = []

            def stop_the_process() -> None:
                stood.append(stand_still(address_in(info), "g-due", root._member, at_least=4.0))

            async with sender(kind, server.url) as get:

                async def request() -> None:
                    # Holds its unit (a runner task), with a connection open
                    # to the service from a first request.
                    await get("/v1/first")
                    # The process stops with this task's next step due.
                    loop.call_soon(stop_the_process)
                    await asyncio.sleep(0)
                    await get("/v1/late")

                runner = HierarchicalTaskPoolRunner("req", [request], story)

                async def guarded() -> None:
                    async with root.guard():
                        async with runner.run_tasks() as results:
                            async for item in results:
                                if item.error is not None:
                                    errors.append(item.error)

                with pytest.raises(SharedLimitLost, match="lost its share of 'g-due'"):
                    await asyncio.wait_for(guarded(), 60)
            assert stood and stood[0] >= 4.0
            # The share had expired when the process woke: nothing went out,
            # and the request was cancelled (its unit given back), not failed.
            assert server.total == 1, "a request was sent under a share already handed on"
            assert errors == []
            assert root.losses == 1 and root.in_use == 0
            await root.close()


async def test_a_share_given_up_stays_counted_until_its_lease_expires():
    with scheduler_process() as info:
        async with Client(scheduler_file=info, asynchronous=True) as client:
            # Attempts of up to 5 s: the process gives its share up once less
            # than 5 s + 1 s of it is left, i.e. after 4 s without an answer,
            # while the scheduler keeps it until 10 s without one. (A wide
            # window: the checks below must run before the share expires,
            # which only a machine stalled for about 5 s could miss.)
            root = DistributedCapacityRoot(
                4, name="g-early", client=client, lease_timeout=10, attempt_timeout=5
            )
            story = CapacitySource(4, root, name="story")
            for i in range(4):
                await story.acquire(owner=i)
            (old,) = (await root.allocator_statistics())["members"]
            # Standing still: too long to trust the share (4 s after the last
            # call sent, at the latest), not long enough for it to expire.
            time.sleep(4.3)
            await until(lambda: root.losses, "the process gave its share up")
            assert root.losses == 1 and root.share == 0
            members = (await root.allocator_statistics())["members"]
            # Not handed to anyone while a request made under it could still
            # run: the allocator still counts the old share.
            assert members[old][0] == 4
            other = DistributedCapacityRoot(4, name="g-early", client=client, lease_timeout=10)
            taker = CapacitySource(4, other, name="taker")
            assert await root.global_in_use() == 4
            got = asyncio.ensure_future(taker.acquire())
            await settle(0.3)
            assert not got.done()
            await asyncio.wait_for(got, 60)  # once the old lease has expired
            assert old not in (await root.allocator_statistics())["members"]
            for i in range(4):
                story.release(owner=i)
            taker.release()
            await root.close()
            await other.close()


async def test_a_share_nobody_renews_any_more_is_given_up_and_a_new_one_started():
    async with scheduler() as (cluster, client):
        # A lease of 6 s: the checks below must run before it expires.
        root = DistributedCapacityRoot(3, name="g-keeper", client=client, lease_timeout=6)
        story = CapacitySource(3, root, name="story")
        await story.acquire(owner=1)
        (old,) = shares(cluster, "g-keeper")["members"]
        root._keeper.cancel()  # the renewal dies (a bug, say)
        await until(lambda: root.losses, "the share was given up")
        # Given up within a watchdog tick, long before its lease could expire...
        assert root.losses == 1 and root.share == 0
        # ...and a new share is started, but the old one (all 3 units) stays
        # counted until its lease expires: only then is the next unit had.
        second = asyncio.ensure_future(story.acquire(owner=2))
        await until(
            lambda: len(shares(cluster, "g-keeper")["members"]) == 2, "the new share was started"
        )
        await settle(0.3)
        members = shares(cluster, "g-keeper")["members"]
        assert members[old][0] == 3 and len(members) == 2 and not second.done()
        await asyncio.wait_for(second, 60)
        assert old not in shares(cluster, "g-keeper")["members"]
        story.release(owner=1)
        story.release(owner=2)
        await root.close()


async def test_try_acquire_on_a_distributed_tree_refuses_and_takes_nothing():
    async with scheduler() as (cluster, client):
        root = DistributedCapacityRoot(3, name="g-try", client=client)
        story = CapacitySource(2, root, name="story")
        with pytest.raises(TypeError, match=r"try_acquire\(\) on 'story'.*await acquire\(\)"):
            story.try_acquire()
        assert (story.in_use, root.in_use) == (0, 0)


async def test_a_capacity_that_differs_from_the_other_processes_is_refused():
    async with scheduler() as (cluster, client):
        await CapacitySource(1, DistributedCapacityRoot(10, name="g-mis", client=client)).acquire()
        wrong = DistributedCapacityRoot(5, name="g-mis", client=client)
        story = CapacitySource(1, wrong)
        with pytest.raises(ValueError, match="capacity of 'g-mis' must match.* 10"):
            await story.acquire()
        assert (story.in_use, wrong.in_use) == (0, 0)


async def test_a_root_with_no_scheduler_says_how_to_give_it_one():
    story = CapacitySource(1, DistributedCapacityRoot(2, name="g-none"))
    with pytest.raises(RuntimeError, match="pass client="):
        await story.acquire()
    assert story.in_use == 0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_the_root_capacity_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        DistributedCapacityRoot(bad)


# -- real worker processes ---------------------------------------------------------
@pytest.fixture
def workers():
    with (
        dask.config.set(LEASES),
        LocalCluster(
            n_workers=3,
            threads_per_worker=2,
            processes=True,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.mark.timeout(240)
def test_three_processes_never_run_more_than_the_global_limit(workers):
    client = workers
    addresses = sorted(client.scheduler_info()["workers"])
    assert len(addresses) == 3

    def run(shared: bool) -> Trace:
        futures = [
            client.submit(
                dask_jobs.run_traced, "g-procs", 4, 3, 8, 0.1, shared, workers=[a], pure=False
            )
            for a in addresses
        ]
        return merge_traces((str(i), t) for i, t in enumerate(client.gather(futures)))

    merged = run(shared=True)
    # Every process's tasks ran, and together they reached the limit but never passed it.
    assert len(merged.of_kind(EventKind.TASK_END)) == 24
    assert peak(merged, "g-procs") == 4
    assert peak_running(merged) == 4
    # The control: the same work with a limit of 4 per process runs more than
    # 4 at once, so the check above can fail and the shared root is what holds it.
    control = run(shared=False)
    assert peak_running(control) > 4 and peak(control, "g-procs") > 4


@pytest.mark.timeout(240)
def test_a_killed_workers_units_come_back_to_the_others(workers):
    client = workers
    pids = client.run(os.getpid)
    victim, other = sorted(pids)[:2]
    client.submit(dask_jobs.hold_units, "g-kill", 10, 6, workers=[victim], pure=False)

    def taken() -> int:
        stats = client.submit(dask_jobs.shared_stats, "g-kill", workers=[other], pure=False)
        stats = stats.result()
        return 0 if stats["free"] is None else 10 - stats["free"]

    deadline = time.monotonic() + 60
    while taken() != 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert taken() == 6
    os.kill(pids[victim], signal.SIGKILL)
    # Nobody renews the dead process's share: the allocator takes it back
    # after the lease timeout (2 s here).
    deadline = time.monotonic() + 30
    while taken() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert taken() == 0
    # All ten units can be had again by another process, and no eleventh.
    got = client.submit(dask_jobs.take_units, "g-kill", 10, 11, 1.0, workers=[other], pure=False)
    assert got.result() == 10


class CountingServer:
    """An HTTP server on loopback that holds each request ``hold`` seconds and
    counts the requests it is working on at once (from the request read to
    the answer written or the connection lost), in a thread of its own."""

    def __init__(self, hold: float, keep_alive: bool = False) -> None:
        import threading

        self.hold = hold
        self.keep_alive = keep_alive
        self.now = self.peak = self.total = 0
        # Each moment past the limit: (when, how many, the requests in flight).
        self.over: list[tuple[float, int, list]] = []
        self.limit = 0
        self._flight: dict[object, tuple[str, float | None]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    async def _handle(self, reader, writer) -> None:
        # One request per connection, or (keep_alive) as many as the client sends.
        close = b"keep-alive" if self.keep_alive else b"close"
        try:
            while True:
                started = None
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    for line in head.lower().split(b"\r\n"):
                        if line.startswith(b"content-length:"):
                            await reader.readexactly(int(line.split(b":")[1]))
                        elif line.startswith(b"x-started:"):
                            started = float(line.split(b":")[1])
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                read = time.time()
                self.now += 1
                self.total += 1
                self.peak = max(self.peak, self.now)
                # What is in flight: the request line, and how long after its
                # client started it (header x-started) this server read it.
                key = object()
                self._flight[key] = (
                    head.split(b" ")[1].decode(errors="replace"),
                    None if started is None else round(read - started, 3),
                )
                if self.now > self.limit:
                    self.over.append((read, self.now, sorted(self._flight.values())))
                try:
                    await asyncio.sleep(self.hold)
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: " + close
                        + b"\r\n\r\nok"
                    )  # fmt: skip
                    await writer.drain()
                except ConnectionError:
                    return
                finally:
                    self.now -= 1
                    del self._flight[key]
                if not self.keep_alive:
                    return
        finally:
            writer.close()

    def __enter__(self) -> CountingServer:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()
            # Requests still held end here, not when their loop is gone.
            held = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def chaos(client, seed: int, seconds: float, name: str, lease_timeout: float, futures) -> list[str]:
    """Stop (SIGSTOP, then SIGCONT after longer than the lease timeout) and
    kill (SIGKILL; the nanny starts a new worker) worker processes at random
    moments until ``seconds`` have passed or the work is done. A stopped worker
    is woken once the scheduler has also expired its shares of ``name`` (on
    a busy machine that can come well after the lease timeout), so that its
    units were free to go elsewhere while it stood still. Returns what was done."""
    import random

    from storylab.scheduling.distributed import shared_limit_statistics

    def members() -> set[str]:
        return set(client.sync(shared_limit_statistics, client.scheduler, name)["members"])

    rng = random.Random(seed)
    done: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not all(f.done() for f in futures):
        time.sleep(rng.uniform(0.3, 1.5))  # a random moment (the scenario, not a wait)
        by_pid = {pid: address for address, pid in client.run(os.getpid).items()}
        if not by_pid:
            continue
        pid = rng.choice(sorted(by_pid))
        address = by_pid[pid]
        if rng.random() < 0.25:
            os.kill(pid, signal.SIGKILL)
            done.append(f"kill {pid}")
            # Asked again only once the scheduler has noticed the death.
            poll(
                lambda gone=address: gone not in client.scheduler_info()["workers"],
                "the scheduler noticed a killed worker",
            )
        else:
            at_least = rng.uniform(1.2, 2.0) * lease_timeout
            held = set(client.run(dask_jobs.members_here, workers=[address]).get(address, []))
            os.kill(pid, signal.SIGSTOP)
            try:
                stopped = time.monotonic()

                def expired(since=stopped, at_least=at_least, held=held) -> bool:
                    return time.monotonic() - since >= at_least and not held & members()

                poll(
                    expired,
                    "the scheduler expired a stopped worker's shares",
                    timeout=120,
                )
                stood = time.monotonic() - stopped
            finally:
                os.kill(pid, signal.SIGCONT)
            done.append(f"stop {pid} {stood:.1f}s (at least {at_least:.1f}s)")
    return done


@pytest.fixture
def chaos_workers():
    with (
        dask.config.set(LEASES),
        dask.config.set({"distributed.scheduler.allowed-failures": 20}),
        LocalCluster(
            n_workers=3,
            threads_per_worker=4,
            processes=True,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", [7, 11])
def test_stopped_and_killed_workers_never_overbook_the_service(chaos_workers, seed):
    client = chaos_workers
    limit, lease_timeout, attempt_timeout = 4, 2.0, 1.0
    with CountingServer(hold=0.25) as server:
        server.limit = limit
        addresses = sorted(client.scheduler_info()["workers"])
        futures = [
            client.submit(
                dask_jobs.hammer, f"g-chaos-{seed}", limit, server.url, lease_timeout,
                attempt_timeout, 3, 12, workers=[a], allow_other_workers=True, pure=False,
            )
            for a in addresses
        ]  # fmt: skip
        done = chaos(client, seed, 25.0, f"g-chaos-{seed}", lease_timeout, futures)
        results = client.gather(futures)
    # (Shown with -rP: the peak each run saw.)
    print(f"seed {seed}: peak {server.peak} at once (limit {limit}), {server.total} requests")
    for moment in server.over:  # (when, how many, [(request, read after its start in s)])
        print("over the limit:", moment)
    assert any(d.startswith("stop") for d in done), done
    # Every request of every story was answered in the end...
    assert results == [36, 36, 36]
    # ...and the service never had more at once than the global limit.
    assert server.over == [], (server.over, done)
    assert server.peak <= limit


# -- merging the traces of several processes ------------------------------------------
async def test_merged_traces_keep_each_processs_runners_apart_and_add_up_shared_limits():
    parts = []
    for tag in ("a", "b"):
        # The same runner key and the same root name in both "processes".
        root = CapacitySource(10, name="global")
        story = CapacitySource(3, root, name=f"story-{tag}")

        async def sleep():
            await asyncio.sleep(0.05)

        with Trace(clock=time.time) as trace:
            runner = HierarchicalTaskPoolRunner("images", [sleep] * 6, story)
            runner.key = "images#1"
            async with runner.run_tasks() as results:
                async for _ in results:
                    pass
        parts.append((tag, trace))
    # Run one after the other here, so shift b onto a's time to overlap them.
    shift = parts[1][1].started_at - parts[0][1].started_at
    shifted = Trace(meta=parts[1][1].meta, clock=time.time, started_at=parts[0][1].started_at)
    shifted.events = [replace(e, t=e.t - shift) for e in parts[1][1].events]
    merged = merge_traces([parts[0], ("b", shifted)])
    assert [e.t for e in merged.events] == sorted(e.t for e in merged.events)
    runners = {e.runner for e in merged.events if e.runner}
    assert runners == {"images#1@a", "images#1@b"}
    assert merged.meta["limits"] == {"global": 10, "story-a": 3, "story-b": 3}
    # Each process alone never held more than 3; the shared name adds them up.
    assert peak(parts[0][1], "global") == 3 and peak(merged, "global") == 6
    assert peak_running(merged) == 6


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_holders_and_cancels_never_pass_the_limit_and_give_every_lease_back(seed):
    import random

    rng = random.Random(seed)
    async with scheduler() as (cluster, client):
        # Two roots with one name: two processes sharing a limit of 3.
        roots = [DistributedCapacityRoot(3, name=f"g-rand-{seed}", client=client) for _ in "ab"]
        stories = [CapacitySource(2, roots[i % 2], name=f"s{i}") for i in range(4)]
        holding = top = 0

        async def user(n: int) -> None:
            nonlocal holding, top
            story = stories[n % 4]
            await story.acquire(owner=n)
            holding += 1
            top = max(top, holding)
            try:
                await asyncio.sleep(rng.uniform(0, 0.02))
            finally:
                holding -= 1
                story.release(owner=n)

        tasks = [asyncio.ensure_future(user(n)) for n in range(40)]
        for _ in range(10):  # cancel some, waiting or holding
            await asyncio.sleep(rng.uniform(0, 0.02))
            rng.choice(tasks).cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert top <= 3 and holding == 0
        assert [s.in_use for s in stories] == [0, 0, 0, 0]
        assert all(s.statistics().holders == () for s in stories)
        for _ in range(50):  # late grants of cancelled asks are handed back
            for root in roots:
                await root.drain()
            if await roots[0].global_in_use() == 0:
                break
            await asyncio.sleep(0.1)
        assert await roots[0].global_in_use() == 0


# -- the fenced HTTP transport ---------------------------------------------------------
async def test_the_fenced_transport_sends_keeps_connections_and_maps_errors():
    import socket

    import httpx

    from storylab.scheduling.distributed import may_send

    assert may_send()  # outside any guard: nothing to fence
    with CountingServer(hold=0.0, keep_alive=True) as server:
        server.limit = 1
        async with httpx.AsyncClient(timeout=5, transport=http_transport()) as http:
            for i in range(3):
                reply = await http.get(f"{server.url}/{i}")
                assert (reply.status_code, reply.text) == (200, "ok")
        assert server.total == 3 and server.peak == 1
    # Nobody listens on a port just closed: a connect error, as httpx says it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(timeout=5, transport=http_transport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")
    # A server that holds the request past the read timeout: httpx's ReadTimeout.
    with CountingServer(hold=5.0) as server:
        server.limit = 1
        async with httpx.AsyncClient(timeout=0.2, transport=http_transport()) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"{server.url}/slow")


async def test_a_fence_that_says_no_cancels_the_request_before_a_byte_is_written():
    import httpx

    from storylab.scheduling.fenced_http import FencedTransport

    asked = []

    def fence() -> bool:
        asked.append(1)
        asyncio.current_task().cancel()  # what may_send does when it refuses
        return False

    with CountingServer(hold=0.0, keep_alive=True) as server:
        server.limit = 1
        async with httpx.AsyncClient(timeout=5, transport=FencedTransport(fence=fence)) as http:
            with pytest.raises(asyncio.CancelledError):
                await http.get(f"{server.url}/no")
        await settle(0.2)  # a request that did go out would be counted by now
        assert asked == [1] and server.total == 0


async def test_a_guarded_task_that_finds_its_share_too_old_at_a_write_raises_shared_limit_lost():
    # The request is made by the guarded task itself (no runner in between):
    # it is cancelled once, and the guard says why.
    import httpx

    with scheduler_process() as info, CountingServer(hold=0.0, keep_alive=True) as server:
        server.limit = 1
        async with Client(scheduler_file=info, asynchronous=True) as client:
            root = DistributedCapacityRoot(
                2, name="g-own", client=client, lease_timeout=4, attempt_timeout=1
            )
            story = CapacitySource(2, root, name="story")
            async with httpx.AsyncClient(timeout=5, transport=http_transport()) as http:

                async def guarded() -> None:
                    async with root.guard():
                        await story.acquire(owner=1)
                        try:
                            await http.get(f"{server.url}/first")
                            stand_still(address_in(info), "g-own", root._member, at_least=4.0)
                            await http.get(f"{server.url}/late")
                        finally:
                            story.release(owner=1)

                with pytest.raises(SharedLimitLost, match="lost its share of 'g-own'"):
                    await asyncio.wait_for(guarded(), 60)
            assert server.total == 1 and root.losses == 1 and root.in_use == 0
            await root.close()
