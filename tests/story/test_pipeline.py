"""The story pipeline end to end on the simulated backends (spec section 6, items 40-58)."""

from __future__ import annotations

import pytest
from pagecheck import read_page

from storylab.entities import EntityGraph, EnvelopeType
from storylab.scheduling import EventKind, Trace
from storylab.story.entities import (
    ImageGenerationEntity,
    StoryImagesFailedError,
    StoryPipelineEntity,
    create_story,
    story_html,
)
from storylab.story.html import MISSING_IMAGE_TEXT
from storylab.story.models import StoryValidationError
from storylab.story.settings import use_settings

LOW = {"image_quality": "low"}


async def _run(entity):
    run = entity.start()
    envelopes = [env async for env in run]
    return run.result, envelopes


def _prompt(graph, pipeline, placeholder: str) -> dict:
    """The writer's image prompt for ``placeholder``."""
    writer = next(c for c in graph.children(pipeline.id) if c.name == "story-writer")
    return next(p for p in writer.output["image_prompts"] if p["placeholder"] == placeholder)


def _own_messages(entity, envelopes):
    return [
        e.message
        for e in envelopes
        if e.entity_id == entity.id and e.type == "STATUS" and e.status == "RUNNING"
    ]


async def test_stage_sequence_in_entity_data(graph, monkeypatch, fast_settings):
    stages: list[str] = []
    original = StoryPipelineEntity.update_entity_data

    async def spy(self, **changes):
        if "stage" in changes:
            stages.append(changes["stage"])
        await original(self, **changes)

    monkeypatch.setattr(StoryPipelineEntity, "update_entity_data", spy)
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "a brave kitten", LOW)
        result, _ = await _run(pipeline)
    assert stages == [
        "safety_check",
        "safety_passed",
        "writing",
        "writing_complete",
        "generating_images",
        "assembling",
        "storing_results",
        "completed",
    ]
    assert result["stage"] == "completed" and pipeline.data["stage"] == "completed"


async def test_stream_order_of_the_pipelines_own_messages(graph, fast_settings):
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "a brave kitten", LOW)
        _, envelopes = await _run(pipeline)
    assert _own_messages(pipeline, envelopes) == [
        "Running content safety check",
        "Writing story",
        "Generating 5 images",
        *[f"Generated {k}/5 images" for k in range(1, 6)],
        "Assembling HTML with images",
        "Storing results",
    ]
    last_two = envelopes[-2:]
    assert (last_two[0].type, last_two[0].sub_type) == ("VALUE", "return")
    assert (last_two[1].status, last_two[1].entity_id) == ("COMPLETED", pipeline.id)


async def test_progress_envelope_precedes_the_fan_out_and_children_are_forwarded(
    graph, fast_settings
):
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "a brave kitten", {"illustration_count": 3, **LOW})
        _, envelopes = await _run(pipeline)
    names = ["image-{{IMAGE_1}}", "image-{{IMAGE_2}}", "image-{{IMAGE_3}}"]
    progress = [e for e in envelopes if e.sub_type == "progress"]
    assert len(progress) == 1 and progress[0].entity_id == pipeline.id
    assert progress[0].value == {"stage": "generating_images", "total": 3, "items": names}
    at = envelopes.index(progress[0])
    first_image = next(i for i, e in enumerate(envelopes) if e.entity_name in names)
    assert at < first_image
    for name in names:
        seen = [(e.type, e.status) for e in envelopes if e.entity_name == name]
        assert seen[0] == ("STATUS", "STARTED") and seen[-1] == ("STATUS", "COMPLETED")
        assert ("STATUS", "RUNNING") in seen


async def test_unsafe_topic_is_rejected_before_writing(graph, fast_settings):
    settings = fast_settings()
    with use_settings(settings):
        pipeline = create_story(graph, "a bloody murder with a knife")
        result, _ = await _run(pipeline)
    assert result["stage"] == "rejected"
    assert result["safety_result"]["is_safe"] is False and result["safety_result"]["concerns"]
    assert [c.name for c in graph.children(pipeline.id)] == ["safety-check"]
    assert graph.get_node(pipeline.id).status == "Completed"
    assert pipeline.data["stage"] == "rejected"
    assert settings.text.calls["writer"] == 0


