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

A root may also stand for a limit shared with other processes (see
:mod:`storylab.scheduling.distributed`). Such a tree is *asynchronous*
(``source.sync`` is False): its units can only be had through
``await acquire()``, which takes the local levels first and then a lease
from the shared limit; ``try_acquire`` refuses, as it cannot wait for the
network. Giving a unit back stays synchronous.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from storylab._checks import check_positive_int  # re-exported: its old home
from storylab.scheduling.trace import _CURRENT, EventKind

__all__ = ["POLICIES", "CapacitySource", "CapacityStatistics", "Policy", "check_positive_int"]

Policy = Literal["fair", "fifo"]
POLICIES: tuple[Policy, ...] = ("fair", "fifo")


_names = itertools.count(1)
_seqs = itertools.count()


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


class _Waiter:
    """One blocked acquirer, queued at its leaf source.

    It is woken either through ``future`` (``await acquire()``) or, for code
    that must not pay for a task switch (the runner), by calling ``callback``
    synchronously at the moment the unit is granted.
    """

    __slots__ = ("source", "seq", "future", "callback", "owner", "trace")

    def __init__(
        self,
        source: CapacitySource,
        future: asyncio.Future | None,
        callback: Callable[[], None] | None,
        owner: Any,
        trace,
    ) -> None:
        self.source = source
        self.seq = next(_seqs)
        self.future = future
        self.callback = callback
        self.owner = owner
        self.trace = trace


