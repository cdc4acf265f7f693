"""The notebooks' conveniences: scratch graphs, traced story runs, trace readings."""

from __future__ import annotations

import asyncio
import contextlib
import types

import pytest

from storylab import (
    CapacitySource,
    HierarchicalTaskPoolRunner,
    Return,
    RunnableEntity,
    SourceFromIterable,
    Trace,
)
from storylab.story.backends import SimulatedImageBackend
from storylab.tutorial import (
    FACTS_MIME,
    PictureState,
    Verdict,
    check_bound,
    check_error_type,
    check_even_split,
    check_first_split,
    check_longest_picture,
    check_makespan_with_limit,
    check_most_at_once,
    check_redrawn,
    check_retry_calls,
    create_story,
    first_split,
    fresh_graph,
    image_nodes,
    image_statuses,
    notebook_facts,
    picture_states,
    pool_makespan,
    remember,
    run_stories,
    show_story,
    simulated_settings,
    stage3_code,
    story_gaps,
    story_labels,
    tutorial_home,
    workspace,
)
from storylab.viz import ChildCounter, all_asked_at, in_use_at, plot_children

SCALE = 0.002
TWO = {"illustration_count": 2}


def test_workspace_lives_under_storylab_home_and_starts_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLAB_HOME", str(tmp_path / "home"))
    assert tutorial_home() == tmp_path / "home"
    folder = workspace("nb")
    (folder / "old.txt").write_text("x")
    assert workspace("nb", fresh=False) == folder and (folder / "old.txt").exists()
    assert not (workspace("nb") / "old.txt").exists()
    graph = fresh_graph("nb")
    assert graph.path == folder / "graph.sqlite" and graph.roots() == []
    graph.close()
    for bad in ("", "a/b", "..", 3):
        with pytest.raises(ValueError, match="name must be"):
            workspace(bad)


def test_simulated_settings_pass_options_to_the_image_backend():
    s = simulated_settings(0.5, seed=3, image_mode="sequential", images_fail=["IMAGE_2"])
    assert isinstance(s.images, SimulatedImageBackend)
    assert (s.images.time_scale, s.text.time_scale, s.image_mode) == (0.5, 0.5, "sequential")
    assert s.images.fail == {"{{IMAGE_2}}"}
    with pytest.raises(ValueError, match="image_mode"):
        simulated_settings(0.5, image_mode="one-by-one")
    with pytest.raises(ValueError, match="time_scale"):
        simulated_settings(0)


@pytest.mark.parametrize("bad", ["image_1", "IMAGE_9", "IMAGE_0", "3rd", ["IMAGE_2", "IMAGE_6"]])
def test_simulated_settings_refuse_a_fault_aimed_at_no_picture(bad):
    with pytest.raises(ValueError, match=r"images_fail: .* allowed: IMAGE_1 \.\.\. IMAGE_5"):
        simulated_settings(0.5, images_fail=bad)
    with pytest.raises(ValueError, match=r"images_slow: .* allowed: IMAGE_1 \.\.\. IMAGE_3"):
        simulated_settings(0.5, pictures=3, images_slow=bad if bad != "IMAGE_0" else "IMAGE_4")
    for good in ("IMAGE_5", "{{IMAGE_1}}", "4", ["IMAGE_1", "IMAGE_2"]):
        assert simulated_settings(0.5, images_fail=good).images.fail
    assert simulated_settings(0.5, pictures=9, images_fail="IMAGE_9").images.fail == {"{{IMAGE_9}}"}


async def test_run_stories_traces_a_real_story_and_shows_its_page(tmp_path):
    graph = fresh_graph("run", home=tmp_path)
    settings = simulated_settings(SCALE)
    run = await run_stories(
        graph, ["a lost robot"], settings=settings, customization=TWO, panel=None
    )
    assert run.result["stage"] == "completed" and run.result["image_count"] == 2
    pipeline = run.pipelines[0]
    assert [n.name for n in image_nodes(graph, pipeline.id)] == [
        "image-{{IMAGE_1}}",
        "image-{{IMAGE_2}}",
    ]
    assert image_statuses(graph, pipeline.id) == {"Completed": 2}
    assert run.trace.meta["time_scale"] == SCALE
    assert run.trace.meta["limits"] == {"global": 10, f"story:{pipeline.name}": 3}
    starts = [e.label for e in run.trace.events if e.kind == "task_start"]
    assert sorted(starts) == ["image-{{IMAGE_1}}", "image-{{IMAGE_2}}"]
    page = show_story(graph, run.result).data
    assert page.count('src="data:image/png;base64,') == 2
    with pytest.raises(ValueError, match="no story page"):
        show_story(graph, {"stage": "rejected"})
    both = await run_stories(graph, ["a", "b"], settings=settings, customization=TWO, panel=None)
    assert len(both.results) == 2
    with pytest.raises(ValueError, match="use .results"):
        _ = both.result
    graph.close()


