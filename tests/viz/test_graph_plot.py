"""The entity tree as a networkx graph and as a picture, from a real SQLite store."""

from __future__ import annotations

import re

import pytest
from matplotlib.colors import to_hex
from vizkit import VizImage, VizStory

from storylab.entities import UnknownEntityError
from storylab.viz import LiveEntityTree, entity_graph, plot_entity_tree
from storylab.viz._palette import COLOURS, Status
from storylab.viz.graph_plot import tree_layout

NODE_COLOUR = {
    "Pending": COLOURS[Status.WAITING],
    "InProgress": COLOURS[Status.RUNNING],
    "Completed": COLOURS[Status.COMPLETED],
    "Failed": COLOURS[Status.FAILED],
}


async def _story(graph, name="fox", **data):
    story = graph.create(VizStory, name, {"images": 4, "seconds": 0.001, **data})
    await story.run()
    return story


async def test_entity_graph_holds_the_tree_with_its_attributes(graph):
    story = await _story(graph, fail=[3])
    g = entity_graph(graph, story.id)
    records = [graph.get_node(story.id), *graph.descendants(story.id)]
    assert list(g) == [r.id for r in records]
    assert set(g.edges) == {(r.parent_id, r.id) for r in records[1:]}
    root = g.nodes[story.id]
    assert (root["type"], root["name"], root["label"], root["status"], root["depth"]) == (
        "VizStory", "fox", "VizStory (fox)", "Completed", 0)
    assert root["parent_id"] is None and root["error"] is None
    assert [g.nodes[c]["name"] for c in g.successors(story.id)] == [
        "writer", "image-1", "image-2", "image-3", "image-4"]
    for r in records:
        node = g.nodes[r.id]
        assert (node["started_at"], node["finished_at"], node["created_at"]) == (
            r.started_at, r.finished_at, r.created_at)
        assert node["duration"] == pytest.approx(r.finished_at - r.started_at)
    failed = next(n for n in g if g.nodes[n]["name"] == "image-3")
    assert g.nodes[failed]["status"] == "Failed"
    assert g.nodes[failed]["error"]["type"] == "RuntimeError"
    assert "no ink" in g.nodes[failed]["error"]["message"]


async def test_entity_graph_takes_a_path_and_several_roots(graph, tmp_path):
    a = await _story(graph, "a")
    b = await _story(graph, "b", images=2)
    graph.flush()
    g = entity_graph(tmp_path / "graph.sqlite", [a.id, b.id])
    assert {g.nodes[n]["root"] for n in g} == {a.id, b.id}
    assert len(g) == (1 + 1 + 4) + (1 + 1 + 2)
    with pytest.raises(UnknownEntityError):
        entity_graph(graph, "no-such-id")
    with pytest.raises(LookupError):
        entity_graph(graph, [a.id, "no-such-id"])
    with pytest.raises(TypeError, match="graph must be an EntityGraph or a path"):
        entity_graph(42, a.id)
    with pytest.raises(ValueError, match="roots must name at least one"):
        entity_graph(graph, [])


async def test_tree_layout_is_top_down_and_centres_parents(graph):
    story = await _story(graph)
    g = entity_graph(graph, story.id)
    pos = tree_layout(g)
    kids = list(g.successors(story.id))
    assert pos[story.id][1] == 0 and {pos[k][1] for k in kids} == {-1}
    assert [pos[k][0] for k in kids] == [0, 1, 2, 3, 4]  # creation order, left to right
    assert pos[story.id][0] == 2


