"""A timeline has no empty band above its first lane: the top is as tall as its labels.

Every timeline used to reserve the same room above the lanes (1.4 lanes) for
key-moment labels, whether it had one row of labels or none, which left a
blank strip above the first lane. The room now comes from the rows of labels
actually drawn; these tests lay real traces out with the Agg renderer and
measure, in pixels, the strip between the top edge and the first bar, and
that no label covers a bar.
"""

from __future__ import annotations

import pytest

from storylab.viz import plot_sequential_vs_parallel, plot_timeline, plot_timelines


def _bars(ax):
    return [p for p in ax.patches if (p.get_gid() or "").startswith(("run:", "wait:"))]


def _strip_above_first_bar(fig, ax) -> float:
    """Lane pitches between the axes' top edge and the top of its highest bar.

    The first group's header row (its name, in bold, with nothing drawn beside
    it) and the air around it make a little over one pitch on every timeline.
    """
    renderer = fig.canvas.get_renderer()
    top_edge = ax.get_window_extent(renderer).y1
    tops = sorted({round(b.get_window_extent(renderer).y1, 3) for b in _bars(ax)},
                  reverse=True)
    pitch = tops[0] - tops[1]
    return (top_edge - tops[0]) / pitch


def _labels(ax):
    return [t for t in ax.texts
            if getattr(t, "xy", None) is not None and t.xy[1] == 1.0 and t.get_text()]


def _covered_bars(fig, ax) -> list[str]:
    renderer = fig.canvas.get_renderer()
    return [f"{t.get_text()!r} covers {b.get_gid()}"
            for t in _labels(ax) for b in _bars(ax)
            if t.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))]


async def test_one_row_of_labels_leaves_no_blank_band(virtual_sequential, tmp_path):
    trace = await virtual_sequential("a", [10, 20, 10, 10, 11])
    fig = plot_timeline(trace, title="five one after another")
    (ax,) = fig.axes
    fig.savefig(tmp_path / "seq.png")  # lays the figure out as a notebook shows it
    assert len(_labels(ax)) == 1  # "last task done"
    # The one row of labels fits beside the empty header row; the old fixed room
    # put 1.4 more lanes of nothing above it (2.8 pitches in all).
    strip = _strip_above_first_bar(fig, ax)
    assert strip < 1.6, f"{strip:.1f} lanes of empty band above the first bar"
    assert _covered_bars(fig, ax) == []


async def test_without_moments_the_first_lane_sits_under_its_header(virtual_sequential,
                                                                    tmp_path):
    trace = await virtual_sequential("a", [10, 10, 10])
    fig = plot_timeline(trace, moments=False)
    (ax,) = fig.axes
    fig.savefig(tmp_path / "plain.png")
    assert _labels(ax) == []
    strip = _strip_above_first_bar(fig, ax)
    assert strip < 1.6, f"{strip:.1f} lanes of empty band above the first bar"


@pytest.mark.parametrize("stories", [2, 5])
async def test_labels_in_several_rows_still_cover_no_bar(virtual_stories, stories, tmp_path):
    trace, _ = await virtual_stories(
        {chr(ord("A") + i): [10, 6, 9, 4, 7] for i in range(stories)},
        story_limit=3, global_limit=10)
    fig = plot_timeline(trace, moments=[(5.0, "a long label for a moment here"),
                                        (6.0, "another long label close to it"),
                                        (7.0, "and a third that needs a row of its own")])
    (ax,) = fig.axes
    fig.savefig(tmp_path / "rows.png")
    rows = {round(t.xyann[1]) for t in _labels(ax)}
    assert len(_labels(ax)) == 3 and len(rows) >= 2, rows  # too close for one row
    assert _covered_bars(fig, ax) == []


async def test_stacked_and_side_by_side_timelines_keep_their_bars_clear(
        virtual_stories, virtual_sequential, tmp_path):
    seq = await virtual_sequential("a", [10, 10, 10, 10, 10])
    par, _ = await virtual_stories({"a": [10, 10, 10, 10, 10]})
    fig = plot_timelines({"one at a time": seq, "three at once": par})
    fig.savefig(tmp_path / "stacked.png")
    for ax in fig.axes:
        assert _covered_bars(fig, ax) == []
    side = plot_sequential_vs_parallel(seq, par)
    side.savefig(tmp_path / "side.png")
    for ax in side.axes:
        assert _labels(ax) == []
        assert _strip_above_first_bar(side, ax) < 1.6