async def test_run_stories_checks_its_arguments(tmp_path):
    graph = fresh_graph("args", home=tmp_path)
    settings = simulated_settings(SCALE)
    with pytest.raises(ValueError, match="topics"):
        await run_stories(graph, [], settings=settings)
    with pytest.raises(ValueError, match="stagger"):
        await run_stories(graph, ["x"], settings=settings, stagger=-1)
    assert graph.roots() == []  # nothing stored for a refused request
    graph.close()


async def test_run_stories_cancels_the_others_when_one_fails(tmp_path):
    import asyncio
    from dataclasses import replace

    from storylab.entities import EntityGraph
    from storylab.story.backends import SimulatedTextBackend
    from storylab.tutorial import run_stories, simulated_settings

    class BrokenWriter(SimulatedTextBackend):
        async def write_story(self, topic, *args, **kwargs):
            if "owl" in topic:
                raise RuntimeError("the writer is down")  # not isolated: the story fails
            return await super().write_story(topic, *args, **kwargs)

    settings = simulated_settings(0.001)
    settings = replace(settings, text=BrokenWriter(time_scale=0.001))
    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        with pytest.raises(RuntimeError, match="the writer is down"):
            await run_stories(graph, ["an owl", "a shy dragon"], settings=settings, panel=None)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert all(t.done() for t in others)  # nothing left running unseen
        dragon = next(r for r in graph.roots() if "dragon" in r.name)
        assert graph.get_node(dragon.id).status != "Completed"  # it was stopped, not finished
        run = await run_stories(
            graph, ["an owl", "a shy dragon"], settings=settings, panel=None,
            return_exceptions=True,
        )  # fmt: skip
        assert isinstance(run.results[0], RuntimeError) and run.results[1]["stage"] == "completed"


# -- measuring, remembering and checking ----------------------------------------------
class _Nap(RunnableEntity):
    async def run_impl(self):
        await asyncio.sleep(self.data["seconds"] * 0.005)
        yield Return(self.data["seconds"])


class _Batch(RunnableEntity):
    async def run_impl(self):
        items = [{"name": f"nap-{i}", "data": {"seconds": s}}
                 for i, s in enumerate(self.data["seconds"])]
        source = SourceFromIterable(self.parallel_calls(_Nap, items))
        runner = HierarchicalTaskPoolRunner("naps", source, CapacitySource(2, name="two"))
        async for _ in runner.run_tasks():
            pass
        yield Return(None)


def test_child_counter_sees_lazy_creation_follow_capacity(tmp_path):
    # On an event loop whose clock moves only when every task waits (the
    # sweep's virtual time), the samples fall exactly where they are asked
    # for, however busy the machine is.
    from storylab.sweep import _VirtualTimeLoop

    loop = _VirtualTimeLoop()
    graph = fresh_graph("lazy", home=tmp_path)
    batch = graph.create(_Batch, "batch", {"seconds": [6, 3, 4, 4]})
    trace = Trace(meta={"time_scale": 0.005}, clock=loop.time)

    async def watched() -> ChildCounter:
        with trace:
            async with ChildCounter(graph, batch, trace, every=0.001) as counter:
                await batch.run()
        return counter

    try:
        counter = loop.run_until_complete(watched())
    finally:
        loop.close()
    assert counter.samples[0][1] == 0 and counter.final == 4
    assert counter.first_finish == pytest.approx(3)
    assert counter.most_before_first_finish == 2  # capacity 2: two children until one ends
    assert counter.most_before(1000) == 4
    fig = plot_children({"lazy": counter}, limit=2)
    legend = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert "2 children before the first finished" in legend
    with pytest.raises(ValueError, match="every must be"):
        ChildCounter(graph, batch, trace, every=0)
    graph.close()


