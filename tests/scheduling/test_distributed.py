"""DistributedCapacityRoot: one global limit held on a real Dask scheduler.

In-process schedulers (``LocalCluster(processes=False)``) check the two-step
acquire, its errors and its cancellation; real LocalClusters of 3 worker
processes check the limit across processes from their merged traces, and
that a SIGKILLed worker's units come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import replace

import pytest

pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
import dask  # noqa: E402
import dask_jobs  # noqa: E402
from distributed import Client, LocalCluster, Semaphore  # noqa: E402

from storylab.scheduling import (  # noqa: E402
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    Trace,
    merge_traces,
)
from storylab.scheduling.distributed import DistributedCapacityRoot  # noqa: E402

cloudpickle.register_pickle_by_value(dask_jobs)

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


def metrics(cluster, name: str) -> tuple[int, int]:
    """(leases granted so far, acquires waiting now) on the scheduler itself."""
    ext = cluster.scheduler.extensions["semaphores"]
    return ext.metrics["acquire_total"][name], ext.metrics["pending"][name]


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
    await asyncio.sleep(seconds)


# -- one process -----------------------------------------------------------------
async def test_a_story_blocked_by_its_own_limit_makes_no_scheduler_call():
    async with scheduler() as (cluster, client):
        root = DistributedCapacityRoot(10, name="g-local-first", client=client)
        story = CapacitySource(1, root, name="story")
        await story.acquire(owner="a")
        assert metrics(cluster, "g-local-first") == (1, 0)
        second = asyncio.ensure_future(story.acquire(owner="b"))
        await settle()
        assert not second.done()
        # Held back by the story level: the scheduler never heard of it.
        assert metrics(cluster, "g-local-first") == (1, 0)
        assert (story.waiting, root.leased) == (1, 1)
        story.release(owner="a")
        await second
        assert metrics(cluster, "g-local-first") == (2, 0)
        story.release(owner="b")
        await root.drain()
        assert await root.global_in_use() == 0


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
            await settle()
            assert not waiting.done()
            assert metrics(cluster, "g-full")[1] == 1  # waiting there, not here
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


async def test_a_cancelled_wait_for_a_lease_holds_nothing_at_any_level():
    async with scheduler() as (cluster, client):
        there = DistributedCapacityRoot(1, name="g-cancel", client=client)
        holder = CapacitySource(1, there)
        await holder.acquire(owner="x")
        here = DistributedCapacityRoot(1, name="g-cancel", client=client)
        story = CapacitySource(2, here, name="story")
        waiting = asyncio.ensure_future(story.acquire(owner="y"))
        await settle()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (story.in_use, here.in_use, here.leased) == (0, 0, 0)
        assert story.statistics().holders == ()
        # The scheduler grants the abandoned ask once the holder lets go; that
        # lease is handed straight back, so the limit is whole again.
        holder.release(owner="x")
        await there.drain()
        for _ in range(50):
            await here.drain()
            if await here.global_in_use() == 0:
                break
            await settle(0.1)
        assert await here.global_in_use() == 0
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
        # One lease per task, plus one per runner: a runner takes its unit
        # before it pulls, and the last pull finds the source empty.
        assert metrics(cluster, "g-runner")[0] == 15 + 3


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
        with pytest.raises(ValueError, match="capacity of 'g-mis' must match"):
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
    victim = sorted(pids)[0]
    client.submit(dask_jobs.hold_units, "g-kill", 10, 6, workers=[victim], pure=False)
    sem = Semaphore(max_leases=10, name="g-kill")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError):  # not registered yet
            if sem.get_value() == 6:
                break
        time.sleep(0.1)
    assert sem.get_value() == 6
    os.kill(pids[victim], signal.SIGKILL)
    # Nobody refreshes the dead process's leases: the scheduler takes them back
    # after the lease timeout (2 s here).
    deadline = time.monotonic() + 30
    while sem.get_value() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sem.get_value() == 0
    # All ten units can be had again, and no eleventh.
    assert all(sem.acquire(timeout=5) for _ in range(10))
    assert not sem.acquire(timeout=0.5)
    for _ in range(10):
        sem.release()


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
