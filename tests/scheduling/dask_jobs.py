"""Code run inside Dask worker processes by the distributed capacity tests
(sent by value, so the workers need not import the tests)."""

from __future__ import annotations

import asyncio
import time

from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, Trace
from storylab.scheduling.distributed import DistributedCapacityRoot


async def run_traced(
    name: str, capacity: int, story_limit: int, tasks: int, seconds: float, shared: bool
) -> Trace:
    """``tasks`` sleeps of ``seconds`` under a story limit, under the global
    limit: the shared one (a DistributedCapacityRoot) or, as a control, a
    plain per-process CapacitySource with the same name."""
    if shared:
        root: CapacitySource = DistributedCapacityRoot(capacity, name=name)
    else:
        root = CapacitySource(capacity, name=name)
    story = CapacitySource(story_limit, root, name=f"story-{id(root)}")

    async def sleep() -> None:
        await asyncio.sleep(seconds)

    with Trace(clock=time.time) as trace:
        runner = HierarchicalTaskPoolRunner("sleeps", [sleep] * tasks, story)
        async with runner.run_tasks() as results:
            async for _ in results:
                pass
    if shared:
        await root.drain()
    return trace


async def hold_units(name: str, capacity: int, units: int) -> None:
    """Take ``units`` units and keep them until the process dies."""
    root = DistributedCapacityRoot(capacity, name=name)
    story = CapacitySource(units, root)
    for i in range(units):
        await story.acquire(owner=i)
    await asyncio.sleep(3600)


async def shared_stats(name: str) -> dict:
    """The allocator's view of limit ``name`` (run inside a worker)."""
    from distributed import get_worker

    from storylab.scheduling.distributed import shared_limit_statistics

    return await shared_limit_statistics(get_worker().scheduler, name)


async def take_units(name: str, capacity: int, units: int, wait: float) -> int:
    """How many of ``units`` units could be had within ``wait`` seconds (all
    given back afterwards)."""
    root = DistributedCapacityRoot(capacity, name=name, lease_timeout=2)
    story = CapacitySource(units, root)
    got = 0
    try:
        for i in range(units):
            await asyncio.wait_for(story.acquire(owner=i), wait)
            got += 1
    except TimeoutError:
        pass
    for i in range(got):
        story.release(owner=i)
    await root.close()
    return got


def _remember(root: DistributedCapacityRoot) -> None:
    """Keep the root on its worker, so the tests can ask which shares it holds."""
    from distributed import get_worker

    worker = get_worker()
    roots = getattr(worker, "storylab_test_roots", None)
    if roots is None:
        roots = worker.storylab_test_roots = []
    roots.append(root)


def members_here(dask_worker) -> list[str]:
    """The allocator member ids of the roots kept on this worker (``client.run``)."""
    return [r._member for r in getattr(dask_worker, "storylab_test_roots", [])]


async def hammer(
    name: str,
    capacity: int,
    url: str,
    lease_timeout: float,
    attempt_timeout: float,
    stories: int,
    requests: int,
) -> int:
    """``stories`` stories of ``requests`` HTTP requests each (3 at once per
    story) under the shared limit, each request cut at ``attempt_timeout``,
    as the image backend does. A story cancelled because the process lost its
    share runs again, as on a cluster. Returns the requests that finished."""
    import httpx

    try:
        root = DistributedCapacityRoot(
            capacity, name=name, lease_timeout=lease_timeout, attempt_timeout=attempt_timeout
        )
    except TypeError:  # a root without the timing rule (the code before it)
        root = DistributedCapacityRoot(capacity, name=name)
    _remember(root)
    guard = getattr(root, "guard", None)
    lost_error = getattr(
        __import__("storylab.scheduling.distributed", fromlist=["x"]), "SharedLimitLost", None
    )
    done = 0

    limits = httpx.Limits(max_connections=None)
    try:  # every write asks the share first (with no await in between)
        from storylab.scheduling.fenced_http import FencedTransport

        transport: httpx.AsyncBaseTransport | None = FencedTransport(limits=limits)
    except ImportError:  # the code before the fence
        transport = None
    async with httpx.AsyncClient(
        timeout=attempt_timeout, limits=limits, transport=transport
    ) as http:

        async def one_story(n: int) -> None:
            nonlocal done
            left = list(range(requests))

            def request(i: int):
                async def go() -> None:
                    nonlocal done
                    async with asyncio.timeout(attempt_timeout):
                        # (When the attempt began: the server shows how late it read it.)
                        started = {"x-started": f"{time.time():.6f}"}
                        reply = await http.get(f"{url}/{n}/{i}", headers=started)
                    reply.raise_for_status()
                    left.remove(i)
                    done += 1

                return go

            while left:
                story = CapacitySource(3, root, name=f"s{n}")
                runner = HierarchicalTaskPoolRunner("req", [request(i) for i in list(left)], story)
                try:
                    if guard is not None:
                        async with guard():
                            async with runner.run_tasks() as results:
                                async for _ in results:
                                    pass
                    else:
                        async with runner.run_tasks() as results:
                            async for _ in results:
                                pass
                except Exception as exc:
                    if lost_error is None or not isinstance(exc, lost_error):
                        raise

        await asyncio.gather(*(one_story(n) for n in range(stories)))
    if hasattr(root, "close"):
        await root.close()
    return done
