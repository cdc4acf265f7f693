"""The four entities of the illustrated-story pipeline.

::

    StoryPipelineEntity (story-pipeline-<slug>-<hash>)
      ├── ContentSafetyCheckEntity (safety-check)
      ├── StoryWriterEntity (story-writer)
      ├── ImageGenerationEntity (image-{{IMAGE_1}})
      └── ... one per illustration

The pipeline checks the topic, writes the story, generates the pictures and
assembles one HTML page. Each step is a child entity created *by name*
(``append_or_retrieve_call``), so running the pipeline again after a crash
finds the finished children and only does what is left.

Stage 3 is the lesson. One ``ImageGenerationEntity`` per picture, fed lazily
into a task-pool runner::

    items  = [{"name": "image-{{IMAGE_1}}", "data": {...}}, ...]
    source = SourceFromIterable(self.parallel_calls(ImageGenerationEntity, items))
    story  = CapacitySource(3, GLOBAL)      # per story, under the process-wide 10
    runner = HierarchicalTaskPoolRunner("image-gen", source, story)

The runner takes a unit at both levels before it pulls the next item, so a
child entity is only created when it can start; results come back in the
order they finish; a failed picture is logged and the others go on. The
children's own progress is passed on to whoever consumes the pipeline.

Backends and limits come from :func:`~storylab.story.settings.current_settings`.
Outputs are JSON dicts (they are stored in the graph); picture bytes go to the
graph's blob store and only their key is kept in the image entity's output.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from storylab.entities import EntityGraph, EntityGraphError, Return, RunnableEntity
from storylab.errors import StorylabError
from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceFromIterable,
    TaskEventType,
    current_trace,
    task_scope,
)
from storylab.story.backends.images import (
    ImageBackendError,
    ImageRequest,
    normalize_aspect_ratio,
    normalize_quality,
)
from storylab.story.html import content_type_for, render_story_page
from storylab.story.models import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_IMAGE_QUALITY,
    ContentSafetyResult,
    GeneratedImageResult,
    ImagePrompt,
    PipelineResult,
    Stage,
    StoryOutput,
    StoryValidationError,
    pipeline_name,
    validate_story_request,
)
from storylab.story.settings import StorySettings, current_settings

__all__ = [
    "ContentSafetyCheckEntity",
    "ImageGenerationEntity",
    "StoryImagesFailedError",
    "PageNotStoredError",
    "StoryPipelineEntity",
    "StoryWriterEntity",
    "acreate_story",
    "create_story",
    "generate_story",
    "image_task_items",
    "story_html",
]

log = logging.getLogger("storylab.story")


class StoryImagesFailedError(StorylabError, RuntimeError):
    """Every picture of a story failed: the pipeline ends ``Failed``, not ``Completed``.

    Its data keeps ``stage: "failed"`` and the page (every slot a "could not
    be drawn" figure); running it again draws the pictures again.
    """


class PageNotStoredError(StorylabError, RuntimeError):
    """Stage 4 could not write the story's page to the blob store (a full disk)."""


class ContentSafetyCheckEntity(RunnableEntity):
    """Is the topic fit for a children's story? Data ``{topic}``; output a
    :class:`~storylab.story.models.ContentSafetyResult` as JSON."""

    async def run_impl(self) -> AsyncGenerator[Any, Any]:
        topic = self.data["topic"]
        yield self.status("RUNNING", "Checking whether the topic suits young readers")
        result = await current_settings().text.check_safety(topic)
        # The verdict, who gave it and why, where `storylab eg` shows them.
        await self.update_entity_data(
            verdict=result.verdict,
            verdict_source=result.source or "unknown",
            verdict_reason=result.reason or result.reasoning,
        )
        yield Return(result.to_json())


class StoryWriterEntity(RunnableEntity):
    """Writes the story. Data ``{topic, customization}``; output a
    :class:`~storylab.story.models.StoryOutput` as JSON (HTML with placeholders)."""

    async def run_impl(self) -> AsyncGenerator[Any, Any]:
        data = self.data
        yield self.status("RUNNING", "Drafting the story and one prompt per illustration")
        story = await current_settings().text.write_story(data["topic"], data.get("customization"))
        yield Return(story.to_json())


class ImageGenerationEntity(RunnableEntity):
    """One picture. Data ``{placeholder, prompt, alt_text, model_pool,
    image_quality, aspect_ratio}``; output a
    :class:`~storylab.story.models.GeneratedImageResult` as JSON whose
    ``object_key`` names the PNG in the graph's blob store."""

    async def run_impl(self) -> AsyncGenerator[Any, Any]:
        data = self.data
        placeholder = data["placeholder"]
        yield self.status("RUNNING", f"Generating image for {placeholder}")
        request = ImageRequest(
            prompt=data["prompt"],
            placeholder=placeholder,
            # Unknown values fall back to medium quality and a 3:2 picture.
            quality=normalize_quality(data.get("image_quality")),
            aspect_ratio=normalize_aspect_ratio(data.get("aspect_ratio")),
            model_pool=data.get("model_pool") or "",
        )
        image = await current_settings().images.generate(request)
        if not image.data:
            raise ImageBackendError(f"No images generated for {placeholder}")
        if image.model is not None:
            # A remote model: which one drew it, and the size asked for next to
            # the size sent (the nearest the model accepts).
            await self.update_entity_data(
                model=image.model, requested_size=image.requested_size, size=image.size
            )
        yield self.status("RUNNING", f"Saving {placeholder} to the blob store")
        content_type = content_type_for(image.format)
        key = self.store_blob(image.data, content_type)  # not once our lease is lost
        result = GeneratedImageResult(
            placeholder=placeholder,
            content_type=content_type,
            alt_text=data.get("alt_text") or "Story illustration",
            object_key=key,
            width=image.width,
            height=image.height,
            model_seconds=image.model_seconds,
        )
        yield Return(result.to_json())


def image_task_items(
    prompts: list[ImagePrompt],
    customization: dict[str, Any] | None,
    settings: StorySettings | None = None,
) -> list[dict[str, Any]]:
    """One ``{"name": "image-{{IMAGE_N}}", "data": {...}}`` per prompt, in prompt order."""
    settings = settings or current_settings()
    cust = customization or {}
    return [
        {
            "name": f"image-{p.placeholder}",
            "data": {
                "placeholder": p.placeholder,
                "prompt": p.prompt,
                "alt_text": p.alt_text,
                "model_pool": settings.resolved_model_pool,
                "image_quality": cust.get("image_quality") or DEFAULT_IMAGE_QUALITY.value,
                "aspect_ratio": cust.get("aspect_ratio") or DEFAULT_ASPECT_RATIO.value,
            },
        }
        for p in prompts
    ]


class StoryPipelineEntity(RunnableEntity):
    """The whole story: safety, writer, pictures, HTML. Data ``{topic,
    customization}`` plus the progress keys (``stage``, ``images_total``,
    ``images_generated``, ...); output a :class:`~storylab.story.models.PipelineResult`
    as JSON. Create it with :func:`create_story`."""

    async def run_impl(self) -> AsyncGenerator[Any, Any]:
        data = self.data
        topic: str = data["topic"]
        customization: dict[str, Any] | None = data.get("customization")
        settings = current_settings()

        # Stage 1: is the topic safe?
        yield self.status("RUNNING", "Running content safety check")
        await self.update_entity_data(stage=Stage.SAFETY_CHECK.value)
        checker = self.append_or_retrieve_call(
            ContentSafetyCheckEntity, "safety-check", {"topic": topic}
        )
        safety = ContentSafetyResult.from_json((yield self.delegate(checker)))
        if not safety.is_safe:
            await self.update_entity_data(
                stage=Stage.REJECTED.value, safety_result=safety.to_json()
            )
            yield Return(
                PipelineResult(stage=Stage.REJECTED.value, safety_result=safety.to_json()).to_json()
            )
            return
        await self.update_entity_data(
            stage=Stage.SAFETY_PASSED.value, safety_result=safety.to_json()
        )

        # Stage 2: the story, with one prompt per illustration.
        yield self.status("RUNNING", "Writing story")
        await self.update_entity_data(stage=Stage.WRITING.value)
        writer = self.append_or_retrieve_call(
            StoryWriterEntity, "story-writer", {"topic": topic, "customization": customization}
        )
        story = StoryOutput.from_json((yield self.delegate(writer)))
        # The HTML stays out of the entity data (it can be large); the
        # writer's output still holds it.
        await self.update_entity_data(
            stage=Stage.WRITING_COMPLETE.value,
            story_result={
                "title": story.title,
                "moral": story.moral,
                "age_range": story.age_range,
                "html_content": "",
                "image_prompts": [p.to_json() for p in story.image_prompts],
            },
        )

        # Stage 3: the pictures.
        n = len(story.image_prompts)
        yield self.status("RUNNING", f"Generating {n} images")
        await self.update_entity_data(
            stage=Stage.GENERATING_IMAGES.value, images_total=n, images_generated=0
        )
        items = image_task_items(story.image_prompts, customization, settings)
        yield self.progress(
            {
                "stage": Stage.GENERATING_IMAGES.value,
                "total": n,
                "items": [item["name"] for item in items],
            },
            f"{n} images to generate",
        )
        images: list[GeneratedImageResult] = []
        failures: list[str] = []
        stage3 = (
            self._sequential_images
            if settings.image_mode == "sequential"
            else (self._parallel_images)
        )
        # aclosing: if this run is abandoned, the runner below must stop (and
        # cancel its tasks) now, not whenever the generator is garbage-collected.
        async with aclosing(stage3(items, images, failures, settings)) as stream:
            async for env in stream:
                yield env
        # Every picture is either made or failed: one that ended neither way
        # (a task that vanished) counts as failed, so images + failed == n.
        failed = max(len(failures), n - len(images))

        # Stage 4: one HTML page with the pictures inlined.
        yield self.status("RUNNING", "Assembling HTML with images")
        await self.update_entity_data(stage=Stage.ASSEMBLING.value)
        # Sanitized, slots filled (a failed picture gets a visible figure), one document.
        html = render_story_page(story, images, self.graph.blobs.get)

        yield self.status("RUNNING", "Storing results")
        await self.update_entity_data(stage=Stage.STORING_RESULTS.value)
        # The page is part of the result: a story is never Completed without
        # it. If it cannot be stored the pipeline fails, and running it again
        # assembles the page from the pictures already drawn.
        try:
            html_key = self.store_blob(html.encode("utf-8"), "text/html")
        except OSError as exc:
            raise PageNotStoredError(
                f"the story page could not be stored in {self.graph.blobs.root} "
                f"({exc.strerror or exc}); the pictures are kept: run the story again "
                "once there is room to write the page"
            ) from exc

        if failed and images:
            final = Stage.COMPLETED_WITH_ERRORS
        elif failed:
            final = Stage.FAILED
        else:
            final = Stage.COMPLETED
        await self.update_entity_data(
            stage=final.value, failed_images=failed, image_count=len(images), html_key=html_key
        )
        if final is Stage.FAILED:
            # Nothing to show: a failed entity, so the next run draws the pictures again.
            raise StoryImagesFailedError(
                f"every picture failed ({failed} of {n}), so the story is stored as failed; "
                "run it again to draw the pictures again"
            )
        result = PipelineResult(
            stage=final.value,
            title=story.title,
            moral=story.moral,
            age_range=story.age_range,
            image_count=len(images),
            failed_images=failed or None,
            html_key=html_key,
        )
        yield Return(result.to_json())

    def _generated(self, images: list, n: int):
        return self.status("RUNNING", f"Generated {len(images)}/{n} images")

    async def _parallel_images(
        self,
        items: list[dict[str, Any]],
        images: list[GeneratedImageResult],
        failures: list[str],
        settings: StorySettings,
    ) -> AsyncGenerator[Any, Any]:
        """Stage 3 as taught: lazy children, two-level capacity, completion order."""
        n = len(items)
        source = SourceFromIterable(self.parallel_calls(ImageGenerationEntity, items))
        story_capacity = CapacitySource(
            settings.story_limit, settings.global_capacity, name=f"story:{self.name}"
        )
        runner = HierarchicalTaskPoolRunner("image-gen", source, story_capacity)
        async with runner.run_tasks(stop_on_error=False) as envelopes:
            async for envelope in envelopes:
                if envelope.type is TaskEventType.INTERMEDIATE:
                    if settings.forward_child_progress:
                        yield envelope.value
                elif envelope.type is TaskEventType.FINAL:
                    if envelope.value:
                        images.append(GeneratedImageResult.from_json(envelope.value))
                        await self.update_entity_data(images_generated=len(images))
                        yield self._generated(images, n)
                    else:  # a task that "succeeded" with nothing counts as failed
                        failures.append(items[envelope.task_id - 1]["name"])
                else:  # task ids follow item order: parallel_calls pulls items in order
                    name = items[envelope.task_id - 1]["name"]
                    failures.append(name)
                    log.warning("image %s of %r failed: %r", name, self, envelope.error)

    async def _sequential_images(
        self,
        items: list[dict[str, Any]],
        images: list[GeneratedImageResult],
        failures: list[str],
        settings: StorySettings,
    ) -> AsyncGenerator[Any, Any]:
        """Stage 3 before parallelism: one picture after another, for comparison.

        Failures are still isolated (so the two modes produce the same
        result), and the trace gets the same task events a runner would
        record, under the runner key ``sequential:<pipeline name>``.
        """
        n = len(items)
        trace = current_trace()
        runner_key = f"sequential:{self.name}"
        group = f"story:{self.name}"

        def record(kind: EventKind, task_id: int, label: str, error: str | None = None) -> None:
            if trace is not None:
                trace.record(
                    kind, runner=runner_key, task_id=task_id, label=label, group=group, error=error
                )

        for task_id, item in enumerate(items, start=1):
            child = self.append_or_retrieve_call(ImageGenerationEntity, item["name"], item["data"])
            record(EventKind.TASK_START, task_id, child.name)
            run = child.start()
            try:
                with task_scope(runner_key, task_id, child.name, group):
                    async with aclosing(run):
                        async for env in run:
                            if settings.forward_child_progress:
                                yield env
                value = run.result
            except Exception as exc:
                record(EventKind.TASK_ERROR, task_id, child.name, repr(exc))
                failures.append(child.name)
                log.warning("image %s of %r failed: %r", child.name, self, exc)
                continue
            record(EventKind.TASK_END, task_id, child.name)
            if value:
                images.append(GeneratedImageResult.from_json(value))
                await self.update_entity_data(images_generated=len(images))
                yield self._generated(images, n)
            else:
                failures.append(child.name)


_RETRIED_STAGES = (Stage.COMPLETED_WITH_ERRORS.value, Stage.FAILED.value)


def create_story(
    graph: EntityGraph, topic: Any, customization: Any = None, *, retry_failed: bool = False
) -> StoryPipelineEntity:
    """Validate a request and create (or find) its pipeline, without starting it.

    The name is deterministic (``story-pipeline-<slug>-<hash>``), so the same
    request returns the same entity: run it again to resume it, or to get the
    stored result if it already finished.

    A story that finished with some failed pictures is still a *finished*
    entity, so running it again only hands back its result. With
    ``retry_failed=True`` such a story is reopened first: its next run keeps
    every finished picture and draws the failed ones again. A story whose
    every picture failed is a ``Failed`` entity (:class:`StoryImagesFailedError`),
    and its next run draws the pictures again in any case.

    Called from a coroutine while another process holds the graph's write
    lock, finding an existing story and reopening it do not wait for that
    lock (the reopening is stored by the next commit); creating a new story
    does, on the loop: use :func:`acreate_story` there.
    """
    cust = validate_story_request(topic, customization)
    name = pipeline_name(topic, cust)
    data = {"topic": topic.strip(), "customization": cust}
    pipeline = graph.create_or_retrieve(StoryPipelineEntity, name, data)
    if pipeline.data.get("topic") != data["topic"]:
        # The readable name keeps only 40 ASCII characters of the topic, so two
        # topics can share it ("猫の冒険" and "Дракон" both slug to "-"). The
        # later one gets the topic's own hash appended, and never the other's story.
        digest = hashlib.sha256(data["topic"].encode("utf-8")).hexdigest()[:8]
        pipeline = graph.create_or_retrieve(StoryPipelineEntity, f"{name}-t{digest}", data)
        if pipeline.data.get("topic") != data["topic"]:  # pragma: no cover - 2**-32
            raise StoryValidationError(
                "topic", f"the pipeline name {pipeline.name!r} belongs to another topic"
            )
    node = graph.get_node(pipeline.id)
    lost = _pictures_without_blobs(graph, node)
    if lost and node.status != "InProgress":
        # The graph file was copied or moved without its blob folder (or
        # pictures were deleted): those pictures are drawn again, and the
        # story reassembled, instead of failing on the missing files for ever.
        for picture in lost:
            _reopen(graph, picture.id)
        if node.status != "Pending":
            _reopen(graph, pipeline.id)
    elif node.status == "Completed" and _page_missing(graph, node):
        # Stored Completed without its page (an older storylab kept going when
        # the page could not be written, or the blob was deleted): finish it.
        _reopen(graph, pipeline.id)
    elif retry_failed:
        if node.status == "Completed" and node.data.get("stage") in _RETRIED_STAGES:
            _reopen(graph, pipeline.id)
    return pipeline


async def acreate_story(
    graph: EntityGraph, topic: Any, customization: Any = None, *, retry_failed: bool = False
) -> StoryPipelineEntity:
    """:func:`create_story` from a coroutine: while another process holds the
    graph's write lock, the wait for it is awaited, so the event loop (other
    stories' progress, lease heartbeats, deadlines) keeps running. The
    request is checked first, and the story is found or created by name as
    by :func:`create_story`, in one write transaction."""
    validate_story_request(topic, customization)  # refused before any wait
    await graph.writable()
    return create_story(graph, topic, customization, retry_failed=retry_failed)


def _reopen(graph: EntityGraph, id: str) -> None:
    try:
        graph.reopen(id)
    except EntityGraphError:
        if graph.get_node(id).status != "InProgress":
            raise
        # Another process reopened and started it since we looked: starting
        # it here waits for that run instead of running it a second time.


def _pictures_without_blobs(graph: EntityGraph, node: Any) -> list[Any]:
    """The story's finished pictures whose PNG is not in the blob store."""
    lost = []
    for child in graph.children(node.id):
        if child.type != ImageGenerationEntity.__name__ or child.status != "Completed":
            continue
        key = child.output.get("object_key") if isinstance(child.output, dict) else None
        if not key or not graph.blobs.exists(key):
            lost.append(child)
    return lost


def _page_missing(graph: EntityGraph, node: Any) -> bool:
    output = node.output if isinstance(node.output, dict) else {}
    if output.get("stage") == Stage.REJECTED.value:
        return False  # a refused topic has no page
    key = output.get("html_key")
    return not key or not graph.blobs.exists(key)


def story_html(graph: EntityGraph, result: dict[str, Any] | PipelineResult) -> str | None:
    """The assembled HTML page of a finished pipeline (``None`` if there is none)."""
    if isinstance(result, PipelineResult):
        result = result.to_json()
    key = (result or {}).get("html_key")
    return graph.blobs.get(key).decode("utf-8") if key else None


async def generate_story(
    topic: Any,
    customization: Any = None,
    *,
    graph: EntityGraph | None = None,
    settings: StorySettings | None = None,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Create (or find) the pipeline for this request, run it, return its result.

    ``graph`` defaults to the default graph file (opened and closed here);
    ``settings`` to the current settings. Running it again resumes;
    ``retry_failed`` as in :func:`create_story`.
    """
    from storylab.story.settings import use_settings

    own = graph is None
    g = graph if graph is not None else EntityGraph.open()
    try:
        pipeline = await acreate_story(g, topic, customization, retry_failed=retry_failed)
        if settings is None:
            return await pipeline.run()
        with use_settings(settings):
            return await pipeline.run()
    finally:
        if own:
            await g.aclose()  # what is left is stored without blocking the loop
