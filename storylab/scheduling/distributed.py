"""A capacity root shared by many processes, held on a Dask distributed scheduler.

Why: one process keeps its global image limit with a :class:`CapacitySource`,
but ten worker processes each with their own ``CapacitySource(10)`` would run
a hundred images at once. The limit has to live somewhere every process asks:
here, a :class:`distributed.Semaphore` on the Dask scheduler, whose units are
*leases*. A process keeps its leases alive by refreshing them; when it dies,
they stop being refreshed and the scheduler takes them back after
``distributed.scheduler.locks.lease-timeout`` (30 s by default; the tests and
the notebook set a few seconds), so a killed worker cannot keep the limit
taken for ever.

:class:`DistributedCapacityRoot` is an ordinary capacity root for the stories
of its own process (their ``CapacitySource(3, root)`` children, the fair
policy between them, the holders, the trace), with one more level above it:
the scheduler's semaphore. Taking a unit goes in two steps, in this order:

1. the local levels, as for any tree (waiting in the local queue if the
   story's own limit, or this process's share, is full). A story held back
   by its own limit therefore costs no call to the scheduler at all;
2. one lease from the scheduler, awaited. If that fails or is cancelled, the
   local unit is given back, so a unit is still taken at every level or not
   at all.

Giving a unit back is synchronous for the caller: the local levels are
freed at once and the lease is returned by a background call (awaited by
:meth:`DistributedCapacityRoot.drain`). The trace records a unit as taken
only once its lease is held and as given back before the lease is returned,
so the units in use that a trace shows (merged over every process) are
never more than the scheduler had granted.

A process refreshes its leases every fifth of the lease timeout, from its
event loop: keep the timeout well above the longest time that loop may be
blocked (storylab draws and decodes pictures in threads for this reason), or
the scheduler takes back leases that are still in use.

``distributed`` is imported only when a root first talks to the scheduler.
"""

from __future__ import annotations

import asyncio
from typing import Any

from storylab._checks import check_positive_int
from storylab.scheduling.capacity import CapacitySource
from storylab.scheduling.trace import _CURRENT, EventKind

__all__ = ["DistributedCapacityRoot", "LEASE_TIMEOUT_KEY"]

LEASE_TIMEOUT_KEY = "distributed.scheduler.locks.lease-timeout"