async def test_children_get_the_right_data(graph, monkeypatch, fast_settings):
    monkeypatch.setenv("IMAGE_MODEL_POOL", "my-pool")
    cust = {"illustration_count": 2, "style": "anime", "image_quality": "low"}
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "  a brave kitten  ", cust)
        await _run(pipeline)
    kids = {c.name: c for c in graph.children(pipeline.id)}
    check = kids["safety-check"].data
    assert check["topic"] == "a brave kitten" and set(check) == {
        "topic",
        "verdict",
        "verdict_source",
        "verdict_reason",
    }
    assert (check["verdict"], check["verdict_source"]) == ("safe", "offline rules")
    assert isinstance(check["verdict_reason"], str) and check["verdict_reason"].strip()
    assert kids["story-writer"].data == {"topic": "a brave kitten", "customization": cust}
    image = kids["image-{{IMAGE_1}}"].data
    assert image["image_quality"] == "low" and image["aspect_ratio"] == "3:2"
    assert image["model_pool"] == "my-pool" and image["placeholder"] == "{{IMAGE_1}}"
    assert set(image) == {
        "placeholder",
        "prompt",
        "alt_text",
        "model_pool",
        "image_quality",
        "aspect_ratio",
    }


async def test_image_defaults_without_customization(graph, monkeypatch, fast_settings):
    monkeypatch.delenv("IMAGE_MODEL_POOL", raising=False)
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "an owl", {"illustration_count": 1})
        await _run(pipeline)
    (image,) = [c for c in graph.children(pipeline.id) if c.type == "ImageGenerationEntity"]
    assert image.data["image_quality"] == "medium" and image.data["aspect_ratio"] == "3:2"
    assert image.data["model_pool"] == "fb-image-gen"


async def test_image_children_are_named_after_placeholders(graph, fast_settings):
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "a brave kitten", LOW)
        await _run(pipeline)
    writer = next(c for c in graph.children(pipeline.id) if c.name == "story-writer")
    placeholders = [p["placeholder"] for p in writer.output["image_prompts"]]
    images = [c.name for c in graph.children(pipeline.id) if c.type == "ImageGenerationEntity"]
    assert images == ["image-" + p for p in placeholders]


@pytest.mark.parametrize(
    ("fail", "stage", "count", "failed"),
    [
        ((), "completed", 5, None),
        (("IMAGE_3",), "completed_with_errors", 4, 1),
    ],
)
async def test_final_stage_by_failures(graph, fail, stage, count, failed, fast_settings):
    with use_settings(fast_settings(fail=fail)):
        pipeline = create_story(graph, "a brave kitten", LOW)
        result, _ = await _run(pipeline)
    assert result["stage"] == stage
    assert result["image_count"] == count and result["failed_images"] == failed
    data = pipeline.data
    assert data["failed_images"] == (failed or 0) and data["image_count"] == count
    assert graph.get_node(pipeline.id).status == "Completed"


async def test_failed_image_is_isolated_and_shown_as_a_figure_with_its_alt_text(
    graph, fast_settings
):
    with use_settings(fast_settings(fail=["IMAGE_3"])):
        pipeline = create_story(graph, "a brave kitten", LOW)
        result, _ = await _run(pipeline)
    html = story_html(graph, result)
    assert "{{IMAGE_3}}" in html and "{{IMAGE_1}}" not in html
    assert html.count("<img ") == 4
    page = read_page(html)
    (missing,) = page.having("span", class_="storylab-missing")
    assert missing["data-placeholder"] == "{{IMAGE_3}}"  # the gap stays findable
    alt = _prompt(graph, pipeline, "{{IMAGE_3}}")["alt_text"]
    assert f"{MISSING_IMAGE_TEXT}{alt}" in page.text and "{{IMAGE_3}}" not in page.text
    status = {c.name: c for c in graph.children(pipeline.id)}
    bad = status.pop("image-{{IMAGE_3}}")
    assert bad.status == "Failed"
    assert bad.error["type"] == "SimulatedImageFailure" and "{{IMAGE_3}}" in bad.error["message"]
    assert all(c.status == "Completed" for c in status.values())


