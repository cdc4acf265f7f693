"""A capacity root shared by many processes, allocated from a Dask distributed scheduler.

Why: one process keeps its global image limit with a :class:`CapacitySource`,
but ten worker processes each with their own ``CapacitySource(10)`` would run
a hundred images at once. The limit has to be divided between the processes
by something they all reach: the Dask scheduler.

How, in two parts:

* **On the scheduler**, :class:`SharedLimitAllocator` (a Dask scheduler
  plugin, installed by the first process that asks) keeps, for every limit
  name, how many units each process holds (its *share*) and what its
  stories want. When the stories want more than the limit, it divides the
  limit between *stories*, not processes: every story is entitled to the
  same level (water-filling, capped by what each wants), a process to the
  sum over its stories (a fraction in general: the units left over go to
  the processes whose stories were served the least so far, so the
  fractions are taken in turn). Free units go at once to the processes
  below their target; a process above its target is told, and gives units
  back as they are released.
* **In each process**, :class:`DistributedCapacityRoot` is an ordinary
  capacity root (the per-story limits and the fair policy between the
  process's own stories) that is its own :class:`~storylab.scheduling.capacity.LeaseGate`:
  a unit taken on the local levels also takes a unit of the share. That is
  local, with no network, as long as the share has room; when it has none,
  the root reports its stories' wants and the allocator answers with more
  units or a lower target. A freed unit stays in the share (serving the
  stories here, fewest units in use first) unless stories elsewhere wait
  and this process is above its target. Units left unused go back after a
  short idle time.

A share is a *lease*: a process keeps it by talking to the scheduler at
least every tenth of ``lease_timeout`` (a call that waits there for news,
so it costs nothing while nothing happens). A process silent for longer than
``lease_timeout`` loses its share; the allocator hands its units to others.

**The timing rule that prevents overbooking.** A unit must never reach
another process while a request made under it may still be running at the
service. A request runs at most ``attempt_timeout`` (the per-attempt
deadline of the image backend: the client gives up then). So a process
stops using its share once less than ``attempt_timeout`` plus a margin
(a tenth of the lease timeout) is left of it, counted from the last call the
scheduler answered, on the process's own clock:

* a process that was stopped (SIGSTOP, a frozen machine, a blocked event
  loop) finds on waking that its share may be gone: it cancels the work
  running under it at once (:meth:`DistributedCapacityRoot.guard`), never
  renews the old lease, and starts again with a new, empty share. The old
  units stay counted on the scheduler until that lease expires, when every
  request made under them has ended;
* a running process renews its share every tenth of the lease timeout
  (and hears back within two tenths), so at least 0.7 of the lease
  timeout is always left of it: its requests end before its share could
  expire. This holds when ``lease_timeout >= 2 * attempt_timeout`` (and at
  least 1 s); the root refuses other values (:func:`check_lease_rule`).

A process that wakes after standing still gives its share up at the first
of two moments. Usually the watchdog timer does it: it is due at the same
turn of the event loop as any timer or answer that would wake the guarded
tasks, so they are cancelled before their next step. But steps that were
already due when the process stopped run first, and so do the tasks a
runner started inside the guard, which hear of the loss only through their
parent's cancellation, a few turns later. Such a step can reach the point
of sending a request. So every request is fenced where it is written:
:func:`may_send` reads the monotonic clock and refuses once the share is
past its use-until time (or lost), giving the share up at once and
cancelling the task, which gives its unit back. The HTTP layer asks it
right before every write to the socket, with no ``await`` in between
(:class:`storylab.scheduling.fenced_http.FencedTransport`).

**What remains.** A process stopped after that check and before the write's
system call (a few bytecodes later) writes on waking, whatever the clock
says then; so does one that the operating system does not give a core for
longer than the margin in that moment, on a heavily loaded machine. No
check made in the process can close that, and no value of the timing rule
can either, since the stop may last longer than any lease.
What the rule does guarantee: a request *written* while the share was
usable ends at the service before the share can expire, however long the
process then stands still (written at ``w <= safe_until - attempt_timeout
- lease_timeout / 10``, it ends by ``safe_until - lease_timeout / 10``,
while the scheduler, which heard the last renewal after it was sent, keeps
the share until ``safe_until`` at least; the tenth covers the moment
between check and write of a process that is not stopped). Only the
service itself could refuse a request that arrives late (by a deadline or
a token it checks).

The rule assumes what the deadline promises: the service does not keep
working on a request longer than the client waits for it.

``distributed`` is imported only when a root first talks to the scheduler;
the scheduler process must be able to import storylab.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from storylab._checks import check_positive_int
from storylab.errors import StorylabError
from storylab.scheduling.capacity import CapacitySource

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "LEASE_TIMEOUT_KEY",
    "DistributedCapacityRoot",
    "SharedLimitAllocator",
    "SharedLimitLost",
    "check_lease_rule",
    "in_guard",
    "may_send",
]

LEASE_TIMEOUT_KEY = "distributed.scheduler.locks.lease-timeout"
DEFAULT_LEASE_TIMEOUT = 10.0
PLUGIN_NAME = "storylab-shared-limits"
HANDLER = "storylab_shared_limit"
STICKY = 0.5  # units served per story a process may be ahead before a spare unit moves
IDLE_RETURN = 0.25  # seconds a unit may sit unused in a share before it goes back

log = logging.getLogger("storylab.cluster")


def check_lease_rule(
    lease_timeout: Any,
    attempt_timeout: Any = None,
    *,
    names: tuple[str, str] = ("lease_timeout", "attempt_timeout"),
) -> float:
    """``lease_timeout`` as a float if it keeps the timing rule, else a ValueError
    naming both settings (``names``, e.g. the command-line flags).

    The rule: ``lease_timeout >= 2 * attempt_timeout`` and ``>= 1`` s, so that
    a request made under a unit ends before the scheduler can hand that unit
    to another process (see the module doc).
    """
    lease, attempt = names
    if (
        isinstance(lease_timeout, bool)
        or not isinstance(lease_timeout, int | float)
        or not math.isfinite(lease_timeout)
        or not lease_timeout > 0
    ):
        raise ValueError(f"{lease} must be a number of seconds > 0; got {lease_timeout!r}")
    if lease_timeout < 1:
        raise ValueError(
            f"{lease} must be at least 1 s (a process renews its share every tenth of it); "
            f"got {lease_timeout:g}"
        )
    if attempt_timeout is not None and lease_timeout < 2 * attempt_timeout:
        raise ValueError(
            f"{lease} ({lease_timeout:g} s) must be at least twice {attempt} "
            f"({attempt_timeout:g} s), or a stopped process's units could be handed on while "
            f"its requests still run: raise {lease} to {2 * attempt_timeout:g} or lower {attempt}"
        )
    return float(lease_timeout)


class SharedLimitLost(StorylabError, RuntimeError):
    """Work cancelled because its process's share of a shared limit may be gone."""


