"""CapacitySource: counts, atomic hierarchy, wake-up policy, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from storylab.scheduling import CapacitySource, EventKind, Trace


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_counts_and_statistics():
    cap = CapacitySource(2, name="solo")
    assert (cap.capacity, cap.in_use, cap.available, cap.waiting) == (2, 0, 2, 0)
    assert cap.try_acquire()
    stats = cap.statistics()
    assert stats.name == "solo" and stats.in_use == 1 and stats.available == 1
    assert stats.parent is None and stats.policy == "fair"
    with pytest.raises(AttributeError):
        stats.in_use = 5  # frozen record
    cap.release()
    assert cap.in_use == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_capacity_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        CapacitySource(bad)


def test_unknown_policy_names_the_allowed_values():
    with pytest.raises(ValueError, match="policy must be one of fair, fifo; got 'lifo'"):
        CapacitySource(1, policy="lifo")


def test_policy_belongs_to_the_root():
    root = CapacitySource(2, policy="fifo")
    assert CapacitySource(1, root).policy == "fifo"
    with pytest.raises(ValueError, match="root"):
        CapacitySource(1, root, policy="fair")


def test_parent_must_be_a_capacity_source():
    with pytest.raises(TypeError, match="parent must be a CapacitySource"):
        CapacitySource(1, parent=3)


def test_over_release_raises_and_changes_nothing():
    root = CapacitySource(2)
    child = CapacitySource(2, root)
    other = CapacitySource(2, root)
    assert other.try_acquire()
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        child.release()  # child holds nothing, even though root has a unit in use
    assert (root.in_use, child.in_use, other.in_use) == (1, 0, 1)


def test_a_release_by_another_owner_raises_and_changes_nothing():
    root = CapacitySource(3, name="global")
    story = CapacitySource(2, root, name="story")
    assert story.try_acquire(owner=("r", 1))
    assert story.try_acquire(owner=("r", 1))  # one owner may hold several units
    assert story.try_acquire() is False  # story is full
    with pytest.raises(RuntimeError, match=r"by owner \('r', 2\), who holds no unit here"):
        story.release(owner=("r", 2))
    anonymous = r"without an owner, who holds no unit here.*\('r', 1\) x2"
    with pytest.raises(RuntimeError, match=anonymous):
        story.release()  # anonymous release of an owned unit
    assert (story.in_use, root.in_use) == (2, 2)
    assert story.statistics().holders == ((("r", 1), 2),)
    story.release(owner=("r", 1))
    story.release(owner=("r", 1))
    assert story.statistics().holders == () and root.in_use == 0
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        story.release(owner=("r", 1))  # one more than was taken


def test_a_unit_is_given_back_where_it_was_taken_not_through_a_parent():
    root = CapacitySource(2, name="global")
    story = CapacitySource(2, root, name="story")
    assert story.try_acquire(owner="me")
    with pytest.raises(RuntimeError, match="'global'"):
        root.release(owner="me")  # the unit was taken at the story level
    assert (story.in_use, root.in_use) == (1, 1)
    story.release(owner="me")
    assert root.in_use == 0


async def test_anonymous_and_owned_units_are_kept_apart():
    cap = CapacitySource(2, name="c")
    async with cap:
        assert cap.try_acquire(owner="x")
        assert cap.statistics().holders == ((None, 1), ("x", 1))
        cap.release(owner="x")
    assert cap.in_use == 0 and cap.statistics().holders == ()


async def test_a_granted_waiter_holds_its_unit_under_its_own_owner():
    cap = CapacitySource(1, name="c")
    await cap.acquire(owner="first")
    waiter = asyncio.ensure_future(cap.acquire(owner="second"))
    await settle()
    cap.release(owner="first")
    await asyncio.wait_for(waiter, 1)
    assert cap.statistics().holders == (("second", 1),)
    with pytest.raises(RuntimeError, match="'second'"):
        cap.release(owner="first")
    cap.release(owner="second")


async def test_a_unit_granted_to_a_cancelled_waiter_goes_back_under_its_owner():
    cap = CapacitySource(1, name="c")
    await cap.acquire(owner="first")
    waiter = asyncio.ensure_future(cap.acquire(owner="second"))
    await settle()
    cap.release(owner="first")  # grants to "second"...
    waiter.cancel()  # ...which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert cap.in_use == 0 and cap.statistics().holders == ()


async def test_acquire_blocks_at_zero_and_wakes_on_release():
    cap = CapacitySource(1)
    await cap.acquire()
    waiter = asyncio.ensure_future(cap.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done() and cap.waiting == 1
    cap.release()
    await waiter
    assert cap.in_use == 1 and cap.waiting == 0
    cap.release()


async def test_async_with_takes_and_returns_a_unit_even_on_error():
    cap = CapacitySource(1)
    with pytest.raises(KeyError):
        async with cap:
            assert cap.in_use == 1
            raise KeyError("boom")
    assert cap.in_use == 0


async def test_hierarchical_take_is_all_or_nothing():
    root = CapacitySource(2, name="root")
    c1 = CapacitySource(2, root, name="c1")
    c2 = CapacitySource(2, root, name="c2")
    await c1.acquire()
    await c1.acquire()
    assert not c2.try_acquire()  # c2 has room, the root does not
    assert (c2.in_use, root.in_use) == (0, 2)  # nothing was taken from c2
    waiter = asyncio.ensure_future(c2.acquire())
    await settle()
    assert not waiter.done()
    assert root.waiting == 1 and c2.waiting == 1 and c1.waiting == 0
    c1.release()  # a sibling's release wakes a waiter blocked by the parent
    await waiter
    assert (root.in_use, c1.in_use, c2.in_use) == (2, 1, 1)


async def test_three_levels_deep():
    top = CapacitySource(3, name="top")
    mid = CapacitySource(2, top, name="mid")
    leaf = CapacitySource(5, mid, name="leaf")
    assert leaf.try_acquire() and leaf.try_acquire()
    assert not leaf.try_acquire()  # blocked by mid
    assert (top.in_use, mid.in_use, leaf.in_use) == (2, 2, 2)
    leaf.release()
    assert (top.in_use, mid.in_use, leaf.in_use) == (1, 1, 1)


async def test_cancelled_waiter_leaves_no_trace_and_takes_no_unit():
    cap = CapacitySource(1)
    await cap.acquire()
    with Trace() as trace:
        waiter = asyncio.ensure_future(cap.acquire())
        await settle()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert cap.waiting == 0
        cap.release()
    assert cap.in_use == 0  # the release did not go to the departed waiter
    kinds = [e.kind for e in trace]
    assert kinds == [EventKind.WAIT, EventKind.WAIT_CANCELLED, EventKind.RELEASE]


async def test_unit_granted_at_the_moment_of_cancellation_is_given_back():
    cap = CapacitySource(1)
    await cap.acquire()
    waiter = asyncio.ensure_future(cap.acquire())
    await settle()
    cap.release()  # grants the unit to the waiter...
    waiter.cancel()  # ...which is cancelled before it can resume
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert cap.in_use == 0 and cap.waiting == 0
    assert cap.try_acquire()


async def test_fifo_serves_in_arrival_order_with_head_of_line_blocking():
    root = CapacitySource(2, policy="fifo")
    a = CapacitySource(1, root, name="a")
    b = CapacitySource(1, root, name="b")
    await a.acquire()
    await b.acquire()
    order: list[str] = []

    async def take(src, tag):
        await src.acquire()
        order.append(tag)

    ta = asyncio.ensure_future(take(a, "a2"))  # arrives first, needs a
    await settle()
    tb = asyncio.ensure_future(take(b, "b2"))
    await settle()
    b.release()  # b has room now, but a2 is first in line and a is full
    await settle()
    assert order == []  # head-of-line blocking
    assert not b.try_acquire()  # nobody jumps the queue either
    a.release()
    await asyncio.gather(ta, tb)
    assert order == ["a2", "b2"]


async def test_fair_policy_has_no_head_of_line_blocking():
    root = CapacitySource(2)
    a = CapacitySource(1, root, name="a")
    b = CapacitySource(1, root, name="b")
    await a.acquire()
    await b.acquire()
    ta = asyncio.ensure_future(a.acquire())  # first in line, blocked by its own story
    await settle()
    tb = asyncio.ensure_future(b.acquire())
    await settle()
    b.release()
    await asyncio.wait_for(tb, 1)  # b's waiter goes although a's waited longer
    assert not ta.done()
    a.release()
    await asyncio.wait_for(ta, 1)


async def test_fair_policy_prefers_the_path_with_fewest_units_then_the_oldest():
    root = CapacitySource(4)
    busy = CapacitySource(3, root, name="busy")
    idle = CapacitySource(3, root, name="idle")
    idle2 = CapacitySource(3, root, name="idle2")
    for _ in range(3):
        await busy.acquire()
    await idle2.acquire()  # root full: busy 3, idle2 1
    got: list[str] = []

    async def take(src):
        await src.acquire()
        got.append(src.name)

    t_busy = asyncio.ensure_future(take(busy))
    await settle()
    t_idle2 = asyncio.ensure_future(take(idle2))
    await settle()
    t_idle = asyncio.ensure_future(take(idle))
    await settle()
    busy.release()  # busy now holds 2, idle 0, idle2 1: idle goes first
    await settle()
    assert got == ["idle"]
    busy.release()  # busy and idle2 both hold 1: a tie, and busy's waiter is older
    await settle()
    assert got == ["idle", "busy"]
    idle.release()
    await settle()
    assert got == ["idle", "busy", "idle2"]
    await asyncio.gather(t_busy, t_idle, t_idle2)


async def test_five_stories_get_3_3_3_1_0_and_a_freed_unit_of_c_goes_to_e():
    """The tutorial's table: five stories started one after another, 5 long tasks each."""
    shared = CapacitySource(10, name="global")
    stories = {n: CapacitySource(3, shared, name=n) for n in "ABCDE"}
    holds: dict[str, list[asyncio.Future]] = {n: [] for n in stories}
    loop = asyncio.get_running_loop()

    async def long_task(name: str):
        async with stories[name]:
            done = loop.create_future()
            holds[name].append(done)
            await done

    tasks = []
    for name in "ABCDE":
        tasks += [asyncio.ensure_future(long_task(name)) for _ in range(5)]
        await settle()
    assert [stories[n].in_use for n in "ABCDE"] == [3, 3, 3, 1, 0]
    holds["C"][0].set_result(None)  # exactly one of C's tasks ends
    await settle()
    assert [stories[n].in_use for n in "ABCDE"] == [3, 3, 2, 1, 1]
    while any(not t.done() for t in tasks):
        for futures in holds.values():
            for f in futures:
                if not f.done():
                    f.set_result(None)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert shared.in_use == 0 and shared.waiting == 0