class CapacitySource:
    """A counted limit that may sit under a parent limit (see the module doc).

    ``CapacitySource(capacity, parent=None, *, name=None, policy="fair")``.
    The policy belongs to the whole tree, so it can only be set on a root.
    """

    # True on a root whose units also need a lease from a limit shared with
    # other processes (a subclass); a class attribute, so plain trees pay one
    # attribute lookup for it and nothing else.
    _distributed = False

    __slots__ = (
        "_capacity",
        "_in_use",
        "_parent",
        "_path",
        "_root",
        "_name",
        "_queue",
        "_policy",
        "_queued",
        "_inner",
        "_holders",
    )

    def __init__(
        self,
        capacity: int,
        parent: CapacitySource | None = None,
        *,
        name: str | None = None,
        policy: Policy | None = None,
    ) -> None:
        check_positive_int("capacity", capacity)
        if parent is not None and not isinstance(parent, CapacitySource):
            raise TypeError(f"parent must be a CapacitySource or None, got {type(parent).__name__}")
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        if parent is not None and policy is not None and policy != parent._root._policy:
            raise ValueError("policy is set on the root of a capacity tree, not on a child")
        self._capacity = capacity
        self._in_use = 0
        self._parent = parent
        self._name = name if name is not None else f"capacity-{next(_names)}"
        # Leaf-to-root tuple: the levels a unit is taken from.
        self._path: tuple[CapacitySource, ...] = (self,) + (parent._path if parent else ())
        # The levels below the root: every path shares the root, so the fair
        # scan only needs these (the root's room is checked once per grant).
        self._inner: tuple[CapacitySource, ...] = self._path[:-1]
        self._root: CapacitySource = parent._root if parent else self
        self._policy: Policy = policy or "fair"
        # Waiters whose leaf is this source, oldest first.
        self._queue: deque[_Waiter] = deque()
        # Only meaningful on a root: the sources with a non-empty queue.
        self._queued: dict[CapacitySource, None] = {}
        # Units taken at this source (as the leaf of their path), by owner.
        # Every unit counted here is also counted in ``_in_use`` at every
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
        return self._in_use

    @property
    def available(self) -> int:
        """Free units at this level alone (an ancestor may still be full)."""
        return self._capacity - self._in_use

    @property
    def parent(self) -> CapacitySource | None:
        return self._parent

    @property
    def policy(self) -> Policy:
        return self._root._policy

    @property
    def sync(self) -> bool:
        """False when a unit of this tree must be awaited (``await acquire()``):
        its root is shared with other processes. Runners use the awaiting path then."""
        return not self._root._distributed

    @property
    def waiting(self) -> int:
        """Blocked acquirers that need a unit from this source."""
        return sum(len(src._queue) for src in self._root._queued if self in src._path)

    def statistics(self) -> CapacityStatistics:
        return CapacityStatistics(
            name=self._name,
            capacity=self._capacity,
            in_use=self._in_use,
            available=self.available,
            waiting=self.waiting,
            parent=self._parent._name if self._parent else None,
            policy=self.policy,
            holders=tuple(self._holders.items()),
        )

    def __repr__(self) -> str:
        return (
            f"<CapacitySource {self._name!r} {self._in_use}/{self._capacity} in use, "
            f"{self.waiting} waiting>"
        )

    # -- taking -------------------------------------------------------------
    def _blocking_level(self) -> CapacitySource | None:
        for src in self._path:
            if src._in_use >= src._capacity:
                return src
        return None

    def _take(self, owner: Any) -> None:
        for src in self._path:
            src._in_use += 1
        holders = self._holders
        holders[owner] = holders.get(owner, 0) + 1

    def try_acquire(self, *, owner: Any = None) -> bool:
        """Take one unit at every level if that is possible now; never waits.

        Under the ``"fifo"`` policy a unit is not taken past somebody who is
        already waiting, even if the levels have room.
        """
        root = self._root
        if root._queued and root._policy == "fifo":
            return False
        if root._distributed:
            raise TypeError(
                f"try_acquire() on {self._name!r}: its root {root._name!r} is shared with "
                "other processes, so a unit needs `await acquire()`"
            )
        if self._blocking_level() is not None:
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
        reports it. If the waiting
        task is cancelled, nothing is held afterwards: a unit granted in the
        same instant as the cancellation is given back.
        """
        if self._root._distributed:
            await self._root._acquire_leased(self, owner)
            return
        if self.try_acquire(owner=owner):
            return
        future = asyncio.get_running_loop().create_future()
        waiter = self._enqueue(future, None, owner)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted, but our task was cancelled before it could resume:
                # hand the unit straight back so it is never lost.
                self.release(owner=owner)
            else:
                self._withdraw(waiter)
            raise

    def _enqueue(self, future, callback, owner, reuse: _Waiter | None = None) -> _Waiter:
        trace = _CURRENT.get()
        if reuse is None:
            waiter = _Waiter(self, future, callback, owner, trace)
        else:  # a granted callback waiter queueing again: a new place in line
            waiter = reuse
            waiter.seq = next(_seqs)
            waiter.owner = owner
            waiter.trace = trace
        self._queue.append(waiter)
        self._root._queued[self] = None
        if trace is not None:
            level = self._blocking_level() or self  # fifo: blocked by the queue itself
            self._record(trace, EventKind.WAIT, owner, level=level._name)
        return waiter

    def _acquire_or_call(self, callback: Callable[[], None], owner: Any = None) -> _Waiter | None:
        """Take a unit now and return ``None``, or queue ``callback`` to be called
        (synchronously, from whoever releases) once a unit has been taken for it.
        The returned waiter can be withdrawn with :meth:`_withdraw`."""
        if self.try_acquire(owner=owner):
            return None
        return self._enqueue(None, callback, owner)

    def _queue_call(
        self, callback: Callable[[], None], owner: Any = None, reuse: _Waiter | None = None
    ) -> _Waiter:
        """Queue ``callback`` behind the current waiters, without trying to take
        a unit first (used from inside a grant, where taking directly could jump
        ahead of a waiter the policy prefers). ``reuse`` recycles a waiter that
        has just been granted and is no longer queued."""
        return self._enqueue(None, callback, owner, reuse)

    def _withdraw(self, waiter: _Waiter) -> None:
        """Remove a waiter that gave up; it holds no unit and leaves no trace."""
        if self._unqueue(waiter):
            if waiter.trace is not None:
                self._record(waiter.trace, EventKind.WAIT_CANCELLED, waiter.owner)
            # Our departure may let the waiters behind us go (fifo).
            self._root._dispatch()

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
        for src in self._path:
            src._in_use -= 1
        trace = _CURRENT.get()
        if trace is not None:
            self._record(trace, EventKind.RELEASE, owner)
        root = self._root
        if root._distributed:
            root._return_lease()
        if root._queued:
            root._dispatch()

    # Hooks for a root whose units are also leased from elsewhere (only a root
    # with ``_distributed`` set is asked: see storylab.scheduling.distributed).
    async def _acquire_leased(self, leaf: CapacitySource, owner: Any) -> None:
        raise NotImplementedError

    def _return_lease(self) -> None:
        raise NotImplementedError

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

    # -- waking -------------------------------------------------------------
    def _unqueue(self, waiter: _Waiter) -> bool:
        """Remove a waiter; False if a dispatch already dropped it."""
        try:
            self._queue.remove(waiter)
        except ValueError:
            return False
        if not self._queue:
            del self._root._queued[self]
        return True

    def _inner_units(self) -> int:
        """Units held on the levels below the root, or -1 if one of them is full."""
        units = 0
        for level in self._inner:
            used = level._in_use
            if used >= level._capacity:
                return -1
            units += used
        return units

    def _dispatch(self) -> None:
        """Grant units to waiters while the policy allows (called on a root).

        Only the head of each leaf's queue matters: waiters at the same leaf
        share the same path, so the oldest of them is always the best.
        Afterwards no waiter could run (fair) or the oldest cannot (fifo).
        This runs on every release, so it is written for speed.
        """
        queued = self._queued
        fifo = self._policy == "fifo"
        while queued and self._in_use < self._capacity:  # a full root blocks everyone
            best: CapacitySource | None = None
            if fifo:
                best = min(queued, key=lambda src: src._queue[0].seq)
                if best._blocking_level() is not None:
                    return
            else:
                best_units = best_seq = 0
                for src in queued:
                    if src._parent is self:  # the usual two levels: only the leaf differs
                        units = src._in_use
                        if units >= src._capacity:
                            continue
                    else:
                        units = src._inner_units()
                        if units < 0:
                            continue
                    seq = src._queue[0].seq
                    if (
                        best is None
                        or units < best_units
                        or (units == best_units and seq < best_seq)
                    ):
                        best, best_units, best_seq = src, units, seq
                if best is None:
                    return
            waiter = best._queue.popleft()
            if not best._queue:
                del queued[best]
            future = waiter.future
            if future is not None and future.done():  # cancelled while queued: drop it
                if waiter.trace is not None:
                    best._record(waiter.trace, EventKind.WAIT_CANCELLED, waiter.owner)
                continue
            best._take(waiter.owner)
            if waiter.trace is not None:
                best._record(waiter.trace, EventKind.GRANT, waiter.owner)
            if future is not None:
                future.set_result(None)
            elif waiter.callback is not None:  # a waiter has a future or a callback
                waiter.callback()

    def _record(self, trace, kind: EventKind, owner: Any, *, level: str | None = None) -> None:
        runner = task_id = None
        if isinstance(owner, tuple) and len(owner) == 2:
            runner, task_id = owner
        # Readers (charts, checks) learn every level's limit from the trace itself.
        limits = trace.meta.setdefault("limits", {})
        for src in self._path:
            limits[src._name] = src._capacity
        trace.record(
            kind,
            path=tuple(s._name for s in self._path),
            level=level,
            runner=runner,
            task_id=task_id,
            group=self._name,
        )
