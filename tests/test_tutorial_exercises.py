"""The kit's side of the exercises: every solution passes its checker, every checker
fails on a wrong answer, solutions are shown only on demand, and the lesson speeds.

Solutions are run the way a learner would run them after ``show_solution``:
their code is executed (top-level ``await`` included) in a namespace holding
what the notebook had defined by then, and the value of the last line is the
checker's verdict.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import inspect
import itertools
import linecache
import os
import sys
import textwrap
import types
import uuid
import xml.etree.ElementTree as ET

import pytest

import storylab
import storylab.tutorial as kit
from storylab import CapacitySource, Return, RunnableEntity, TaskEventType
from storylab.tutorial import (
    SOLUTIONS,
    PictureState,
    Verdict,
    check_capacity_tree,
    check_capstone,
    check_draw_picture,
    check_error_branch,
    check_failing_entity,
    check_first_split,
    check_stable_names,
    check_state_of,
    check_to_redraw,
    check_two_level_tree,
    fresh_graph,
    kill_and_resume,
    lesson_pace,
    run_stories,
    show_solution,
    simulated_settings,
    solution_code,
)
from storylab.tutorial._overview import API_TABLE, GLOSSARY, overview_svg, overview_text


def _cell_file(code: str) -> str:
    """A file name for a cell's code, its source kept in linecache as IPython keeps
    each cell's (so ``inspect.getsource`` finds functions the cell defines)."""
    name = f"<cell-{next(_CELLS)}>"
    linecache.cache[name] = (len(code), None, code.splitlines(keepends=True), name)
    return name


_CELLS = itertools.count(1)