# -- the scheduler side ------------------------------------------------------------


class _Member:
    """One process's share of one limit, as the allocator sees it."""

    __slots__ = (
        "grant", "wants", "seen", "lease_timeout", "target", "add", "news", "told", "spare_at",
        "told_wanted",
    )  # fmt: skip

    def __init__(self, lease_timeout: float) -> None:
        self.grant = 0  # units this process may be using
        # Per story: (units it could use, units in use, units granted so far).
        self.wants: list[tuple[int, int, int]] = []
        self.seen = 0.0
        self.lease_timeout = lease_timeout
        self.target = 0
        self.add = 0  # units granted but not yet sent to the process
        self.news = asyncio.Event()
        self.told = -1  # the target the process last heard
        # When it was last handed a spare unit (see _targets), -1 for never.
        self.spare_at = -1
        self.told_wanted = False  # what the process last heard of wants elsewhere


class _Limit:
    __slots__ = ("capacity", "members", "lost", "contended", "returned", "granted", "spares")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.members: dict[str, _Member] = {}
        self.lost: OrderedDict[str, None] = OrderedDict()
        self.contended = False
        self.returned = 0  # units given back by processes, in total
        self.granted = 0  # units handed to processes, in total
        self.spares = 0  # spare units handed out so far (stamps _Member.spare_at)

    def free(self) -> int:
        return self.capacity - sum(m.grant for m in self.members.values())


def _targets(
    wants: list[list[int]],
    served: list[float],
    capacity: int,
    held: list[int] | None = None,
    spared: list[int] | None = None,
) -> list[int]:
    """Units per process, from what each of its stories could use.

    When the stories want more than ``capacity``, every story is entitled to
    the same level (water-filling: a story that wants less keeps what it
    wants, the others share the rest equally), and a process to the sum over
    its stories, a fraction in general. Each process gets the whole part of
    its entitlement; the units left go to the processes whose stories have
    been served the least so far (``served``: units granted per story), so
    over time the fractions are taken in turn.

    Ties between processes served equally go to the one listed first: the
    allocator lists them by when they last received a spare unit (never
    first, then longest ago), then by member name, so the spread never
    depends on the order in which processes called. The positions of the
    processes that receive a spare unit are appended to ``spared``.
    """
    flat = sorted(w for ws in wants for w in ws)
    if sum(flat) <= capacity:
        return [sum(ws) for ws in wants]
    left, level, n = float(capacity), 0.0, len(flat)
    for i, w in enumerate(flat):
        if w * (n - i) <= left:
            left -= w
            continue
        level = left / (n - i)
        break
    exact = [sum(min(w, level) for w in ws) for ws in wants]
    got = [math.floor(e + 1e-9) for e in exact]
    spare = capacity - sum(got)
    # A process that holds its spare unit now keeps it until its stories are
    # half a unit ahead of the others': units move less often between processes.
    held = held if held is not None else got
    ahead = [served[i] - (STICKY if held[i] > got[i] else 0.0) for i in range(len(exact))]
    for i in sorted(range(len(exact)), key=lambda i: (ahead[i], i)):
        if spare <= 0:
            break
        if exact[i] > got[i] + 1e-9:
            got[i] += 1
            spare -= 1
            if spared is not None:
                spared.append(i)
    return got


