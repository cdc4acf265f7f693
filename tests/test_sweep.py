"""The limits sweep: exact in virtual time, honest in wall time, clear on bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from storylab.scheduling import Trace
from storylab.sweep import ideal_makespan, simulate_stories, sweep


@pytest.mark.parametrize(
    ("stories", "images", "per_story", "global_", "rounds"),
    [
        (1, 5, 3, 10, 2),  # the tutorial's single story: 3 then 2
        (5, 5, 3, 10, 3),  # 25 images through 10 slots
        (2, 5, 1, 10, 5),  # the per-story limit binds
        (5, 5, 10, 2, 13),  # the global limit binds
    ],
)
def test_ideal_bound_counts_rounds(stories, images, per_story, global_, rounds):
    assert ideal_makespan(stories, images, per_story, global_, 10.0) == 10.0 * rounds


async def test_one_story_under_three_takes_two_rounds_in_virtual_time():
    trace = Trace()
    cell = await simulate_stories(1, 5, 3, 10, trace=trace)
    assert cell.makespan == pytest.approx(20.0) and cell.ideal == 20.0
    assert cell.peak_in_use == 3
    # 50 image-seconds over 10 global units for 20 s
    assert cell.utilisation == pytest.approx(50 / (10 * 20))
    assert trace.meta["time_scale"] == 1.0
    assert trace.meta["limits"] == {"global": 10, "story:1": 3}
    starts = sorted(e.t for e in trace.events if e.kind == "task_start")
    assert starts == pytest.approx([0, 0, 0, 10, 10])


async def test_fair_policy_reaches_the_bound_on_a_grid():
    result = await sweep((1, 3), (4, 10), stories=5, images=5)
    assert [(c.story_limit, c.global_limit) for c in result.cells] == [
        (1, 4),
        (1, 10),
        (3, 4),
        (3, 10),
    ]
    for c in result.cells:
        assert c.makespan == pytest.approx(c.ideal)
        assert c.peak_in_use <= min(c.global_limit, c.stories * c.story_limit)
        assert 0 < c.utilisation <= 1
    # per-story 1 with 5 stories can never use more than 5 of 10 global units
    assert result.cell(1, 10).utilisation == pytest.approx(0.5)
    assert result.grid("makespan") == [[70.0, 50.0], [70.0, 30.0]]


async def test_fifo_policy_falls_behind_the_bound_somewhere():
    fair = await sweep((2,), (10,), stories=5, images=5)
    fifo = await sweep((2,), (10,), stories=5, images=5, policy="fifo")
    assert fair.cells[0].makespan == pytest.approx(30.0)
    assert fifo.cells[0].makespan > fair.cells[0].makespan


async def test_wall_clock_agrees_with_virtual_time_within_noise():
    cell = await simulate_stories(2, 3, 2, 3, clock="wall", time_scale=0.002)
    assert cell.ideal == 20.0
    assert cell.makespan >= cell.ideal * 0.99
    assert cell.makespan < cell.ideal * 3  # generous: other work shares the machine


async def test_on_cell_sees_every_cell_in_order():
    seen = []
    result = await sweep((1, 2), (2,), stories=2, images=2, on_cell=seen.append)
    assert seen == list(result.cells)
    rows = result.to_rows()
    assert rows[0]["efficiency"] == pytest.approx(1.0) and set(rows[0]) >= {"makespan", "ideal"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"story_limits": []}, "story_limits"),
        ({"story_limits": [0, 1]}, "story_limits"),
        ({"global_limits": [2, 2]}, "global_limits"),
        ({"global_limits": 5}, "global_limits"),
        ({"stories": 0}, "stories"),
        ({"images": 1.5}, "images"),
        ({"image_seconds": -1}, "image_seconds"),
        ({"time_scale": 0}, "time_scale"),
        ({"policy": "random"}, "policy"),
        ({"clock": "sundial"}, "clock"),
    ],
)
async def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        await sweep(**kwargs)


async def test_unknown_cell_and_field_are_clear_errors():
    result = await sweep((1,), (2,), stories=1, images=1)
    with pytest.raises(KeyError, match="story limits"):
        result.cell(3, 2)
    with pytest.raises(ValueError, match="makespan"):
        result.grid("speed")


def test_importing_the_sweep_stays_light():
    code = (
        "import sys, storylab.sweep; "
        "print(sorted(m for m in ('matplotlib', 'httpx', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