async def test_tree_picture_colours_nodes_by_status_and_marks_failures(graph, tmp_path):
    story = await _story(graph, fail=[2, 4])
    g = entity_graph(graph, story.id)
    fig = plot_entity_tree(graph, story.id)
    fig.savefig(tmp_path / "entity_tree.png", dpi=80)
    assert (tmp_path / "entity_tree.png").stat().st_size > 5000
    ax = fig.axes[0]
    (nodes,) = [c for c in ax.collections if c.get_gid() == "entity-nodes"]
    colours = [to_hex(c) for c in nodes.get_facecolors()]
    assert colours == [NODE_COLOUR[g.nodes[n]["status"]] for n in g]
    texts = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    failed = [n for n in g if g.nodes[n]["status"] == "Failed"]
    assert len(failed) == 2
    for n in g:
        # Siblings of one type (the images) are labelled by name; the type is said once.
        shown = g.nodes[n]["name"] if g.nodes[n]["type"] == "VizImage" else g.nodes[n]["label"]
        # (under a leaf, "Type (name)" is broken onto two lines to stay narrow)
        assert texts[f"label:{n}"].replace("\n", " ").startswith(shown)
        assert (f"failed-mark:{n}" in texts) == (n in failed)
    assert "RuntimeError" in texts[f"label:{failed[0]}"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["✓ Completed", "✗ Failed"]  # only the statuses drawn
    assert ax.get_title() == "Entity tree of VizStory (fox) — 4 Completed, 2 Failed"
    assert ax.get_ylabel() and ax.get_xlabel()


async def test_several_pipelines_are_drawn_side_by_side(graph, tmp_path):
    a = await _story(graph, "a", fail=[1])
    b = await _story(graph, "b", images=9)
    fig = plot_entity_tree(graph, [a, b])
    fig.savefig(tmp_path / "entity_trees.png", dpi=80)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Entity trees of 2 pipelines")
    g = entity_graph(graph, [a.id, b.id])
    pos = tree_layout(g)
    assert max(pos[n][0] for n in g if g.nodes[n]["root"] == a.id) < min(
        pos[n][0] for n in g if g.nodes[n]["root"] == b.id)


async def test_live_tree_redraws_while_the_run_goes_on(graph):
    story = graph.create(VizStory, "live", {"images": 3, "seconds": 0.03})
    titles: list[str] = []

    class Recording(LiveEntityTree):
        def refresh(self):
            fig = super().refresh()
            titles.append(fig.axes[0].get_title())
            return fig

    tree = Recording(graph, story.id, interval=0.01)
    result = await tree.follow(story.run())
    assert result == {"done": 3, "failed": 0}
    assert tree.redraws == len(titles) >= 3
    assert titles[0] == "Entity tree of VizStory (live) — 1 Pending"
    assert any("InProgress" in t for t in titles[1:-1])
    assert titles[-1] == "Entity tree of VizStory (live) — 5 Completed"
    with pytest.raises(ValueError, match="interval must be a number > 0"):
        LiveEntityTree(graph, story.id, interval=0)


async def test_a_pending_child_is_drawn_grey(graph):
    story = graph.create(VizStory, "half", {"images": 1, "seconds": 0.001})
    story.append_or_retrieve_call(VizImage, "later", {"n": 9, "seconds": 0})
    g = entity_graph(graph, story.id)
    assert [g.nodes[n]["status"] for n in g] == ["Pending", "Pending"]
    fig = plot_entity_tree(graph, story.id)
    (nodes,) = [c for c in fig.axes[0].collections if c.get_gid() == "entity-nodes"]
    assert {to_hex(c) for c in nodes.get_facecolors()} == {COLOURS[Status.WAITING]}


async def test_an_unknown_root_in_a_store_file_names_the_id(graph, tmp_path):
    await _story(graph)
    graph.flush()
    with pytest.raises(UnknownEntityError, match="no-such-id"):
        entity_graph(tmp_path / "graph.sqlite", "no-such-id")


async def test_children_that_were_never_stored_are_drawn_hollow_after_the_real_ones(graph):
    story = await _story(graph, images=2)
    real = [n.name for n in graph.children(story.id)]
    fig = plot_entity_tree(graph, story.id, missing=[*real, "image-9", "image-10"])
    ax = fig.axes[0]
    (hollow,) = [c for c in ax.collections if c.get_gid() == "missing-nodes"]
    assert len(hollow.get_offsets()) == 2  # names already in the graph are not drawn twice
    assert {to_hex(c) for c in hollow.get_facecolors()} == {"#ffffff"}
    (stored,) = [c for c in ax.collections if c.get_gid() == "entity-nodes"]
    assert min(x for x, _ in hollow.get_offsets()) > max(x for x, _ in stored.get_offsets())
    labels = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert labels[f"label:missing:{story.id}:image-9"] == "not stored\n(image-9)"
    assert "2 NotStored" in ax.get_title()
    assert "not stored (no node)" in [t.get_text() for t in ax.get_legend().get_texts()]
    # a placeholder name is written short, as every other node and chart writes it
    fig = plot_entity_tree(graph, story.id, missing=["image-{{IMAGE_5}}"])
    labels = {t.get_gid(): t.get_text() for t in fig.axes[0].texts if t.get_gid()}
    assert labels[f"label:missing:{story.id}:image-{{{{IMAGE_5}}}}"] == "not stored\n(image-5)"


async def test_missing_children_must_be_a_list_of_names(graph):
    story = await _story(graph, images=1)
    with pytest.raises(TypeError, match="missing must be a list"):
        plot_entity_tree(graph, story.id, missing="image-9")
    with pytest.raises(TypeError, match="missing must hold child names"):
        plot_entity_tree(graph, story.id, missing=[3])


async def test_the_tree_carries_status_glyphs_durations_and_reuse(graph, tmp_path):
    story = await _story(graph, fail=[2])
    g = entity_graph(graph, story.id)
    images = [n for n in g if g.nodes[n]["type"] == "VizImage"]
    done = [n for n in images if g.nodes[n]["status"] == "Completed"]
    # Pretend the first two completed images were finished by an earlier run.
    cut = sorted(g.nodes[n]["finished_at"] for n in done)[1] + 1e-9
    fig = plot_entity_tree(graph, story.id, run_started=cut, time_scale=0.01)
    fig.savefig(tmp_path / "tree.png", dpi=80)
    ax = fig.axes[0]
    texts = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    reused = [n for n in g if g.nodes[n]["status"] == "Completed"
              and g.nodes[n]["finished_at"] < cut]  # the writer too: it finished first
    assert len(reused) >= 2
    for n in reused:
        # reused, with the time it ran in the earlier run (what the reuse saved)
        assert texts[f"glyph:{n}"] == "↺"
        assert texts[f"detail:{n}"] == f"reused · {g.nodes[n]['duration'] / 0.01:.1f} model s"
    ran = [n for n in done if n not in reused]
    assert ran
    for n in ran:
        assert texts[f"glyph:{n}"] == "✓"
        assert texts[f"detail:{n}"] == f"{g.nodes[n]['duration'] / 0.01:.1f} model s"
    (ring,) = [c for c in ax.collections if c.get_gid() == "reused-nodes"]
    assert len(ring.get_offsets()) == len(reused)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "reused from the graph (↺)" in legend
    assert ax.get_title().endswith(f"{len(reused)} reused")
    assert fig.storylab_summary.startswith("Entity tree: 1 root, ")
    assert f"{len(reused)} reused from the graph" in fig.storylab_summary
    assert "failed: VizImage (image-2)" in fig.storylab_summary
    # Without run_started nothing is called reused.
    plain = plot_entity_tree(graph, story.id)
    assert not [c for c in plain.axes[0].collections if c.get_gid() == "reused-nodes"]


def _overlapping_text(fig):
    """Pairs of visible texts of ``fig`` whose boxes overlap, and texts outside the figure."""
    import itertools

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    texts = [t for t in ax.texts if t.get_text().strip()]
    texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_yticklabels(),
              *ax.get_legend().get_texts(), ax.get_legend().get_title()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    clash = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    width, height = fig.canvas.get_width_height()
    outside = [a for a, b in boxes
               if b.x0 < 0 or b.y0 < 0 or b.x1 > width + 0.5 or b.y1 > height + 0.5]
    return clash, outside


@pytest.mark.parametrize("long_names", [False, True])
async def test_no_text_overlaps_in_trees_of_up_to_ten_children(graph, tmp_path, long_names):
    for n in range(11):
        story = graph.create(VizStory, f"tree-{n}", {"images": 0 if long_names else n,
                                                     "seconds": 0.001, "fail": [2]})
        await story.run()
        missing = []
        if long_names:  # the pipeline's real names, and two pictures never stored
            for i in range(1, n - 1):
                story.append_or_retrieve_call(VizImage, f"image-{{{{IMAGE_{i}}}}}",
                                              {"n": i, "seconds": 0})
            missing = [f"image-{{{{IMAGE_{i}}}}}" for i in range(max(1, n - 1), n + 1)]
        fig = plot_entity_tree(graph, story.id, time_scale=0.0001, missing=missing)
        clash, outside = _overlapping_text(fig)
        fig.savefig(tmp_path / f"tree-{n}.png", dpi=80)
        assert clash == [], f"{n} children: overlapping text {clash}"
        assert outside == [], f"{n} children: text outside the figure {outside}"
        assert fig.get_figwidth() <= 16


async def test_no_text_overlaps_even_in_a_tree_of_twenty_five_children(graph, tmp_path):
    story = await _story(graph, images=24, fail=[5])
    fig = plot_entity_tree(graph, story.id, time_scale=0.0001)
    fig.savefig(tmp_path / "tree-25.png", dpi=80)
    clash, outside = _overlapping_text(fig)
    assert (clash, outside) == ([], [])


async def test_no_text_overlaps_in_a_tree_drawn_into_given_axes(graph):
    import matplotlib.pyplot as plt

    from storylab.viz.graph_plot import draw_entity_graph

    story = await _story(graph, images=8)
    # The labels say how long each node ran, as measured: on a busy machine a
    # 1 ms picture can take a second, and a wider label would decide the
    # verdict. Pinned to what an idle machine measures, so the layout alone is judged.
    g = entity_graph(graph, story.id)
    for n in g:
        g.nodes[n]["duration"] = 0.0025 if g.nodes[n]["depth"] == 0 else 0.0012
    fig, ax = plt.subplots(figsize=(10, 4))
    draw_entity_graph(g, ax=ax, time_scale=0.0001)
    assert "12.0 model s" in [t.get_text() for t in ax.texts]
    clash, _ = _overlapping_text(fig)
    assert clash == []


async def test_the_tree_reads_its_time_scale_from_the_trace_and_says_where_the_time_went(graph):
    from storylab import Trace

    trace = Trace(meta={"time_scale": 0.001})
    with trace:
        story = await _story(graph, name="owl", images=6, seconds=0.002)
    fig = plot_entity_tree(graph, story.id, trace=trace)
    labels = [t.get_text() for t in fig.axes[0].texts]
    # durations in model seconds at the trace's scale; pictures named as charts name them
    assert any(t.endswith("model s") for t in labels), labels
    assert "image-2" in labels and not any("{{" in t for t in labels), labels
    summary = fig.storylab_summary
    assert summary.startswith("Entity tree: 1 root, ") and "; in time, owl (" in summary
    assert "6 images side by side" in summary, summary
    # the numbers of the sum, as printed, add up to the root's time
    whole, parts = summary.split("; in time, owl (")[1].rstrip(".").split(" model s) = ")
    terms = [float(re.search(r"(\d+\.\d)", part).group(1)) for part in parts.split(" + ")]
    assert abs(sum(terms) - float(whole)) < 0.05, summary
    # the axis says how to read the picture, not which classes it shows
    assert "VizImage" not in fig.axes[0].get_xlabel()
    assert "how long it ran" in fig.axes[0].get_xlabel()
    # the depth axis stops at the deepest row of nodes
    low, high = fig.axes[0].spines["left"].get_bounds()
    assert -1.2 < low < -1 and high > 0
    with pytest.raises(ValueError, match="disagrees with the trace"):
        plot_entity_tree(graph, story.id, trace=trace, time_scale=0.5)
    with pytest.raises(ValueError, match="does not say its time scale"):
        plot_entity_tree(graph, story.id, trace=Trace())
    with pytest.raises(ValueError, match="time_scale must be"):
        plot_entity_tree(graph, story.id, time_scale=0)


async def test_a_started_node_nobody_holds_is_drawn_and_listed_as_stale(graph):
    # A run cancelled mid-picture leaves its nodes InProgress with no live lease: stale,
    # as `storylab eg tree` says; a finished run leaves nothing stale.
    import asyncio

    story = graph.create(VizStory, "cut", {"images": 2, "seconds": 5})
    task = asyncio.create_task(story.run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    g = entity_graph(graph, story.id)
    stale = sorted(g.nodes[n]["name"] for n in g if g.nodes[n]["stale"])
    assert stale == ["cut", "image-1", "image-2"]
    fig = plot_entity_tree(graph, story.id)
    ax = fig.axes[0]
    (ring,) = [c for c in ax.collections if c.get_gid() == "stale-nodes"]
    assert len(ring.get_offsets()) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "stale: InProgress, its process gone" in legend
    # every InProgress node here is stale: the legend has its entry, not a second one
    assert "▶ InProgress" not in legend, legend
    details = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert [details[f"detail:{n}"] for n in g if g.nodes[n]["name"] == "image-1"] == ["stale"]
    done = await _story(graph, "done")
    finished = plot_entity_tree(graph, done.id).axes[0]
    assert not [c for c in finished.collections if c.get_gid() == "stale-nodes"]
    assert not any("stale" in t.get_text() for t in finished.get_legend().get_texts())
