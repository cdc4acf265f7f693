"""The trace replay: the state at a time t (pure) and the widget over it."""

from __future__ import annotations

import asyncio
import math
import re

import pytest

from storylab.scheduling import Trace
from storylab.sweep import simulate_stories
from storylab.viz import (
    handoffs,
    key_moments,
    makespan,
    replay,
    replay_state,
    story_sources,
)
from storylab.viz._palette import Status

FIVE = {name: [10] * 5 for name in "ABCDE"}


def _five_virtual() -> Trace:
    trace = Trace()
    asyncio.run(simulate_stories(5, 5, 3, 10, trace=trace))
    return trace


async def _five_real(stories, first_of_c: float = 5.0):
    """Five stories of five 10 s pictures; C's first picture is shorter, so C frees first."""
    tasks = dict(FIVE)
    tasks["C"] = [first_of_c] + [10] * 4
    trace, _ = await stories(tasks, time_scale=0.005)
    return trace


def test_the_split_of_five_stories_is_3_3_3_1_0_with_waits_marked_by_level():
    trace = _five_virtual()
    (split,) = [m for m in key_moments(trace) if m.kind == "split"]
    assert split.text == "split 3,3,3,1,0"
    state = replay_state(trace, split.t)
    assert state.split == (3, 3, 3, 1, 0)
    assert state.counts == {"story A": 3, "story B": 3, "story C": 3, "story D": 1,
                            "story E": 0}
    assert (state.root.label, state.root.in_use, state.root.limit) == ("global", 10, 10)
    assert state.gauge_text() == "global 10/10 · A ●●● B ●●● C ●●● D ●○○ E ○○○"
    # A, B and C are full: their next picture waits on its own story's limit;
    # D and E have room but the pool has none: they wait on the global limit.
    assert sorted(state.waits_on("story")) == ["A", "B", "C"]
    assert sorted(state.waits_on("global")) == ["D", "E"]
    assert {w.level for w in state.waits if w.blocked_by == "global"} == {"global"}
    assert "waiting on their story limit: A, B, C" in state.summary()
    # The panel at that moment: ten pictures running, none finished.
    running = sum(p.count(Status.RUNNING) for p in state.pipelines)
    assert running == 10 and sum(p.done for p in state.pipelines) == 0
    assert [p.total for p in state.pipelines] == [5] * 5


async def test_after_the_hand_off_the_freed_unit_is_at_e(stories):
    trace = await _five_real(stories)
    first = handoffs(trace)[0]  # the first unit any picture gave back
    before = replay_state(trace, first.released_at - 0.5)
    assert before.split == (3, 3, 3, 1, 0)
    state = replay_state(trace, first.taken_at)
    assert first.released_by == "story:C" and first.taken_by == "story:E"
    assert state.split == (3, 3, 2, 1, 1)
    assert state.counts["story E"] == 1
    # C has room again but the pool is full: C's next picture now waits on
    # the global limit, though it began waiting on its own story's.
    c_wait = next(w for w in state.waits if w.story == "story C")
    assert c_wait.blocked_by == "global"
    (handoff,) = [m for m in key_moments(trace) if m.kind == "handoff"]
    assert handoff.text == "unit freed by C → E"
    # The moment is when E's picture starts with that unit: E shows it running.
    assert first.taken_at <= handoff.t < first.taken_at + 1
    at_moment = replay_state(trace, handoff.t)
    assert at_moment.split == (3, 3, 2, 1, 1)
    e_row = next(p for p in at_moment.pipelines if p.name == "story E")
    c_row = next(p for p in at_moment.pipelines if p.name == "story C")
    assert (e_row.count(Status.RUNNING), c_row.completed) == (1, 1)


async def test_the_state_at_the_start_and_after_the_end(stories):
    trace = await _five_real(stories)
    end = replay_state(trace, math.inf)
    assert end.split == (0, 0, 0, 0, 0) and end.root.in_use == 0 and end.waits == ()
    assert all(p.done == p.total == 5 for p in end.pipelines)
    assert end.t == math.inf and end.end == pytest.approx(makespan(trace))
    start = replay_state(trace, -1.0)
    assert start.split == (0, 0, 0, 0, 0)
    assert all(r.status is Status.WAITING for p in start.pipelines for r in p.rows)


