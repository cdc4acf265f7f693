"""Capacity sources: how many things may run at once, at every level of a tree.

The problem: a story pipeline may generate at most 3 images at a time, and the
whole process at most 10, whatever number of stories are running. Each limit
is a :class:`CapacitySource`; a story's source names the global one as its
parent, so the sources form a tree::

                global (10)
           /      |      |     \\
      story A  story B  story C ...     (3 each)

Think of every source as a shelf of tokens. Taking a unit from story A means
taking one token from story A's shelf *and* one from the global shelf, in a
single step: either both are there and both are taken, or nothing is taken and
the caller waits. There is never an ``await`` between looking at the shelves
and taking the tokens, so two tasks can never both see "one left" and both
take it. Giving a unit back returns a token to every shelf on the path.

Who gets a freed unit when several are waiting is the *policy*:

``"fair"`` (the default)
    No head-of-line blocking: a waiter held back only by its own story's
    limit never delays another story that could run now. Among the waiters
    that could run, the one whose path holds the fewest units goes first
    (ties go to the one that has waited longest). With five stories started
    one after another under a global limit of 10, this gives 3, 3, 3, 1, 0,
    and when a unit of the third story comes back it goes to the fifth.

``"fifo"``
    Plain arrival order across the whole tree: the oldest waiter is served
    first, and while it cannot run, nobody behind it runs either. Offered for
    comparison.

Invariants, whatever raises or is cancelled:

* no source ever has more units in use than its capacity;
* a cancelled waiter leaves no trace and holds no unit;
* a unit is given back by whoever took it: ``acquire(owner=X)`` is matched by
  ``release(owner=X)`` on the same source. Releasing a unit that this owner
  does not hold here (one taken by somebody else, one taken through another
  source, or one more than was taken) raises :class:`RuntimeError` and
  changes nothing. Units taken without an owner are anonymous and are given
  back by a release without one (``async with source:`` does both).

A root may also stand for a limit shared with other processes: it then
*has* a :class:`LeaseGate`, the one extension point of this module (see its
docstring, and :mod:`storylab.scheduling.distributed` for the Dask one).
Such a tree is *asynchronous* (``source.sync`` is False): its units can only
be had through ``await acquire()``, which takes the local levels first and
then passes the gate; ``try_acquire`` refuses, as it cannot wait for the
network. Giving a unit back stays synchronous.

Who waits, and who is served next, is kept by a policy object of
:mod:`storylab.scheduling._waitqueue`. Serving never calls back into the code
that waits: a served waiter's future is resolved, and it resumes on its own
step of the event loop. A release therefore never runs somebody else's code
on its stack, however many waiters it serves.
"""

from __future__ import annotations

import asyncio
import itertools
from asyncio import Future
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from storylab._checks import check_positive_int  # re-exported: its old home
from storylab.scheduling._waitqueue import POLICY_CLASSES, Level, Waiter, WaitQueue
from storylab.scheduling.trace import _CURRENT, EventKind

__all__ = [
    "POLICIES",
    "CapacitySource",
    "CapacityStatistics",
    "LeaseGate",
    "Policy",
    "check_positive_int",
]

Policy = Literal["fair", "fifo"]
POLICIES: tuple[Policy, ...] = ("fair", "fifo")


_names = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CapacityStatistics:
    """A snapshot of one source, for debugging and display.

    ``waiting`` counts acquirers anywhere at or below this source that are
    blocked (they need a unit here, among other places). ``holders`` lists
    who holds the units taken at this source itself, as ``(owner, units)``
    pairs (``None`` for anonymous units), oldest holder first.
    """

    name: str
    capacity: int
    in_use: int
    available: int
    waiting: int
    parent: str | None
    policy: Policy
    holders: tuple[tuple[Any, int], ...] = ()