def _wanted_elsewhere(limit: _Limit, member: _Member) -> bool:
    """Whether stories of a process other than ``member`` could use more units
    than that process holds."""
    return any(
        o is not member and sum(w for w, _, _ in o.wants) > o.grant for o in limit.members.values()
    )


class SharedLimitAllocator:
    """The scheduler's side of every :class:`DistributedCapacityRoot` (a Dask
    scheduler plugin; see the module doc). It answers one call,
    ``storylab_shared_limit``, through which a process renews its share,
    gives units back, reports what its stories want and receives units."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.limits: dict[str, _Limit] = {}
        self._expiry: asyncio.Task | None = None

    # SchedulerPlugin protocol (duck-typed here so this module imports no Dask).
    async def start(self, scheduler: Any) -> None:
        scheduler.handlers[HANDLER] = self.call
        scheduler.handlers[HANDLER + "_statistics"] = self.statistics
        self._expiry = asyncio.ensure_future(self._expire_forever())

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for limit in self.limits.values():
                self._expire(limit, now)

    def _expire(self, limit: _Limit, now: float) -> None:
        gone = [k for k, m in limit.members.items() if now - m.seen > m.lease_timeout]
        for key in gone:
            member = limit.members.pop(key)
            limit.lost[key] = None
            if len(limit.lost) > 10_000:
                limit.lost.popitem(last=False)
            member.news.set()
        if gone:
            self._rebalance(limit)

    def _rebalance(self, limit: _Limit) -> None:
        # Ties are broken by a rule, not by the order in which processes
        # called: the one that has gone longest without a spare unit first
        # (never before ever), then by member name.
        keys = sorted(limit.members, key=lambda k: (limit.members[k].spare_at, k))
        members = [limit.members[k] for k in keys]
        wants = [[w for w, _, _ in m.wants if w > 0] for m in members]
        served = [
            sum(n for w, _, n in m.wants if w > 0) / max(1, len(ws))
            for m, ws in zip(members, wants, strict=True)
        ]
        held = [m.grant for m in members]
        spared: list[int] = []
        targets = _targets(wants, served, limit.capacity, held, spared=spared)
        for i in spared:
            m = members[i]
            if m.target < targets[i]:  # a spare unit it did not have before
                m.spare_at = limit.spares
                limit.spares += 1
        for m, target in zip(members, targets, strict=True):
            m.target = target
        free = limit.free()
        # Units go to the processes furthest below their target first; ties
        # in the same order as above (sorted() keeps it).
        short = sorted((m for m in members if m.grant < m.target), key=lambda m: m.grant - m.target)
        for m in short:
            if free <= 0:
                break
            give = min(m.target - m.grant, free)
            m.grant += give
            m.add += give
            limit.granted += give
            free -= give
            m.news.set()
        limit.contended = any(m.grant < m.target for m in members)
        if limit.contended:
            for m in members:
                if m.grant > m.target and m.told != m.target:
                    m.news.set()
        for m in members:
            # A process learns at once that stories elsewhere now want more
            # than they hold (it then sends back units nobody there can take).
            if not m.told_wanted and _wanted_elsewhere(limit, m):
                m.news.set()

    async def call(
        self,
        name: str,
        capacity: int,
        member: str,
        lease_timeout: float,
        returned: int = 0,
        wants: list[tuple[int, int, int]] | None = None,
        wait: float = 0.0,
        new: bool = False,
    ) -> dict[str, Any]:
        limit = self.limits.get(name)
        if limit is None:
            limit = self.limits[name] = _Limit(capacity)
        elif limit.capacity != capacity:
            return {"error": f"the other processes use a capacity of {limit.capacity}"}
        now = time.monotonic()
        self._expire(limit, now)
        m = limit.members.get(member)
        if m is None:
            if not new or member in limit.lost:
                # Never renew a share that expired: its units may be in use elsewhere.
                return {"lost": True}
            m = limit.members[member] = _Member(lease_timeout)
        m.seen = now
        m.lease_timeout = lease_timeout
        m.grant = max(0, m.grant - returned)
        limit.returned += returned
        if wants is not None:
            m.wants = [(int(w), int(u), int(n)) for w, u, n in wants]
        self._rebalance(limit)
        news = m.add or (limit.contended and m.grant > m.target)
        news = news or (not m.told_wanted and _wanted_elsewhere(limit, m))
        if wait > 0 and not news:
            m.news.clear()
            try:
                await asyncio.wait_for(m.news.wait(), wait)
            except TimeoutError:
                pass
            if limit.members.get(member) is not m:
                return {"lost": True}
        add, m.add = m.add, 0
        m.told = m.target
        # Whether stories of another process could use more than it holds: a
        # unit this process frees with no taker here is then better sent back
        # at once than kept for the idle timer.
        m.told_wanted = wanted = _wanted_elsewhere(limit, m)
        return {"add": add, "target": m.target, "contended": limit.contended, "wanted": wanted}

    def statistics(self, name: str) -> dict[str, Any]:  # also a scheduler handler
        """Shares, targets and free units of one limit (for tests and debugging)."""
        limit = self.limits.get(name)
        if limit is None:
            return {"members": {}, "free": None}
        return {
            "members": {k: (m.grant, m.target) for k, m in limit.members.items()},
            "free": limit.free(),
            "capacity": limit.capacity,
            "returned": limit.returned,
            "granted": limit.granted,
        }


def _plugin_class() -> type:
    """SharedLimitAllocator as a real SchedulerPlugin (needs Dask)."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    global _PLUGIN
    if _PLUGIN is None:

        class Allocator(SharedLimitAllocator, SchedulerPlugin):
            pass

        Allocator.__module__ = __name__
        Allocator.__qualname__ = "_Allocator"
        _PLUGIN = Allocator
    return _PLUGIN