def test_on_a_simulated_clock_the_hand_off_is_told_apart_from_its_instant():
    # Every first-round picture ends at 10.0, so by the end of that instant the
    # units have moved on several times (how they end up spread depends on the
    # order the runners ask again within the tie). The hand-off moment carries
    # its event, so the replay shows the state right after it: A gave one
    # back, E (who had none) holds it.
    trace = _five_virtual()
    (handoff,) = [m for m in key_moments(trace) if m.kind == "handoff"]
    assert (handoff.t, handoff.text) == (10.0, "unit freed by A → E")
    after_instant = replay_state(trace, 10.0)
    assert after_instant.root.in_use == 10 and sum(after_instant.split) == 10
    assert after_instant.split != (2, 3, 3, 1, 1)
    at = replay_state(trace, handoff.t, upto=handoff.index)
    assert at.split == (2, 3, 3, 1, 1) and at.root.in_use == 10
    e = next(p for p in at.pipelines if p.name == "story E")
    assert e.count(Status.RUNNING) == 1  # its unit granted: it runs
    r = replay(trace, t="handoff", timeline=False)
    assert r.state.split == (2, 3, 3, 1, 1)
    r.widget()
    r.t = 12.0  # a plain time: the whole instant counts again
    assert r.state.split == replay_state(trace, 12.0).split != (2, 3, 3, 1, 1)
    with pytest.raises(ValueError, match="upto must be an index"):
        replay_state(trace, 1.0, upto="27")


def test_names_relabel_the_stories_and_the_gauge_keeps_their_letters():
    trace = _five_virtual()
    names = {s: f"story {chr(65 + i)} (topic {i})" for i, s in enumerate(story_sources(trace))}
    state = replay_state(trace, 0.0, names=names)
    assert list(state.counts) == [f"story {c} (topic {i})" for i, c in enumerate("ABCDE")]
    assert state.gauge_text().startswith("global 10/10 · A ●●● B ●●●")


def test_bad_input_names_the_field():
    trace = _five_virtual()
    with pytest.raises(ValueError, match="t must be a number of model seconds"):
        replay_state(trace, "soon")
    with pytest.raises(ValueError, match="t must be a number"):
        replay_state(trace, float("nan"))
    with pytest.raises(TypeError, match="trace must be a storylab Trace"):
        replay_state([], 1.0)
    with pytest.raises(ValueError, match="one of the key moments end, handoff, split"):
        replay(trace, t="kill")
    with pytest.raises(ValueError, match="time_scale must be a number > 0"):
        replay_state(trace, 1.0, time_scale=0)


def _gauge(html: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"data-level='([^']+)'[^>]*?data-in-use='(\d+)'",
                                                  html)}


async def test_the_widget_moves_with_its_slider_and_key_moment_buttons(stories):
    trace = await _five_real(stories)
    r = replay(trace, title="Five stories")
    box = r.widget()
    w = r._widgets
    assert w["slider"].value == pytest.approx(r.t)
    assert _gauge(w["state"].value) == {"global": 10, "story:A": 3, "story:B": 3,
                                        "story:C": 3, "story:D": 1, "story:E": 0}
    left_at_split = int(re.search(r"left:(-?\d+)px", w["cursor"].value).group(1))
    (handoff_button,) = [b for b in w["buttons"] if "→ E" in b.description]
    handoff_button.click()
    assert r.t >= handoffs(trace)[0].taken_at
    assert _gauge(w["state"].value)["story:E"] == 1
    w["slider"].value = r.end
    assert _gauge(w["state"].value)["global"] == 0
    left_at_end = int(re.search(r"left:(-?\d+)px", w["cursor"].value).group(1))
    assert left_at_end > left_at_split
    # Setting t from code moves the slider too.
    r.t = "split"
    assert w["slider"].value == pytest.approx(r.t)
    assert "storylab-replay" in box._dom_classes
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


async def test_the_static_snapshot_is_plain_html_with_gauge_panel_and_cursor(stories):
    trace = await _five_real(stories)
    r = replay(trace, t="handoff")
    page = r.html()
    assert "<script" not in page
    assert _gauge(page)["story:E"] == 1
    assert "data:image/png;base64," in page and "storylab-cursor" in page
    assert re.search(r"<img alt='At [\d.]+ of [\d.]+ model s: global 10/10", page)
    assert page.count("data-status='completed'") == 1  # C's short first picture
    assert "unit freed by C → E" not in r.summary()  # the summary states numbers, not moments
    assert "waits: global" in page and "waits: story" in page


