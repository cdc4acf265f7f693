"""The HTTP image backend against the real loopback server (``storylab serve-images``)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import socket
import time

import pytest

from storylab.story.backends import SimulatedImageBackend
from storylab.story.backends.http_images import (
    HttpImageBackend,
    ImageRequestRejected,
    ImageServiceUnavailable,
    parse_retry_after,
)
from storylab.story.backends.images import ImageRequest
from storylab.story.backends.server import ImageServer, quality_for_api, ratio_for_size


def _req(i: int = 1, quality: str = "low", ratio: str = "3:2") -> ImageRequest:
    return ImageRequest(f"a kitten, scene {i}", f"{{{{IMAGE_{i}}}}}", quality, ratio)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_generates_png_through_the_server():
    async with ImageServer(SimulatedImageBackend(time_scale=0.001)) as server:
        backend = HttpImageBackend(server.url)
        out = await backend.generate(_req(1, "low", "16:9"))
        await backend.aclose()
    assert out.format == "png" and out.data[:4] == b"\x89PNG"
    assert (out.width, out.height) == (320, 180)
    assert backend.attempts == 1


async def test_429_past_the_concurrency_limit_and_retries_succeed():
    gen = SimulatedImageBackend(time_scale=0.002)
    async with ImageServer(gen, max_concurrent=2, retry_after=0.01) as server:
        backend = HttpImageBackend(server.url, max_attempts=100, backoff=0.005)
        results = await asyncio.gather(*(backend.generate(_req(i)) for i in range(1, 7)))
        stats = server.statistics()
        await backend.aclose()
    assert all(r.format == "png" for r in results)
    assert stats.rejected > 0 and backend.retries == stats.rejected
    assert stats.peak_in_flight <= 2 and gen.peak_in_flight <= 2
    assert stats.served == 6


async def test_retry_after_is_honoured():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0.01)

    gen = SimulatedImageBackend(time_scale=0.005)
    async with ImageServer(gen, max_concurrent=1, retry_after=7) as server:
        backend = HttpImageBackend(server.url, max_attempts=50, sleep=sleep)
        await asyncio.gather(backend.generate(_req(1)), backend.generate(_req(2)))
        await backend.aclose()
    assert waits and all(w == 7 for w in waits)


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31


async def test_unreachable_server_gives_a_clear_error_after_retries():
    port = _free_port()
    backend = HttpImageBackend(f"http://127.0.0.1:{port}", max_attempts=3, backoff=0.001)
    with pytest.raises(ImageServiceUnavailable) as info:
        await backend.generate(_req(4))
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "after 3 attempts" in message
    assert "{{IMAGE_4}}" in message and "ConnectError" in message
    assert backend.attempts == 3 and backend.retries == 2


async def test_server_errors_are_retried_then_reported():
    gen = SimulatedImageBackend(time_scale=0.001, fail_probability=1.0)
    async with ImageServer(gen) as server:
        backend = HttpImageBackend(server.url, max_attempts=3, backoff=0.001)
        with pytest.raises(ImageServiceUnavailable, match="HTTP 500"):
            await backend.generate(_req())
        await backend.aclose()
        assert server.statistics().failed == 3


async def test_client_errors_are_not_retried():
    async with ImageServer(SimulatedImageBackend(time_scale=0.001)) as server:
        backend = HttpImageBackend(server.url, max_attempts=5)
        with pytest.raises(ImageRequestRejected, match="HTTP 400: prompt is required"):
            await backend.generate(ImageRequest("   ", "{{IMAGE_1}}"))
        await backend.aclose()
    assert backend.attempts == 1


async def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("STORYLAB_IMAGES_API_KEY", raising=False)
    async with ImageServer(SimulatedImageBackend(time_scale=0.001), api_key="s3cret") as server:
        backend = HttpImageBackend(server.url)
        with pytest.raises(ImageRequestRejected, match="HTTP 401"):
            await backend.generate(_req())
        monkeypatch.setenv("STORYLAB_IMAGES_API_KEY", "s3cret")
        assert (await backend.generate(_req())).format == "png"
        await backend.aclose()
    assert "s3cret" not in repr(backend) and "s3cret" not in str(vars(backend))


async def test_server_that_dies_mid_run():
    gen = SimulatedImageBackend(time_scale=0.001, slow={"{{IMAGE_3}}": 400.0})
    server = await ImageServer(gen, max_concurrent=10).start()
    backend = HttpImageBackend(server.url, max_attempts=3, backoff=0.001)
    fast = [asyncio.ensure_future(backend.generate(_req(i))) for i in (1, 2)]
    slow = asyncio.ensure_future(backend.generate(_req(3)))
    done = await asyncio.gather(*fast)
    assert all(r.format == "png" for r in done)
    server.kill()  # the slow request is cut off mid-answer; retries find nobody
    with pytest.raises(ImageServiceUnavailable, match="after 3 attempts"):
        await slow
    with pytest.raises(ImageServiceUnavailable):
        await backend.generate(_req(4))
    await server.close()
    await backend.aclose()


async def _raw(server: ImageServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    out = await reader.read(65536)
    writer.close()
    return out


async def test_server_answers_bad_http_and_unknown_routes():
    async with ImageServer(SimulatedImageBackend(time_scale=0.001)) as server:
        assert (await _raw(server, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        out = await _raw(server, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 404")
        out = await _raw(server, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b'"status": "ok"' in out
        body = json.dumps({"prompt": "owl", "size": "1024x1024", "quality": "low"}).encode()
        req = (
            b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(req)
        await writer.drain()
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += await reader.read(65536)
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-len")).split(
                b":"
            )[1]
        )
        while len(rest) < length:
            rest += await reader.read(65536)
        writer.close()
        payload = json.loads(rest)
        assert base64.b64decode(payload["data"][0]["b64_json"])[:4] == b"\x89PNG"
        assert payload["size"] == "320x320"


def test_size_and_quality_mapping():
    assert ratio_for_size("1536x1024") == "3:2"
    assert ratio_for_size("1024x1536") == "2:3"
    assert ratio_for_size("1792x1024") == "16:9"
    assert ratio_for_size("auto") == "1:1"
    assert quality_for_api("hd") == "high" and quality_for_api("standard") == "medium"