_PLUGIN: type | None = None


def __getattr__(name: str) -> Any:
    # Pickled by reference: the scheduler unpickles "_Allocator" from here.
    if name == "_Allocator":
        return _plugin_class()
    raise AttributeError(name)


async def shared_limit_statistics(rpc: Any, name: str) -> dict[str, Any]:
    """The allocator's view of one limit (shares and targets by process, free
    units), asked over ``rpc`` (a client's or a worker's scheduler connection)."""
    await _install(rpc)
    return await getattr(rpc, HANDLER + "_statistics")(name=name)


_INSTALLED: set[Any] = set()
_WORKER_ENDING = frozenset(
    {"stopping", "stopped", "closing", "closing_gracefully", "closed", "failed"}
)


async def _install(rpc: Any) -> None:
    """Install the allocator on the scheduler if nobody did yet (one round trip
    the first time a process asks a scheduler)."""
    from distributed.protocol.pickle import dumps

    where = getattr(rpc, "addr", None) or getattr(rpc, "address", None)
    if where is not None and where in _INSTALLED:
        return
    await rpc.register_scheduler_plugin(
        plugin=dumps(_plugin_class()()), name=PLUGIN_NAME, idempotent=True
    )
    if where is not None:
        _INSTALLED.add(where)


# -- the process side ----------------------------------------------------------------