class DistributedCapacityRoot(CapacitySource):
    """A capacity root whose ``capacity`` units are shared by every process that
    makes a root with the same ``name`` on the same Dask scheduler.

    ``client`` is a ``distributed.Client`` (asynchronous or not) to reach the
    scheduler; inside a Dask task it may be left out (the worker's own
    connection is used). Use the root, and every source under it, from the
    event loop of that client or worker: ``await source.acquire()``,
    ``source.release()``. Every process must give the same ``capacity`` for a
    name (the scheduler refuses another one).
    """

    _distributed = True

    __slots__ = ("_client", "_semaphore", "_returns", "_leased", "_ready")

    def __init__(self, capacity: int, *, name: str = "global", client: Any = None) -> None:
        check_positive_int("capacity", capacity)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        super().__init__(capacity, name=name, policy="fair")
        self._client = client
        self._semaphore: Any = None
        self._ready: asyncio.Future | None = None
        # Background calls that give leases back to the scheduler.
        self._returns: set[asyncio.Task] = set()
        self._leased = 0

    # -- state ----------------------------------------------------------------
    @property
    def leased(self) -> int:
        """Units of this process whose scheduler lease is held right now."""
        return self._leased

    async def global_in_use(self) -> int:
        """Leases granted on the scheduler right now, by every process."""
        sem = await self._connect()
        return await sem.get_value()

    # -- the scheduler side ----------------------------------------------------
    async def _connect(self) -> Any:
        if self._semaphore is not None:
            return self._semaphore
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._register())
        # Shielded: one caller cancelled must not cancel the registration
        # that the others are waiting for.
        return await asyncio.shield(self._ready)

    async def _register(self) -> Any:
        from distributed import Semaphore

        if self._client is not None:
            sem = Semaphore(
                max_leases=self._capacity,
                name=self._name,
                scheduler_rpc=self._client.scheduler,
                loop=self._client.loop,
            )
        else:
            sem = Semaphore(max_leases=self._capacity, name=self._name)
        if sem.loop is None or sem.scheduler is None:
            raise RuntimeError(
                f"DistributedCapacityRoot {self._name!r} has no scheduler to talk to: "
                "pass client=, or use it inside a Dask task"
            )
        if sem.loop.asyncio_loop is not asyncio.get_running_loop():
            raise RuntimeError(
                f"DistributedCapacityRoot {self._name!r} must be used from the event loop "
                "of its client or worker"
            )
        try:
            await sem
        except ValueError as exc:  # the scheduler knows this name with another capacity
            raise ValueError(
                f"capacity of {self._name!r} must match the one other processes use: {exc}"
            ) from None
        self._semaphore = sem
        return sem

    async def _lease(self, leaf: CapacitySource, owner: Any, trace: Any, waited: bool) -> bool:
        """Get one scheduler lease; True if it had to wait for it."""
        sem = await self._connect()
        # A first ask that does not wait: the usual case costs one round trip,
        # and when the limit is full the trace can say so before waiting.
        if await self._ask(sem, 0):
            return waited
        if trace is not None and not waited:
            leaf._record(trace, EventKind.WAIT, owner, level=self._name)
        await self._ask(sem, None)
        return True

    async def _ask(self, sem: Any, timeout: float | None) -> bool:
        """One ``semaphore.acquire``; if we are cancelled meanwhile, the call
        goes on, and a lease it still gets is handed straight back instead of
        staying taken (unrefreshed) until the lease timeout."""
        task = asyncio.ensure_future(sem.acquire(timeout=timeout))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._return_late_lease)
            raise

    def _return_late_lease(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is None and task.result():
            self._send_back()

    def _send_back(self) -> None:
        call = self._semaphore.release()
        task = asyncio.ensure_future(call)
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def _acquire_leased(self, leaf: CapacitySource, owner: Any) -> None:
        """``leaf.acquire(owner=owner)`` for a tree under this root (see the module doc)."""
        trace = _CURRENT.get()
        waited = False
        # 1. The local levels, recording nothing yet: the unit is not taken
        #    until its lease is held.
        if leaf._blocking_level() is None:
            leaf._take(owner)
        else:
            waited = True
            # _enqueue records the WAIT, naming the full level.
            future = asyncio.get_running_loop().create_future()
            waiter = leaf._enqueue(future, None, owner)
            waiter.trace = None  # the grant is recorded below, once the lease is held
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._untake(leaf, owner)
                else:
                    leaf._unqueue(waiter)
                    self._dispatch()
                if trace is not None:
                    leaf._record(trace, EventKind.WAIT_CANCELLED, owner)
                raise
        # 2. The scheduler's lease.
        try:
            waited = await self._lease(leaf, owner, trace, waited)
        except BaseException:
            self._untake(leaf, owner)
            if trace is not None and waited:
                leaf._record(trace, EventKind.WAIT_CANCELLED, owner)
            raise
        self._leased += 1
        if trace is not None:
            leaf._record(trace, EventKind.GRANT if waited else EventKind.ACQUIRE, owner)

    def _untake(self, leaf: CapacitySource, owner: Any) -> None:
        """Give back a local unit that never got its lease (nothing to return)."""
        holders = leaf._holders
        held = holders[owner]
        if held == 1:
            del holders[owner]
        else:
            holders[owner] = held - 1
        for src in leaf._path:
            src._in_use -= 1
        if self._queued:
            self._dispatch()

    def _return_lease(self) -> None:
        # Called by release() after the local levels were freed.
        self._leased -= 1
        self._send_back()

    async def drain(self) -> None:
        """Wait until every lease given back has reached the scheduler."""
        while self._returns:
            await asyncio.gather(*self._returns, return_exceptions=True)

    def __repr__(self) -> str:
        return (
            f"<DistributedCapacityRoot {self._name!r} {self._in_use}/{self._capacity} in use "
            f"here ({self._leased} leased), {self.waiting} waiting>"
        )