class LeaseGate(Protocol):
    """A second step that every unit of a tree passes after its local levels.

    A root made with ``gate=`` (or a subclass that passes one to
    ``CapacitySource.__init__``) stands for a limit that is also kept
    somewhere else, e.g. on a scheduler shared by many processes. For such a
    tree, ``await leaf.acquire(owner=X)`` does, in order:

    1. take the unit on the local levels, as in any tree (waiting in the local
       queue, under the tree's policy, if a level is full);
    2. ``await gate.lease(leaf, X, waiting)``. It returns once the unit is
       also held outside. It calls ``waiting()`` (at most once) just before it
       starts to wait, so the trace shows the wait, naming the root. If it
       raises or is cancelled, the unit is not held: the local levels are given
       back (serving local waiters) and the error propagates.

    ``leaf.release(owner=X)`` frees the local levels, then calls
    ``gate.give_back(leaf, X)``, which must not block (start a background call
    if the outside needs one). Both are called from the tree's event loop.
    The trace records the unit as taken only once ``lease`` has returned, and
    as given back before ``give_back`` is called, so a trace never shows more
    units than the outside has granted. ``try_acquire`` refuses on such a
    tree, and its ``sync`` is False.
    """

    async def lease(
        self, leaf: CapacitySource, owner: Any, waiting: Callable[[], None]
    ) -> None: ...

    def give_back(self, leaf: CapacitySource, owner: Any) -> None: ...


