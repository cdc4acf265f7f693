"""Property tests: random capacity trees, task mixes, failures and cancellations.

For every interleaving hypothesis finds, three invariants must hold:

* no level ever has more units in use than its capacity (replayed from the trace
  and checked live whenever a task starts);
* every unit is back at the end, and nobody is left waiting;
* no unit stays idle while a waiter that could use it is waiting (fair policy):
  after each release and the grants it triggers, every pending waiter is blocked
  by some full level on its path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceFromIterable,
    Trace,
)


@dataclass(frozen=True)
class TaskSpec:
    steps: int  # how many times the task yields to the loop
    fails: bool


@dataclass(frozen=True)
class GroupSpec:
    parent: int  # index into the tree's internal nodes
    capacity: int
    tasks: tuple[TaskSpec, ...]
    stop_after: int | None  # the consumer leaves after this many envelopes
    stop_on_error: bool


task_specs = st.builds(TaskSpec, steps=st.integers(0, 4), fails=st.booleans())


@st.composite
def scenarios(draw):
    root_cap = draw(st.integers(1, 5))
    mids = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))  # middle level
    n_internal = 1 + len(mids)
    groups = draw(
        st.lists(
            st.builds(
                GroupSpec,
                parent=st.integers(0, n_internal - 1),
                capacity=st.integers(1, 4),
                tasks=st.lists(task_specs, max_size=7).map(tuple),
                stop_after=st.none() | st.integers(0, 5),
                stop_on_error=st.booleans(),
            ),
            min_size=1,
            max_size=5,
        )
    )
    raw_waiters = draw(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), max_size=3))
    policy = draw(st.sampled_from(["fair", "fifo"]))
    return root_cap, mids, groups, raw_waiters, policy


async def run_scenario(root_cap, mids, groups, raw_waiters, policy):
    root = CapacitySource(root_cap, name="root", policy=policy)
    internal = [root] + [CapacitySource(c, root, name=f"mid{i}") for i, c in enumerate(mids)]
    leaves = [
        CapacitySource(g.capacity, internal[g.parent], name=f"leaf{i}")
        for i, g in enumerate(groups)
    ]
    every = internal + leaves
    violations: list[str] = []

    def check_live(where: str) -> None:
        for src in every:
            if src.in_use > src.capacity:
                violations.append(f"{where}: {src.name} {src.in_use}/{src.capacity}")

    def make_task(spec: TaskSpec, where: str):
        async def task():
            check_live(where)
            for _ in range(spec.steps):
                await asyncio.sleep(0)
            if spec.fails:
                raise ValueError(where)
            return where

        return task

    async def consume(i: int, g: GroupSpec) -> None:
        thunks = (make_task(t, f"g{i}t{j}") for j, t in enumerate(g.tasks))
        runner = HierarchicalTaskPoolRunner(f"g{i}", SourceFromIterable(thunks), leaves[i])
        seen = 0
        try:
            async for _ in runner.run_tasks(stop_on_error=g.stop_on_error):
                seen += 1
                if g.stop_after is not None and seen >= g.stop_after:
                    break
        except ValueError:
            pass  # stop_on_error raised the task's failure

    async def raw_waiter(leaf: int, patience: int) -> None:
        src = leaves[leaf % len(leaves)]
        t = asyncio.ensure_future(src.acquire())
        for _ in range(patience):
            await asyncio.sleep(0)
        if t.done():
            src.release()
        else:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
            else:  # granted just before the cancel took effect
                src.release()

    with Trace() as trace:
        jobs = [consume(i, g) for i, g in enumerate(groups)]
        jobs += [raw_waiter(leaf, patience) for leaf, patience in raw_waiters]
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=10)
        for _ in range(5):  # let loop-finalised generators (break without aclose) close
            await asyncio.sleep(0)
    return every, trace, violations


def replay(trace: Trace, capacity: dict[str, int], fair: bool) -> list[str]:
    """Re-run the trace's counting and check the three invariants."""
    problems: list[str] = []
    in_use = {name: 0 for name in capacity}
    pending: dict[tuple, tuple[str, ...]] = {}
    events = trace.events
    waiter_keys: dict[int, tuple] = {}

    def key_of(e):
        return (e.runner, e.task_id, e.path)

    def check_idle(at: int) -> None:
        for key, path in pending.items():
            if all(in_use[n] < capacity[n] for n in path):
                problems.append(f"event {at}: waiter {key} could run but waits")

    i = 0
    while i < len(events):
        e = events[i]
        if e.kind in (EventKind.ACQUIRE, EventKind.GRANT, EventKind.RELEASE):
            delta = -1 if e.kind is EventKind.RELEASE else 1
            for n in e.path:
                in_use[n] += delta
                if not 0 <= in_use[n] <= capacity[n]:
                    problems.append(f"event {i}: {n} at {in_use[n]}/{capacity[n]}")
        if e.kind is EventKind.WAIT:
            pending[(key_of(e), i)] = e.path
            waiter_keys[i] = key_of(e)
        elif e.kind in (EventKind.GRANT, EventKind.WAIT_CANCELLED):
            # the oldest pending waiter with this identity is the one served
            match = next((k for k in pending if k[0] == key_of(e)), None)
            if match is None:
                problems.append(f"event {i}: {e.kind} with no matching wait")
            else:
                del pending[match]
        # A release (or a departure) and the grants it triggers form one step.
        if e.kind in (EventKind.RELEASE, EventKind.WAIT_CANCELLED):
            j = i + 1
            batch = (EventKind.GRANT, EventKind.WAIT_CANCELLED)
            while j < len(events) and events[j].kind in batch:
                g = events[j]
                for n in g.path if g.kind is EventKind.GRANT else ():
                    in_use[n] += 1
                    if in_use[n] > capacity[n]:
                        problems.append(f"event {j}: {n} at {in_use[n]}/{capacity[n]}")
                match = next((k for k in pending if k[0] == key_of(g)), None)
                if match is None:
                    problems.append(f"event {j}: {g.kind} with no matching wait")
                else:
                    del pending[match]
                j += 1
            if fair:
                check_idle(j - 1)
            i = j
            continue
        i += 1
    if any(in_use.values()):
        problems.append(f"units still in use at the end: {in_use}")
    if pending:
        problems.append(f"waiters left at the end: {list(pending)}")
    return problems


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_capacity_invariants_hold_for_random_runs(scenario):
    root_cap, mids, groups, raw_waiters, policy = scenario
    every, trace, violations = asyncio.run(run_scenario(*scenario))
    assert violations == []
    assert all(src.in_use == 0 and src.waiting == 0 for src in every)
    capacity = {src.name: src.capacity for src in every}
    assert replay(trace, capacity, fair=policy == "fair") == []


def test_the_idle_check_catches_a_waiter_left_behind():
    """The checker itself must be able to fail: a hand-made trace with an idle unit."""
    trace = Trace()
    trace.record(EventKind.ACQUIRE, path=("a", "root"), runner="r", task_id=1)
    trace.record(EventKind.WAIT, path=("b", "root"), runner="s", task_id=1, level="root")
    trace.record(EventKind.RELEASE, path=("a", "root"), runner="r", task_id=1)
    # no grant follows: root has a free unit and s waits for nothing
    problems = replay(trace, {"a": 1, "b": 1, "root": 1}, fair=True)
    assert any("could run but waits" in p for p in problems)
