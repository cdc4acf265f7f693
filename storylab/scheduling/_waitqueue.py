"""The waiters of a capacity tree, and the policy that picks who is served next.

:mod:`storylab.scheduling.capacity` counts units; this module holds what the
counting needs to decide *who* gets a unit that comes back:

:class:`Level`
    the counters of one source (``capacity``, ``in_use``), its place in the
    tree, and the waiters whose leaf it is, oldest first;
:class:`Waiter`
    one blocked acquirer: a future to resolve once its unit has been taken;
:class:`FairPolicy` and :class:`FifoPolicy`
    one object per tree (kept by the root) that queues waiters and, when the
    root has room, hands out the next one to serve.

The capacity module calls a policy in four places only: ``add`` when an
acquirer must wait, ``remove`` when it gives up, ``changed`` after the units in
use along a path (or the head of a leaf's queue) moved, and ``pop`` to get the
next waiter to serve. Serving is a loop in the capacity module: it takes the
unit for the waiter and resolves its future, and nothing here calls back into
whoever waits.

The fair policy in one sentence: among the waiters that could run now (every
level on their path below the root has room), the one whose path holds the
fewest units goes first, ties to the one that has waited longest. A scan of
every waiting leaf would cost time in proportion to the number of waiting
stories on every release; instead every level keeps the best candidate of its
subtree as ``(units, seq)`` (units counted from that level down to the leaf,
``seq`` the arrival number of the waiter) and a heap of its children's
candidates. A change at one leaf re-ranks the levels on its path only, and
picking the next waiter walks down from the root along heap tops: both cost
``O(depth x log(children))``, whatever the number of waiting stories. Keeping
the index costs more than looking at a handful of leaves, so the policy only
builds it once more than ``index_above`` (16) leaves have waiters, and scans
below that (see :class:`FairPolicy`).

Policies also tell the capacity source whether to call ``changed`` at all
(``tracks_changes``): FIFO and the fair scan never need it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from heapq import heapify, heappop, heappush
from typing import Any

__all__ = ["POLICY_CLASSES", "FairPolicy", "FifoPolicy", "Level", "WaitQueue", "Waiter"]

# A heap with stale entries is rebuilt once it is this many times its live size.
_MIN_HEAP_LIMIT = 64


class Level:
    """One source's counters and the waiters queued at it (as their leaf).

    ``path`` runs from this level to the root; ``inner`` is the same without
    the root (every path shares the root, whose room is checked apart).
    ``best_units``/``best_seq`` are the fair policy's ranking of this level's
    subtree (``best_seq`` is -1 when nobody under it could run now) and
    ``heap`` holds its children's rankings as ``(units, seq, child)``; an entry
    is current only while it equals the child's own ranking, and the others
    are dropped when they come to the top.
    """

    __slots__ = (
        "source",
        "capacity",
        "in_use",
        "parent",
        "path",
        "inner",
        "queue",
        "heap",
        "heap_limit",
        "best_units",
        "best_seq",
    )

    def __init__(self, source: Any, capacity: int, parent: Level | None) -> None:
        self.source = source
        self.capacity = capacity
        self.in_use = 0
        self.parent = parent
        self.path: tuple[Level, ...] = (self,) + (parent.path if parent is not None else ())
        self.inner: tuple[Level, ...] = self.path[:-1]
        self.queue: deque[Waiter] = deque()
        self.heap: list[tuple[int, int, Level]] = []
        self.heap_limit = _MIN_HEAP_LIMIT
        self.best_units = 0
        self.best_seq = -1

    def blocking(self) -> Level | None:
        """The first full level on the path from here to the root, if any."""
        for level in self.path:
            if level.in_use >= level.capacity:
                return level
        return None


class Waiter:
    """One blocked acquirer at ``level`` (its leaf): served by resolving ``future``."""

    __slots__ = ("level", "seq", "future", "owner", "trace", "queued")

    def __init__(self, level: Level, future: asyncio.Future, owner: Any, trace: Any) -> None:
        self.level = level
        self.seq = -1  # given by the policy when queued
        self.future = future
        self.owner = owner
        self.trace = trace
        self.queued = False


class WaitQueue:
    """What every policy keeps: the waiting count and the leaves that have waiters.

    ``newcomers_may_pass`` says whether ``try_acquire`` may take a free unit
    while others wait. That is right for the fair policy: after every serve,
    each remaining waiter is blocked by a full level of its own path, so a
    free unit is one none of them could use. It is wrong for FIFO, where
    arrival order is the whole rule.
    """

    name = ""
    newcomers_may_pass = True

    __slots__ = ("count", "queued", "tracks_changes", "_seqs")

    def __init__(self) -> None:
        self.count = 0  # waiters queued anywhere in the tree
        self.queued: dict[Level, None] = {}  # levels with a non-empty queue
        # True while the policy keeps an index that changed() must hear about;
        # the capacity source skips the calls otherwise.
        self.tracks_changes = False
        self._seqs = itertools.count()

    def waiting_under(self, level: Level) -> int:
        """Waiters whose path passes through ``level``."""
        return sum(len(leaf.queue) for leaf in self.queued if level in leaf.path)

    def add(self, waiter: Waiter) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def remove(self, waiter: Waiter) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def changed(self, level: Level) -> None:
        """The units in use on ``level``'s path, or the head of its queue, moved
        (called only while ``tracks_changes`` is True)."""

    def pop(self, root: Level) -> Waiter | None:  # pragma: no cover - overridden
        """The next waiter to serve, taken off its queue, or None. The caller
        has checked that ``root`` has room, and calls ``changed`` for the
        waiter's level once it has taken the unit."""
        raise NotImplementedError

    def _enter(self, waiter: Waiter) -> deque[Waiter]:
        waiter.seq = next(self._seqs)
        waiter.queued = True
        level = waiter.level
        queue = level.queue
        queue.append(waiter)
        self.count += 1
        if len(queue) == 1:
            self.queued[level] = None
        return queue

    def _leave_head(self, level: Level) -> Waiter:
        queue = level.queue
        waiter = queue.popleft()
        waiter.queued = False
        self.count -= 1
        if not queue:
            del self.queued[level]
        return waiter