async def run_cell(code: str, namespace: dict) -> object:
    """Run a cell's code like IPython: top-level await allowed, last expression returned."""
    tree = ast.parse(code)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body[-1] = ast.parse("_cell_result = None").body[0]
        tree.body[-1].value = last.value
    compiled = compile(ast.fix_missing_locations(tree), _cell_file(code), "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if inspect.iscoroutine(result):
        await result
    return namespace.get("_cell_result")


def _namespace(**extra) -> dict:
    ns = {name: getattr(storylab, name) for name in storylab.__all__}
    ns.update({name: getattr(kit, name) for name in kit.__all__})
    ns.update(extra)
    return ns


# The survivors' global units around a kill at 20 model s whose leases lapse at 30:
# 9 held when the kill comes, 7 and 6 until the lapse, then 10 again.
KILLED_RUN = {"series": [(0.0, 4), (5.0, 10), (18.0, 9), (22.0, 7), (26.0, 6), (31.0, 10),
                         (40.0, 3)], "killed": 20.0, "lapsed": 30.0}

# The same survivors with the lapse predicted between 30 and 32.5 model s: their line
# climbs to 9 at 30.5 and first holds all 10 at 31, then dips and reaches 10 again at 35.
REGAINED_RUN = {"series": [(0.0, 4), (5.0, 10), (18.0, 9), (22.0, 7), (26.0, 6), (30.5, 9),
                           (31.0, 10), (33.0, 9), (35.0, 10), (40.0, 3)],
                "killed": 20.0, "lapse_from": 30.0, "lapse_by": 32.5}

SUBJECTS = {"a fox": 12, "an owl": 6, "a whale": 9, "a snail": 4, "a moth": 7}
SKETCH_SCALE = 0.02  # wall seconds per model second of the sketches below


class Sketch(RunnableEntity):
    """Notebook 2's toy child, as the learner's notebook defines it."""

    async def run_impl(self):
        yield self.status("RUNNING", f"sketching {self.data['subject']}")
        await asyncio.sleep(self.data["seconds"] * SKETCH_SCALE)
        yield Return(self.data["subject"])


def sketch_items(subjects):
    return [{"name": "sketch-" + s.replace(" ", "-"), "data": {"subject": s, "seconds": d}}
            for s, d in subjects.items()]


NOTEBOOK_2 = {"SUBJECTS": SUBJECTS, "Sketch": Sketch, "sketch_items": sketch_items,
              "time_scale": SKETCH_SCALE}


@pytest.fixture(scope="module")
def story_run(tmp_path_factory):
    """One real story, for the exercise that reads a trace (notebook 1)."""
    graph = fresh_graph("solutions", home=tmp_path_factory.mktemp("home"))
    settings = simulated_settings(0.002, image_mode="sequential")
    run = asyncio.run(run_stories(graph, ["a shy hedgehog"], settings=settings, panel=None))
    from storylab.viz import timeline_lanes

    return run, timeline_lanes(run.trace)


def _crash_leases() -> dict:
    """What notebook 4 reads right after its kill: each stored picture's status and lease,
    the lease held by a process that no longer exists (IMAGE_3 has no node)."""
    import time

    from storylab.entities.records import HOST, LeaseRecord
    from storylab.tutorial._exercises import _exited_pid

    now, dead = time.time(), _exited_pid()
    held = LeaseRecord("n2", f"{HOST}:{dead}", HOST, dead, "t", now - 9, now - 1, now + 30)
    return {"image-{{IMAGE_1}}": ("Completed", None), "image-{{IMAGE_2}}": ("InProgress", held)}


def _state(key: str, story_run) -> dict:
    run, lanes = story_run
    before = [PictureState("image-{{IMAGE_1}}", "Completed", 1.0),
              PictureState("image-{{IMAGE_2}}", "stale", None),
              PictureState("image-{{IMAGE_3}}", "not stored", None)]
    node = types.SimpleNamespace(name="image-{{IMAGE_3}}",
                                 error={"type": "ImageGenerationError", "message": "refused"})
    return {"01-1": {"run": run, "lanes": lanes}, "02-2": NOTEBOOK_2,
            "04-1": {"before": before, "crash_leases": _crash_leases()},
            "05-1": {"node": node},
            "08-1": {"global_limit": 10, "series": REGAINED_RUN["series"],
                     "killed": REGAINED_RUN["killed"],
                     "lapse_from": REGAINED_RUN["lapse_from"],
                     "lapse_by": REGAINED_RUN["lapse_by"]},
            "08-2": {"lease_timeout": 1.5, "kill_scale": 0.2, "killed": 11.25},
            "09-3": {"LIMIT": 4}}.get(key, {})



@pytest.mark.parametrize("key", sorted(SOLUTIONS))
async def test_every_solution_passes_its_checker(key, story_run):
    state = _state(key, story_run)
    if key == "07-1":  # the bound is checked against every cell of a (small) sweep
        from storylab.sweep import sweep

        state["result"] = await sweep([1, 2, 4], [2, 5, 25], stories=3, images=4)
    verdict = await run_cell(solution_code(key), _namespace(**state))
    assert isinstance(verdict, Verdict), f"{key}: the last line gave {verdict!r}"
    assert verdict.ok, f"{key}: {verdict}"


def test_solutions_are_shown_only_when_asked(capsys):
    show_solution("03-1", new_cell=False)
    said = capsys.readouterr().out
    assert "await story.acquire()" in said and "await check_draw_picture(draw_picture)" in said
    with pytest.raises(ValueError, match="no solution '03-9'; known: 00-1, 00-2, 01-1"):
        solution_code("03-9")


def test_show_solution_puts_the_code_into_a_new_cell(monkeypatch, capsys):
    import IPython

    asked = []
    shell = types.SimpleNamespace(set_next_input=lambda text, replace: asked.append((text,
                                                                                     replace)))
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    show_solution("06-1")
    assert asked == [(solution_code("06-1"), False)]


# -- the code exercises: wrong answers are refused ------------------------------------
def test_the_tree_checker_refuses_unlinked_or_wrong_sized_trees():
    def unlinked():
        return CapacitySource(4), CapacitySource(3), CapacitySource(3)

    def small():
        root = CapacitySource(4)
        return root, CapacitySource(2, root), CapacitySource(3, root)

    def raises():
        raise NotImplementedError("not yet written")

    def global_second():
        root = CapacitySource(4)
        return CapacitySource(3, root), root, CapacitySource(3, root)

    said = check_two_level_tree(unlinked).message
    assert "nothing ties the stories" in said and "parent" not in said  # no fix given away
    assert "second" in check_two_level_tree(global_second).message
    assert "not 3 each" in check_two_level_tree(small).message
    assert "raised NotImplementedError" in check_two_level_tree(raises).message
    assert "three CapacitySource" in check_two_level_tree(lambda: None).message
    assert not check_two_level_tree(None)


def test_the_tree_checker_names_what_is_wrong_in_a_near_miss():
    def only_a_linked():
        root = CapacitySource(4)
        return root, CapacitySource(3, root), CapacitySource(3)

    def only_b_linked():
        root = CapacitySource(4)
        return root, CapacitySource(3), CapacitySource(3, root)

    def a_twice():
        root = CapacitySource(4)
        a = CapacitySource(3, root)
        return root, a, a

    def b_under_a():
        root = CapacitySource(4)
        a = CapacitySource(3, root)
        return root, a, CapacitySource(3, a)

    said = check_two_level_tree(only_a_linked).message
    assert "story A is under the global source, but story B is not" in said
    assert "parent" not in said  # what is wrong, not the fix
    assert "story B is under the global source, but story A is not" in \
        check_two_level_tree(only_b_linked).message
    assert "one and the same CapacitySource" in check_two_level_tree(a_twice).message
    assert "story B hangs under story A" in check_two_level_tree(b_under_a).message
    assert not any(check_two_level_tree(f) for f in (only_a_linked, a_twice, b_under_a))


def test_the_split_checker_says_why_an_even_split_is_wrong():
    for limit, even in ((12, [2, 2, 2, 2, 2]), (10, [2, 2, 2, 2, 2]), (15, [3, 3, 3, 3, 3])):
        verdict = check_first_split(even, stories=5, story_limit=3, global_limit=limit)
        assert verdict.ok is (limit == 15)  # 15 units: every story really holds its 3
        if limit != 15:
            assert "evenly" in verdict.message and "nothing divides them" in verdict.message


def test_the_lease_rule_checker_refuses_each_half_rule_and_a_mismatch_with_the_crash():
    def right(status, lease, now, alive):
        if status is None:
            return "not stored"
        if status != "InProgress":
            return status
        return "running" if lease and alive(lease.pid) and lease.expires_at > now else "stale"

    before = [PictureState("image-{{IMAGE_1}}", "Completed", 1.0),
              PictureState("image-{{IMAGE_2}}", "stale", None),
              PictureState("image-{{IMAGE_3}}", "not stored", None)]
    crash = _crash_leases()
    shipped = lambda status, lease, now, alive: "not stored" if status is None else status  # noqa: E731
    only_pid = lambda st, lease, now, alive: (  # noqa: E731
        right(st, lease, now, alive) if st != "InProgress"
        else "running" if lease and alive(lease.pid) else "stale")
    only_time = lambda st, lease, now, alive: (  # noqa: E731
        right(st, lease, now, alive) if st != "InProgress"
        else "running" if lease and lease.expires_at > now else "stale")
    no_none = lambda st, lease, now, alive: (  # noqa: E731
        right(st, lease, now, alive) if st != "InProgress"
        else "running" if alive(lease.pid) and lease.expires_at > now else "stale")
    cases = {shipped: "you said 'InProgress'", only_pid: "lease ran out",
             only_time: "has exited", no_none: "no lease at all"}
    for fn, said in cases.items():
        verdict = check_state_of(fn, before, crash)
        assert not verdict and said in verdict.message, verdict
    assert check_state_of(right, before, crash)
    # the crash's states disagree with the leases read: the checker says so
    wrong = [PictureState("image-{{IMAGE_2}}", "running", None)]
    assert "picture_states said 'running'" in check_state_of(right, wrong, crash).message
    assert "pass your function itself" in check_state_of("stale").message


def test_the_lease_rule_checker_refuses_a_rule_that_trusts_only_this_kernel():
    # Never calls alive: running only when the holder is this very process and not expired.
    import os

    def only_me(status, lease, now, alive):
        if status is None:
            return "not stored"
        if status != "InProgress":
            return status
        return "running" if lease and lease.pid == os.getpid() and lease.expires_at > now \
            else "stale"

    verdict = check_state_of(only_me)
    assert not verdict and "another process on this machine" in verdict.message, verdict
    assert "ask alive(lease.pid)" in verdict.message

    def right(status, lease, now, alive):
        if status is None:
            return "not stored"
        if status != "InProgress":
            return status
        return "running" if lease and alive(lease.pid) and lease.expires_at > now else "stale"

    assert check_state_of(right)


def test_the_redraw_checker_refuses_wrong_sets_and_a_mismatch_with_the_real_run():
    before = [PictureState("image-{{IMAGE_1}}", "Completed", 1.0),
              PictureState("image-{{IMAGE_2}}", "stale", None)]

    def right(states):
        return {p.name for p in states if p.state in {"stale", "not stored"}}

    cases = {
        "not stored": lambda states: {p.name for p in states if p.state == "stale"},
        "running picture": lambda states: {p.name for p in states if p.state != "Completed"},
        "Completed picture": lambda states: {p.name for p in states},
        "full names": lambda states: {p.name[6:] for p in states if p.state != "Completed"},
        "set of names": lambda states: None,
    }
    for said, fn in cases.items():
        verdict = check_to_redraw(fn, before, ["{{IMAGE_2}}"])
        assert not verdict and said in verdict.message, verdict
    assert check_to_redraw(right, before, ["{{IMAGE_2}}"])
    # the real run drew something else than the states say: the checker says so
    assert "drew" in check_to_redraw(right, before, ["{{IMAGE_1}}"]).message
    # names written out instead of computed: told to compute them from states
    typed = check_to_redraw(lambda states: {"image-{{IMAGE_3}}", "image-{{IMAGE_4}}",
                                            "image-{{IMAGE_5}}"}, before, ["{{IMAGE_2}}"])
    assert not typed and "compute the names from states" in typed.message, typed
    assert "full names" not in typed.message
    # a list passes, with a word that a set was asked for
    as_list = check_to_redraw(lambda states: sorted(right(states)), before, ["{{IMAGE_2}}"])
    assert as_list and "a set is what was asked" in as_list.message, as_list
    assert "a set is what was asked" not in check_to_redraw(right, before,
                                                            ["{{IMAGE_2}}"]).message


def test_the_naming_checker_refuses_names_that_change_or_collide():
    counter = iter(range(1000))
    cases = {
        "the names changed": lambda p: f"image-{uuid.uuid4().hex}",
        "the names changed ": lambda p: f"image-{next(counter)}",
        "the same name": lambda p: "image",
        "non-empty strings": lambda p: 7,
    }
    for said, name_for in cases.items():
        verdict = check_stable_names(name_for)
        assert not verdict and said.strip() in verdict.message, verdict


async def test_the_error_branch_checker_refuses_a_loop_without_one_or_that_raises():
    async def without(runner):
        finished = []
        async with runner.run_tasks() as results:
            async for envelope in results:
                if envelope.type is TaskEventType.FINAL:
                    finished.append(envelope.value)
        return finished, []

    async def raising(runner):
        async with runner.run_tasks() as results:
            async for envelope in results:
                if envelope.type is TaskEventType.ERROR:
                    raise envelope.error
        return [], []

    def not_async(runner):
        return [], []

    assert "add a branch for TaskEventType.ERROR" in (await check_error_branch(without)).message
    assert "raised the task's own error" in (await check_error_branch(raising)).message
    assert "async def" in (await check_error_branch(not_async)).message


async def test_the_failing_entity_checker_refuses_an_entity_that_never_fails():
    class NeverFails(RunnableEntity):
        async def run_impl(self):
            yield Return(self.data["value"])

    class AlwaysFails(RunnableEntity):
        async def run_impl(self):
            raise RuntimeError("always")
            yield Return(None)  # pragma: no cover - makes run_impl a generator

    never = (await check_failing_entity(NeverFails)).message
    assert "ended Completed" in never and "told to fail" in never
    assert "raise" not in never  # says what is wrong, not the code to write
    said = (await check_failing_entity(AlwaysFails)).message
    assert "child-1 has fail=False but ended Failed with RuntimeError: 'always'" in said
    assert "RunnableEntity subclass" in (await check_failing_entity(object)).message


def test_the_out_of_reach_checker_names_each_wrong_reading():
    said = {answer: kit.check_out_of_reach(answer, global_limit=10, **KILLED_RUN)
            for answer in (1, 3, 9, 0, "x", None, 5)}
    assert said[1] and "held at most 9" in said[1].message
    assert "value in force at the kill" in said[3].message
    assert "what the survivors held at most" in said[9].message
    assert "after the lapse" in said[0].message
    assert "number of units" in said["x"].message
    assert "fill in your answer" in said[None].message
    assert not said[5] and "subtract it from the global limit" in said[5].message


def test_the_regained_checker_refuses_every_near_miss():
    said = {answer: kit.check_regained(answer, global_limit=10, **REGAINED_RUN)
            for answer in (31.0, 31, 30.5, 35.0, 5.0, 20.0, 30.0, 32.5, 6, 31.04, "x", None,
                           12.0)}
    assert said[31.0] and "inside the window 30.0 to 32.5" in said[31.0].message
    assert said[31]  # the same time, written as an int
    assert not said[30.5] and "hold 9, not yet 10" in said[30.5].message
    assert not said[35.0] and "got there earlier" in said[35.0].message
    assert not said[5.0] and "before the kill" in said[5.0].message
    assert not said[20.0] and "the kill, a prediction" not in said[20.0].message
    assert "that is the kill itself" in said[20.0].message
    assert not said[30.0] and "start of the predicted window" in said[30.0].message
    assert not said[32.5] and "end of the predicted window" in said[32.5].message
    assert not said[6] and "position in `series`" in said[6].message
    assert not said[31.04] and "unrounded" in said[31.04].message
    assert "time in model seconds" in said["x"].message
    assert "fill in your answer" in said[None].message
    assert not said[12.0] and "first step whose units reach" in said[12.0].message
    late = dict(REGAINED_RUN, lapse_from=20.5, lapse_by=25.0)
    assert "OUTSIDE the window" in kit.check_regained(31.0, global_limit=10, **late).message
    never = dict(REGAINED_RUN, series=[(0.0, 4), (22.0, 7)])
    said_never = kit.check_regained(22.0, global_limit=10, **never).message
    assert "never held all 10" in said_never and "shorten `lease_timeout`" in said_never
    assert "too few pictures were left" in said_never
    with pytest.raises(ValueError, match="killed <= lapse_from"):
        kit.check_regained(31.0, global_limit=10, **dict(REGAINED_RUN, lapse_by=29.0))


def test_story_of_task_reads_the_keys_submit_stories_makes():
    futures = [types.SimpleNamespace(key="story-story-pipeline-a-fox-1f2e-0a1b2c3d")]
    assert kit.story_of_task(futures) == {futures[0].key: "story-pipeline-a-fox-1f2e"}
    with pytest.raises(ValueError, match="not made by submit_stories"):
        kit.story_of_task([types.SimpleNamespace(key="other")])


# -- the capstone, with real processes -------------------------------------------------
async def _pieces(**changes) -> dict:
    """The capstone's three pieces as the hidden solutions write them, defined the way
    a learner's cells define them (each in a cell of its own), with ``changes``
    (old text -> new text) applied to their code first."""
    namespace = _namespace(LIMIT=4)
    for key in ("09-1", "09-2", "09-3"):
        code = solution_code(key)
        code = "\n".join(line for line in code.splitlines() if "check_" not in line)
        for old, new in changes.items():
            code = code.replace(old, new)
        await run_cell(code, namespace)
    return namespace


def _judge(ns, folder, **options):
    return kit.judge_capstone(ns["item_name"], ns["Item"], ns["run_items"], folder=folder,
                              work_seconds=0.03, **options)


async def test_the_capstone_passes_the_solution(tmp_path):
    run = await _judge(await _pieces(), tmp_path)
    assert isinstance(run, kit.CapstoneRun), run
    assert 0 < run.killed_at < 100 and run.first_exit not in (0, None)
    verdict = check_capstone(run)
    assert verdict.ok, f"{verdict}; {run.describe()}"
    assert (run.completed, run.failed, run.recorded_failed) == (96, 4, 4)
    # The resumed script says first where the graph was, then where it ended.
    said = run.second_output.splitlines()
    assert said[0] == f"stored {run.finished_before} of 100 at the start", said
    assert said[-1] == "done: 96 of 100 stored", said
    script = (tmp_path / "capstone.py").read_text()
    assert 'return f"item-{n:03d}"' in script and "class Item(RunnableEntity):" in script
    # Its picture: drawn from the stored times, the kill where the record says.
    import matplotlib

    matplotlib.use("Agg")
    fig = kit.plot_capstone(run, 0.015)
    top, bottom = fig.axes
    assert top.get_ylabel() == "items at once" and "model seconds" in bottom.get_xlabel()
    assert f"had stored {run.kept} when it was killed" in fig.storylab_summary
    assert "never above the limit of 4; " in fig.storylab_summary
    assert "the 4 refused items ran too" in fig.storylab_summary
    assert repr(fig) == fig.storylab_summary  # the text/plain beside the picture
    assert max(max(line.get_ydata()) for line in top.get_lines()[:1]) <= 4
    # The items the kill caught running: stored InProgress, started before the kill.
    assert len(run.in_flight) <= 4
    assert all(s <= e == run.killed_wall for s, e in run.in_flight), run.in_flight
    with pytest.raises(ValueError, match="what judge_capstone returned"):
        kit.plot_capstone(check_capstone(run), 0.015)


def test_the_capstone_picture_hatches_the_items_killed_in_flight():
    import dataclasses

    import matplotlib

    matplotlib.use("Agg")
    record = _record(4, 4)
    # Nothing finished between 5 and the kill at 5.5 in this record: two items were running.
    record = dataclasses.replace(record, in_flight=[(5.1, 5.5), (5.2, 5.5)])
    fig = kit.plot_capstone(record, 1.0)
    top, _ = fig.axes
    hatched = [p for p in top.patches if p.get_hatch()]
    assert len(hatched) == 1, top.patches
    # Drawn at least 1.5 % of the axis wide, ending at the kill: findable, not a sliver.
    (band,) = hatched
    kill_x = next(line.get_xdata()[0] for line in top.lines
                  if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
    assert band.get_x() + band.get_width() == pytest.approx(kill_x), (band, kill_x)
    left, right = top.get_xlim()
    assert band.get_width() >= 0.012 * (right - left), (band.get_width(), left, right)
    assert "killed in flight (died with the process)" in [
        t.get_text() for t in top.get_legend().get_texts()]
    # A band one item wide is narrow on a whole run: a callout names it too.
    assert "2 killed in flight" in [t.get_text() for t in top.texts]
    assert "2 items were running at the kill (hatched)" in fig.storylab_summary
    # Without them the band is not drawn and the summary does not mention it.
    plain = kit.plot_capstone(_record(4, 4), 1.0)
    assert not [p for p in plain.axes[0].patches if p.get_hatch()]
    assert "no item was stored running at the kill" in plain.storylab_summary
    matplotlib.pyplot.close("all")


def test_the_capstone_picture_ends_the_first_run_where_its_last_item_ended():
    """No item ran at the kill: the top line drops where the last item finished (5.0),
    not at the next half-second edge, and the kill line sits behind the staircase, whose
    last step (to the count kept) ends on it."""
    import matplotlib

    matplotlib.use("Agg")
    fig = kit.plot_capstone(_record(4, 4), 1.0)
    top, bottom = fig.axes
    line = top.get_lines()[0]
    after = [y for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
             if 5.0 <= x < 5.5]
    assert after and set(after) == {0}, list(zip(line.get_xdata(), line.get_ydata(), strict=True))
    assert "ended at 5.0 model s, just before it" in fig.storylab_summary
    kill = [ln for ln in bottom.get_lines() if list(ln.get_xdata()) == [5.5, 5.5]]
    steps = [ln for ln in bottom.get_lines() if ln not in kill]
    assert kill and all(k.get_zorder() < s.get_zorder() for k in kill for s in steps)
    matplotlib.pyplot.close(fig)


def _record(per_round: int, limit: int) -> kit.CapstoneRun:
    """A capstone record of 10 rounds of ``per_round`` items (1 wall s each), killed
    after round 5; the last item of round 3 was refused."""
    rounds = [[(r + 0.001 * k, r + 1.0) for k in range(per_round)] for r in range(10)]
    refused = [rounds[3].pop()]
    rounds[5:] = [[(s + 2, e + 2) for s, e in rnd] for rnd in rounds[5:]]  # a 2 s restart
    intervals = [iv for rnd in rounds for iv in rnd]
    return kit.CapstoneRun(items=len(intervals) + 1, limit=limit, killed_at=5 * per_round - 1,
                           first_exit=-9, second_exit=0, children=len(intervals) + 1,
                           completed=len(intervals), kept=5 * per_round - 1,
                           finished_before=5 * per_round - 1, peak=per_round,
                           intervals=intervals, failed=1, killed_wall=5.5, started_wall=0.0,
                           resumed_wall=6.0, refused_intervals=refused)


@pytest.mark.parametrize(("per_round", "limit"), [(4, 4), (6, 4), (6, 100)])
def test_the_capstone_picture_says_an_over_limit_run_and_no_text_overlaps(per_round, limit):
    import matplotlib

    matplotlib.use("Agg")
    fig = kit.plot_capstone(_record(per_round, limit), 1.0)
    top, bottom = fig.axes
    title = top.get_title()
    if per_round > 4:
        assert f"up to {per_round} at once, over the limit of 4" in title, title
        assert "never" not in title and "never above" not in fig.storylab_summary
    else:
        assert "never more than 4 at once (limit 4)" in title, title
    # The refused item held its place: round 3 still counts 4 (or 6) at once.
    assert max(top.get_lines()[0].get_ydata()) == per_round
    assert "not drawn" not in fig.storylab_summary
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = {"title": top.title.get_window_extent(renderer),
             "top legend": top.get_legend().get_window_extent(renderer),
             "bottom legend": bottom.get_legend().get_window_extent(renderer)}
    boxes.update({t.get_text(): t.get_window_extent(renderer)
                  for t in top.texts + bottom.texts})
    assert "SIGKILL " in boxes
    names = sorted(boxes)
    clashes = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
               if boxes[a].overlaps(boxes[b])]
    assert not clashes, clashes
    matplotlib.pyplot.close(fig)


async def test_the_capstone_refuses_a_wrong_piece_before_starting_a_process(tmp_path):
    ns = await _pieces(**{'f"item-{n:03d}"': 'f"item-{n % 50}"'})
    run = await _judge(ns, tmp_path)
    assert not run.ran and run.describe().startswith("no process started: piece 1")
    verdict = check_capstone(run)
    assert not verdict and "piece 1, item_name" in verdict.message, verdict
    assert not (tmp_path / "capstone.py").exists()


async def test_the_capstone_judge_refuses_names_that_do_not_survive_the_kill(tmp_path):
    # Written straight to a script (past the piece checker): the kill shows the damage.
    ns = await _pieces(**{'return f"item-{n:03d}"': 'return f"item-{uuid.uuid4().hex}"'})
    ns["item_name"].__globals__["uuid"] = uuid
    script = kit.write_capstone(tmp_path / "unstable.py", ns["item_name"], ns["Item"],
                                ns["run_items"])
    assert "import uuid" in script.read_text()
    run = await kill_and_resume(script, tmp_path / "unstable.sqlite", work_seconds=0.03,
                                failing=4)
    verdict = check_capstone(run)
    assert not verdict and "did not find the first run's items by name" in verdict.message


async def test_the_capstone_judge_refuses_a_pipeline_over_its_limit(tmp_path):
    ns = await _pieces()
    script = kit.write_capstone(tmp_path / "free.py", ns["item_name"], ns["Item"],
                                ns["run_items"], limit=100)
    run = await kill_and_resume(script, tmp_path / "free.sqlite", work_seconds=0.03, failing=4)
    verdict = check_capstone(run)
    assert not verdict and ("above the limit of 4" in verdict.message
                            or "ended before it could be killed" in verdict.message), verdict


async def test_the_capstone_judge_refuses_a_kill_that_cannot_land_half_way(tmp_path):
    # A limit of 100 is kept (the judge is told so): more than the service's 4 run at
    # once, and all items finish together.
    ns = await _pieces()
    ns["LIMIT"] = 100
    run = await _judge(ns, tmp_path, limit=100)
    verdict = check_capstone(run)
    # Either the kill lands after most items are stored, or (on a slow machine,
    # where starting the killer takes longer than the whole batch) the run ends
    # before it: both are the judge refusing a run that never was half-way.
    assert not verdict, (verdict, run.describe())
    assert ("cannot land half-way" in verdict.message
            or "above the service's limit of 4" in verdict.message
            or "ended before it could be killed" in verdict.message), (verdict, run.describe())


@pytest.mark.parametrize("wrong", ["CapacitySource(3)", "blocking"])
async def test_the_capstone_judge_refuses_a_runner_that_never_reaches_its_limit(tmp_path,
                                                                                 wrong):
    # Written straight to a script (past the piece checkers): a smaller capacity than
    # LIMIT, or a blocking wait, keeps the rebuilt peak under LIMIT.
    changes = ({"CapacitySource(LIMIT)": wrong} if wrong != "blocking" else
               {"import asyncio": "import asyncio, time",
                'await asyncio.sleep(self.data["seconds"])': 'time.sleep(self.data["seconds"])'})
    ns = await _pieces(**changes)
    script = kit.write_capstone(tmp_path / "short.py", ns["item_name"], ns["Item"],
                                ns["run_items"])
    run = await kill_and_resume(script, tmp_path / "short.sqlite", work_seconds=0.03,
                                failing=4)
    verdict = check_capstone(run)
    assert not verdict and "never used all 4 units" in verdict.message, (verdict,
                                                                         run.describe())


async def test_the_capstone_judge_refuses_a_batch_that_drops_its_failures(tmp_path):
    ns = await _pieces(**{"failed.append(envelope.error)": "pass"})
    script = kit.write_capstone(tmp_path / "quiet.py", ns["item_name"], ns["Item"],
                                ns["run_items"])
    run = await kill_and_resume(script, tmp_path / "quiet.sqlite", work_seconds=0.03, failing=4)
    verdict = check_capstone(run)
    assert not verdict and "lists 0 failures for 4 refused items" in verdict.message, verdict


_HARD_CODED = {"f\"item {self.data['n']} was refused by the service\"": "\"error 24 happened\""}


async def test_the_item_checker_and_the_judge_refuse_a_refusal_that_names_another_item(tmp_path):
    # The message names item 24 whichever item was refused: right for 24, wrong for 49.
    ns = await _pieces(**_HARD_CODED)
    said = await kit.check_item(ns["Item"])
    assert not said.ok and "item 49's refusal" in said.message, said
    right = await kit.check_item((await _pieces())["Item"])
    assert right.ok and "items 24 and 49" in right.message, right
    run = await _judge(ns, tmp_path)  # refused as piece 2 before any process ran
    assert not run.ran and "piece 2" in check_capstone(run).message, run


async def test_the_capstone_judge_refuses_stored_refusals_without_their_own_number(tmp_path):
    # Written straight to a script (past the piece checker): the stored records show it.
    ns = await _pieces(**_HARD_CODED)
    script = kit.write_capstone(tmp_path / "same.py", ns["item_name"], ns["Item"],
                                ns["run_items"])
    run = await kill_and_resume(script, tmp_path / "same.sqlite", work_seconds=0.03, failing=4)
    assert run.unnamed_failed == [49, 74, 99] and run.recorded_distinct == 1, run
    verdict = check_capstone(run)
    assert not verdict and "does not contain their own n" in verdict.message, verdict
    good = await _pieces()
    script = kit.write_capstone(tmp_path / "good.py", good["item_name"], good["Item"],
                                good["run_items"])
    run = await kill_and_resume(script, tmp_path / "good.sqlite", work_seconds=0.03, failing=4)
    assert run.unnamed_failed == [] and run.recorded_distinct == 4, run.describe()


async def test_the_capstone_reports_a_script_that_crashes(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit('no pipeline yet')\n")
    verdict = check_capstone(await kill_and_resume(script, tmp_path / "b.sqlite"))
    assert not verdict and "exited with 1: no pipeline yet" in verdict.message
    with pytest.raises(ValueError, match="does not exist"):
        await kill_and_resume(tmp_path / "missing.py", tmp_path / "m.sqlite")


_counter = itertools.count()


def counted_name(n):
    return f"item-{next(_counter)}"


def hashed_name(n):
    return f"item-{hash(str(n))}"


def pid_name(n):
    return f"item-{n}-{os.getpid()}"


async def test_the_item_name_checker_carries_the_cells_imports_and_constants():
    # `import os` in a cell of its own, then a name with the process id: refused for
    # changing between processes, not for a NameError in the fresh process.
    ns = await _pieces(**{'return f"item-{n:03d}"': 'return f"item-{n}-{os.getpid()}"'})
    await run_cell("import os", ns)
    verdict = kit.check_item_name(ns["item_name"])
    assert not verdict and "another Python process named the items differently" \
        in verdict.message, verdict
    ns = await _pieces(**{'return f"item-{n:03d}"': 'return f"item-{n}-of-{LIMIT}"'})
    assert kit.check_item_name(ns["item_name"]), "LIMIT travels to the other process"


def test_the_item_name_checker_refuses_names_that_repeat_change_or_are_not_strings():
    cases = {"repeat another": lambda n: f"item-{n % 10}",
             "non-empty string": lambda n: None if n == 7 else f"item-{n}",
             "asked twice in this process": counted_name,
             "another Python process": hashed_name,
             "raised ZeroDivisionError": lambda n: 1 / 0,
             "(the placeholder)": lambda n: ...}
    for said, item_name in cases.items():
        verdict = kit.check_item_name(item_name)
        assert not verdict and said in verdict.message, (said, verdict)
    assert "fill in your answer" in kit.check_item_name(None).message


def test_the_lapse_window_checker_explains_each_missing_term():
    from storylab.tutorial import check_lapse_window

    cases = {"renewed last up to": lambda T, renew=10, check=4: (T, T + T / check),
             "every T/check": lambda T, renew=10, check=4: (T - T / renew, T),
             "T/check after that": lambda T, renew=10, check=4: (T - T / renew,
                                                                 T - T / renew + T / check),
             "until it expires": lambda T, renew=10, check=4: (0, T),
             "write the earliest with T and renew": lambda T, renew=10, check=4: (0.9 * T,
                                                                                  1.25 * T),
             "write the latest with T and check": lambda T, renew=10, check=4: (T - T / renew,
                                                                                1.25 * T),
             "Keep the signature": lambda T: (0.9 * T, 1.25 * T),
             "a pair of numbers": lambda T, renew=10, check=4: 0.9 * T,
             "(the placeholder)": lambda T, renew=10, check=4: ...}
    for said, fn in cases.items():
        verdict = check_lapse_window(fn)
        assert not verdict and said in verdict.message, (said, verdict)
        # A near miss is told what is wrong, never the expected number.
        for T, renew, check in ((1.5, 10, 4), (4.0, 5, 2), (10.0, 8, 3)):
            for value in (T - T / renew, T + T / check):
                assert f"is {value:g}" not in verdict.message, (said, verdict)
    right = check_lapse_window(lambda T, renew=10, check=4: (T - T / renew, T + T / check),
                               lease_timeout=1.5, kill_scale=0.2)
    assert right.ok and "6.75 to 9.38 model s after the kill" in right.message, right
    # Given the kill's model time, the window is rounded as the chart rounds its band
    # (11.25 + 6.75 = 18.0), not as the kill and the offset were rounded apart (11.3 + 6.8).
    placed = check_lapse_window(lambda T, renew=10, check=4: (T - T / renew, T + T / check),
                                lease_timeout=1.5, kill_scale=0.2, killed=11.25)
    assert placed.ok and "from 18.0 to 20.6 model s" in placed.message, placed
    assert "6.8 " not in placed.message, placed


def test_the_item_name_checker_shows_the_names_another_process_gave():
    said = kit.check_item_name(pid_name).message
    assert "the process id" in said, said
    assert f"'item-0-{os.getpid()}'" in said and said.count("'item-0-") == 2, said


async def test_the_fifo_losses_checker_runs_the_learners_sweep_and_names_the_near_misses():
    from storylab.sweep import simulate_stories

    async def losses(p, limits, *, policy="fifo", against="fair"):
        out = []
        for g in limits:
            mine = await simulate_stories(5, 5, p, g, policy=policy)
            other = await simulate_stories(5, 5, p, g)
            if against == "bound":
                if mine.makespan > mine.ideal:
                    out.append(g)
            elif mine.makespan > other.makespan:
                out.append(g)
        return out

    right = await kit.check_fifo_losses(losses)
    assert right.ok and "never at 4" in right.message, right
    same = await kit.check_fifo_losses(lambda p, gs: losses(p, gs, policy="fair"))
    assert not same.ok and "gave []" in same.message
    assert "Pass policy=\"fifo\" to one" in same.message, same
    bound = await kit.check_fifo_losses(lambda p, gs: losses(p, gs, against="bound"))
    assert not bound.ok and "not with the bound" in bound.message, bound
    some = await kit.check_fifo_losses(lambda p, gs: [10])
    assert not some.ok and "leaves out global 5" in some.message, some
    assert "placeholder" in (await kit.check_fifo_losses(lambda p, gs: ...)).message
    assert "list of global limits" in (await kit.check_fifo_losses(lambda p, gs: 3)).message


async def test_the_item_checker_refuses_items_that_never_fail_rush_or_return_the_wrong_value():
    async def variant(**changes):
        return (await _pieces(**changes))["Item"]

    cases = {
        "ended Completed: raise": {"        if self.data[\"fail\"]:\n": "        if False:\n"},
        "await asyncio.sleep": {"await asyncio.sleep(self.data[\"seconds\"])": "pass"},
        "should return n * n": {"self.data[\"n\"] ** 2": "self.data[\"n\"]"},
        # A blocking wait: each item alone takes its time, but no two run together.
        "ran one after the other": {"import asyncio": "import asyncio, time",
                                    "await asyncio.sleep(self.data[\"seconds\"])":
                                    "time.sleep(self.data[\"seconds\"])"},
        "say which item": {"f\"item {self.data['n']} was refused by the service\"":
                           "\"refused\""},
    }
    for said, changes in cases.items():
        verdict = await kit.check_item(await variant(**changes))
        assert not verdict and said in verdict.message, (said, verdict)
    assert "RunnableEntity subclass" in (await kit.check_item(object)).message


async def test_the_run_items_checker_refuses_no_limit_no_error_branch_or_one_at_a_time():
    async def variant(**changes):
        return (await _pieces(**changes))["run_items"]

    cases = {
        "above LIMIT = 4": {"CapacitySource(LIMIT)": "CapacitySource(100)"},
        "add a branch for\nTaskEventType.ERROR".replace("\n", " "):
            {"failed.append(envelope.error)": "pass"},
        "raised an item's own error": {"failed.append(envelope.error)": "raise envelope.error"},
        "one at a time": {"CapacitySource(LIMIT)": "CapacitySource(1)"},
        "never used all 4 units": {"CapacitySource(LIMIT)": "CapacitySource(3)"},
        "HierarchicalTaskPoolRunner(name, source, capacity)":
            {'HierarchicalTaskPoolRunner("items", source,': "HierarchicalTaskPoolRunner(source,"},
        "two lists": {"return done, failed": "return done"},
        # The loop leaves at the first refusal: the calls are right, the loop is not.
        "your loop stopped at the first error": {
            "failed.append(envelope.error)  # keep it, and go on":
            "failed.append(envelope.error)\n                break"},
        # A catch-all else: progress and status envelopes land in failed too.
        "also caught the progress and status envelopes": {
            "elif envelope.type is TaskEventType.ERROR:": "else:"},
        # The shipped cell: nothing run at all; the verdict does not give the call away.
        "nothing created the items as its children": {
            "    source = SourceFromIterable(batch.parallel_calls(kind, items))\n": "",
            '    runner = HierarchicalTaskPoolRunner("items", source, CapacitySource(LIMIT))\n':
            "",
            "    async with runner.run_tasks() as results:": "    if False:",
            "        async for envelope in results:": "        for envelope in []:"},
        # a plain for over the runner's results.
        "read them with `async for envelope in results:`": {
            "        async for envelope in results:": "        for envelope in results:"},
        # gather over the source, as if it were a list of calls.
        "an async source of tasks for a runner, not a list": {
            "    source = SourceFromIterable(batch.parallel_calls(kind, items))\n":
            "    await asyncio.gather(*batch.parallel_calls(kind, items))\n"},
    }
    for said, changes in cases.items():
        verdict = await kit.check_run_items(await variant(**changes))
        assert not verdict and said in verdict.message, (said, verdict)
        assert "parallel_calls(kind, items)" not in verdict.message or "async source" in said

    def not_async(batch, kind, items):
        return [], []

    assert "async def" in (await kit.check_run_items(not_async)).message


# -- the lesson's speeds ------------------------------------------------------------------
def test_lesson_pace_watch_is_slower_unless_fast(monkeypatch, capsys):
    monkeypatch.delenv("STORYLAB_FAST", raising=False)
    assert lesson_pace(False, 0.05) == (0.05, 0.05 * kit.WATCH_FACTOR)
    assert "the cells to watch run at 0.2" in capsys.readouterr().out
    assert lesson_pace(True, 0.05, quiet=True) == (kit.FAST_SCALE, kit.FAST_SCALE)
    assert lesson_pace(True, 0.01, quiet=True) == (0.01, 0.01)
    assert lesson_pace(True, 0.1, fast_scale=0.05, quiet=True) == (0.05, 0.05)
    monkeypatch.setenv("STORYLAB_FAST", "1")
    assert lesson_pace(False, 0.05, quiet=True) == (kit.FAST_SCALE, kit.FAST_SCALE)
    for bad in (0, -1, "0.1", True, 11):
        with pytest.raises(ValueError, match="time_scale must be"):
            lesson_pace(False, bad)
    with pytest.raises(ValueError, match="fast must be True or False"):
        lesson_pace("yes", 0.05)


# -- orientation ------------------------------------------------------------------------------
def test_the_overview_is_a_labelled_svg_with_a_text_equivalent():
    svg = overview_svg()
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    words = " ".join(t.text or "" for t in root.iter(f"{ns}text"))
    for label in ("request", "pipeline entity", "runner", "global source: 10",
                  "story source: 3", "children", "entity graph", "acquire", "parallel_calls"):
        assert label in words, label
    assert root.find(f"{ns}title").text and root.find(f"{ns}desc").text == overview_text()
    assert root.get("role") == "img"


def test_the_glossary_and_the_api_table_cover_what_the_series_promises():
    assert {"entity", "unit", "capacity source", "runner", "source", "trace", "makespan",
            "model second", "lease", "stale", "entity graph", "resume"} <= set(GLOSSARY)
    assert list(GLOSSARY) == sorted(GLOSSARY), "the glossary is kept in alphabetical order"
    chapter = " ".join(row.typescript for row in API_TABLE)
    for name in ("appendOrRetrieveCall", "parallelCalls", "runTasks()",
                 "envelope.type === 'FINAL'", "envelope.type === 'ERROR'"):
        assert name in chapter, name
    python = " ".join(row.python for row in API_TABLE)
    for name in ("append_or_retrieve_call", "parallel_calls", "run_tasks()",
                 "TaskEventType.FINAL", "TaskEventType.ERROR"):
        assert name in python, name


def test_the_kit_stays_light():
    import subprocess

    code = ("import sys, storylab.tutorial; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_show_figure_prints_its_words_under_the_picture(capsys, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig, _ = plt.subplots()
    kit.show_figure(fig, "five   bars,\n none overlapping")
    assert shown == [fig]
    assert capsys.readouterr().out == "In words: five bars, none overlapping\n"
    fig.storylab_summary = "Timeline: 5 tasks."
    kit.show_figure(fig)
    assert capsys.readouterr().out == "In words: Timeline: 5 tasks.\n"
    with pytest.raises(ValueError, match="non-empty sentence"):
        kit.show_figure(fig, "  ")
    with pytest.raises(ValueError, match="no summary of its own"):
        kit.show_figure(plt.subplots()[0])


def test_every_python_name_of_the_api_table_exists():
    import importlib
    import re

    import storylab.story.backends
    import storylab.story.models
    import storylab.story.settings
    from storylab import EntityGraph, HierarchicalTaskPoolRunner, TaskEventType

    owners = {"self": RunnableEntity, "capacity": CapacitySource,
              "runner": HierarchicalTaskPoolRunner, "graph": EntityGraph}
    # Where a name the table gives without its module lives (its last paragraph says so).
    homes = (storylab, storylab.story.backends, storylab.story.settings, storylab.story.models)
    for row in API_TABLE:
        python = row.python
        for owner, name in re.findall(r"(?<![\w\"])(self|capacity|runner|graph)\.(\w+)", python):
            if owner == "graph" and name == "blobs":
                continue
            assert hasattr(owners[owner], name), f"{python}: {owner}.{name} does not exist"
        for kind in re.findall(r"TaskEventType\.(\w+)", python):
            assert hasattr(TaskEventType, kind), python
        for cls in re.findall(r"\b([A-Z]\w+)\(", python):
            assert cls in ("ImageGenerationEntity",) or any(hasattr(m, cls) for m in homes), (
                f"{python}: where is {cls}?"
            )
        for dotted in re.findall(r"`(storylab(?:\.\w+)+)", python):
            module, _, name = dotted.rpartition(".")
            try:
                assert hasattr(importlib.import_module(module), name), dotted
            except ModuleNotFoundError:
                importlib.import_module(dotted)


def test_the_longest_picture_may_be_named_as_the_chart_writes_it(story_run):
    run, lanes = story_run
    best = max(lanes, key=lambda lane: lane.run[1] - lane.run[0])
    took = best.run[1] - best.run[0]
    short = best.label.replace("{{IMAGE_", "").replace("}}", "")
    assert kit.check_longest_picture(run.trace, (best.label, took))
    assert kit.check_longest_picture(run.trace, (short, round(took, 1))), short
    other = next(lane for lane in lanes if lane.label != best.label)
    assert not kit.check_longest_picture(
        run.trace, (other.label.replace("{{IMAGE_", "").replace("}}", ""), took))


def test_a_near_miss_on_the_longest_picture_does_not_give_the_length_away(story_run):
    run, lanes = story_run
    best = max(lanes, key=lambda lane: lane.run[1] - lane.run[0])
    took = best.run[1] - best.run[0]
    # A guess within 0.3 of the moment the picture ended gets the "that is when it ended"
    # hint instead (a picture that started near 0 on a slow machine), so leave those out.
    guesses = [g for g in (round(took) - 1.0, took + 0.6, took - 2.0)
               if abs(g - best.run[1]) > 0.3]
    assert guesses
    for guess in guesses:
        verdict = kit.check_longest_picture(run.trace, (best.label, guess))
        assert not verdict and "right picture" in verdict.message, (guess, verdict)
        assert f"{took:.1f}" not in verdict.message and f"{took:.0f} " not in verdict.message, (
            verdict.message)
        assert "0.3 model s" in verdict.message, verdict.message
    assert kit.check_longest_picture(run.trace, (best.label, took + 0.25))


def test_the_longest_picture_is_not_the_last_to_end(tmp_path):
    # Notebook 1's run: its second picture is a hard one (twice as long), so the
    # wrong reasoning "the last bar ends last, so it ran longest" is caught by name.
    from storylab.viz import timeline_lanes

    graph = fresh_graph("longest", home=tmp_path)
    settings = simulated_settings(0.05, image_mode="sequential", images_slow={"IMAGE_2": 2})
    run = asyncio.run(run_stories(graph, ["a shy hedgehog"], settings=settings, panel=None))
    lanes = timeline_lanes(run.trace)
    best = max(lanes, key=lambda lane: lane.run[1] - lane.run[0])
    last = max(lanes, key=lambda lane: lane.run[1])
    assert best is not last, [(lane.label, lane.run) for lane in lanes]
    verdict = kit.check_longest_picture(run.trace, (last.label, last.run[1] - last.run[0]))
    assert not verdict and "ended last" in verdict.message, verdict
    said = kit.check_longest_picture(run.trace, (best.label, best.run[1]))
    assert not said and "the moment it ended" in said.message, said
    said = kit.check_longest_picture(run.trace, best.label)
    assert not said and "(label, seconds)" in said.message, said
    assert "not the last to end" in kit.check_longest_picture(
        run.trace, (best.label, best.run[1] - best.run[0])).message
    assert best.label == "image-{{IMAGE_2}}"
    graph.close()


def test_the_python_form_exercise_wants_a_change_of_kind_not_of_spelling():
    for right in ("return result", "for await", "envelope.type === 'FINAL'"):
        assert kit.check_python_form(right), right
    wrong = {
        # Python only drops something in these rows (a decorator, a call): one rule for both
        "@EntityMixin": "nothing new to write. Wanted: a row where Python needs",
        # the chapter awaits it too: Python adds no keyword, it only respells the call
        "await this.updateEntityData": "becomes keyword arguments",
        "updateEntityData": "becomes keyword arguments",
        # Python's spelling matches the chapter's only when case is ignored
        "Return": "Python (middle) column",
        "parallelCalls": "only spelt in snake_case",
        "appendOrRetrieveCall": "only spelt in snake_case",
        "capacity.acquire()": "reads the same in Python",
        "SourceBufferObj": "keeps its kind",
        "parallel_calls": "Python (middle) column",
        "envelope": "copy more of the name",
        "fetchAll": "not in the chapter's (left) column",
        42: "as a string",
        # names found in several rows, or looking like a change: said plainly, with what is wanted
        "GLOBAL_IMAGE_CAPACITY": "is in 2 rows of the table, and none of them",
        "get_dto": "nothing new to write. Wanted: a row where Python needs",
        # the service class is dropped, as the table's Python column says: no kind is kept
        "ImageService": "drops the service class",
        # a constant read through a call: said why that is no new kind of code
        "a module constant": "the module constant becomes a call",
    }
    for answer, why in wrong.items():
        verdict = kit.check_python_form(answer)
        assert not verdict and why in verdict.message, (answer, verdict)
    assert "fill in" in kit.check_python_form(None).message
    # an answer found in two rows says why each of them is no change of kind
    both = kit.check_python_form("GLOBAL_IMAGE_CAPACITY").message
    assert "the module constant becomes a call" in both and "keeps its kind" in both
    assert "keeps its kind" not in kit.check_python_form("ImageService").message
    # a right answer names its whole row, not another string of it
    said = kit.check_python_form("INTERMEDIATE")
    assert said and "'INTERMEDIATE'" in said.message.split(":")[0], said


async def test_the_return_form_exercise_wants_a_yielded_return_as_the_last_item():
    ns = _namespace()
    await run_cell(solution_code("00-1").replace("check_return_form(count_pictures)", ""), ns)
    assert kit.check_return_form(ns["count_pictures"])
    loop = "    for p in pictures:\n        yield f'drawing {p}'"
    wrong = {
        # the scaffold as given: progress only, no result
        "    for p in pictures:\n        yield f'drawing {p}'": "no Return",
        "    yield len(pictures)": "wrap the value in Return",
        "    yield Return(len(pictures))\n    yield 'done'": "after the Return",
        f"{loop}\n    yield Return(3)": "wanted the number of pictures",
        f"{loop}\n    yield Return(pictures)": "wanted the number of pictures",
        # the right Return, but the progress reports are gone (the line replaced the loop)
        "    yield Return(len(pictures))": "progress report of each picture is gone",
        # a report for only some pictures, or reports after the loop was cut short
        "    for p in pictures[:1]:\n        yield f'drawing {p}'\n    yield Return(len(pictures))":
            "progress report of each picture is gone",
        "    await asyncio.sleep(0)\n    yield Return(len(pictures))": "needs none",
    }
    for body, why in wrong.items():
        await run_cell(f"import asyncio\nasync def count_pictures(pictures):\n{body}\n", ns)
        verdict = kit.check_return_form(ns["count_pictures"])
        assert not verdict and why in verdict.message, (body, verdict)
    await run_cell("def count_pictures(pictures):\n    return len(pictures)\n", ns)
    assert "plain function" in kit.check_return_form(ns["count_pictures"]).message
    assert "fill in" in kit.check_return_form(None).message


def test_the_restart_box_exercise_wants_the_entity_graph_and_says_what_other_boxes_do():
    for right in ("entity graph", "the SQLite file", "Entity Graph"):
        assert kit.check_restart_box(right), right
    wrong = {"children": "they are stored", "pipeline entity": "follow the dashed arrow",
             "runner": "keeps nothing", "global source: 10": "they remember nothing",
             "request": "what it finds", "the cloud": "not a box of the diagram",
             3: "as a string"}
    for answer, why in wrong.items():
        verdict = kit.check_restart_box(answer)
        assert not verdict and why in verdict.message, (answer, verdict)
    assert "fill in" in kit.check_restart_box(None).message


def test_an_explore_exercise_shows_its_prose_answer(capsys, monkeypatch):
    asked = []
    import IPython

    shell = types.SimpleNamespace(set_next_input=lambda code, replace: asked.append(code))
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    for key in ("00-2", "01-2"):
        show_solution(key)
        said = capsys.readouterr().out
        assert said.strip() == textwrap.dedent(kit.EXPLAINED[key]).strip(), key
    assert asked == []  # prose is printed, never put into a code cell
    assert "model seconds" in kit.EXPLAINED["01-2"] and "entity graph" in kit.EXPLAINED["00-2"]
    with pytest.raises(ValueError, match="known: .*00-2"):
        show_solution("00-9")


def test_cluster_progress_replays_a_stored_story_into_the_panel(tmp_path):
    import io

    from storylab.viz import ProgressPanel

    graph = fresh_graph("cluster", home=tmp_path)
    run = asyncio.run(run_stories(graph, ["a kind giant"], panel=None,
                                  settings=simulated_settings(0.002)))
    graph.flush()
    said = io.StringIO()
    panel = ProgressPanel("on workers", form="text", stream=said)
    story = types.SimpleNamespace(topic="a kind giant", pipeline=run.pipelines[0].name,
                                  pipeline_id=run.pipelines[0].id, pid=4242)
    kit.cluster_progress(panel, graph.path)(story)
    panel.close()
    (progress,) = panel.pipelines
    assert (progress.done, progress.total) == (5, 5) and progress.completed == 5
    assert "finished by worker process 4242" in said.getvalue()


def test_several_stories_get_the_compact_panel_with_the_gauge(tmp_path, capsys):
    graph = fresh_graph("gauge", home=tmp_path)
    settings = simulated_settings(0.002)
    two = asyncio.run(run_stories(graph, ["a fox", "an owl"], settings=settings))
    assert two.panel.compact and two.panel.trace is two.trace
    assert two.panel.names == kit.story_labels(two)
    one = asyncio.run(run_stories(graph, ["a hen"], settings=settings))
    assert not one.panel.compact and one.panel.trace is None
    capsys.readouterr()


def hash_named(prompt):
    return f"image-{hash(prompt['placeholder'])}"


def digest_named(prompt):
    return "image-" + hashlib.sha256(prompt["placeholder"].encode()).hexdigest()[:12]


def test_the_naming_checker_runs_the_function_in_a_second_process():
    # hash() of a str is stable inside one process, so only a second process,
    # with its own hash seed, shows that a resume would not find the children.
    verdict = check_stable_names(hash_named)
    assert not verdict and "second Python process" in verdict.message, verdict
    # A module the function uses (hashlib) travels to the second process.
    assert check_stable_names(digest_named), check_stable_names(digest_named)
    namespace: dict = {}
    code = solution_code("02-1").replace("check_prompt_names(picture_name)", "")
    exec(compile(code, _cell_file(code), "exec"), namespace)
    assert kit.check_prompt_names(namespace["picture_name"])


def _cells(*cells: str) -> dict:
    """Run each cell's code in one namespace, as a notebook does."""
    namespace: dict = {"__name__": "__main__"}
    for code in cells:
        exec(compile(code, _cell_file(code), "exec"), namespace)
    return namespace


def test_the_naming_checker_ships_what_nested_helpers_import_and_names_a_helper_left_out():
    # The notebook says a helper of your own belongs inside the function and a module may be
    # imported in any cell: a nested def or lambda that uses hashlib, imported at the top,
    # is a right answer, and so is a function imported from a module.
    imported = "import hashlib\n"
    right = {
        "nested def": "def picture_name(p):\n"
                      "    def short(t):\n"
                      "        return hashlib.sha256(t.encode()).hexdigest()[:12]\n"
                      "    return 'image-' + short(p['prompt'])\n",
        "lambda": "def picture_name(p):\n"
                  "    short = lambda t: hashlib.sha256(t.encode()).hexdigest()[:12]\n"
                  "    return 'image-' + short(p['prompt'])\n",
        "comprehension": "def picture_name(p):\n"
                         "    parts = [hashlib.md5(w.encode()).hexdigest()[:2] "
                         "for w in p['prompt'].split()]\n"
                         "    return 'image-' + hashlib.sha256(''.join(parts).encode()"
                         " + p['prompt'].encode()).hexdigest()[:12]\n",
    }
    for what, code in right.items():
        verdict = kit.check_prompt_names(_cells(imported, code)["picture_name"])
        assert verdict, (what, verdict)
    from_import = _cells("from hashlib import sha256\n",
                         "def picture_name(p):\n"
                         "    return 'image-' + sha256(p['prompt'].encode()).hexdigest()[:12]\n")
    assert kit.check_prompt_names(from_import["picture_name"])
    # A helper of the notebook's own, outside the function, does not travel: said so.
    outside = _cells(imported, "def _h(t):\n    return hashlib.sha256(t.encode()).hexdigest()\n",
                     "def picture_name(p):\n    return 'image-' + _h(p['prompt'])[:12]\n")
    verdict = kit.check_prompt_names(outside["picture_name"])
    assert not verdict and "define _h inside picture_name" in verdict.message, verdict
    # The wrong answer stays wrong when nested: hash() in a helper changes between processes.
    nested_hash = _cells("def picture_name(p):\n"
                         "    short = lambda t: str(hash(t))[:12]\n"
                         "    return 'image-' + short(p['prompt'])\n")
    verdict = kit.check_prompt_names(nested_hash["picture_name"])
    assert not verdict and "second Python process" in verdict.message, verdict


def hash_of_text(prompt):
    return f"image-{hash(prompt['prompt'])}"


def cut_text(prompt):
    return "image-" + prompt["prompt"][:30]


def whole_text(prompt):
    return "image-" + prompt["prompt"]


def by_placeholder(prompt):
    return f"image-{prompt['placeholder']}"


def test_the_prompt_naming_checker_refuses_hash_cut_long_and_placeholder_names():
    # Notebook 2's exercise: prompts with no placeholder, named from their text.
    refusals = {hash_of_text: "second Python process", cut_text: "the same name",
                whole_text: "a short key", by_placeholder: "KeyError"}
    for name_for, why in refusals.items():
        verdict = kit.check_prompt_names(name_for)
        assert not verdict and why in verdict.message, (name_for.__name__, verdict)
    assert kit.check_prompt_names(digest_of_text), kit.check_prompt_names(digest_of_text)


def longest_prefix(prompt):
    return "image-" + prompt["prompt"][:34]


def test_no_prefix_short_enough_to_be_a_name_separates_the_prompts():
    verdict = kit.check_prompt_names(longest_prefix)
    assert not verdict and "the same name" in verdict.message, verdict
    # the message names the two prompts, their shared name and how far they agree
    shared = longest_prefix({"prompt": "A small grey owl on a branch at dusk, watercolour"})
    assert f"the same name, {shared!r}" in verdict.message, verdict
    assert "soft light" in verdict.message and "soft mist" in verdict.message, verdict
    assert "the same for their first 56 characters" in verdict.message, verdict
    reordered = kit.check_prompt_names(letter_sum).message
    assert "the same words in another order" in reordered, reordered
    last_word = kit.check_prompt_names(lambda p: "image-" + p["prompt"].split()[-1]).message
    assert "they end with the same word" in last_word and "first 0" not in last_word, last_word


def short_digest(prompt):
    return "image-" + hashlib.md5(prompt["prompt"].encode()).hexdigest()[:2]


def test_a_collision_is_blamed_on_a_shared_beginning_only_when_the_name_keeps_no_more():
    # Two hex characters of md5 give the owl and a fox prompt one name; they share only
    # "A " by chance, so the message must not blame their first 2 characters.
    verdict = kit.check_prompt_names(short_digest)
    assert not verdict and "the same name" in verdict.message, verdict
    assert "first 2 characters" not in verdict.message, verdict
    assert "collides by chance" in verdict.message and "8 hex" in verdict.message, verdict
    cut = kit.check_prompt_names(longest_prefix).message
    assert "first 56 characters, and your name keeps no more" in cut, cut
    assert "collides by chance" not in cut, cut
    assert kit.check_prompt_names(digest_of_text)


def letter_sum(prompt):
    return "image-" + str(sum(map(ord, prompt["prompt"])))


def word_initials(prompt):
    return ("image-" + "".join(word[:2] for word in prompt["prompt"].split()))[:40]


def test_names_that_collide_for_other_prompts_are_refused():
    # Both give five different names to five ordinary prompts; neither is different for
    # different prompts in general: the same words reordered, or a late last word.
    for name_for in (letter_sum, word_initials):
        verdict = kit.check_prompt_names(name_for)
        assert not verdict and "the same name" in verdict.message, (name_for.__name__, verdict)
    assert kit.check_prompt_names(digest_of_text)


def digest_of_text(prompt):
    return "image-" + hashlib.sha256(prompt["prompt"].encode()).hexdigest()[:12]


def test_the_makespan_checker_names_the_wrong_reasoning():
    durations = list(SUBJECTS.values())
    said = {38: "one at a time", 16: "a limit of 3", 19: "can't be split evenly"}
    for answer, why in said.items():
        verdict = kit.check_makespan_with_limit(durations, 2, answer)
        assert not verdict and why in verdict.message, (answer, verdict)
    assert kit.check_makespan_with_limit(durations, 2, 22)


# -- notebooks 5 to 7: the new code exercises refuse wrong code -----------------------
async def test_the_retry_checker_refuses_a_plain_rerun_and_a_single_failure():
    from storylab import create_story
    from storylab.tutorial import SimulatedImageBackend, check_retry_two, use_settings

    def attempt(failing, retry):
        async def fail_two_then_retry(graph, time_scale):
            topic, options = "a fox who counts the stars", {"image_quality": "low"}
            broken = simulated_settings(time_scale, images_fail=failing)
            with use_settings(broken):
                await create_story(graph, topic, options).run()
            fixed = SimulatedImageBackend(time_scale=time_scale)
            with use_settings(broken, images=fixed):
                await create_story(graph, topic, options, retry_failed=retry).run()
            return fixed
        return fail_two_then_retry

    plain = await check_retry_two(attempt(["IMAGE_2", "IMAGE_4"], False))
    assert not plain.ok and "retry_failed=True" in str(plain)
    single = await check_retry_two(attempt(["IMAGE_2"], True))
    assert not single.ok and "make two pictures fail" in str(single)
    right = await check_retry_two(attempt(["IMAGE_1", "IMAGE_5"], True))
    assert right.ok and "picture 1, picture 5 only" in str(right)
    assert not (await check_retry_two(None)).ok


async def test_the_polite_client_checker_refuses_the_unbounded_burst():
    import asyncio

    from storylab.tutorial import check_polite_burst

    async def greedy(client, url, n):
        response = await client.post(f"{url}/v1/images/generations", json={"prompt": f"p{n}"})
        return response.status_code

    said = await check_polite_burst(greedy)
    assert not said.ok and "refused" in str(said)
    gate = asyncio.Semaphore(5)  # one more than the ceiling: still refused now and then

    async def almost(client, url, n):
        async with gate:
            return await greedy(client, url, n)

    said = await check_polite_burst(almost)
    assert not said.ok and "refused" in str(said)
    one = asyncio.Semaphore(1)  # never refused, but four times slower than it need be

    async def serial(client, url, n):
        async with one:
            return await greedy(client, url, n)

    said = await check_polite_burst(serial)
    assert not said.ok and "one at a time" in str(said)

    async def own_gate(client, url, n):  # a semaphore per call: nobody ever waits
        async with asyncio.Semaphore(4):
            return await greedy(client, url, n)

    said = await check_polite_burst(own_gate)
    assert not said.ok and "made its own semaphore" in str(said)
    assert "made its own semaphore" not in str(await check_polite_burst(almost))


async def test_the_polite_client_checker_wants_exactly_the_ceiling_in_flight():
    import asyncio

    from storylab.tutorial import check_polite_burst

    async def greedy(client, url, n):
        response = await client.post(f"{url}/v1/images/generations", json={"prompt": f"p{n}"})
        return response.status_code

    two = asyncio.Semaphore(2)  # never refused, but half the server idle

    async def timid(client, url, n):
        async with two:
            return await greedy(client, url, n)

    said = await check_polite_burst(timid)
    assert not said.ok and "at most 2 requests were in flight" in str(said), said
    four = asyncio.Semaphore(4)

    async def polite(client, url, n):
        async with four:
            return await greedy(client, url, n)

    for _ in range(3):  # the right answer reaches the ceiling every time, not by luck
        said = await check_polite_burst(polite)
        assert said.ok and "4 at once at the busiest moment" in str(said), said


def test_the_bound_checker_refuses_a_bound_that_forgets_one_level():
    import math

    from storylab.sweep import SweepCell, ideal_makespan
    from storylab.tutorial import check_bound_function

    cells = [SweepCell(p, g, 5, 5, 0.0, ideal_makespan(5, 5, p, g), 1.0, 1)
             for p in (1, 3, 6) for g in (2, 10, 25)]
    result = types.SimpleNamespace(cells=cells, image_seconds=10.0)

    def pool_only(G, M, d, p, g):
        return d * math.ceil(G * M / g)

    def no_ceil(G, M, d, p, g):
        return d * max(M / p, G * M / g)

    def right(G, M, d, p, g):
        return d * max(math.ceil(M / p), math.ceil(G * M / g))

    for wrong in (pool_only, no_ceil):
        said = check_bound_function(wrong, result)
        assert not said.ok and "the bound is" in str(said)
    assert check_bound_function(right, result).ok


def test_the_bound_checker_names_a_sum_of_rounds_and_a_floor():
    import math

    from storylab.sweep import SweepCell, ideal_makespan
    from storylab.tutorial import check_bound_function

    cells = [SweepCell(p, g, 5, 5, 0.0, ideal_makespan(5, 5, p, g), 1.0, 1)
             for p in (2, 3) for g in (4, 10)]
    result = types.SimpleNamespace(cells=cells, image_seconds=10.0)

    def summed(G, M, d, p, g):
        return d * (math.ceil(M / p) + math.ceil(G * M / g))

    def floored(G, M, d, p, g):
        return d * max(M // p, G * M // g)

    assert "take the larger of the two round counts" in check_bound_function(summed,
                                                                              result).message
    assert "round up, not down" in check_bound_function(floored, result).message


def test_the_bound_checker_names_floor_plus_one_and_tries_more_than_five_stories():
    """A floor plus one is a near miss that rounds up: the checker says math.ceil, not
    "count both"; a bound wrong only for more than five stories is caught too."""
    import math

    from storylab.sweep import SweepCell, ideal_makespan
    from storylab.tutorial import check_bound_function

    cells = [SweepCell(p, g, 5, 5, 0.0, ideal_makespan(5, 5, p, g), 1.0, 1)
             for p in (1, 3, 5) for g in (5, 10, 25)]
    result = types.SimpleNamespace(cells=cells, image_seconds=10.0)

    def right(G, M, d, p, g):
        return d * max(math.ceil(M / p), math.ceil(G * M / g))

    def floor_plus_one(G, M, d, p, g):
        return d * max(M // p + 1, G * M // g + 1)

    def wrong_past_five(G, M, d, p, g):
        return right(G, M, d, p, g) + (0 if G <= 5 else 1)

    said = check_bound_function(floor_plus_one, result)
    assert not said.ok and "math.ceil" in said.message and "// + 1" in said.message, said
    assert "count the rounds one story needs" not in said.message
    said = check_bound_function(wrong_past_five, result)
    assert not said.ok and "bound(8, " in said.message, said
    assert check_bound_function(right, result).ok


def test_the_item_name_checker_runs_a_function_of_another_name_in_other_processes():
    def my_name(n):
        return f"item-{n}"

    verdict = kit.check_item_name(my_name)
    assert verdict, verdict  # it used to fail in the second process with KeyError: 'item_name'


# -- notebook 5: retrying until the story is complete; giving up after too many failures ----
def _finisher(retry: bool, stop: bool):
    from storylab import create_story
    from storylab.tutorial import use_settings

    async def finish_story(graph, models, time_scale):
        topic, options = "a fox who counts the stars", {"image_quality": "low"}
        used = 0
        for model in models:
            used += 1
            story = create_story(graph, topic, options, retry_failed=retry and used > 1)
            with use_settings(simulated_settings(time_scale), images=model):
                result = await story.run()
            if stop and result["stage"] == "completed":
                break
        return used
    return finish_story


async def test_the_finish_story_checker_refuses_a_rerun_without_retry_and_a_loop_that_never_stops():
    plain = await kit.check_finish_story(_finisher(retry=False, stop=True))
    assert not plain.ok and "second model received no request" in plain.message
    assert "retry_failed" not in plain.message  # says what is wrong, not the code to write
    endless = await kit.check_finish_story(_finisher(retry=True, stop=False))
    assert not endless.ok and "returned 4" in endless.message
    right = await kit.check_finish_story(_finisher(retry=True, stop=True))
    assert right.ok and "received 5 requests and refused 2" in right.message
    assert "drew 5" not in right.message  # 2 of the 5 were refused, not drawn
    assert not (await kit.check_finish_story(None)).ok


async def test_the_finish_story_checker_says_no_story_was_asked_for():
    async def no_request(graph, models, time_scale):
        return 3  # the right count, and not a single request

    verdict = await kit.check_finish_story(no_request)
    assert not verdict.ok and "no story was asked for" in verdict.message, verdict
    assert "0 stories" not in verdict.message


def _collector(give_up: bool, own_error: bool = True, returns: bool = False):
    """A learner's ``collect``: gives up past ``max_errors`` by raising its own error (or
    the task's, or, with ``returns``, by returning what it has instead of raising)."""
    async def collect(runner, max_errors):
        finished, failed = [], []
        async with runner.run_tasks() as results:
            async for envelope in results:
                if envelope.type is TaskEventType.FINAL:
                    finished.append(envelope.value)
                elif envelope.type is TaskEventType.ERROR:
                    failed.append(envelope.error)
                    if give_up and len(failed) > max_errors:
                        if returns:
                            return finished, failed
                        if not own_error:
                            raise envelope.error
                        raise RuntimeError(f"{len(failed)} failed")
        return finished, failed
    return collect


async def test_the_give_up_checker_refuses_a_loop_that_never_gives_up_or_reraises():
    never = await kit.check_give_up(_collector(give_up=False))
    assert not never.ok and "still reading envelopes after the second task" in never.message
    reraise = await kit.check_give_up(_collector(give_up=True, own_error=False))
    assert not reraise.ok and "task's own error" in reraise.message
    assert (await kit.check_give_up(_collector(give_up=True))).ok

    async def at_once(runner, max_errors):  # gives up at the first failure
        raise RuntimeError("no")

    early = await kit.check_give_up(at_once)
    assert not early.ok and "still within the limit" in early.message

    async def stops_at_once(runner, max_errors):  # stop_on_error=True: the task's error
        finished, failed = [], []
        async with runner.run_tasks(stop_on_error=True) as results:
            async for envelope in results:
                finished.append(envelope.value)
        return finished, failed

    leaked = await kit.check_give_up(stops_at_once)
    assert not leaked.ok and "still within the limit" in leaked.message, leaked
    assert "_Refused" not in leaked.message and "own error" in leaked.message


def test_widest_gap_sees_a_story_that_starts_waiting_between_two_changes(tmp_path):
    """Five real stories under one limit of 10: the last to start finds the ten units
    taken and waits with none while the first holds 3. Its waits begin after the last
    change of the story lines, so a gap sampled only at those changes is never seen."""
    from storylab.viz import timeline_lanes

    graph = fresh_graph("gap", home=tmp_path)
    settings = simulated_settings(0.01, story_limit=3, global_limit=10)
    topics = [f"a {a} who learns to share" for a in ("fox", "wolf", "turtle", "bear", "heron")]
    run = asyncio.run(run_stories(graph, topics, settings=settings, panel=None))
    lanes = timeline_lanes(run.trace)
    groups = list(dict.fromkeys(lane.group for lane in lanes if lane.group.startswith("story:")))
    names = {g: f"story {letter}" for g, letter in zip(groups, "ABCDE", strict=True)}
    # the story that started last had every picture waiting, holding nothing, at first
    last = groups[-1]
    first_wait = min(lane.wait[0] for lane in lanes if lane.group == last and lane.wait)
    gap = kit.widest_gap(run.trace, names)
    assert gap is not None, "a story waited with no unit while another held 3"
    t, behind, has, ahead, holds, until = gap
    assert (has, holds) == (0, 3) and t <= first_wait + 1e-9
    assert behind == names[last]
    # it stayed at 0 until its story line first rose, not only at the instant t
    from storylab.viz.timeline import capacity_series

    (line,) = [li for li in capacity_series(run.trace) if li.name == last]
    rises = [u for u, v in line.points if u > t and v > 0]
    assert until == rises[0] and until > t


def test_unit_sources_counts_the_waits_the_timeline_leaves_out(tmp_path):
    """Every picture got its unit at once, after a share wait or after a story wait, and
    the waits too short to draw are exactly the difference from the timeline's count."""
    import re

    from storylab.viz.timeline import timeline_summary

    graph = fresh_graph("sources", home=tmp_path)
    settings = simulated_settings(0.01, story_limit=3, global_limit=10)
    topics = [f"a {a} who learns to share" for a in ("fox", "wolf", "turtle", "bear", "heron")]
    run = asyncio.run(run_stories(graph, topics, settings=settings, panel=None))
    came = kit.unit_sources(run.trace, "global")
    assert came["pictures"] == 25 == came["at once"] + came["share"] + came["story"]
    assert came["share"] + came["story"] > 0, "five stories of 3 under 10: some must wait"
    said = re.search(r"; (\d+) waited for capacity", timeline_summary(run.trace))
    drawn = int(said.group(1)) if said else 0
    assert came["share"] + came["story"] - came["unseen"] == drawn
    assert 0 <= came["unseen"] <= came["share"] + came["story"]


def test_split_words_count_the_units_the_stories_held():
    from storylab.viz.readings import Moment

    assert kit.split_words([Moment(1.0, "split 3,3,3,1,0", "split")], 10) == (
        10, "at the split (1.00 model s) the stories held 10 of 10 units")
    held, said = kit.split_words([Moment(0.5, "split 3,3,3,0,0", "split"),
                                  Moment(2.0, "unit freed by A → E", "handoff")], 10)
    assert held == 9 and "held 9 of 10" in said and "the other 1 had not reached a story" in said
    assert kit.split_words([Moment(2.0, "unit freed by A → E", "handoff")], 10) == (None, "")


def test_mark_window_shades_every_panel_and_names_the_band():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(3, 1)
    assert kit.mark_window(fig, 17.5, 20.0, "leases lapse (17.5 to 20.0)") is fig
    for ax in axes:
        (band,) = [p for p in ax.patches if p.get_gid() == "window"]
        assert (band.get_x(), band.get_width()) == (17.5, 2.5)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [
        "leases lapse (17.5 to 20.0)"]
    # outside the panel, above it: it hides no line and takes no room inside the axes
    assert axes[0].get_legend().get_bbox_to_anchor().y0 >= axes[0].bbox.y1 - 1e-6
    with pytest.raises(ValueError, match="start must not be after end"):
        kit.mark_window(fig, 3.0, 2.0, "x")


# -- notebooks 5 to 7, after the third review ----------------------------------------------
async def test_the_failing_entity_checker_refuses_an_entity_that_returns_its_error():
    class ReturnsError(RunnableEntity):
        async def run_impl(self):
            if self.data["fail"]:
                yield Return(RuntimeError("told to fail"))
            else:
                yield Return(self.data["value"])

    said = await check_failing_entity(ReturnsError)
    assert not said.ok, said
    assert "do not return it" in said.message and "could not be stored" in said.message


async def test_the_give_up_checker_speaks_of_messages_and_counts_in_words():
    said = await kit.check_give_up(_collector(give_up=True, returns=True))  # never raises
    assert not said.ok and "instead of raising" in said.message
    assert "_Refused" not in said.message and "'the model refused picture 1'" in said.message
    right = await kit.check_give_up(_collector(give_up=True))
    assert right.ok and "1 tasks" not in right.message and "1 task" in right.message
    assert "its unit given back" in right.message


def test_every_answer_a_notebook_points_to_can_be_shown():
    import json
    import re
    from pathlib import Path

    folder = Path(storylab.__file__).resolve().parent.parent / "notebooks"
    keys = set()
    for path in sorted(folder.glob("0[5-7]_*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        keys |= set(re.findall(r'show_solution\("(\d\d-\d)"\)', text))
    assert {"05-4", "06-2", "07-4"} <= keys
    for key in sorted(keys):
        assert key in SOLUTIONS or key in kit.EXPLAINED, key


def test_the_even_limit_checker_answers_the_near_miss_and_the_overshoot():
    import math

    one = kit.check_even_limit(lambda g, n: 1)
    assert not one.ok and "splits evenly too" in one.message and "largest" in one.message
    over = kit.check_even_limit(lambda g, n: math.ceil(g / n))
    assert not over.ok and "[4, 4, 2]" in over.message and "not even" in over.message
    share = kit.check_even_limit(lambda g, n: g / n)
    assert not share.ok and "whole number" in share.message
    assert kit.check_even_limit(lambda g, n: g // n).ok
    assert "largest" in kit.check_even_split(1).message
    # Rounding to the nearest is not rounding down: 8 units over 3 stories.
    rounded = kit.check_even_limit(lambda g, n: round(g / n))
    assert not rounded.ok and "even_limit(8, 3) gave 3" in rounded.message, rounded


def test_the_bound_checkers_tell_rounds_from_seconds():
    import math

    from storylab.sweep import SweepCell, ideal_makespan
    from storylab.tutorial import check_bound_function

    cells = [SweepCell(p, g, 5, 5, 0.0, ideal_makespan(5, 5, p, g), 1.0, 1)
             for p in (1, 3) for g in (2, 25)]
    result = types.SimpleNamespace(cells=cells, image_seconds=10.0)

    def rounds(G, M, d, p, g):
        return max(math.ceil(M / p), math.ceil(G * M / g))

    def twice(G, M, d, p, g):
        return d * d * max(math.ceil(M / p), math.ceil(G * M / g))

    assert "number of rounds" in check_bound_function(rounds, result).message
    assert "twice" in check_bound_function(twice, result).message

    def no_ceil(G, M, d, p, g):  # rounds counted as fractions
        return d * max(M / p, G * M / g)

    assert "round each count up (math.ceil)" in check_bound_function(no_ceil, result).message

    def ten(G, M, d, p, g):  # the rounds right, the d argument ignored
        return 10 * max(math.ceil(M / p), math.ceil(G * M / g))

    assert "use the d argument (4 here), not 10" in check_bound_function(ten, result).message
    said = kit.check_bound(5, stories=5, images=5, story_limit=2, global_limit=6)
    assert not said.ok and "number of rounds" in said.message
    assert "larger of the two" not in kit.check_bound(40, stories=5, images=5, story_limit=2,
                                                      global_limit=6).message


async def test_the_lonely_round_checker_wants_the_rule_and_checks_it_on_the_sweep():
    right = await run_cell(solution_code("07-3"), _namespace())
    assert right.ok and "all 5 cells it flags end a round above the bound" in right.message
    # The success message points to exercise 4 without naming its answer.
    assert "exercise 4 looks at one" in right.message, right
    assert "global 4 at 3" not in right.message and "ties" not in right.message, right
    # Any story asked for less than its limit: too many cells.
    said = await kit.check_lonely_round(lambda G, M, p, g: G * p > g)
    assert not said.ok and "lonely_round(5, 5, 1, 2) gave True" in said.message
    assert "so its late round is already in the bound" in said.message
    # Forgetting the story that starts with only the remainder.
    import math

    def none_only(G, M, p, g):
        q = g // min(p, M)
        return q < G and 1 + math.ceil(M / p) > max(math.ceil(M / p), math.ceil(G * M / g))

    said = await kit.check_lonely_round(none_only)
    assert not said.ok and "starts only" in said.message, said
    assert "placeholder" in (await kit.check_lonely_round(lambda G, M, p, g: ...)).message
    assert "fill in your answer" in (await kit.check_lonely_round(None)).message


async def test_the_fair_misses_checker_compares_with_the_sweep():
    five = await kit.check_fair_misses({(4, 16)})
    assert not five.ok and "5 pictures" in five.message
    near = await kit.check_fair_misses({(1, 4), (2, 6), (4, 16)})
    assert not near.ok and "2 of your 3 cells are right" in near.message
    assert "per-story 4, global 16" in near.message and "you left out 6" in near.message
    assert "not in the grid" in (await kit.check_fair_misses({(7, 4)})).message
    assert "pairs" in (await kit.check_fair_misses(5)).message
    right = {(1, 4), (2, 6), (2, 8), (3, 8), (3, 10), (5, 20), (6, 20), (6, 25)}
    assert (await kit.check_fair_misses(right)).ok


async def test_the_failing_entity_checker_reads_the_failures_back_through_why():
    class Flaky(RunnableEntity):
        async def run_impl(self):
            if self.data["fail"]:
                raise RuntimeError(f"value {self.data['value']} refused")
            yield Return(self.data["value"])

    def nothing(graph, parent_id):
        return {}

    def everyone(graph, parent_id):
        return {c.name: "?" for c in graph.children(parent_id)}

    def made_up(graph, parent_id):
        return {"child-2": "it failed"}

    def right(graph, parent_id):
        return {c.name: graph.get_node(c.id).error["message"]
                for c in graph.children(parent_id) if c.status == "Failed"}

    assert "did not find it" in (await check_failing_entity(Flaky, nothing)).message
    assert "only child-2 failed" in (await check_failing_entity(Flaky, everyone)).message
    said = (await check_failing_entity(Flaky, made_up)).message
    assert "'value 2 refused'" in said and "error record" in said
    def whole_record(graph, parent_id):
        return {c.name: graph.get_node(c.id).error
                for c in graph.children(parent_id) if c.status == "Failed"}

    said = (await check_failing_entity(Flaky, whole_record)).message
    assert "the whole error record" in said and "Traceback" not in said, said
    assert (await check_failing_entity(Flaky, right)).ok
    assert (await check_failing_entity(Flaky)).ok  # the entity part alone still checks


async def test_the_item_checker_and_the_judge_refuse_an_item_that_returns_its_refusal(tmp_path):
    # Handed back instead of raised, the refusal fails the item only because an
    # exception cannot be stored as its value: not the failure the service meant.
    ns = await _pieces(**{
        "raise RuntimeError(f\"item {self.data['n']} was refused by the service\")":
            "yield Return(RuntimeError(f\"item {self.data['n']} was refused\"))\n"
            "            return"})
    said = await kit.check_item(ns["Item"])
    assert not said.ok, said
    assert "do not return it" in said.message and "could not be stored" in said.message
    run = await _judge(ns, tmp_path)
    verdict = check_capstone(run)  # the judge refused before starting any process
    assert not isinstance(run, kit.CapstoneRun) and "piece 2" in verdict.message, run
    assert not (tmp_path / "capstone.py").exists()


def _sketchbook(*, limit=2, buffered=False, asked_order=False):
    """A learner's sketchbook, right or wrong in one way."""
    from storylab import HierarchicalTaskPoolRunner, SourceBufferObj, SourceFromIterable

    class Attempt(RunnableEntity):
        async def run_impl(self):
            tasks = self.parallel_calls(Sketch, sketch_items(self.data["subjects"]))
            source = (SourceBufferObj([t async for t in tasks]) if buffered
                      else SourceFromIterable(tasks))
            runner = HierarchicalTaskPoolRunner("attempt", source, CapacitySource(limit))
            finished = []
            async with runner.run_tasks() as results:
                async for envelope in results:
                    if envelope.type is TaskEventType.FINAL:
                        finished.append(envelope.value)
            yield Return(list(self.data["subjects"]) if asked_order else finished)

    return Attempt


class Scaffold(RunnableEntity):
    """Notebook 2's exercise as the learner finds it: the last line only."""

    async def run_impl(self):
        finished = []
        yield Return(finished)


class AllAtOnce(RunnableEntity):
    """Children made by hand and gathered: no runner, no capacity source."""

    async def run_impl(self):
        kids = [self.append_or_retrieve_call(Sketch, item["name"], item["data"])
                for item in sketch_items(self.data["subjects"])]
        yield Return(list(await asyncio.gather(*(kid.run() for kid in kids))))


async def test_the_fan_out_exercise_runs_the_learners_entity_and_judges_what_it_did():
    async def check(cls):
        return await kit.check_limited_sketchbook(cls, SUBJECTS, time_scale=SKETCH_SCALE)

    right = await check(_sketchbook())
    assert right and "an owl, a fox, a whale, a snail, a moth" in right.message, right
    wrong = {
        "up to 3 sketches ran at once": _sketchbook(limit=3),
        "only one sketch ran at a time": _sketchbook(limit=1),
        "5 children were already in the graph": _sketchbook(buffered=True),
        "in the order they were asked for": _sketchbook(asked_order=True),
        "no capacity source handed out a single unit": AllAtOnce,
        "0 children in the graph for 5 subjects: fan out one Sketch child": Scaffold,
        "subclass of RunnableEntity": Sketch.run_impl,
    }
    for why, cls in wrong.items():
        verdict = await check(cls)
        assert not verdict and why in verdict.message, (why, verdict)
    assert "fill in" in (await check(None)).message
    # with a prediction, a right sketchbook passes only with the right makespan (22)
    async def predict(answer, cls=None):
        return await kit.check_limited_sketchbook(cls or _sketchbook(), SUBJECTS,
                                                  time_scale=SKETCH_SCALE,
                                                  predicted=answer)

    assert await predict(22) and "the 22 you predicted" in (await predict(22)).message
    assert "now fill in predicted" in (await predict(None)).message
    # the prose asks for a whole number: 22.4 is refused, though within 0.5 of 22
    fraction = await predict(22.4)
    assert not fraction and "whole number of model seconds, not 22.4" in fraction.message
    said = await predict(38)
    assert not said and "your sketchbook is right" in said.message \
        and "one at a time" in said.message, said
    assert "limit of 3" in (await predict(16)).message
    # a wrong sketchbook is told about its code first, whatever the prediction
    assert "up to 3 sketches" in (await predict(22, _sketchbook(limit=3))).message


def test_the_capacity_tree_checker_builds_two_plans_and_refuses_each_slip():
    def right(global_limit, story_limits):
        top = CapacitySource(global_limit, name="global")
        return top, {n: CapacitySource(k, parent=top, name=n) for n, k in story_limits.items()}

    def unlinked(global_limit, story_limits):
        return CapacitySource(global_limit), {n: CapacitySource(k) for n, k in story_limits.items()}

    def typed_out(global_limit, story_limits):  # the notebook's numbers, not the plan's
        top = CapacitySource(4)
        return top, {n: CapacitySource(3, parent=top) for n in ("A", "B")}

    def same_limit(global_limit, story_limits):
        top = CapacitySource(global_limit)
        return top, {n: CapacitySource(3, parent=top) for n in story_limits}

    def chained(global_limit, story_limits):  # each story under the one before
        top, stories, parent = CapacitySource(global_limit), {}, None
        for n, k in story_limits.items():
            stories[n] = parent = CapacitySource(k, parent=parent or top)
        return top, stories

    def empty(global_limit, story_limits):  # the starter
        return CapacitySource(global_limit, name="global"), {}

    assert check_capacity_tree(right)
    said = {f.__name__: check_capacity_tree(f) for f in
            (unlinked, typed_out, same_limit, chained, empty)}
    assert not any(said.values()), said
    assert "never counted at the global level" in said["unlinked"].message
    assert "not one per name" in said["typed_out"].message
    assert "its own limit" in said["same_limit"].message
    assert "under story A" in said["chained"].message
    assert "not one per name" in said["empty"].message
    assert not check_capacity_tree(None) and not check_capacity_tree(right(4, {}))


def test_the_capacity_tree_checker_checks_the_prediction_for_c():
    namespace: dict = {"CapacitySource": CapacitySource}
    body = solution_code("03-2").replace(
        "check_capacity_tree(build_tree, predicted_c=predicted_c)", "")
    exec(compile(body, _cell_file(body), "exec"), namespace)
    build, right = namespace["build_tree"], namespace["predicted_c"]
    assert right == 2 and check_capacity_tree(build, predicted_c=right)
    assert check_capacity_tree(build, predicted_c=2.0)
    wrong = {
        None: "fill in predicted_c",
        3: "is C's own limit",  # C's own limit, forgetting the global level
        5: "the whole global limit",
        1: "count what the global level has left",
        0: "count what the global level has left",
        "2": "whole number",
        2.5: "whole number",
    }
    for answer, why in wrong.items():
        verdict = check_capacity_tree(build, predicted_c=answer)
        assert not verdict and why in verdict.message, (answer, verdict)
        assert "C does not get 2" not in verdict.message  # the answer is never given away
    # a wrong tree is still refused first, whatever the prediction
    def unlinked(global_limit, story_limits):
        return CapacitySource(global_limit), {n: CapacitySource(k) for n, k in story_limits.items()}

    assert not check_capacity_tree(unlinked, predicted_c=2)


async def test_the_draw_picture_checker_wants_both_levels_once_and_a_release_in_finally():
    async def right(story, work):
        await story.acquire()
        try:
            return await work()
        finally:
            story.release()

    async def in_with(story, work):
        async with story:
            return await work()

    async def starter(story, work):  # the notebook's scaffold: no unit at all
        return await work()

    async def global_only(story, work):
        async with story.parent:
            return await work()

    async def twice(story, work):  # the story's acquire already takes the global unit
        async with story, story.parent:
            return await work()

    async def no_finally(story, work):
        await story.acquire()
        value = await work()
        story.release()
        return value

    async def swallows(story, work):
        async with story:
            try:
                return await work()
            except RuntimeError:
                return None

    def not_async(story, work):
        return None

    assert await check_draw_picture(right) and await check_draw_picture(in_with)
    said = {f.__name__: await check_draw_picture(f, timeout=2) for f in
            (starter, global_only, twice, no_finally, swallows, not_async)}
    assert not any(said.values()), said
    assert "no unit was in use" in said["starter"].message
    assert "not from the global source" in said["global_only"].message
    assert "counts it twice" in said["twice"].message
    assert "finally" in said["no_finally"].message
    assert "let the failure out" in said["swallows"].message
    assert "async def" in said["not_async"].message
    assert not await check_draw_picture(None)


def test_the_split_checker_runs_the_hand_out_then_the_even_limit():
    def split(global_limit, story_limit, stories):
        top, held = CapacitySource(global_limit), []
        for _ in range(stories):
            story, taken = CapacitySource(story_limit, parent=top), 0
            while story.try_acquire():
                taken += 1
            held.append(taken)
        return held

    def unlinked(global_limit, story_limit, stories):  # every story's own limit, no global
        return [story_limit] * stories

    def even_split(global_limit, story_limit, stories):  # the share, not the hand-out
        return [global_limit // stories] * stories

    # even_limit finds split as a notebook function does, by global name, so that the
    # checker can hand it another tree
    space = {"split": split}
    exec("def even_limit(global_limit, stories):\n"
         "    return max((k for k in range(1, global_limit + 1)\n"
         "                if len(set(split(global_limit, k, stories))) == 1), default=0)\n",
         space)
    even_limit = space["even_limit"]

    assert kit.check_split_and_even(split, even_limit)
    assert space["split"] is split  # the checker puts the learner's split back
    starter = kit.check_split_and_even(lambda g, p, n: [0] * n, even_limit)
    assert not starter and "try_acquire() says no" in starter.message
    over = kit.check_split_and_even(unlinked, even_limit)
    assert not over and "under the global one" in over.message, over
    share = kit.check_split_and_even(even_split, even_limit)
    assert not share and "each takes all it can" in share.message, share
    limit = kit.check_split_and_even(split, lambda g, n: 3)
    assert not limit and "even_limit(4, 2) gave 3" in limit.message
    assert not kit.check_split_and_even(None, even_limit)


def test_the_split_checker_rejects_a_paper_formula_and_a_crash_past_the_units():
    # the notebook's own solution passes (it lives in a namespace of its own, as in Jupyter)
    space: dict = {"CapacitySource": CapacitySource}
    exec(textwrap.dedent(solution_code("06-1")).split("check_split_and_even(")[0], space)
    assert kit.check_split_and_even(space["split"], space["even_limit"])
    assert space["even_limit"](2, 3) == 0
    # the formula on paper passes the plain cases but not the tree with a unit already taken
    paper = kit.check_split_and_even(space["split"], lambda g, n: g // n)
    assert not paper and "another job already holds 1 of the 4" in paper.message, paper
    assert "largest even limit is 1" in paper.message
    # the old solution, a max() with nothing to take when stories > units
    exec("def crashes(global_limit, stories):\n"
         "    return max(k for k in range(1, global_limit + 1)\n"
         "               if len(set(split(global_limit, k, stories))) == 1)\n", space)
    crash = kit.check_split_and_even(space["split"], space["crashes"])
    assert not crash and "even_limit(2, 3)" in crash.message, crash


def test_a_verdict_shows_code_spans_as_code_in_html_and_keeps_them_in_plain_text():
    verdict = Verdict(False, "the entity yields one more item, `Return(result)`, and `a < b`")
    page = verdict._repr_html_()
    assert "`" not in page
    assert "<code>Return(result)</code>" in page
    assert "<code>a &lt; b</code>" in page  # escaped before it is marked up
    assert "`Return(result)`" in repr(verdict)


def test_the_fair_targets_checker_refuses_each_wrong_rule_and_passes_the_solution():
    from storylab.tutorial import check_fair_targets
    from storylab.tutorial._cluster_lesson import _fair

    def floor_of(w, limit):
        return [int(x) for x in _fair(w, limit)]

    cases = {"splits the limit between processes": lambda w, limit: [limit / len(w)] * len(w),
             "keeps only what it wants": lambda w, limit: [
                 len(ws) * limit / sum(map(len, w)) for ws in w],
             "they add up to": floor_of,
             "placeholder": lambda w, limit: ...,
             "one number per process": lambda w, limit: [1.0],
             "raised ZeroDivisionError": lambda w, limit: 1 / 0}
    for said, fn in cases.items():
        verdict = check_fair_targets(fn)
        assert not verdict and said in verdict.message, (said, verdict)
    assert "fill in your answer" in check_fair_targets(None).message
    right = check_fair_targets(_fair)
    assert right.ok and "[4, 2, 2, 2]" in right.message, right


def test_cluster_labels_letter_the_stories_by_topic_whichever_started_first():
    from types import SimpleNamespace as S

    def run(ending, pipelines):
        return S(stories=[S(pipeline=p, topic=f"a {a} {ending}")
                          for p, a in zip(pipelines, ("fox", "wolf", "bear"), strict=True)],
                 trace=None)

    first = kit.cluster_labels(run("who learns to share", ["p1", "p2", "p3"]))
    second = kit.cluster_labels(run("who finds the way home", ["q1", "q2", "q3"]), marked="q3")
    assert list(first.values()) == ["story A (a fox)", "story B (a wolf)", "story C (a bear)"]
    assert list(second.values()) == ["story A (a fox)", "story B (a wolf)",
                                     "story C (a bear, its worker killed)"]
