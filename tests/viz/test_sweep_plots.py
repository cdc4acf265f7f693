"""Charts of a limits sweep: the sweep measures, viz draws, in model seconds."""

from __future__ import annotations

import pytest

from storylab.sweep import SweepResult, simulate_stories, sweep
from storylab.viz import plot_simulated_vs_wall, plot_sweep_heatmaps, plot_sweep_lines


async def test_charts_are_titled_and_labelled_in_model_seconds():
    result: SweepResult = await sweep((1, 3), (2, 6), stories=3, images=3)
    heat = plot_sweep_heatmaps(result)
    lines = plot_sweep_lines(result)
    assert heat._suptitle is not None and "model s" in heat._suptitle.get_text()
    assert "model seconds" in heat.axes[0].get_title()
    panels = [ax for ax in lines.axes if ax.get_visible()]
    assert [ax.get_title().split(":")[0] for ax in panels] == [
        "per-story limit 1", "per-story limit 3"
    ]
    assert all(ax.get_title() for ax in panels) and "model s" in panels[0].get_ylabel()
    assert lines._suptitle is not None
    # One small legend for every panel instead of two entries per per-story limit.
    (legend,) = lines.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "ideal bound (wide, grey)", "above the bound", "measured"
    ]
    for ax, p in zip(panels, (1, 3), strict=True):
        gids = {line.get_gid() for line in ax.get_lines()}
        assert {f"bound:{p}", f"measured:{p}"} <= gids


async def test_the_sweep_result_has_no_drawing_of_its_own():
    result = await sweep((1,), (2,), stories=1, images=1)
    assert not [name for name in dir(result) if name.startswith("plot")]


async def test_simulated_against_real_time_puts_each_cell_on_the_diagonal():
    simulated = await simulate_stories(2, 2, 1, 2)
    real = await simulate_stories(2, 2, 1, 2, clock="wall", time_scale=0.002)
    fig = plot_simulated_vs_wall([(simulated.makespan, real.makespan, "1 / 2")])
    (ax,) = fig.axes
    (point,) = [line for line in ax.get_lines() if line.get_gid() == "cell:1 / 2"]
    assert point.get_xdata()[0] == simulated.makespan == 20
    # The point sits at the measured real makespan, whatever the machine's speed; a real
    # run cannot beat the simulated one (sleeps do not end early), only lag behind it.
    assert point.get_ydata()[0] == real.makespan
    assert real.makespan >= 20 * 0.95
    assert "model seconds" in ax.get_xlabel() and "model seconds" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["simulation = real"]
    with pytest.raises(ValueError, match="at least one"):
        plot_simulated_vs_wall([])


async def test_sweep_charts_say_their_numbers_in_one_line():
    from storylab.viz import figure_summary

    result = await sweep((1, 3), (2, 6), stories=3, images=3)
    best = min(result.cells, key=lambda c: c.makespan)
    worst = max(result.cells, key=lambda c: c.makespan)
    on_bound = sum(1 for c in result.cells if c.makespan <= c.ideal + 1e-6)
    expected = (f"Sweep of 4 limit pairs: makespan from {best.makespan:.0f} model s "
                f"(per-story {best.story_limit}, global {best.global_limit}) to "
                f"{worst.makespan:.0f} (per-story {worst.story_limit}, global "
                f"{worst.global_limit}); {on_bound} of 4 on the ideal bound.")
    assert figure_summary(plot_sweep_heatmaps(result)) == expected
    assert figure_summary(plot_sweep_lines(result)) == expected
    fig = plot_simulated_vs_wall([(20.0, 22.0, "1 / 2")])
    assert figure_summary(fig) == ("Simulated against real-time makespan for 1 cell: "
                                   "at most 10% apart.")


def test_the_gap_form_shows_how_much_longer_the_real_run_took_in_percent():
    fig = plot_simulated_vs_wall([(20.0, 21.0, "3 / 10"), (50.0, 50.5, "1 / 4")], gap=True)
    (ax,) = fig.axes
    heights = {p.get_gid(): p.get_height() for p in ax.patches if p.get_gid()}
    assert heights == pytest.approx({"gap:3 / 10": 5.0, "gap:1 / 4": 1.0})
    assert "(%)" in ax.get_ylabel() and "+1.0 % to +5.0 %" in fig.storylab_summary
    with pytest.raises(ValueError, match="must be > 0"):
        plot_simulated_vs_wall([(0.0, 1.0, "x")], gap=True)


async def test_the_heatmaps_frame_every_cell_above_the_bound():
    result = await sweep((1, 2, 3, 4, 5, 6), (2, 4, 6, 8, 10, 12, 16, 20, 25), stories=5,
                         images=5)
    above = {f"above:{c.story_limit}:{c.global_limit}" for c in result.cells
             if c.makespan > c.ideal + 1e-6}
    assert above == {"above:4:16"}  # the lonely last round of notebook 7
    heat = plot_sweep_heatmaps(result)
    for ax in heat.axes[:2]:
        framed = {patch.get_gid() for patch in ax.patches if patch.get_gid()}
        assert framed == above
        assert "dashed frame: above the bound" in ax.get_title()
    on_bound = await sweep((1, 3), (2, 6), stories=3, images=3)
    assert "frame" not in plot_sweep_heatmaps(on_bound).axes[0].get_title()


async def test_only_the_cells_above_the_bound_are_marked():
    # 5 stories of 5: per-story 4 misses the bound at global 16 only, its neighbours not.
    result = await sweep((4,), (12, 16, 20), stories=5, images=5)
    (ax,) = [ax for ax in plot_sweep_lines(result).axes if ax.get_visible()]
    (bars,) = [c for c in ax.collections if c.get_gid() == "above:4"]
    xs = sorted({float(x) for seg in bars.get_segments() for x, _ in seg})
    assert xs == [16.0]
    (ring,) = [line for line in ax.get_lines() if line.get_gid() == "ring:4"]
    assert list(ring.get_xdata()) == [16]
