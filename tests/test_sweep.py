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


def test_what_if_global_were_12_splits_3_3_3_3_0_and_finishes_no_sooner():
    from storylab.sweep import what_if
    from storylab.viz import key_moments, replay_state

    ten, twelve = what_if(3, 10), what_if(3, 12)
    assert replay_state(ten.trace, 0.0).split == (3, 3, 3, 1, 0)
    assert replay_state(twelve.trace, 0.0).split == (3, 3, 3, 3, 0)
    assert [m.text for m in key_moments(twelve.trace) if m.kind == "split"] == ["split 3,3,3,3,0"]
    # 25 pictures still need three rounds of 10 s: two more units buy no time here.
    assert ten.cell.makespan == twelve.cell.makespan == 30.0
    assert twelve.cell.peak_in_use == 12 and ten.cell.peak_in_use == 10
    assert twelve.summary().startswith("5 stories x 5 pictures, 3 per story, 12 in total, fair:")
    assert what_if(3, 10, stories=1).summary().startswith("1 story x 5 pictures")


def test_what_if_is_exact_and_repeatable_and_policy_changes_the_run():
    from storylab.sweep import what_if

    a, b = what_if(2, 10, policy="fifo"), what_if(2, 10, policy="fifo")
    assert [(e.kind, e.t, e.label) for e in a.trace.events] == \
        [(e.kind, e.t, e.label) for e in b.trace.events]
    fair = what_if(2, 10)
    assert fair.cell.makespan == pytest.approx(30.0)
    assert a.cell.makespan > fair.cell.makespan  # FIFO lets a story hog the pool


def test_a_failing_picture_fails_halfway_and_the_others_finish():
    from storylab.scheduling import EventKind
    from storylab.sweep import what_if

    run = what_if(3, 10, fail=(2, 1))
    errors = run.trace.of_kind(EventKind.TASK_ERROR)
    assert [e.label for e in errors] == ["image-1"]  # under story B, as the chart groups it
    assert "story B, image-1: the image model refused" in errors[0].error
    assert run.cell.failed == 1 and "1 picture failed" in run.summary()
    ends = run.trace.of_kind(EventKind.TASK_END)
    assert len(ends) == 24


@pytest.mark.parametrize("fail", [(0, 1), (6, 1), (1, 6), "B1", (1.0, 1), (True, 1)])
def test_a_bad_failing_picture_names_the_field(fail):
    from storylab.sweep import what_if

    with pytest.raises(ValueError, match=r"fail must be None or \(story, picture\)"):
        what_if(3, 10, fail=fail)


async def test_what_if_runs_inside_a_running_loop_too():
    from storylab.sweep import what_if

    assert what_if(3, 10).cell.makespan == 30.0