def test_remembered_facts_are_read_back_from_the_outputs():
    nb = {"cells": [
        {"cell_type": "code", "outputs": [{"output_type": "display_data",
                                           "data": {FACTS_MIME: {"a": 1, "b": [1, 2]}}}]},
        {"cell_type": "markdown", "source": "x"},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "text": "hi"},
                                          {"output_type": "display_data",
                                           "data": {FACTS_MIME: {"a": 2}}}]},
    ]}
    assert notebook_facts(nb) == {"a": 2, "b": [1, 2]}


def test_pool_makespan_and_first_split_model_the_runner():
    assert pool_makespan([12, 6, 9, 4, 7], 3) == 16
    assert pool_makespan([12, 6, 9, 4, 7], 2) == 22
    assert pool_makespan([10] * 5, 1) == 50
    assert first_split(5, 3, 10) == [3, 3, 3, 1, 0]
    with pytest.raises(ValueError, match="limit must be"):
        pool_makespan([1], 0)
    with pytest.raises(ValueError, match="global_limit must be"):
        first_split(5, 3, 0)


def _says(verdict: Verdict, ok: bool, text: str) -> None:
    assert isinstance(verdict, Verdict) and verdict.ok is ok and bool(verdict) is ok
    assert text in verdict.message
    assert repr(verdict).startswith("✔ right" if ok else "✘ not yet")
    assert f"data-ok='{str(ok).lower()}'" in verdict._repr_html_()


def test_each_checker_accepts_the_solution_and_rejects_a_wrong_answer():
    durations = [12, 6, 9, 4, 7]
    _says(check_makespan_with_limit(durations, 2, 22), True, "22 model seconds")
    _says(check_makespan_with_limit(durations, 2, 16), False, "a limit of 3")
    _says(check_makespan_with_limit(durations, 2, 20), False, "is not it")
    _says(check_makespan_with_limit(durations, 2, 25), False, "draw 2 slots on paper")
    _says(check_makespan_with_limit(durations, 2, "22"), False, "a number")
    _says(check_first_split([3, 3, 3, 3, 0], global_limit=12), True, "[3, 3, 3, 3, 0]")
    _says(check_first_split([3, 3, 3, 1, 0], global_limit=12), False, "12 can be in use")
    _says(check_first_split([3, 3, 3, 3, 1], global_limit=12), False, "global limit is 12")
    _says(check_first_split([4, 4, 4, 0, 0], global_limit=12), False, "own limit of 3")
    _says(check_first_split([12, 0, 0, 0, 0], global_limit=12), False, "story A would hold")
    _says(check_first_split([0, 3, 3, 3, 3], global_limit=12), False, "order they asked")
    _says(check_first_split([3, 3, 3, 2, 1], global_limit=12), False,
          "story D asked before E and has room for 3 of its own, so it fills first")
    _says(check_first_split([3, 3]), False, "list of 5 numbers")
    before = [PictureState("a", "Completed", 1.0), PictureState("b", "stale", None),
              PictureState("c", "not stored", None)]
    _says(check_redrawn(before, {"b", "c"}), True, "not Completed")
    _says(check_redrawn(before, {"a", "b", "c"}), False, "handed back")
    _says(check_redrawn(before, {"b"}), False, "never stored")
    _says(check_redrawn(before, "b"), False, "a set of names")
    _says(check_redrawn(before, {"B"}), False, "full names")
    _says(check_even_split(2), True, "2 per story")
    _says(check_even_split(3), False, "more than 2")
    _says(check_even_split(1), False, "idle")
    _says(check_bound(50, stories=5, images=5, story_limit=2, global_limit=6), True, "50")
    _says(check_bound(30, stories=5, images=5, story_limit=2, global_limit=6), False, "not it")
    most = {"stories": 5, "story_limit": 3}
    _says(check_most_at_once(10, global_limit=10, **most), True, "the global limit binds")
    _says(check_most_at_once(15, global_limit=20, **most), True, "own limits bind")
    _says(check_most_at_once(15, global_limit=10, **most), False, "caps the sum")
    _says(check_most_at_once(40, global_limit=10, **most), False, "compare the global limit")
    _says(check_most_at_once("10", global_limit=10, **most), False, "a number of pictures")
    _says(check_most_at_once(None, global_limit=10, **most), False, "fill in your answer")
    failed = types.SimpleNamespace(name="image-x", error={"type": "Boom", "message": "m"})
    _says(check_error_type(failed, "Boom"), True, "Boom")
    _says(check_error_type(failed, "ValueError"), False, "not the stored type")
    with pytest.raises(ValueError, match="failed entity"):
        check_error_type(types.SimpleNamespace(name="ok", error=None), "Boom")
    _says(check_retry_calls(2, pictures=5, failed=2), True, "only the failed ones")
    _says(check_retry_calls(5, pictures=5, failed=2), False, "does not redraw the whole story")
    _says(check_retry_calls(1, pictures=5, failed=2), False, "count the pictures")
    _says(check_retry_calls("2", pictures=5, failed=2), False, "whole number")
    _says(check_retry_calls(None), False, "fill in your answer")
    with pytest.raises(ValueError, match="between 0 and pictures"):
        check_retry_calls(1, pictures=5, failed=6)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        check_even_split(2, global_limit=5, stories=2)
    for unanswered in (check_even_split(None), check_bound(None, stories=1, images=1,
                                                           story_limit=1, global_limit=1)):
        _says(unanswered, False, "fill in your answer")