async def test_entity_data_keeps_no_html_and_images_live_in_the_blob_store(graph, fast_settings):
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "a brave kitten", {"illustration_count": 2, **LOW})
        result, _ = await _run(pipeline)
    assert pipeline.data["story_result"]["html_content"] == ""
    assert result["failed_images"] is None and pipeline.data["failed_images"] == 0
    for child in graph.children(pipeline.id):
        if child.type == "ImageGenerationEntity":
            assert "base64" not in child.output or child.output["base64"] is None
            assert graph.blobs.get(child.output["object_key"])[:4] == b"\x89PNG"


async def test_topic_with_script_comes_out_inert(graph, fast_settings):
    topic = 'a kitten <script>alert("pwned")</script> <img src=x onerror=alert(1)>'
    with use_settings(fast_settings()):
        pipeline = create_story(graph, topic, {"illustration_count": 2, **LOW})
        result, _ = await _run(pipeline)
    html = story_html(graph, result)
    tags = _tags(html)
    assert "script" not in {t for t, _ in tags}
    assert not [a for _, attrs in tags for a, _ in attrs if a.startswith("on")]
    imgs = [dict(attrs) for t, attrs in tags if t == "img"]
    assert len(imgs) == 2 and all(i["src"].startswith("data:image/png;base64,") for i in imgs)
    assert "&lt;script&gt;" in html  # the topic is shown as text


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element a browser would build from ``html``, with its attributes."""
    from html.parser import HTMLParser

    found: list = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(html)
    return found


async def test_resume_after_a_crash_does_only_what_is_left(tmp_path, fast_settings):
    path = tmp_path / "graph.sqlite"
    first = fast_settings(slow={"IMAGE_5": 30.0})
    graph = EntityGraph.open(path)
    with use_settings(first):
        pipeline = create_story(graph, "a brave kitten", LOW)
        run = pipeline.start()
        async for env in run:
            if env.entity_id == pipeline.id and env.message == "Generated 2/5 images":
                break  # the process "dies" here, images 3-5 unfinished or running
        await run.aclose()
    graph.close()

    graph = EntityGraph.open(path)  # a new process: nothing in memory survives
    done_before = {c.name for c in graph.children(pipeline.id) if c.status == "Completed"} - {
        "safety-check",
        "story-writer",
    }
    assert len(done_before) >= 2
    second = fast_settings()
    with use_settings(second):
        again = create_story(graph, "a brave kitten", LOW)
        assert again.id == pipeline.id
        result, _ = await _run(again)
    names = [c.name for c in graph.children(pipeline.id)]
    assert len(names) == len(set(names)) == 7
    assert second.text.calls == {}  # safety and writer were not asked again
    called = {f"image-{p}" for p in second.images.calls}
    assert called == {n for n in names if n.startswith("image-")} - done_before
    assert result["stage"] == "completed" and result["image_count"] == 5
    graph.close()


async def test_failed_image_is_run_again_on_resume(graph, fast_settings):
    first = fast_settings(fail=["IMAGE_3"])
    with use_settings(first):
        pipeline = create_story(graph, "a brave kitten", LOW)
        run = pipeline.start()
        async for env in run:
            if env.message == "Assembling HTML with images":
                break  # interrupted after the images, before the pipeline finished
        await run.aclose()
    assert (
        graph.get_node(
            next(c.id for c in graph.children(pipeline.id) if c.name == "image-{{IMAGE_3}}")
        ).status
        == "Failed"
    )
    second = fast_settings()
    with use_settings(second):
        result, _ = await _run(pipeline)
    assert result["stage"] == "completed" and result["image_count"] == 5
    assert first.images.calls["{{IMAGE_3}}"] + second.images.calls["{{IMAGE_3}}"] == 2
    assert sum(second.images.calls.values()) == 1


async def test_completed_pipeline_returns_its_stored_result(graph, fast_settings):
    settings = fast_settings()
    with use_settings(settings):
        pipeline = create_story(graph, "a brave kitten", LOW)
        first, _ = await _run(pipeline)
        calls = sum(settings.images.calls.values())
        second, envelopes = await _run(create_story(graph, "a brave kitten", LOW))
    assert second == first and sum(settings.images.calls.values()) == calls
    assert [e.type for e in envelopes] == [EnvelopeType.VALUE]


async def test_two_pipelines_share_the_global_limit(graph, fast_settings):
    import asyncio

    settings = fast_settings(global_limit=4, story_limit=3)
    with use_settings(settings), Trace(meta={"time_scale": 0.001}) as trace:
        a = create_story(graph, "a brave kitten", LOW)
        b = create_story(graph, "a shy dragon", LOW)
        results = await asyncio.gather(a.run(), b.run())
    assert [r["stage"] for r in results] == ["completed", "completed"]
    series = trace.in_use_series()
    glob = settings.global_capacity.name
    assert max(n for _, n in series[glob]) == 4  # the limit is reached, never passed
    for story in (a, b):
        assert max(n for _, n in series[f"story:{story.name}"]) <= 3
    assert settings.global_capacity.in_use == 0
    starts = trace.of_kind(EventKind.TASK_START)
    assert {e.label for e in starts} == {f"image-{{{{IMAGE_{i}}}}}" for i in range(1, 6)}
    assert {e.group for e in starts} == {f"story:{a.name}", f"story:{b.name}"}


async def test_sequential_mode_runs_one_image_at_a_time_and_traces_it(graph, fast_settings):
    settings = fast_settings(image_mode="sequential", fail=["IMAGE_2"])
    with use_settings(settings), Trace() as trace:
        pipeline = create_story(graph, "a brave kitten", {"illustration_count": 3, **LOW})
        result, _ = await _run(pipeline)
    assert result["stage"] == "completed_with_errors" and result["image_count"] == 2
    assert settings.images.peak_in_flight == 1
    events = [e for e in trace.events if e.runner == f"sequential:{pipeline.name}"]
    kinds = [(e.kind, e.task_id) for e in events]
    assert kinds == [
        (EventKind.TASK_START, 1),
        (EventKind.TASK_END, 1),
        (EventKind.TASK_START, 2),
        (EventKind.TASK_ERROR, 2),
        (EventKind.TASK_START, 3),
        (EventKind.TASK_END, 3),
    ]
    assert events[0].label == "image-{{IMAGE_1}}" and events[0].group == f"story:{pipeline.name}"


async def test_same_request_same_entity_and_bad_input_stores_nothing(graph):
    a = create_story(graph, "a brave kitten", {"style": "anime"})
    assert create_story(graph, "a brave kitten", {"style": "anime"}).id == a.id
    assert create_story(graph, "a brave kitten", {"style": "watercolor"}).id != a.id
    assert a.name.startswith("story-pipeline-a-brave-kitten-")
    before = [r.id for r in graph.roots()]
    with pytest.raises(StoryValidationError, match="^Invalid style. Must be one of: "):
        create_story(graph, "a brave kitten", {"style": "pastel"})
    with pytest.raises(StoryValidationError, match="^Topic is required$"):
        create_story(graph, "   ")
    assert [r.id for r in graph.roots()] == before
    assert graph.get_node(a.id).status == "Pending"  # creating does not start it


async def test_image_entities_can_be_run_alone(graph, fast_settings):
    with use_settings(fast_settings()):
        pipeline = create_story(graph, "x", LOW)
        child = pipeline.append_call(
            ImageGenerationEntity,
            "image-{{IMAGE_9}}",
            {"placeholder": "{{IMAGE_9}}", "prompt": "p", "alt_text": "a", "image_quality": "x"},
        )
        out = await child.run()
    assert out["content_type"] == "image/png" and (out["width"], out["height"]) == (640, 427)


async def test_generate_story_in_one_call(tmp_path, fast_settings):
    from storylab import story

    graph = EntityGraph.open(tmp_path / "g.sqlite")
    try:
        settings = fast_settings()
        result = await story.generate_story(
            "an owl", {"illustration_count": 2}, graph=graph, settings=settings
        )
        assert result["stage"] == "completed" and result["image_count"] == 2
        assert "<img " in story.story_html(graph, result)
    finally:
        graph.close()


def test_the_global_capacity_follows_limit_and_policy():
    import pytest

    from storylab.story.settings import StorySettings, global_image_capacity

    fair = StorySettings(global_limit=4).global_capacity
    fifo = StorySettings(global_limit=4, policy="fifo").global_capacity
    assert fair is global_image_capacity(4) and fair.policy == "fair"
    assert fifo is global_image_capacity(4, "fifo") and fifo.policy == "fifo"
    assert fifo is not fair and fifo.name == "global-4-fifo"
    with pytest.raises(ValueError, match="policy must be one of: fair, fifo; got 'lifo'"):
        StorySettings(policy="lifo")


async def test_a_story_whose_every_picture_failed_is_stored_as_failed(graph, fast_settings):
    cust = {"illustration_count": 3, **LOW}
    first = fast_settings(fail=["IMAGE_1", "IMAGE_2", "IMAGE_3"])
    with use_settings(first):
        pipeline = create_story(graph, "a brave kitten", cust)
        with pytest.raises(StoryImagesFailedError) as caught:
            await pipeline.run()
    message = "every picture failed (3 of 3), so the story is stored as failed"
    assert str(caught.value).startswith(message)
    node = graph.get_node(pipeline.id)
    assert node.status == "Failed" and node.error["type"] == "StoryImagesFailedError"
    assert node.error["message"].startswith(message) and "run it again" in node.error["message"]
    data = node.data
    assert (data["stage"], data["failed_images"], data["image_count"]) == ("failed", 3, 0)
    # The page was stored anyway: three "could not be drawn" figures, no pictures.
    page = read_page(graph.blobs.get(data["html_key"]).decode())
    assert len(page.having("span", class_="storylab-missing")) == 3
    assert page.text.count(MISSING_IMAGE_TEXT) == 3 and not page.having("img")

    # Asked for again (no retry_failed needed: the entity failed), it draws the pictures.
    second = fast_settings()
    with use_settings(second):
        result = await create_story(graph, "a brave kitten", cust).run()
    assert result["stage"] == "completed" and result["image_count"] == 3
    assert sum(second.images.calls.values()) == 3 and second.text.calls == {}
    assert graph.get_node(pipeline.id).status == "Completed"
    html = story_html(graph, result)
    assert html.count("<img ") == 3 and "storylab-missing-note" not in html.split("</style>")[1]


async def test_a_placeholder_typed_in_the_topic_is_shown_as_text_not_drawn(graph, fast_settings):
    topic = "a cat {{IMAGE_2}} who sings {{IMAGE_9}}"
    with use_settings(fast_settings()):
        pipeline = create_story(graph, topic, {"illustration_count": 3, **LOW})
        result, _ = await _run(pipeline)
    assert result["stage"] == "completed" and result["image_count"] == 3
    writer = next(c for c in graph.children(pipeline.id) if c.name == "story-writer")
    declared = [p["placeholder"] for p in writer.output["image_prompts"]]
    images = [c.name for c in graph.children(pipeline.id) if c.type == "ImageGenerationEntity"]
    assert (
        images
        == [f"image-{p}" for p in declared]
        == [
            "image-{{IMAGE_1}}",
            "image-{{IMAGE_2}}",
            "image-{{IMAGE_3}}",
        ]
    )
    html = story_html(graph, result)
    page = read_page(html)
    assert f"A story about {topic}" in page.text  # the topic, literally
    # Every picture sits in the writer's own slot: each <img> follows an illustration div.
    kinds = [t if t == "img" else a.get("class") for t, a in page.elements]
    assert kinds.count("img") == 3
    assert all(kinds[i - 1] == "illustration" for i, k in enumerate(kinds) if k == "img")
    assert "{{IMAGE_" not in html  # user text in the page never spells a placeholder


async def test_retry_failed_reopens_a_story_that_finished_with_errors(graph, fast_settings):
    first = fast_settings(fail=["IMAGE_3"])
    with use_settings(first):
        done = await create_story(graph, "a brave kitten", LOW).run()
    assert done["stage"] == "completed_with_errors"
    second = fast_settings()
    with use_settings(second):
        # without retry_failed the finished story only hands back its result
        again = await create_story(graph, "a brave kitten", LOW).run()
        assert again == done and sum(second.images.calls.values()) == 0
        pipeline = create_story(graph, "a brave kitten", LOW, retry_failed=True)
        result, _ = await _run(pipeline)
    assert result["stage"] == "completed" and result["image_count"] == 5
    assert second.images.calls == {"{{IMAGE_3}}": 1}  # only the failed picture again
    assert second.text.calls == {}  # safety check and writer were kept
    html = story_html(graph, result)
    assert html.count("<img ") == 5 and "{{IMAGE_3}}" not in html
    assert not read_page(html).having("span", class_="storylab-missing")  # the figure is gone
    # a completed story is left alone by retry_failed
    with use_settings(second):
        same = await create_story(graph, "a brave kitten", LOW, retry_failed=True).run()
    assert same == result and second.images.calls == {"{{IMAGE_3}}": 1}


async def test_an_image_ending_in_a_stray_cancelled_error_counts_as_failed(graph, fast_settings):
    import asyncio

    from storylab.story.backends import SimulatedImageBackend

    class Leaky(SimulatedImageBackend):
        async def generate(self, request):
            if "IMAGE_2" in request.placeholder:
                raise asyncio.CancelledError()  # a cancel scope leaking out of a library
            return await super().generate(request)

    with use_settings(fast_settings(images=Leaky(time_scale=0.001))):
        pipeline = create_story(graph, "a brave kitten", {"illustration_count": 3})
        result = await pipeline.run()
    assert result["stage"] == "completed_with_errors"
    assert (result["image_count"], result["failed_images"]) == (2, 1)
    kids = {c.name: c.status for c in graph.children(pipeline.id)}
    assert kids["image-{{IMAGE_2}}"] == "Failed"


def test_topics_that_share_a_readable_name_never_share_a_story(graph):
    cat, dragon = "猫の冒険", "Дракон и луна"
    first = create_story(graph, cat)
    second = create_story(graph, dragon)
    assert first.name == "story-pipeline---0"  # the spec's format, as long as it is free
    assert second.id != first.id and second.name.startswith("story-pipeline---0-t")
    assert (first.data["topic"], second.data["topic"]) == (cat, dragon)
    # both stay idempotent
    assert create_story(graph, cat).id == first.id
    assert create_story(graph, dragon).id == second.id
    long_a = "a" * 40 + " and the first ending"
    long_b = "a" * 40 + " and the second ending"
    assert create_story(graph, long_a).id != create_story(graph, long_b).id


async def test_a_global_source_in_the_settings_is_the_parent_of_every_story(graph, fast_settings):
    from storylab.scheduling import CapacitySource

    shared = CapacitySource(2, name="shared-2")
    settings = fast_settings(global_source=shared)
    assert settings.global_capacity is shared
    with Trace() as trace, use_settings(settings):
        result = await create_story(graph, "a wren who sings", {"illustration_count": 4}).run()
    assert result["stage"] == "completed"
    assert trace.meta["limits"]["shared-2"] == 2
    assert max(v for _, v in trace.in_use_series()["shared-2"]) == 2
    assert shared.in_use == 0


def test_a_global_source_must_be_a_capacity_source(fast_settings):
    with pytest.raises(TypeError, match="global_source must be a CapacitySource or None, got int"):
        fast_settings(global_source=10)