class DistributedCapacityRoot(CapacitySource):
    """A capacity root whose ``capacity`` units are shared by every process that
    makes a root with the same ``name`` on the same Dask scheduler.

    ``client`` is a ``distributed.Client`` (asynchronous or not) to reach the
    scheduler; inside a Dask task it may be left out (the worker's own
    connection is used). Use the root, and every source under it, from the
    event loop of that client or worker: ``await source.acquire()``,
    ``source.release()``. Every process must give the same ``capacity`` for a
    name (the allocator refuses another one).

    ``lease_timeout`` (seconds; by default Dask's
    ``distributed.scheduler.locks.lease-timeout``, else 10) is how long a
    silent process keeps its share; ``attempt_timeout`` the longest a request
    made under a unit may run at the service (None: only in-process work).
    They must keep :func:`check_lease_rule`. Run the work that uses the units
    inside ``async with root.guard():`` so that it is cancelled (raising
    :class:`SharedLimitLost`) if the share is lost.
    """

    __slots__ = (
        "_client",
        "_rpc",
        "_lease_timeout",
        "_attempt_timeout",
        "_ready",
        "_member",
        "_epoch",
        "_grant",
        "_stale",
        "_leased",
        "_gate_waiters",
        "_target",
        "_contended",
        "_wanted",
        "_returning",
        "_flushing",
        "_keeper",
        "_watchdog",
        "_idle",
        "_last_use",
        "_safe_until",
        "_use_until",
        "_leaves",
        "_guarded",
        "_lost_reason",
        "_calls",
        "losses",
        "updates",
        "_alive",
    )

    def __init__(
        self,
        capacity: int,
        *,
        name: str = "global",
        client: Any = None,
        lease_timeout: float | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        check_positive_int("capacity", capacity)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if lease_timeout is None:
            lease_timeout = _configured_lease_timeout()
        self._lease_timeout = check_lease_rule(lease_timeout, attempt_timeout)
        self._attempt_timeout = attempt_timeout or 0.0
        # The root is its own lease gate (capacity.LeaseGate): a unit taken on
        # the local levels also needs a unit of this process's share.
        super().__init__(capacity, name=name, policy="fair", gate=self)
        self._client = client
        self._rpc: Any = None
        self._ready: asyncio.Future | None = None
        self._member = ""
        self._epoch = 0
        self._grant = 0  # units of the current share
        self._stale = 0  # units still in use from a share that was lost
        self._leased = 0  # units of the current share in use
        # Units waiting for room in the share: (story, future), oldest first.
        self._gate_waiters: deque[tuple[CapacitySource, asyncio.Future]] = deque()
        self._target = 0
        self._contended = False
        self._wanted = False  # stories of another process could use more units
        self._returning = 0
        self._flushing = False
        self._keeper: asyncio.Task | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_use = 0.0
        self._safe_until = 0.0
        self._use_until = math.inf
        # Stories here: [units in use through the share, units granted so far,
        # units waiting for room in the share].
        self._leaves: dict[CapacitySource, list[int]] = {}
        self._guarded: dict[asyncio.Task, _Guard] = {}
        self._lost_reason: str | None = None
        self._calls: set[asyncio.Task] = set()
        self.losses = 0  # times this process found its share lost
        self.updates = 0  # calls to the allocator other than the renewals
        self._alive: Callable[[], bool] = lambda: True

    # -- state ----------------------------------------------------------------
    @property
    def share(self) -> int:
        """Units this process may use right now (its share of the limit)."""
        return self._grant

    @property
    def leased(self) -> int:
        """Units of this process in use under its share right now."""
        return self._leased

    @property
    def lease_timeout(self) -> float:
        return self._lease_timeout

    async def global_in_use(self) -> int:
        """Units held by every process right now, as the allocator counts them
        (a share not yet expired counts, used or not)."""
        stats = await self.allocator_statistics()
        if stats.get("free") is None:
            return 0
        return stats["capacity"] - stats["free"]

    async def allocator_statistics(self) -> dict[str, Any]:
        await self._connect()
        return await shared_limit_statistics(self._rpc, self._name)

    # -- connecting ---------------------------------------------------------------
    async def _connect(self) -> None:
        if self._rpc is not None and self._ready is not None and self._ready.done():
            return
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._register())
        # Shielded: one caller cancelled must not cancel the registration
        # that the others are waiting for.
        await asyncio.shield(self._ready)

    async def _register(self) -> None:
        if self._client is not None:
            client = self._client
            rpc, loop = client.scheduler, client.loop
            self._alive = lambda: client.status not in ("closing", "closed")
        else:
            try:
                from distributed import get_worker

                worker = get_worker()
            except ValueError:
                raise RuntimeError(
                    f"DistributedCapacityRoot {self._name!r} has no scheduler to talk to: "
                    "pass client=, or use it inside a Dask task"
                ) from None
            rpc, loop = worker.scheduler, worker.loop
            self._alive = lambda: worker.status.name not in _WORKER_ENDING
        if loop is not None and loop.asyncio_loop is not asyncio.get_running_loop():
            raise RuntimeError(
                f"DistributedCapacityRoot {self._name!r} must be used from the event loop "
                "of its client or worker"
            )
        await _install(rpc)
        self._rpc = rpc
        self._new_member()
        reply = await self._call(wait=0.0, new=True)
        if reply is not None and "error" in reply:
            self._rpc = None
            self._ready = None
            raise ValueError(f"capacity of {self._name!r} must match: {reply['error']}")
        self._keeper = asyncio.ensure_future(self._keep())

    def _new_member(self) -> None:
        self._epoch += 1
        self._member = f"{uuid.uuid4().hex}"
        self._grant = self._target = 0
        self._returning = 0
        self._contended = False
        self._safe_until = 0.0
        self._use_until = math.inf  # until the first answer
        self._lost_reason = None

    # -- talking to the allocator -------------------------------------------------
    def _wants(self) -> list[tuple[int, int, int]]:
        """Per story: (units it could use, units it uses now, units it was
        granted so far). A story with a waiter could use its whole limit (a
        runner queues one task at a time)."""
        wants = []
        stale = self._stale  # units of a lost share in use: not wanted from the new one
        for leaf, (used, served, at_gate) in list(self._leaves.items()):
            waiting = at_gate or leaf.waiting
            if not waiting and not used:
                del self._leaves[leaf]
                continue
            if stale:
                cut = min(stale, used)
                used -= cut
                stale -= cut
            wants.append((leaf.capacity if waiting else used, used, served))
        return wants

    async def _call(self, *, wait: float, new: bool = False) -> dict[str, Any] | None:
        """One call to the allocator; its answer applied. None if the share is lost."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        if sent > self._use_until and not new:
            # Too long without an answer (this process stood still): the share
            # may be gone, so it is given up, never renewed.
            self._give_up_if_late()
            return None
        epoch = self._epoch
        returned, self._returning = self._returning, 0
        try:
            reply = await self._rpc.storylab_shared_limit(
                name=self._name,
                capacity=self.capacity,
                member=self._member,
                lease_timeout=self._lease_timeout,
                returned=returned,
                wants=self._wants(),
                wait=wait,
                new=new,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the scheduler went away, a broken connection
            # A scheduler started again may lack the allocator: install it again.
            _INSTALLED.discard(getattr(self._rpc, "addr", None))
            if epoch == self._epoch:
                self._lose(f"the scheduler could not be reached ({exc!r})")
            return None
        if epoch != self._epoch:
            return None  # an answer for a share already given up: ignore it
        if "error" in reply:
            return reply
        if reply.get("lost"):
            self._lose("the scheduler no longer knew its share (its lease had expired)")
            return None
        self._safe_until = max(self._safe_until, sent + self._lease_timeout)
        self._use_until = self._safe_until - self._attempt_timeout - self._lease_timeout / 10
        self._target = reply["target"]
        self._contended = reply["contended"]
        self._wanted = reply.get("wanted", False)
        add = reply["add"]
        if add:
            self._grant += add
        self._give_back_excess()
        if add and self._gate_waiters:
            self._serve_gate()
        if self._watchdog is None:
            self._arm_watchdog()
        return reply

    async def _keep(self) -> None:
        """Renew the share (a call that waits on the scheduler for news, at
        most a tenth of the lease timeout) for as long as the root is used.
        The scheduler hears from the process at least every tenth of the
        lease timeout, and the process knows its share is renewed at most two
        tenths after the fact."""
        wait = self._lease_timeout / 10
        while True:
            if not self._alive():  # the client or worker is closing: nothing to keep
                return
            if self._lost_reason is not None:
                self._new_member()
                try:
                    await _install(self._rpc)
                except Exception:  # still unreachable: try again later
                    await asyncio.sleep(wait)
                    continue
                reply = await self._call(wait=0.0, new=True)
                if reply is None:
                    await asyncio.sleep(wait)
                    continue
            await self._call(wait=wait)

    def _update(self) -> None:
        """Send returns and wants soon: once per turn of the event loop, however
        many units were released in it (calls may overlap: returns and grants
        are counted as differences, so their order does not matter)."""
        if self._rpc is None or self._lost_reason is not None or self._flushing:
            return
        self._flushing = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if self._lost_reason is not None:
            return
        self.updates += 1
        task = asyncio.ensure_future(self._call(wait=0.0))
        self._calls.add(task)
        task.add_done_callback(self._called)

    def _called(self, task: asyncio.Task) -> None:
        self._calls.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: _call handles its own errors

    def _give_back_excess(self) -> None:
        """Under contention, hand back the units of the share above its target
        that are not in use."""
        if not self._contended:
            return
        excess = self._grant - max(self._target, self._leased)
        if excess > 0:
            self._grant -= excess
            self._returning += excess
            self._update()

    # -- losing the share -----------------------------------------------------------
    def _arm_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(min(0.1, self._lease_timeout / 20), self._check)

    def _check(self) -> None:
        self._watchdog = None
        if self._rpc is None or not self._alive():
            return  # closed, or the client or worker is closing
        keeper = self._keeper
        if keeper is not None and keeper.done() and self._lost_reason is None:
            # Nothing renews the share any more (this should not happen):
            # stop using it rather than outlive its lease.
            self._lose("the renewal of its share stopped")
            self._keeper = asyncio.ensure_future(self._keep())  # and start a new share
        self._give_up_if_late()
        self._arm_watchdog()

    def _give_up_if_late(self) -> None:
        now = asyncio.get_running_loop().time()
        if now > self._use_until and self._lost_reason is None:
            late = now - (self._safe_until - self._lease_timeout)
            self._lose(
                f"no answer from the scheduler for {late:.1f} s (lease timeout "
                f"{self._lease_timeout:g} s)"
            )

    def _lose(self, reason: str) -> None:
        """The share may be gone: stop using it at once (see the module doc)."""
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        self._epoch += 1  # answers still on their way are for the old share: ignored
        in_use = self._leased
        # Units still in use belong to the old share: freed as they come back,
        # never counted in a new one. The old lease is never renewed: the
        # scheduler frees its units once it expires.
        self._stale += in_use
        self._leased = 0
        self._grant = self._target = 0
        self._returning = 0
        self._use_until = -math.inf
        guarded = [(t, g) for t, g in self._guarded.items() if not t.done()]
        for task, guard in guarded:
            guard.lost = reason
            guard.cancels += 1  # a body still closing may be cancelled twice
            task.cancel(f"the share of {self._name!r} was lost")
        for call in list(self._calls):
            call.cancel()
        if not (guarded or in_use):
            log.debug("storylab: the empty share of %r was given up: %s", self._name, reason)
            return
        self.losses += 1
        log.warning(
            "storylab: this process lost its share of the global limit %r: %s; cancelled %d "
            "running stor%s (%d unit%s in use) and will start again with a new share",
            self._name,
            reason,
            len(guarded),
            "y" if len(guarded) == 1 else "ies",
            in_use,
            "" if in_use == 1 else "s",
        )

    def guard(self) -> _Guard:
        """``async with root.guard():`` cancels the body if this process's share
        is lost, and raises :class:`SharedLimitLost` in its place. Tasks
        started inside the body (a runner's) are cancelled with it, and one
        that reaches a write first is stopped there by :func:`may_send`."""
        return _Guard(self)

    # -- the lease gate (capacity.LeaseGate) ------------------------------------------
    async def lease(self, leaf: CapacitySource, owner: Any, waiting: Callable[[], None]) -> None:
        """A unit of this process's share for a unit taken on the local levels:
        at once if the share has room, else once the allocator sends one."""
        entry = self._leaves.get(leaf)
        if entry is None:
            entry = self._leaves[leaf] = [0, 0, 0]
        if (
            self._leased < self._grant
            and not self._gate_waiters
            and asyncio.get_running_loop().time() <= self._use_until
        ):
            self._leased += 1
            entry[0] += 1
            entry[1] += 1
            return
        waiting()
        future = asyncio.get_running_loop().create_future()
        item = (leaf, future)
        self._gate_waiters.append(item)
        entry[2] += 1
        try:
            if self._rpc is None:
                # The first call carries this want; its answer may serve it.
                await self._connect()
            else:
                self._update()  # held back by the share: tell the allocator
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.give_back(leaf, owner)  # granted as we were cancelled
            else:
                future.cancel()
                if item in self._gate_waiters:
                    self._gate_waiters.remove(item)
                    entry[2] -= 1
            raise

    def _serve_gate(self) -> None:
        """Hand room in the share to waiting units: the story with the fewest
        units in use first, then the one waiting longest."""
        waiters = self._gate_waiters
        leaves = self._leaves
        while waiters and self._leased < self._grant:
            best = min(range(len(waiters)), key=lambda i: (leaves[waiters[i][0]][0], i))
            leaf, future = waiters[best]
            del waiters[best]
            entry = leaves[leaf]
            entry[2] -= 1
            if future.done():  # cancelled while waiting
                continue
            self._leased += 1
            entry[0] += 1
            entry[1] += 1
            future.set_result(None)

    def give_back(self, leaf: CapacitySource, owner: Any) -> None:
        """A unit released on the local levels: back to the share (or, while
        stories elsewhere wait and this process is above its target, back to
        the allocator)."""
        self._last_use = time.monotonic()
        entry = self._leaves.get(leaf)
        if entry is not None:
            entry[0] -= 1
        if self._stale:
            self._stale -= 1
            return
        self._leased -= 1
        if self._contended or self._wanted:
            # Stories wait somewhere: a unit above this process's target goes
            # back to the allocator, and so does one that no story here can
            # take now while another process's stories want more; one within
            # the target serves the stories here, and the allocator hears how
            # far they got (it moves the target).
            if self._grant > self._target or (self._wanted and not self._taker()):
                self._grant -= 1
                self._returning += 1
            self._update()
        elif self._idle is None and not self._gate_waiters:
            self._idle = asyncio.get_running_loop().call_later(IDLE_RETURN, self._idle_check)
        if self._gate_waiters:
            self._serve_gate()

    def _taker(self) -> bool:
        """Whether a story here waits for a unit that the share could give it
        now (its own limit has room; the unit is only held back by the root)."""
        if self._gate_waiters:
            return True
        return any(leaf.in_use < leaf.capacity and leaf.waiting for leaf in self._leaves)

    def _idle_check(self) -> None:
        self._idle = None
        if self._gate_waiters or self._lost_reason is not None:
            return
        since = time.monotonic() - self._last_use
        if since < IDLE_RETURN:
            self._idle = asyncio.get_running_loop().call_later(
                IDLE_RETURN - since, self._idle_check
            )
            return
        unused = self._grant - self._leased
        if unused > 0:
            self._grant -= unused
            self._returning += unused
            self._update()

    async def drain(self) -> None:
        """Give back every unused unit of the share now, and wait until the
        allocator has it."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._rpc is None or self._lost_reason is not None:
            return
        unused = self._grant - self._leased
        if unused > 0:
            self._grant -= unused
            self._returning += unused
        while self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        if self._returning:
            await self._call(wait=0.0)

    async def close(self) -> None:
        """Stop renewing the share and give back what is unused."""
        await self.drain()
        for handle in (self._watchdog, self._idle):
            if handle is not None:
                handle.cancel()
        self._watchdog = self._idle = None
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        # Units still in use stay counted under the old share until it
        # expires; a later use of the root starts a new one.
        self._stale += self._leased
        self._leased = self._grant = 0
        self._epoch += 1
        self._rpc = self._ready = None

    def __repr__(self) -> str:
        return (
            f"<DistributedCapacityRoot {self._name!r} {self.leased} in use here of a share of "
            f"{self._grant} (limit {self.capacity}), {self.waiting + len(self._gate_waiters)} "
            "waiting>"
        )


# The guard of the work running here: set by ``root.guard()`` and inherited by
# every task started inside it (a runner's tasks), for :func:`may_send`.
_CURRENT_GUARD: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar(
    "storylab_share_guard", default=None
)


def in_guard() -> bool:
    """Whether the code running here is inside ``root.guard()`` (in its task
    or in a task started inside it)."""
    return _CURRENT_GUARD.get() is not None


def may_send() -> bool:
    """Whether the work running here may start a request now: call it right
    before the request is written, with no ``await`` in between.

    Outside ``root.guard()`` it is always True. Inside one, it is True while
    the guard's share is still usable (see the module doc): the share was
    not lost, and less time has passed since the scheduler last answered
    than the lease timeout minus the per-attempt deadline and the margin, on
    the monotonic clock read now. Otherwise the share is given up at once
    (its guarded work cancelled), the current task is cancelled too, and it
    is False: the caller sends nothing and awaits anything (or returns), and
    the cancellation ends the task, which gives its unit back.

    This is what stops a task whose next step was already due when its
    process stood still: on waking, that step may run before any timer
    that would cancel it, but its request meets this check first.
    """
    guard = _CURRENT_GUARD.get()
    if guard is None:
        return True
    return guard.may_send()


class _Guard:
    __slots__ = ("_root", "_task", "lost", "cancels", "_token")

    def __init__(self, root: DistributedCapacityRoot) -> None:
        self._root = root
        self._task: asyncio.Task | None = None
        self.lost: str | None = None
        self.cancels = 0  # cancellations of the task for a lost share
        self._token: contextvars.Token | None = None

    async def __aenter__(self) -> DistributedCapacityRoot:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("guard() needs a running task")
        self._task = task
        self._root._guarded[task] = self
        self._token = _CURRENT_GUARD.set(self)
        return self._root

    def may_send(self) -> bool:
        root = self._root
        if self.lost is None and root._lost_reason is None:
            if asyncio.get_running_loop().time() <= root._use_until:
                return True  # the common case: two reads and a comparison
            root._give_up_if_late()  # cancels the guarded work, this guard's task included
        reason = self.lost or root._lost_reason or "its share was given up"
        task = asyncio.current_task()
        if task is None:
            return False
        own = root._guarded.get(task)
        if own is not None and own.lost is not None and task.cancelling():
            return False  # cancelled for this loss already, just now or before
        if own is not None:
            own.lost = own.lost or reason
            own.cancels += 1
        task.cancel(f"not sent: the share of {root._name!r} may be gone ({reason})")
        return False

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        root, task = self._root, self._task
        if self._token is not None:
            try:
                _CURRENT_GUARD.reset(self._token)
            except ValueError:  # left in another context than it was entered in
                _CURRENT_GUARD.set(None)
            self._token = None
        if task is not None:
            root._guarded.pop(task, None)
        left = None
        if task is not None:
            for _ in range(self.cancels):
                left = task.uncancel()
        if self.lost is not None and left == 0:
            # Cancelled by the loss, once or more (a second loss may come while
            # the body is still closing after the first), and by nobody else.
            raise SharedLimitLost(
                f"cancelled: this process lost its share of {root._name!r} ({self.lost})"
            ) from None
        return False


def _configured_lease_timeout() -> float:
    try:
        import dask
        from dask.utils import parse_timedelta
    except ModuleNotFoundError:  # pragma: no cover - depends on the install
        return DEFAULT_LEASE_TIMEOUT
    value = dask.config.get(LEASE_TIMEOUT_KEY, None)
    if value is None:
        return DEFAULT_LEASE_TIMEOUT
    return float(parse_timedelta(value))
