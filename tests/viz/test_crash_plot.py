"""The figure of a killed run and its resume, drawn from a real graph's stored times."""

from __future__ import annotations

import time

import pytest

from storylab.tutorial import fresh_graph, run_stories, simulated_settings
from storylab.viz import picture_times, plot_kill_and_resume

SCALE = 0.002
TWO = {"illustration_count": 2}


async def _story(tmp_path):
    graph = fresh_graph("crash-plot", home=tmp_path)
    run = await run_stories(graph, ["a lost robot"], settings=simulated_settings(SCALE),
                            customization=TWO, panel=None)
    return graph, run.pipelines[0].id


async def test_the_kill_is_drawn_where_it_was_noted_after_every_stored_time(tmp_path):
    graph, pipeline_id = await _story(tmp_path)
    times = picture_times(graph, pipeline_id)
    assert sorted(times) == ["image-{{IMAGE_1}}", "image-{{IMAGE_2}}"]
    first_start = min(s for s, _ in times.values())
    killed_at = max(f for _, f in times.values()) + 0.01
    fig = plot_kill_and_resume(
        graph, pipeline_id, states={"image-{{IMAGE_1}}": "Completed",
                                    "image-{{IMAGE_2}}": "Completed",
                                    "image-{{IMAGE_3}}": "not stored"},
        first_run=times, killed_at=killed_at, resumed_at=killed_at + 1.0, time_scale=SCALE)
    left, right = fig.axes[:2]
    (kill,) = [ln for ln in left.get_lines() if (ln.get_gid() or "").startswith("moment:")]
    assert kill.get_xdata()[0] == pytest.approx((killed_at - first_start) / SCALE)
    # both finished pictures end before the kill; nothing was redrawn after the "resume"
    assert all(p.get_x() + p.get_width() <= kill.get_xdata()[0] for p in left.patches)
    assert len(left.patches) == 2 and len(right.patches) == 0
    texts = [t.get_text() for t in left.texts + right.texts]
    assert texts.count("not stored") == 1
    assert sum("reused" in t for t in texts) == 2
    assert "2 pictures done, 0 stale, 1 not stored; run 2 draws 0" in fig._suptitle.get_text()
    assert "reused 2" in fig.storylab_summary
    # each axis names its 0: run 1's first picture (not the process start), run 2's start
    assert "since run 1's first picture" in left.get_xlabel()
    assert "since run 2 started" in right.get_xlabel()
    assert "after run 1's first picture" in fig._suptitle.get_text()
    # the legend names only what the figure shows: nothing here is stale
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("stale" in t for t in legend), legend
    assert any("no node stored" in t for t in legend) and any("reused" in t for t in legend)
    # run 2's start is marked once, inside the axes: no ▼ above it by the panel title
    assert not [ln for ln in right.get_lines() if (ln.get_gid() or "").startswith("moment-tick")]
    assert "run 2 starts" in texts and not any("▼" in t for t in texts)
    # the short reuse label stays inside the right panel's frame
    fig.canvas.draw()
    frame = right.get_window_extent()
    for t in right.texts:
        if "reused" in t.get_text():
            assert t.get_window_extent().x1 <= frame.x1, t.get_text()


async def test_bad_arguments_are_refused_by_name(tmp_path):
    graph, pipeline_id = await _story(tmp_path)
    with pytest.raises(ValueError, match="time_scale"):
        plot_kill_and_resume(graph, pipeline_id, states={"x": "stale"}, first_run={},
                             killed_at=time.time(), resumed_at=time.time(), time_scale=0)
    with pytest.raises(ValueError, match="states"):
        plot_kill_and_resume(graph, pipeline_id, states={}, first_run={},
                             killed_at=time.time(), resumed_at=time.time(), time_scale=1.0)
