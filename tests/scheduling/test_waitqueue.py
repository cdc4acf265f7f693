"""The indexed policies of ``_waitqueue`` against a plain scan of every waiter.

The fair policy keeps per-level rankings and heaps so that picking the next
waiter does not look at every waiting story. Its choice must be exactly the
one a full scan makes: among waiters at the head of their level's queue
whose levels below the root all have room, fewest units on the path (root
excluded), then the oldest. Random trees, random waits, cancellations, units
taken and given back at random levels; after each step the two must agree.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storylab.scheduling._waitqueue import FairPolicy, FifoPolicy, Level, Waiter


def reference_fair(levels: list[Level]) -> Waiter | None:
    best = None
    best_key = None
    for lv in levels:
        if not lv.queue:
            continue
        if any(x.in_use >= x.capacity for x in lv.inner):
            continue
        key = (sum(x.in_use for x in lv.inner), lv.queue[0].seq)
        if best_key is None or key < best_key:
            best, best_key = lv.queue[0], key
    return best


def reference_fifo(levels: list[Level]) -> Waiter | None:
    heads = [lv.queue[0] for lv in levels if lv.queue]
    if not heads:
        return None
    oldest = min(heads, key=lambda w: w.seq)
    if any(x.in_use >= x.capacity for x in oldest.level.path):
        return None
    return oldest


@st.composite
def trees(draw):
    """Parent index of each level after the root (a level's parent comes before it)."""
    n = draw(st.integers(1, 14))
    parents = [draw(st.integers(0, i)) for i in range(n)]
    capacities = [draw(st.integers(1, 4)) for _ in range(n + 1)]
    return parents, capacities


operations = st.lists(
    st.tuples(
        st.sampled_from(["wait", "wait", "take", "release", "release", "serve", "cancel"]),
        st.integers(0, 1_000),
    ),
    max_size=400,
)


def build(parents, capacities) -> list[Level]:
    root = Level(None, capacities[0], None)
    levels = [root]
    for i, p in enumerate(parents):
        levels.append(Level(None, capacities[i + 1], levels[p]))
    return levels


def run(policy, reference, tree, ops) -> None:
    parents, capacities = tree
    levels = build(parents, capacities)
    root = levels[0]
    taken = [0] * len(levels)  # units taken with each level as the leaf
    queued: list[Waiter] = []

    def note(level: Level) -> None:
        # As the capacity source does: only a policy that keeps an index hears.
        if policy.tracks_changes:
            policy.changed(level)

    def take(i: int) -> None:
        for lv in levels[i].path:
            lv.in_use += 1
        taken[i] += 1
        note(levels[i])

    for op, arg in ops:
        i = arg % len(levels)
        if op == "wait":
            waiter = Waiter(levels[i], None, arg, None)
            policy.add(waiter)
            queued.append(waiter)
        elif op == "take":
            if levels[i].blocking() is None:
                take(i)
        elif op == "release":
            if taken[i]:
                for lv in levels[i].path:
                    lv.in_use -= 1
                taken[i] -= 1
                note(levels[i])
        elif op == "cancel":
            if queued:
                waiter = queued.pop(arg % len(queued))
                assert policy.remove(waiter)
                assert not policy.remove(waiter)  # a second removal changes nothing
        # Serve as the capacity source does after every change, while the root
        # has room: the indexed choice must be the scan's, every time.
        while root.in_use < root.capacity:
            expected = reference(levels)
            got = policy.pop(root)
            assert got is expected
            if got is None:
                break
            queued.remove(got)
            take(levels.index(got.level))
            if op != "serve":
                break  # leave some room unused sometimes, like a try_acquire race
        assert policy.count == len(queued)
        assert sum(len(lv.queue) for lv in levels) == len(queued)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), operations)
@pytest.mark.parametrize("index_above", [0, 2, 16])
def test_fair_index_chooses_what_a_full_scan_chooses(index_above, tree, ops):
    # 0: always indexed; 2: switching between scan and index all the time;
    # 16 (the default): mostly the bounded scan, the index for bigger trees.
    run(FairPolicy(index_above=index_above), reference_fair, tree, ops)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), operations)
def test_fifo_queue_chooses_what_a_full_scan_chooses(tree, ops):
    run(FifoPolicy(), reference_fifo, tree, ops)


def test_the_comparison_can_fail():
    """A policy that serves the newest waiter instead must be caught."""

    class Newest(FairPolicy):
        def pop(self, root):
            heads = [lv.queue[-1] for lv in self.queued]
            if not heads:
                return None
            waiter = max(heads, key=lambda w: w.seq)
            waiter.level.queue.remove(waiter)
            waiter.queued = False
            self.count -= 1
            if not waiter.level.queue:
                del self.queued[waiter.level]
            return waiter

    tree = ([0, 0], [1, 2, 2])
    ops = [("take", 1), ("wait", 1), ("wait", 2), ("release", 1), ("serve", 0)]
    try:
        run(Newest(), reference_fair, tree, ops)
    except AssertionError:
        return
    raise AssertionError("serving the newest waiter went unnoticed")


def test_stale_heap_entries_are_compacted():
    """Many changes under one root leave its heap bounded by its live children."""
    root = Level(None, 1_000, None)
    kids = [Level(None, 5, root) for _ in range(10)]
    policy = FairPolicy(index_above=0)
    for kid in kids:
        policy.add(Waiter(kid, None, None, None))
    assert policy.tracks_changes
    for _ in range(2_000):
        for kid in kids:
            kid.in_use += 1
            root.in_use += 1
            policy.changed(kid)
            kid.in_use -= 1
            root.in_use -= 1
            policy.changed(kid)
    assert len(root.heap) <= 64
    assert policy.pop(root).level is kids[0]


@pytest.mark.parametrize("index_above", [0, 16])
def test_fewest_units_first_then_the_oldest_in_both_modes(index_above):
    root = Level(None, 1, None)
    a, b, c = (Level(None, 3, root) for _ in range(3))
    policy = FairPolicy(index_above=index_above)
    c.in_use += 1  # c holds one unit below the root
    root.in_use += 1
    waiters = [Waiter(leaf, None, leaf, None) for leaf in (c, b, a)]  # c oldest, a newest
    for w in waiters:
        policy.add(w)
    assert policy.tracks_changes == (index_above == 0)
    order = []
    for _ in range(3):
        root.in_use -= 1  # the root's unit comes back: serve one
        if policy.tracks_changes:
            policy.changed(root)
        w = policy.pop(root)
        order.append(w.owner)
        root.in_use += 1
        if policy.tracks_changes:
            policy.changed(w.level)
    # b and a tie at 0 units: b waited longer; c holds a unit, so it goes last
    assert order == [b, a, c]
