"""The pipeline on the HTTP image backend against the real loopback server."""

from __future__ import annotations

import base64
import logging
import socket

import pytest
from hostile_server import HostileServer

from storylab.entities import EntityGraph
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


# -- misbehaving servers: one picture fails, clearly; the others go on ----------------


def _kids(graph, pipeline):
    return {c.name: c for c in graph.children(pipeline.id) if c.type == "ImageGenerationEntity"}


@pytest.mark.timeout(60)
async def test_a_trickling_picture_fails_at_its_deadline_and_the_others_finish(
    graph, fast_settings
):
    with HostileServer("trickle", bad={"{{IMAGE_2}}"}) as server:
        images = HttpImageBackend(server.url, attempt_timeout=0.3, image_timeout=0.8, backoff=0.01)
        with use_settings(fast_settings(images=images)):
            pipeline = create_story(graph, "a brave kitten", {"illustration_count": 3})
            result = await pipeline.run()
        await images.aclose()
    assert result["stage"] == "completed_with_errors" and result["image_count"] == 2
    kids = _kids(graph, pipeline)
    slow = kids.pop("image-{{IMAGE_2}}")
    assert slow.status == "Failed" and slow.error["type"] == "ImageDeadlineExceeded"
    assert "within its deadline of 0.8 s per image" in slow.error["message"]
    assert all(c.status == "Completed" for c in kids.values())
    assert story_html(graph, result).count("<img ") == 2


@pytest.mark.parametrize(
    ("mode", "error_type", "words"),
    [
        ("half-png", "ImageResponseInvalid", "truncated or corrupt PNG"),
        ("huge", "ImageResponseInvalid", "larger than the limit of 1 MiB"),
    ],
)
@pytest.mark.timeout(60)
async def test_a_broken_or_oversized_picture_is_not_stored(
    graph, fast_settings, mode, error_type, words
):
    with HostileServer(mode, bad={"{{IMAGE_1}}"}) as server:
        images = HttpImageBackend(server.url, max_response_bytes=2**20)
        with use_settings(fast_settings(images=images)):
            pipeline = create_story(graph, "a shy dragon", {"illustration_count": 3})
            result = await pipeline.run()
        await images.aclose()
    kids = _kids(graph, pipeline)
    bad = kids.pop("image-{{IMAGE_1}}")
    assert bad.status == "Failed" and bad.error["type"] == error_type
    assert words in bad.error["message"] and bad.output is None
    assert result["failed_images"] == 1 and result["image_count"] == 2
    # Only the two good pictures reached the blob store.
    good = {graph.blobs.path_for(c.output["object_key"]) for c in kids.values()}
    assert set(graph.blobs.root.rglob("*.png")) == good


PASSWORD = "hunter22pw"
API_KEY = "sk-proj-KEYzz81"


def _leaks(secrets: list[str], texts: dict[str, str], folder) -> list[str]:
    """Where any secret shows up: in the given texts or in any file under ``folder``."""
    found = [f"{name}: {s}" for name, text in texts.items() for s in secrets if s in text]
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {s}" for s in secrets if s.encode() in data]
    return found


@pytest.mark.parametrize("with_key", [True, False], ids=["api-key", "url-password"])
async def test_credentials_never_reach_the_graph_trace_progress_or_logs(
    tmp_path, fast_settings, monkeypatch, caplog, with_key
):
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    if with_key:
        monkeypatch.setenv("STORYLAB_IMAGES_API_KEY", API_KEY)
    else:
        monkeypatch.delenv("STORYLAB_IMAGES_API_KEY", raising=False)
    store = tmp_path / "store"
    graph = EntityGraph.open(store / "graph.sqlite")
    with HostileServer("echo", bad={"{{IMAGE_2}}"}, status=500) as server:
        url = server.url.replace("http://", f"http://bob:{PASSWORD}@")
        images = HttpImageBackend(url, max_attempts=2, backoff=0.001)
        with (
            use_settings(fast_settings(images=images)),
            Trace() as trace,
            caplog.at_level(logging.DEBUG),
        ):
            pipeline = create_story(graph, "a brave kitten", {"illustration_count": 2})
            run = pipeline.start()
            progress = [repr(env) async for env in run]
        await images.aclose()
    # The server got the secret and echoed it back in its error.
    sent = server.headers_seen[-1]["authorization"]
    assert sent == (f"Bearer {API_KEY}" if with_key else f"Basic {basic}")
    kids = _kids(graph, pipeline)
    failed = kids["image-{{IMAGE_2}}"]
    assert failed.status == "Failed" and kids["image-{{IMAGE_1}}"].status == "Completed"
    assert "HTTP 500: credentials refused" in failed.error["message"]
    assert "http://***@127.0.0.1" in failed.error["message"]
    assert trace.of_kind(EventKind.MARK)  # the retry was marked, with the message
    texts = {
        "progress": "\n".join(progress),
        "trace": "\n".join(repr(e) for e in trace),
        "logs": caplog.text,
        "result": repr(run.result),
        "error": repr(failed.error),
    }
    graph.close()
    secrets = [PASSWORD, basic, *([API_KEY] if with_key else [])]
    assert _leaks(secrets, texts, store) == []
    # The checker finds a secret where there is one.
    (store / "planted.txt").write_text(f"x{PASSWORD}x")
    assert _leaks(secrets, {"t": API_KEY}, store) == [
        *([f"t: {API_KEY}"] if with_key else []),
        f"planted.txt: {PASSWORD}",
    ]
