"""The progress panel speaks the language of the charts: ``story A``, ``image-2``, ``images``.

Every form of the panel (the text log and summary, the widget's HTML, the
static snapshot an exported page keeps, the replay that reuses them) names a
pipeline by its label, a child as its timeline lane is named (no
placeholder braces), and a stage in plain words; the entity's Python class
stays out of sight unless the reader asks for it (a tooltip, ``detail=True``).
Nothing is lost on the way: status, counts, reuse and a failure's reason.
"""

from __future__ import annotations

import html
import io
import math
import re

from storylab.entities import Envelope
from storylab.tutorial import fresh_graph, run_stories, simulated_settings, story_labels
from storylab.viz import ProgressPanel, replay_state, task_label, timeline_lanes
from storylab.viz.progress.widget import static_snapshot_html

RAW = ("Entity", "{{", "generating_images")


def _visible(markup: str) -> str:
    """The words a reader sees on the page: no tags, no attributes (tooltips), no style."""
    markup = re.sub(r"<style>.*?</style>", "", markup, flags=re.S)
    return html.unescape(re.sub(r"<[^>]*>", " ", markup))


def _pipeline_envelopes(fail_reason: str = "the model refused") -> list[Envelope]:
    """What the story pipeline sends: its stage key, placeholder names, class names."""
    names = [f"image-{{{{IMAGE_{i}}}}}" for i in (1, 2, 3)]
    envs = [
        Envelope("STATUS", "p", "StoryPipelineEntity", "story-pipeline-a-fox-0",
                 status="STARTED", message="Generating 3 images"),
        Envelope("VALUE", "p", "StoryPipelineEntity", "story-pipeline-a-fox-0",
                 sub_type="progress",
                 value={"stage": "generating_images", "total": 3, "items": names}),
    ]
    for i, name in enumerate(names, 1):
        envs.append(Envelope("STATUS", f"c{i}", "ImageGenerationEntity", name, status="STARTED"))
    envs.append(Envelope("STATUS", "c1", "ImageGenerationEntity", names[0], status="COMPLETED"))
    envs.append(Envelope("ERROR", "c2", "ImageGenerationEntity", names[1],
                         error={"type": "ImageError", "message": fail_reason}))
    return envs


def test_stage_keys_read_as_plain_words():
    from storylab.viz.labels import stage_label

    assert stage_label("generating_images") == "images"
    assert stage_label("generating_reference") == "reference"
    assert stage_label("storing_results") == "storing results"
    assert stage_label("images") == "images"


def test_the_text_form_names_rows_as_the_timeline_does_and_keeps_every_fact():
    out = io.StringIO()
    panel = ProgressPanel("Story", form="text", stream=out)
    for env in _pipeline_envelopes():
        panel.update(env, root="p")
    log = out.getvalue()
    assert "[story-pipeline-a-fox-0] image-1 started" in log.splitlines()
    assert "[story-pipeline-a-fox-0] image-2 FAILED: ImageError: the model refused" \
        in log.splitlines()
    summary = panel.summary()
    assert summary.splitlines()[1] == (
        "story-pipeline-a-fox-0 [running] images: 2/3 done (1 completed, 1 failed, 1 running)"
        " — Generating 3 images")
    assert "  ✗ image-2 failed: ImageError: the model refused" in summary.splitlines()
    assert "  ▶ image-3 running" in summary.splitlines()
    for raw in RAW:
        assert raw not in log and raw not in summary, raw
    # Asked for, the detail is there: the class and the raw name of each thing.
    detailed = panel.summary(detail=True)
    assert "  ✓ image-1 · ImageGenerationEntity (image-{{IMAGE_1}}) completed" \
        in detailed.splitlines()
    assert "StoryPipelineEntity (story-pipeline-a-fox-0)" in detailed


def test_the_widget_and_its_snapshot_show_words_and_keep_the_class_in_a_tooltip():
    panel = ProgressPanel("Story", form="widget", min_interval=0)
    for env in _pipeline_envelopes():
        panel.update(env, root="p")
    panel.flush(final=True)
    part = next(iter(panel._widgets.parts.values()))
    seen = " ".join([_visible(part["title"].value), part["counts"].value,
                     _visible(part["rows"].value), _visible(static_snapshot_html(panel))])
    for raw in RAW:
        assert raw not in seen, raw
    assert "images: 2/3 done" in seen and "image-2" in seen
    assert "ImageError: the model refused" in seen  # the reason stays visible
    # The detail a reader can hover over: the entity class and its raw name.
    assert "title='ImageGenerationEntity (image-{{IMAGE_2}})'" in part["rows"].value
    assert "title='StoryPipelineEntity (story-pipeline-a-fox-0)'" in part["title"].value


async def test_a_real_story_in_the_panel_is_named_as_the_charts_name_it(tmp_path):
    settings = simulated_settings(0.001)
    out = io.StringIO()
    panel = ProgressPanel("Story", form="text", stream=out)
    graph = fresh_graph("words", home=tmp_path)
    try:
        run = await run_stories(graph, ["a shy hedgehog"], settings=settings, panel=panel)
        panel.close()
        labels = story_labels(run)
    finally:
        graph.close()
    (label,) = labels.values()
    assert label == "story A (a shy hedgehog)"
    (pipeline,) = panel.pipelines
    assert pipeline.title == label  # one story is labelled too, as in its charts
    lanes = {task_label(lane.label) for lane in timeline_lanes(run.trace)}
    images = {r.title for r in pipeline.rows if r.title.startswith("image-")}
    assert images == lanes == {f"image-{i}" for i in range(1, 6)}
    text = out.getvalue()
    assert f"[{label}] image-3 started" in text.splitlines()
    assert f"{label} [completed] images: 5/5 done (5 completed)" in text.splitlines()
    for raw in RAW:
        assert raw not in text, raw
    # The replay reuses the same rows and names the same story the same way.
    state = replay_state(run.trace, math.inf, names=labels)
    (replayed,) = state.pipelines
    assert replayed.title == label
    assert {r.title for r in replayed.rows} == images