class CapacitySource:
    """A counted limit that may sit under a parent limit (see the module doc).

    ``CapacitySource(capacity, parent=None, *, name=None, policy="fair", gate=None)``.
    The policy belongs to the whole tree, so it can only be set on a root;
    so can a :class:`LeaseGate`.
    """

    __slots__ = ("_capacity", "_level", "_parent", "_root", "_name", "_waits", "_holders", "_gate")

    def __init__(
        self,
        capacity: int,
        parent: CapacitySource | None = None,
        *,
        name: str | None = None,
        policy: Policy | None = None,
        gate: LeaseGate | None = None,
    ) -> None:
        check_positive_int("capacity", capacity)
        if parent is not None and not isinstance(parent, CapacitySource):
            raise TypeError(f"parent must be a CapacitySource or None, got {type(parent).__name__}")
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        if parent is not None and policy is not None and policy != parent.policy:
            raise ValueError("policy is set on the root of a capacity tree, not on a child")
        if parent is not None and gate is not None:
            raise ValueError("gate is set on the root of a capacity tree, not on a child")
        if gate is not None and not (hasattr(gate, "lease") and hasattr(gate, "give_back")):
            raise TypeError(
                f"gate must have lease() and give_back() (a LeaseGate), got {type(gate).__name__}"
            )
        self._capacity = capacity
        self._parent = parent
        self._name = name if name is not None else f"capacity-{next(_names)}"
        self._level: Level = Level(self, capacity, parent._level if parent is not None else None)
        self._root: CapacitySource = parent._root if parent is not None else self
        # The tree's waiters and policy, and its gate, live on the root.
        self._waits: WaitQueue = (
            parent._root._waits if parent is not None else POLICY_CLASSES[policy or "fair"]()
        )
        self._gate: LeaseGate | None = parent._root._gate if parent is not None else gate
        # Units taken at this source (as the leaf of their path), by owner.
        # Every unit counted here is also counted in ``in_use`` at every
        # level of the path, so checking the owner here is enough to know
        # that the release is matched everywhere.
        self._holders: dict[Any, int] = {}

    # -- state --------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        """Units held through this source or any source below it."""
        return self._level.in_use

    @property
    def available(self) -> int:
        """Free units at this level alone (an ancestor may still be full)."""
        return self._capacity - self._level.in_use

    @property
    def parent(self) -> CapacitySource | None:
        return self._parent

    @property
    def policy(self) -> Policy:
        return self._waits.name  # type: ignore[return-value]

    @property
    def sync(self) -> bool:
        """False when a unit of this tree must be awaited (``await acquire()``):
        its root has a :class:`LeaseGate`. Runners then always await."""
        return self._gate is None

    @property
    def waiting(self) -> int:
        """Blocked acquirers that need a unit from this source."""
        return self._waits.waiting_under(self._level)

    def statistics(self) -> CapacityStatistics:
        return CapacityStatistics(
            name=self._name,
            capacity=self._capacity,
            in_use=self.in_use,
            available=self.available,
            waiting=self.waiting,
            parent=self._parent._name if self._parent else None,
            policy=self.policy,
            holders=tuple(self._holders.items()),
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._name!r} {self.in_use}/{self._capacity} in use, "
            f"{self.waiting} waiting>"
        )

    # -- taking -------------------------------------------------------------
    def _take(self, owner: Any) -> None:
        level = self._level
        for lv in level.path:
            lv.in_use += 1
        holders = self._holders
        holders[owner] = holders.get(owner, 0) + 1
        waits = self._waits
        if waits.count and waits.tracks_changes:
            waits.changed(level)

    def _untake(self, owner: Any) -> None:
        """Undo :meth:`_take` (nothing recorded), then serve who can now run."""
        holders = self._holders
        held = holders[owner]
        if held == 1:
            del holders[owner]
        else:
            holders[owner] = held - 1
        level = self._level
        for lv in level.path:
            lv.in_use -= 1
        if self._waits.count:
            self._serve(level)

    def try_acquire(self, *, owner: Any = None) -> bool:
        """Take one unit at every level if that is possible now; never waits.

        Under the ``"fifo"`` policy a unit is not taken past somebody who is
        already waiting, even if the levels have room.
        """
        waits = self._waits
        if waits.count and not waits.newcomers_may_pass:
            return False
        if self._gate is not None:
            raise TypeError(
                f"try_acquire() on {self._name!r}: its root {self._root._name!r} is shared with "
                "other processes, so a unit needs `await acquire()`"
            )
        for lv in self._level.path:
            if lv.in_use >= lv.capacity:
                return False
        self._take(owner)
        trace = _CURRENT.get()
        if trace is not None:
            self._record(trace, EventKind.ACQUIRE, owner)
        return True

    async def acquire(self, *, owner: Any = None) -> None:
        """Take one unit at every level from this source to the root.

        Waits until all levels have room. ``owner`` (any hashable; the runner
        passes ``(runner_key, task_id)``) is who will hold the unit: only a
        ``release(owner=...)`` with the same owner gives it back, and the trace
        reports it. If the waiting task is cancelled, nothing is held
        afterwards: a unit granted in the same instant as the cancellation is
        given back.
        """
        if self._gate is not None:
            await self._acquire_gated(owner)
            return
        # try_acquire(), inlined: this runs once per task of a runner.
        waits = self._waits
        level = self._level
        trace = _CURRENT.get()
        if not waits.count or waits.newcomers_may_pass:
            for lv in level.path:
                if lv.in_use >= lv.capacity:
                    break
            else:
                self._take(owner)
                if trace is not None:
                    self._record(trace, EventKind.ACQUIRE, owner)
                return
        # _wait(), inlined for the same reason.
        future: Future[None] = Future()  # on the running loop
        waiter = Waiter(level, future, owner, trace)
        waits.add(waiter)
        if trace is not None:
            blocking = level.blocking() or level  # fifo: blocked by the queue itself
            self._record(trace, EventKind.WAIT, owner, level=blocking.source._name)
        try:
            await future
        except asyncio.CancelledError:
            self._give_up(waiter, trace, gated=False)
            raise

    async def _wait(self, owner: Any, trace: Any, *, gated: bool = False) -> None:
        """Queue until :meth:`_serve` has taken a unit for ``owner`` on the local
        levels. ``gated``: the unit still has to pass the gate, so its grant is
        not recorded here (the caller records it once the gate let it through)."""
        level = self._level
        future = asyncio.get_running_loop().create_future()
        waiter = Waiter(level, future, owner, None if gated else trace)
        waits = self._waits
        waits.add(waiter)
        if trace is not None:
            blocking = level.blocking() or level  # fifo: blocked by the queue itself
            self._record(trace, EventKind.WAIT, owner, level=blocking.source._name)
        try:
            await future
        except asyncio.CancelledError:
            self._give_up(waiter, trace, gated=gated)
            raise

    def _give_up(self, waiter: Waiter, trace: Any, *, gated: bool) -> None:
        """A waiting acquire was cancelled: leave no unit held and no waiter queued."""
        future = waiter.future
        owner = waiter.owner
        level = waiter.level
        waits = self._waits
        if future.done() and not future.cancelled():
            # Served, but our task was cancelled before it could resume:
            # hand the unit straight back so it is never lost.
            if trace is not None and not gated:
                self._record(trace, EventKind.RELEASE, owner)
            self._untake(owner)
            if trace is not None and gated:
                self._record(trace, EventKind.WAIT_CANCELLED, owner)
        else:
            removed = waits.remove(waiter)
            # (A waiter dropped by _serve was recorded there, unless gated.)
            if trace is not None and (removed or gated):
                self._record(trace, EventKind.WAIT_CANCELLED, owner)
            # Our departure may let the waiters behind us go (fifo).
            if removed and waits.count:
                self._serve(level)

    async def _acquire_gated(self, owner: Any) -> None:
        """``acquire`` on a tree whose root has a :class:`LeaseGate`."""
        trace = _CURRENT.get()
        # 1. The local levels. Nothing is recorded as taken yet: the unit is
        #    not held until the gate has let it through.
        waits = self._waits
        waited = bool(waits.count and not waits.newcomers_may_pass)
        waited = waited or self._level.blocking() is not None
        if waited:
            await self._wait(owner, trace, gated=True)
        else:
            self._take(owner)
        # 2. The gate.
        announced = waited

        def waiting() -> None:
            nonlocal announced
            if trace is not None and not announced:
                self._record(trace, EventKind.WAIT, owner, level=self._root._name)
            announced = True

        try:
            await self._gate.lease(self, owner, waiting)  # type: ignore[union-attr]
        except BaseException:
            self._untake(owner)
            if trace is not None and announced:
                self._record(trace, EventKind.WAIT_CANCELLED, owner)
            raise
        if trace is not None:
            self._record(trace, EventKind.GRANT if announced else EventKind.ACQUIRE, owner)

    def release(self, *, owner: Any = None) -> None:
        """Give back one unit that ``owner`` took at this source, at every level,
        and serve waiters that can now run.

        Raises :class:`RuntimeError`, changing nothing, if ``owner`` holds no
        unit here.
        """
        holders = self._holders
        held = holders.get(owner)
        if not held:
            raise self._unmatched_release(owner)
        if held == 1:
            del holders[owner]
        else:
            holders[owner] = held - 1
        level = self._level
        for lv in level.path:
            lv.in_use -= 1
        trace = _CURRENT.get()
        if trace is not None:
            self._record(trace, EventKind.RELEASE, owner)
        gate = self._gate
        if gate is not None:
            gate.give_back(self, owner)
        if self._waits.count:
            self._serve(level)

    def _unmatched_release(self, owner: Any) -> RuntimeError:
        who = "without an owner" if owner is None else f"by owner {owner!r}"
        if not self._holders:
            return RuntimeError(
                f"release() on {self._name!r} {who} without a matching acquire "
                f"({self._name!r} has no units in use taken at this source)"
            )
        holders = ", ".join(
            ("anonymous" if o is None else repr(o)) + (f" x{n}" if n > 1 else "")
            for o, n in self._holders.items()
        )
        return RuntimeError(
            f"release() on {self._name!r} {who}, who holds no unit here; "
            f"the units here are held by: {holders}"
        )

    async def __aenter__(self) -> CapacitySource:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    # -- serving ------------------------------------------------------------
    def _serve(self, changed: Level) -> None:
        """Units moved at ``changed``'s path: grant units to waiters while the
        policy allows. A loop, never a recursion: a served waiter's future is
        resolved and its task resumes later, on its own step of the loop."""
        waits = self._waits
        if waits.tracks_changes:
            waits.changed(changed)
        root = self._root._level
        while waits.count and root.in_use < root.capacity:  # a full root blocks everyone
            waiter = waits.pop(root)
            if waiter is None:
                return
            leaf = waiter.level
            source: CapacitySource = leaf.source
            if waiter.future.done():  # cancelled while queued: drop it
                if waits.tracks_changes:
                    waits.changed(leaf)
                if waiter.trace is not None:
                    source._record(waiter.trace, EventKind.WAIT_CANCELLED, waiter.owner)
                continue
            # source._take(owner), inlined: this runs once per serve.
            for lv in leaf.path:
                lv.in_use += 1
            holders = source._holders
            owner = waiter.owner
            holders[owner] = holders.get(owner, 0) + 1
            if waits.tracks_changes:
                waits.changed(leaf)
            if waiter.trace is not None:
                source._record(waiter.trace, EventKind.GRANT, waiter.owner)
            waiter.future.set_result(None)

    def _record(self, trace, kind: EventKind, owner: Any, *, level: str | None = None) -> None:
        runner = task_id = None
        if isinstance(owner, tuple) and len(owner) == 2:
            runner, task_id = owner
        # Readers (charts, checks) learn every level's limit from the trace itself.
        limits = trace.meta.setdefault("limits", {})
        path = tuple(lv.source for lv in self._level.path)
        for src in path:
            limits[src._name] = src._capacity
        trace.record(
            kind,
            path=tuple(src._name for src in path),
            level=level,
            runner=runner,
            task_id=task_id,
            group=self._name,
        )
