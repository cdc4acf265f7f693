"""The hand-off key moment is told only when a freed unit was scarce."""

from __future__ import annotations

import asyncio

import pytest

from storylab.scheduling import Trace
from storylab.sweep import simulate_stories
from storylab.viz import in_use_at, key_moments


def _moments(stories: int, global_limit: int) -> tuple[Trace, list]:
    trace = Trace()
    asyncio.run(simulate_stories(stories, 5, 3, global_limit, trace=trace))
    return trace, [m for m in key_moments(trace) if m.kind == "handoff"]


@pytest.mark.parametrize(("stories", "global_limit"), [(2, 10), (3, 10), (5, 20)])
def test_no_hand_off_is_marked_while_the_global_limit_has_room(stories, global_limit):
    # Every story's own limit binds first; the global pool never fills, so a unit
    # one story gives back is not what lets another story's picture start.
    trace, handoffs = _moments(stories, global_limit)
    assert max(n for t, n in trace.in_use_series()["global"]) < global_limit
    assert handoffs == []


def test_the_hand_off_is_marked_when_the_global_pool_is_full():
    trace, handoffs = _moments(5, 10)
    assert [(m.t, m.text) for m in handoffs] == [(10.0, "unit freed by A → E")]
    assert in_use_at(trace, handoffs[0].t - 0.5)["global"] == 10