def test_under_fifo_a_wait_with_room_everywhere_is_a_queue_wait():
    from storylab.sweep import what_if

    # Three stories of 2 under a pool of 5: when the first round ends at 10 s,
    # A's waiter (held back by A's own limit) is at the head of the FIFO queue.
    trace = what_if(2, 5, stories=3, policy="fifo").trace
    state = replay_state(trace, 10.0)
    assert state.gauge_text() == "global 4/5 · A ●● B ●○ C ●○"
    # B and C have room and so has the pool, yet they wait: A's waiter is ahead.
    assert state.waits_on("story") == ["A"] and state.waits_on("queue") == ["B", "C"]
    assert state.waits_text() == ("waiting on their story limit: A; "
                                  "behind an earlier waiter: B, C")
    fair = replay_state(what_if(2, 5, stories=3).trace, 10.0)
    assert "queue" not in fair.waits_text() and "earlier waiter" not in fair.waits_text()


def test_the_runner_checking_an_empty_source_is_no_hand_off():
    from storylab.sweep import what_if

    # Nobody ever waits: at the end each runner takes a unit only to find its
    # source empty. That is not a unit freed for another story.
    kinds = [m.kind for m in key_moments(what_if(5, 25, stories=2).trace)]
    assert kinds == ["split", "end"]


def test_a_failed_picture_is_a_key_moment_to_jump_to():
    from storylab.sweep import what_if

    run = what_if(3, 10, fail=(2, 1))
    r = replay(run.trace, t="failed", timeline=False)
    assert r.t == 5.0
    b = next(p for p in r.state.pipelines if p.name == "story B")
    assert b.failed == 1 and [row.status for row in b.rows][0] is Status.FAILED
    assert "✗ image-1 failed" in [m.text for m in r.moments]  # the row of story B above
    empty = replay_state(Trace(), 0.0)
    assert empty.summary() == ("At 0.0 of 0.0 model s: no capacity recorded; nobody waiting; "
                               "0/0 tasks finished.")


async def test_at_the_last_task_done_every_unit_is_back(stories):
    # The last units go back a hair after the last end event: at the "end" moment,
    # by its time or by its event index, the gauge must read 0 in use, not 1.
    trace = await _five_real(stories)
    end = next(m for m in key_moments(trace) if m.kind == "end")
    for state in (replay_state(trace, end.t), replay_state(trace, end.t, upto=end.index)):
        assert state.root.in_use == 0 and state.split == (0, 0, 0, 0, 0), state.summary()
        assert all(p.done == p.total == 5 for p in state.pipelines)
    moved = replay(trace, t="end")
    assert moved.state.root.in_use == 0, moved.summary()
    # one instant earlier, the last pictures still hold their units
    assert replay_state(trace, end.t - 0.5).root.in_use > 0


async def test_a_drawn_widget_hides_the_static_snapshot_in_any_front_end(stories):
    # The hiding rule travels inside the widget's own HTML: it is on the page only
    # where the widget is drawn, whatever the front end's class names.
    trace = await _five_real(stories)
    box = replay(trace).widget()
    assert ".storylab-replay-snapshot{display:none}" in box.children[0].value
    assert ".storylab-replay-snapshot{display:none}" not in replay(trace).html()


def _one_process_of_a_cluster(shared: bool) -> Trace:
    """One process's view of a cluster: its share of the limit "g" (4 in all) is 2
    units, both taken by story a; story b's first picture waits at "g", which
    this trace shows half empty (the other processes hold the rest)."""
    from storylab.scheduling.trace import EventKind, TraceEvent

    meta = {"limits": {"g": 4, "story:a": 3, "story:b": 3}, "time_scale": 1.0}
    if shared:
        meta["shared_roots"] = ["g"]
    events = [
        TraceEvent(0.0, EventKind.ACQUIRE, ("story:a", "g"), runner="r", task_id=1,
                   group="story:a"),
        TraceEvent(0.0, EventKind.TASK_START, runner="r", task_id=1, label="image-1",
                   group="story:a"),
        TraceEvent(0.1, EventKind.ACQUIRE, ("story:a", "g"), runner="r", task_id=2,
                   group="story:a"),
        TraceEvent(0.1, EventKind.TASK_START, runner="r", task_id=2, label="image-2",
                   group="story:a"),
        TraceEvent(0.2, EventKind.WAIT, ("story:b", "g"), level="g", runner="s", task_id=1,
                   group="story:b"),
    ]
    return Trace(meta=meta, events=events, clock=lambda: 0.0, started_at=0.0)