async def test_a_real_story_gives_labels_states_gaps_and_a_longest_lane(tmp_path):
    graph = fresh_graph("labels", home=tmp_path)
    settings = simulated_settings(SCALE, images_fail=["IMAGE_2"])
    run = await run_stories(graph, ["a lost robot", "a sleepy owl"], settings=settings,
                            customization=TWO, panel=None)
    labels = story_labels(run)
    assert list(labels.values()) == ["story A (a lost robot)", "story B (a sleepy owl)"]
    assert all(key.startswith("story:story-pipeline-") for key in labels)
    asked = all_asked_at(run.trace, labels)
    assert asked >= 0 and in_use_at(run.trace, asked)["global"] >= 2
    with pytest.raises(ValueError, match="never asked"):
        all_asked_at(run.trace, ["story:nobody"])
    pipeline = run.pipelines[0]
    states = picture_states(graph, pipeline.id)
    assert [(s.name, s.state) for s in states] == [
        ("image-{{IMAGE_1}}", "Completed"), ("image-{{IMAGE_2}}", "Failed")
    ]
    assert story_gaps(graph, run.results[0]) == ["{{IMAGE_2}}"]
    page = show_story(graph, run.results[0]).data
    # the box is outlined in red and keeps its placeholder; the markup stays whole
    assert 'class="storylab-missing storylab-gap" data-placeholder="{{IMAGE_2}}"' in page
    assert page.count('data-placeholder="') == 1 and page.count("<span") == page.count("</span>")
    from storylab.viz import timeline_lanes

    lanes = timeline_lanes(run.trace)
    best = max(lanes, key=lambda lane: lane.run[1] - lane.run[0])
    longest, took = best.label, best.run[1] - best.run[0]
    _says(check_longest_picture(run.trace, (longest, took)), True, "ran longest")
    _says(check_longest_picture(run.trace, longest), False, "give the length too")
    other = next(lane for lane in lanes if lane.label != longest)
    _says(check_longest_picture(run.trace, (other.label, took)), False, "compare")
    _says(check_longest_picture(run.trace, (longest, took + 2)), False, "right picture")
    _says(check_longest_picture(run.trace, ("image-9", took)), False, "not a lane")
    graph.close()


def test_stage3_code_is_the_pipelines_own_parallel_stage():
    code = stage3_code().data
    assert code.startswith("async def _parallel_images(")
    assert "SourceFromIterable(self.parallel_calls(ImageGenerationEntity, items))" in code
    assert "HierarchicalTaskPoolRunner(" in code


def test_remember_refuses_what_json_cannot_hold():
    with pytest.raises(ValueError, match="facts must be JSON values"):
        remember(order={"a", "b"})


async def test_a_picture_in_progress_is_running_while_held_and_stale_once_its_run_stops(tmp_path):
    graph = fresh_graph("running", home=tmp_path)
    settings = simulated_settings(0.05)  # a picture lasts about half a second
    pipeline = create_story(graph, "a patient heron")
    task = asyncio.create_task(run_stories(graph, ["a patient heron"], settings=settings,
                                           panel=None))
    for _ in range(400):
        if image_statuses(graph, pipeline.id)["InProgress"]:
            break
        await asyncio.sleep(0.01)
    held = [s.state for s in picture_states(graph, pipeline.id)]
    assert "running" in held and "stale" not in held, held
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    after = [s.state for s in picture_states(graph, pipeline.id)]
    assert "stale" in after and "running" not in after, after


