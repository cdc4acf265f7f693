"""A wait whose cause changes part-way shows the change: one hatched piece per cause."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex

from storylab.viz import plot_timeline, timeline_lanes
from storylab.viz.timeline import timeline_summary

SCALE = 0.002


async def _story_then_global(stories):
    # Story A fills its own limit (3); at 4 its failing image frees a unit of A
    # and of the global limit (4), and the global unit goes to B's waiting image.
    # A's fourth image, waiting since 0 for its story, now waits for the global limit.
    return await stories(
        {"A": [10, 10, (4, True), 10], "B": [10, 10]},
        story_limit=3, global_limit=4, time_scale=SCALE,
    )


def _bars_of(fig, key):
    """Every hatched wait bar of the lane ``key``, left to right."""
    bars = [p for ax in fig.axes for p in ax.patches
            if (p.get_gid() or "") == f"wait:{key}"
            or (p.get_gid() or "").startswith(f"wait-then:{key}:")]
    return sorted(bars, key=lambda p: p.get_x())


async def test_a_wait_is_cut_where_its_cause_changes(virtual_stories):
    trace, _ = await _story_then_global(virtual_stories)
    lane = next(x for x in timeline_lanes(trace) if x.label == "A-image-4")
    assert lane.wait_level == "story:A"  # what was full when the wait began
    assert [level for _, _, level in lane.wait_parts] == ["story:A", "global"]
    (a0, a1, _), (b0, b1, _) = lane.wait_parts
    assert (a0, a1, b0, b1) == pytest.approx((0, 4, 4, 10))
    # A wait with one cause throughout stays one piece.
    other = next(x for x in timeline_lanes(trace) if x.label == "B-image-2")
    assert [level for _, _, level in other.wait_parts] == ["global"]


async def test_the_bar_changes_colour_with_the_cause(virtual_stories):
    trace, _ = await _story_then_global(virtual_stories)
    lanes = {x.label: x for x in timeline_lanes(trace)}
    fig = plot_timeline(trace)
    story_bar, global_bar = _bars_of(fig, lanes["A-image-4"].key)
    (b_bar,) = _bars_of(fig, lanes["B-image-2"].key)  # waited for the global limit only
    assert story_bar.get_x() == pytest.approx(0) and story_bar.get_width() == pytest.approx(4)
    assert global_bar.get_x() == pytest.approx(4) and global_bar.get_width() == pytest.approx(6)
    assert to_hex(global_bar.get_facecolor()) == to_hex(b_bar.get_facecolor())
    assert to_hex(story_bar.get_facecolor()) != to_hex(global_bar.get_facecolor())
    assert story_bar.get_hatch() == global_bar.get_hatch() == "///"
    assert "1 on both in turn" in timeline_summary(trace)
