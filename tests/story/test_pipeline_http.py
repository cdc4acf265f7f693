"""The pipeline on the HTTP image backend against the real loopback server."""

from __future__ import annotations

import socket

import pytest

from storylab.scheduling import EventKind, Trace
from storylab.story.backends import SimulatedImageBackend
from storylab.story.backends.http_images import HttpImageBackend
from storylab.story.backends.server import ImageServer
from storylab.story.entities import StoryImagesFailedError, create_story, story_html
from storylab.story.settings import use_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_backend_fails_each_image_with_a_clear_stored_error(graph, fast_settings):
    url = f"http://127.0.0.1:{_free_port()}"
    images = HttpImageBackend(url, max_attempts=2, backoff=0.001)
    with use_settings(fast_settings(images=images)):
        pipeline = create_story(graph, "a brave kitten", {"illustration_count": 2})
        with pytest.raises(StoryImagesFailedError, match=r"every picture failed \(2 of 2\)"):
            await pipeline.run()
    assert pipeline.data["stage"] == "failed" and pipeline.data["failed_images"] == 2
    for child in graph.children(pipeline.id):
        if child.type == "ImageGenerationEntity":
            assert child.status == "Failed"
            assert child.error["type"] == "ImageServiceUnavailable"
            assert url in child.error["message"] and "after 2 attempts" in child.error["message"]
    assert graph.get_node(pipeline.id).status == "Failed"


async def test_server_dying_mid_run_fails_only_the_unfinished_image(graph, fast_settings):
    gen = SimulatedImageBackend(time_scale=0.001, slow={"IMAGE_3": 500.0})
    server = await ImageServer(gen, max_concurrent=5).start()
    images = HttpImageBackend(server.url, max_attempts=3, backoff=0.001)
    try:
        with use_settings(fast_settings(images=images)):
            pipeline = create_story(graph, "a brave kitten", {"illustration_count": 3})
            run = pipeline.start()
            async for env in run:
                if env.entity_id == pipeline.id and env.message == "Generated 2/3 images":
                    server.kill()
            result = run.result
    finally:
        await server.close()
        await images.aclose()
    assert result["stage"] == "completed_with_errors" and result["image_count"] == 2
    kids = {c.name: c for c in graph.children(pipeline.id)}
    dead = kids.pop("image-{{IMAGE_3}}")
    assert dead.status == "Failed" and dead.error["type"] == "ImageServiceUnavailable"
    assert all(c.status == "Completed" for c in kids.values())
    html = story_html(graph, result)
    assert "{{IMAGE_3}}" in html and html.count("<img ") == 2


async def test_capacity_limit_below_the_servers_avoids_429s(graph, fast_settings):
    gen = SimulatedImageBackend(time_scale=0.002)
    cust = {"illustration_count": 6, "image_quality": "low"}
    async with ImageServer(gen, max_concurrent=2, retry_after=0.005) as server:
        images = HttpImageBackend(server.url, max_attempts=200, backoff=0.002)
        # Three at a time against a server that takes two: some requests get 429.
        with use_settings(fast_settings(images=images, story_limit=3)), Trace() as trace:
            first = await create_story(graph, "a brave kitten", cust).run()
        over = server.statistics()
        # Two at a time: the capacity limit matches the server, nothing is refused.
        with use_settings(fast_settings(images=images, story_limit=2)):
            second = await create_story(graph, "a shy dragon", cust).run()
        after = server.statistics()
        await images.aclose()
    assert first["stage"] == second["stage"] == "completed"
    assert over.rejected > 0 and over.peak_in_flight == 2
    assert after.rejected == over.rejected  # no new 429 in the second story
    # every retry is marked on the lane of the image that made it
    retries = trace.of_kind(EventKind.MARK)
    assert len(retries) == over.rejected
    assert all(m.label.startswith("image-{{IMAGE_") and "HTTP 429" in m.message for m in retries)