async def test_trace_records_waits_with_the_blocking_level():
    shared = CapacitySource(1, name="global")
    a = CapacitySource(1, shared, name="A")
    b = CapacitySource(1, shared, name="B")
    with Trace() as trace:
        await a.acquire(owner=("r", 1))
        t1 = asyncio.ensure_future(a.acquire(owner=("r", 2)))  # blocked by A itself
        t2 = asyncio.ensure_future(b.acquire(owner=("s", 1)))  # blocked by global
        await settle()
        waits = {(e.runner, e.task_id): e.level for e in trace.of_kind(EventKind.WAIT)}
        assert waits == {("r", 2): "A", ("s", 1): "global"}
        a.release(owner=("r", 1))  # both waiters hold 0 units: the older one wins
        await asyncio.wait_for(t1, 1)
        a.release(owner=("r", 2))
        await asyncio.wait_for(t2, 1)
        b.release(owner=("s", 1))
    grants = trace.of_kind("grant")
    assert [(g.runner, g.task_id) for g in grants] == [("r", 2), ("s", 1)]
    assert grants[1].path == ("B", "global")
    series = trace.in_use_series()
    assert series["global"][-1][1] == 0 and max(n for _, n in series["global"]) == 1


def test_no_trace_means_no_recording():
    cap = CapacitySource(1)
    cap.try_acquire()
    cap.release()
    with Trace() as trace:
        pass
    assert len(trace) == 0