def test_a_share_wait_before_any_unit_is_held_says_the_share_is_being_asked_for():
    # At the start of a cluster run nobody holds a unit: the wait cannot be for one
    # "held by another process".
    from storylab.scheduling.trace import EventKind, TraceEvent

    meta = {"limits": {"g": 4, "story:a": 3}, "time_scale": 1.0, "shared_roots": ["g"]}
    events = [TraceEvent(0.0, EventKind.WAIT, ("story:a", "g"), level="g", runner="r",
                         task_id=1, group="story:a"),
              TraceEvent(0.5, EventKind.GRANT, ("story:a", "g"), runner="r", task_id=1,
                         group="story:a"),
              TraceEvent(0.5, EventKind.TASK_START, runner="r", task_id=1, label="image-1",
                         group="story:a")]
    trace = Trace(meta=meta, events=events, clock=lambda: 0.0, started_at=0.0)
    state = replay_state(trace, 0.0, names={"g": "global", "story:a": "story A (a fox)"})
    assert state.gauge_text().startswith("global 0/4")
    assert state.waits_text() == ("waiting for its process's first share of the global "
                                  "limit, from the scheduler: A")
    assert "held by another process" not in state.html()


def test_a_wait_for_a_cluster_share_is_told_apart_from_a_queue_wait():
    # Lettered against the order the trace met them: the gauge follows the letters.
    names = {"g": "global", "story:b": "story A (an owl)", "story:a": "story B (a fox)"}
    state = replay_state(_one_process_of_a_cluster(shared=True), 1.0, names=names)
    assert state.gauge_text() == "global 2/4 · A ○○○ B ●●○"
    assert state.waits_on("share") == ["A"]
    assert state.waits_text() == ("waiting for a unit of the global limit held by another "
                                  "process: A")
    assert "earlier waiter" not in state.html()
    assert "global share" in state.gauge_html()
    # The same events from a process with no scheduler behind its root: a queue wait.
    alone = replay_state(_one_process_of_a_cluster(shared=False), 1.0, names=names)
    assert alone.waits_on("queue") == ["A"]


def test_the_cursor_stops_above_the_makespan_bracket_and_carries_no_label():
    # The bracket and its text sit in the timeline's bottom row: a cursor through them, or
    # a label beside the cursor, would cover them (the time is in the heading instead).
    r = replay(_five_virtual(), t=6.0)
    page = r.html()
    _png, _width, height, (_x0, _y0, _x1, y1), _xlim = r._timeline
    top = round((1 - y1) * height)
    cursor = re.search(r"class='storylab-cursor'[^>]*top:(\d+)px;height:(\d+)px", page)
    assert cursor and int(cursor.group(1)) == top
    import matplotlib

    matplotlib.use("Agg")
    from storylab.viz import plot_timeline

    fig = plot_timeline(r.trace)
    fig.set_dpi(80)
    fig.canvas.draw()
    ax = fig.axes[0]
    (bracket,) = [t for t in ax.texts if t.get_gid() == "makespan"]
    bracket_px = height - ax.transData.transform((0.0, bracket.xy[1]))[1]
    assert top + int(cursor.group(2)) < bracket_px - 5
    assert "t = " not in page.split("storylab-timeline", 1)[1]


def test_the_split_reads_in_the_order_of_the_letters_the_names_give():
    trace = _five_virtual()
    stories = story_sources(trace)  # first appearance: they hold 3,3,3,1,0
    # Letters that do not follow first appearance: the last to ask is story A.
    names = {s: f"story {letter} (topic {s})"
             for s, letter in zip(stories, "EDCBA", strict=True)}
    (split,) = [m for m in key_moments(trace, names=names) if m.kind == "split"]
    assert split.text == "split 0,1,3,3,3"
    # Names without letters keep the trace's order.
    plain = {s: f"topic {s}" for s in stories}
    (split,) = [m for m in key_moments(trace, names=plain) if m.kind == "split"]
    assert split.text == "split 3,3,3,1,0"