class FairPolicy(WaitQueue):
    """Fewest units on the path first, then the longest waiting; no head-of-line
    blocking.

    While at most ``index_above`` leaves have waiters, the next waiter is
    found by looking at each of them (a bounded scan, cheaper than keeping an
    index for a handful of stories). Once more leaves wait, the policy builds
    the index described in the module docstring and keeps it until nobody
    waits any more: then every ranking is back to "nobody" and the scan
    takes over again.
    """

    name = "fair"
    newcomers_may_pass = True
    __slots__ = ("index_above",)

    def __init__(self, index_above: int = 16) -> None:
        super().__init__()
        self.index_above = index_above

    def add(self, waiter: Waiter) -> None:
        # _enter(), inlined: this runs once per wait.
        if not self.count:
            # Nobody waits: every ranking says "nobody" (the index, if it was
            # kept, was brought there by the last changed()); start scanning.
            self.tracks_changes = False
        waiter.seq = next(self._seqs)
        waiter.queued = True
        level = waiter.level
        queue = level.queue
        queue.append(waiter)
        self.count += 1
        if len(queue) == 1:  # a new head: the leaf's ranking moves
            queued = self.queued
            queued[level] = None
            if self.tracks_changes:
                self.changed(level)
            elif len(queued) > self.index_above:
                self.tracks_changes = True
                for leaf in queued:
                    self.changed(leaf)

    def remove(self, waiter: Waiter) -> bool:
        if not waiter.queued:
            return False
        level = waiter.level
        queue = level.queue
        head = queue[0] is waiter
        queue.remove(waiter)
        waiter.queued = False
        self.count -= 1
        if not queue:
            del self.queued[level]
        if head and self.tracks_changes:
            self.changed(level)
        return True

    def changed(self, level: Level) -> None:
        # Re-rank every level below the root on the path, leaf first: each
        # level's in_use may have moved, and a child's new ranking feeds its
        # parent's heap before the parent is ranked.
        for lv in level.inner:
            seq = -1
            units = 0
            if lv.in_use < lv.capacity:
                queue = lv.queue
                if queue:
                    seq = queue[0].seq
                heap = lv.heap
                while heap:
                    u, s, kid = heap[0]
                    if kid.best_seq == s and kid.best_units == u:
                        if seq < 0 or (u == 0 and s < seq):
                            units, seq = u, s
                        break
                    heappop(heap)
                units += lv.in_use
            if seq != lv.best_seq or units != lv.best_units:
                lv.best_seq = seq
                lv.best_units = units
                if seq >= 0:
                    parent = lv.parent
                    assert parent is not None  # the root's best is read, not pushed
                    heap = parent.heap
                    heappush(heap, (units, seq, lv))
                    if len(heap) > parent.heap_limit:
                        _compact(parent)

    def pop(self, root: Level) -> Waiter | None:
        if not self.tracks_changes:
            # The bounded scan, inlined: it runs once per serve.
            best: Level | None = None
            best_units = best_seq = 0
            for leaf in self.queued:
                units = 0
                for lv in leaf.inner:
                    used = lv.in_use
                    if used >= lv.capacity:
                        break
                    units += used
                else:
                    seq = leaf.queue[0].seq
                    if (
                        best is None
                        or units < best_units
                        or (units == best_units and seq < best_seq)
                    ):
                        best, best_units, best_seq = leaf, units, seq
            if best is None:
                return None
            queue = best.queue
            waiter = queue.popleft()
            waiter.queued = False
            self.count -= 1
            if not queue:
                del self.queued[best]
            return waiter
        lv = root
        while True:
            heap = lv.heap
            while heap:
                u, s, kid = heap[0]
                if kid.best_seq == s and kid.best_units == u:
                    break
                heappop(heap)
            queue = lv.queue
            if heap:
                # A waiter at this level itself counts 0 units from here down.
                if not queue or (u == 0 and s < queue[0].seq):
                    lv = kid
                    continue
            elif not queue:
                return None
            # _leave_head(lv), inlined: this runs once per serve.
            waiter = queue.popleft()
            waiter.queued = False
            self.count -= 1
            if not queue:
                del self.queued[lv]
            return waiter


