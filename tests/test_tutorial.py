"""The notebooks' conveniences: scratch graphs, traced story runs, trace readings."""

from __future__ import annotations

import asyncio

import pytest

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj, Trace
from storylab.story.backends import SimulatedImageBackend
from storylab.tutorial import (
    first_full,
    fresh_graph,
    handoffs,
    image_nodes,
    image_statuses,
    in_use_at,
    plot_in_use,
    run_stories,
    show_story,
    simulated_settings,
    tutorial_home,
    workspace,
)

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


async def _two_groups(time_scale: float) -> Trace:
    """Group A (limit 2) takes the whole root (2); B waits, then gets A's first unit."""
    root = CapacitySource(2, name="root")

    async def group(name: str, seconds: list[float], delay: float) -> None:
        await asyncio.sleep(delay)
        cap = CapacitySource(2, root, name=name)
        thunks = [lambda s=s: asyncio.sleep(s * time_scale) for s in seconds]
        async for _ in HierarchicalTaskPoolRunner(name, SourceBufferObj(thunks), cap).run_tasks():
            pass

    with Trace(meta={"time_scale": time_scale}) as trace:
        await asyncio.gather(group("A", [10, 20], 0), group("B", [10], 2 * time_scale))
    return trace


async def test_trace_readings_find_the_full_moment_and_the_handoff():
    trace = await _two_groups(0.01)
    t_full = first_full(trace, "root", 2)
    assert t_full is not None
    snapshot = in_use_at(trace, t_full)
    assert snapshot["root"] == 2 and snapshot["A"] == 2 and snapshot.get("B", 0) == 0
    first = handoffs(trace, after=t_full, source="root")[0]
    assert (first.released_by, first.taken_by) == ("A", "B")
    assert first.released_at == pytest.approx(10, abs=3) and first.taken_at >= first.released_at
    assert first_full(trace, "root", 3) is None
    assert in_use_at(trace, 1000)["root"] == 0


async def test_plot_in_use_draws_one_line_per_run():
    trace = await _two_groups(0.005)
    fig = plot_in_use({"run 1": trace, "run 2": trace}, source="root", limit=2, title="T")
    (ax,) = fig.axes
    assert ax.get_title() == "T" and "model seconds" in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("run 1 (makespan") and labels[-1] == "limit 2"
    with pytest.raises(ValueError, match="no capacity source named 'nope'"):
        plot_in_use({"run": trace}, source="nope")
    with pytest.raises(ValueError, match="at least one"):
        plot_in_use({})


async def test_plot_in_use_defaults_to_each_traces_root():
    import asyncio

    from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, Trace

    async def run(root_name: str, policy: str) -> Trace:
        with Trace(meta={"time_scale": 0.001}) as trace:
            root = CapacitySource(2, name=root_name, policy=policy)
            cap = CapacitySource(2, root, name=f"story-{root_name}")
            tasks = [lambda: asyncio.sleep(0.002)] * 3
            async for _ in HierarchicalTaskPoolRunner("r", tasks, cap).run_tasks():
                pass
        return trace

    fair, fifo = await run("global", "fair"), await run("global-fifo", "fifo")
    fig = plot_in_use({"fair": fair, "fifo": fifo})
    (ax,) = fig.axes
    assert [line.get_label().split(" (")[0] for line in ax.get_lines()] == ["fair", "fifo"]
    assert max(max(line.get_ydata()) for line in ax.get_lines()) == 2
    assert ax.get_title() == "Units in use at the root capacity source over time"


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