async def test_several_stories_are_named_by_letter_in_the_panel(tmp_path):
    # The panel's rows use the same names as the charts and the gauge, not entity names.
    from storylab.viz import ProgressPanel

    graph = fresh_graph("letters", home=tmp_path)
    settings = simulated_settings(SCALE)
    panel = ProgressPanel("two", form="text")
    run = await run_stories(graph, ["a lost robot", "a sleepy owl"], settings=settings,
                            customization=TWO, panel=panel)
    titles = [p.title for p in panel.pipelines]
    assert titles == ["story A (a lost robot)", "story B (a sleepy owl)"], titles
    assert list(story_labels(run).values()) == titles


async def test_start_together_reports_the_split_and_why_each_freed_unit_went_where_it_did(
        tmp_path, capsys):
    # Notebook 3's third exercise: five stories started at once, in a fresh graph.
    import re

    from storylab.tutorial import start_together

    topics = ["a curious fox", "a tiny dragon", "a kind giant", "a lonely cloud", "a whale"]
    together = await start_together(topics, simulated_settings(SCALE), home=tmp_path)
    printed = capsys.readouterr().out
    assert sorted(together.split, reverse=True) == [3, 3, 3, 1, 0], together.split
    assert [r["stage"] for r in together.run.results] == ["completed"] * 5
    assert together.lines[0].startswith(f"{together.asked_at:4.1f} model s, the split:")
    assert all(line in printed for line in together.lines)
    went = [re.search(r"went to story (\w)", line) for line in together.lines]
    takers = [m.group(1) for m in went if m]
    chosen = [re.search(r"fair rule: .*?(\w) (holds the fewest|has waited longest)", line)
              for line in together.lines if "fair rule:" in line]
    assert len(takers) == 2 and len(chosen) == 2, together.lines
    assert takers == [m.group(1) for m in chosen], together.lines
    # a second call starts from an empty graph again, so the stories run once more
    again = await start_together(topics, simulated_settings(SCALE), home=tmp_path, show=False)
    assert sorted(again.split, reverse=True) == [3, 3, 3, 1, 0]
    # the cell's last expression is this object: Jupyter shows its repr under the printed
    # lines, so it stays one short line, not the run's whole trace
    shown = repr(again)
    assert len(shown) < 200 and "\n" not in shown and "TraceEvent" not in shown, shown
    assert ", ".join(map(str, again.split)) in shown


def test_a_near_tie_on_waiting_time_prints_times_that_differ():
    # Stories started together ask thousandths of a model second apart: "D has waited
    # longest (since 0.0)" next to "E ... waiting since 0.0" would contradict itself.
    from storylab.tutorial._capacity import _Candidate, _since_digits, _why

    tied = [_Candidate("D", 0, 0.0031), _Candidate("E", 0, 0.0042)]
    said = _why("D", tied)
    assert "D has waited longest (since 0.003)" in said, said
    apart = [_Candidate("B", 1, 1.5), _Candidate("C", 1, 3.0)]
    assert "B has waited longest (since 1.5)" in _why("B", apart)
    # only a tie on the units held is broken by the wait, so only then the extra decimals
    assert _since_digits(tied) == 3 and _since_digits(apart) == 1
    assert _since_digits([*tied, _Candidate("B", 2, 0.0011)]) == 3
    assert _since_digits([_Candidate("E", 0, 0.002), _Candidate("B", 2, 0.001)]) == 1


async def test_last_round_marks_the_lonely_round_of_four_per_story_under_sixteen():
    # Notebook 7's knobs mark: 5 stories of 5 at 4 per story under 16 leave one
    # picture alone in a third round, from 20 model s, with 15 units idle.
    from storylab.sweep import simulate_stories
    from storylab.tutorial import last_round

    trace = Trace()
    cell = await simulate_stories(5, 5, story_limit=4, global_limit=16, trace=trace)
    assert last_round(types.SimpleNamespace(trace=trace, cell=cell)) == [
        (20.0, "last round: 1 picture, 15 of 16 units idle")]
    trace = Trace()
    cell = await simulate_stories(5, 5, story_limit=5, global_limit=25, trace=trace)
    assert last_round(types.SimpleNamespace(trace=trace, cell=cell)) == [
        (0.0, "last round: 25 pictures, 0 of 25 units idle")]