def _compact(level: Level) -> None:
    """Drop the stale entries of ``level``'s heap (amortised: the limit doubles)."""
    live: dict[Level, tuple[int, int, Level]] = {}
    for entry in level.heap:
        u, s, kid = entry
        if kid.best_seq == s and kid.best_units == u:
            live[kid] = entry
    heap = list(live.values())
    heapify(heap)
    level.heap = heap
    level.heap_limit = max(_MIN_HEAP_LIMIT, 2 * len(heap))


class FifoPolicy(WaitQueue):
    """Plain arrival order over the whole tree: the oldest waiter is served
    first, and while it cannot run nobody behind it runs either."""

    name = "fifo"
    newcomers_may_pass = False
    __slots__ = ("order",)

    def __init__(self) -> None:
        super().__init__()
        # Every waiter in arrival order; ones that gave up stay until they
        # reach the front (their ``queued`` is False) so removing is O(1) here.
        self.order: deque[Waiter] = deque()

    def add(self, waiter: Waiter) -> None:
        self._enter(waiter)
        self.order.append(waiter)

    def remove(self, waiter: Waiter) -> bool:
        if not waiter.queued:
            return False
        level = waiter.level
        level.queue.remove(waiter)
        waiter.queued = False
        self.count -= 1
        if not level.queue:
            del self.queued[level]
        return True

    def pop(self, root: Level) -> Waiter | None:
        order = self.order
        while order:
            waiter = order[0]
            if not waiter.queued:
                order.popleft()
                continue
            if waiter.level.blocking() is not None:
                return None
            order.popleft()
            # The oldest waiter overall is also the oldest at its own leaf.
            return self._leave_head(waiter.level)
        return None


POLICY_CLASSES: dict[str, type[WaitQueue]] = {"fair": FairPolicy, "fifo": FifoPolicy}
