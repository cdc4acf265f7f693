"""The HTTP image backend against the real loopback server (``storylab serve-images``)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import socket
import time
import tracemalloc

import pytest
from hostile_server import HostileServer

from storylab.story.backends import SimulatedImageBackend
from storylab.story.backends.http_images import (
    HttpImageBackend,
    ImageDeadlineExceeded,
    ImageRequestRejected,
    ImageResponseInvalid,
    ImageServiceUnavailable,
    parse_retry_after,
)
from storylab.story.backends.images import ImageRequest, decode_image, draw_illustration
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
        # A DALL-E 3 size is wider: the server draws the shape it was sent.
        dalle = HttpImageBackend(server.url, model="dall-e-3")
        wide = await dalle.generate(_req(2, "low", "16:9"))
        await backend.aclose()
        await dalle.aclose()
    assert out.format == "png" and out.data[:4] == b"\x89PNG"
    # gpt-image models have no 16:9 size: the nearest, 1536x1024 (3:2), is sent.
    assert (out.model, out.size) == ("gpt-image-1.5", "1536x1024")
    assert out.requested_size == "320x180 (16:9, low)"
    assert (out.width, out.height) == (320, 213)
    # (DALL-E 3 knows no "low": its "standard" is drawn at medium size.)
    assert (wide.size, wide.width, wide.height) == ("1792x1024", 640, 360)
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


# -- hostile servers: deadlines, size limits, broken pictures ------------------------
# Each test has a timeout of its own: a regression here shows up as a hang.


@pytest.mark.timeout(60)
async def test_trickling_answer_ends_at_the_attempt_deadline_and_is_retried():
    with HostileServer("trickle") as server:
        backend = HttpImageBackend(
            server.url, attempt_timeout=0.3, image_timeout=60, max_attempts=2, backoff=0.01
        )
        with pytest.raises(ImageServiceUnavailable) as info:
            await backend.generate(_req(2))
        await backend.aclose()
        server.wait_hung_up("{{IMAGE_2}}", 2)  # noticed on its next byte
    assert not isinstance(info.value, ImageDeadlineExceeded)
    message = str(info.value)
    assert "after 2 attempts" in message and "{{IMAGE_2}}" in message
    assert "no complete answer within the 0.3 s deadline per attempt" in message
    assert server.requests["{{IMAGE_2}}"] == 2
    assert server.bytes_sent["{{IMAGE_2}}"] > 0  # it was trickling, not silent
    assert server.hung_up.count("{{IMAGE_2}}") == 2  # the client hung up both times


@pytest.mark.timeout(60)
async def test_image_deadline_covers_every_attempt_and_wait():
    with HostileServer("trickle") as server:
        backend = HttpImageBackend(
            server.url, attempt_timeout=0.4, image_timeout=1.0, max_attempts=50, backoff=0.01
        )
        with pytest.raises(ImageDeadlineExceeded) as info:
            await backend.generate(_req(3))
        await backend.aclose()
    message = str(info.value)
    assert "no picture for {{IMAGE_3}} within its deadline of 1 s per image" in message
    assert "last error: no complete answer within the 0.4 s deadline per attempt" in message
    assert 2 <= server.requests["{{IMAGE_3}}"] < 50


async def test_a_retry_after_past_the_image_deadline_gives_up_at_once():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    gen = SimulatedImageBackend(time_scale=0.001, slow={"{{IMAGE_1}}": 100_000.0})
    async with ImageServer(gen, max_concurrent=1, retry_after=30) as server:
        busy = HttpImageBackend(server.url)
        holder = asyncio.ensure_future(busy.generate(_req(1)))  # takes the only slot
        while server.statistics().in_flight == 0:
            await asyncio.sleep(0.01)
        backend = HttpImageBackend(server.url, image_timeout=5, max_attempts=4, sleep=sleep)
        with pytest.raises(ImageDeadlineExceeded) as info:
            await backend.generate(_req(2))
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await busy.aclose()
        await backend.aclose()
    message = str(info.value)
    assert "within its deadline of 5 s per image" in message
    assert "the next attempt would start 30.00 s later, past it" in message
    assert "last error: HTTP 429: too many concurrent requests" in message
    assert waits == [] and backend.attempts == 1


@pytest.mark.timeout(120)
async def test_an_endless_answer_is_cut_off_at_the_size_limit_with_bounded_memory():
    limit = 1024 * 1024
    with HostileServer("huge") as server:
        backend = HttpImageBackend(server.url, max_response_bytes=limit, max_attempts=3)
        tracemalloc.start()
        try:
            with pytest.raises(ImageResponseInvalid) as info:
                await backend.generate(_req(1))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await backend.aclose()
        server.wait_hung_up("{{IMAGE_1}}")
    assert "larger than the limit of 1 MiB" in str(info.value)
    assert "{{IMAGE_1}}" in str(info.value) and "Content-Length" not in str(info.value)
    assert backend.attempts == 1  # a runaway answer is not asked for again
    # The server offered 300 MiB; what it got rid of is what we read plus what
    # the loopback socket buffers held when we hung up.
    assert server.bytes_sent["{{IMAGE_1}}"] < 32 * limit
    assert server.hung_up == ["{{IMAGE_1}}"]
    assert peak < 8 * limit, f"peak {peak:,} bytes while reading"


@pytest.mark.timeout(60)
async def test_a_too_large_content_length_is_refused_before_reading():
    with HostileServer("huge-length", total=300_000_000) as server:
        backend = HttpImageBackend(server.url)  # the default 32 MiB limit
        with pytest.raises(ImageResponseInvalid) as info:
            await backend.generate(_req(1))
        await backend.aclose()
        server.wait_hung_up("{{IMAGE_1}}")
    message = str(info.value)
    assert "larger than the limit of 32 MiB (Content-Length 300,000,000 bytes)" in message
    assert server.hung_up == ["{{IMAGE_1}}"]


async def test_half_a_png_is_refused():
    with HostileServer("half-png") as server:
        backend = HttpImageBackend(server.url)
        with pytest.raises(ImageResponseInvalid) as info:
            await backend.generate(_req(5))
        await backend.aclose()
    message = str(info.value)
    assert "sent a broken picture for {{IMAGE_5}}: truncated or corrupt PNG" in message
    assert backend.attempts == 1


def test_decode_image_reads_every_pixel():
    png = draw_illustration("an owl", "anime", 120, 80)
    assert decode_image(png) == ("png", 120, 80)
    with pytest.raises(ValueError, match="truncated or corrupt PNG"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt PNG"):
        decode_image(png[:-12])  # everything but the end chunk
    with pytest.raises(ValueError, match="not a PNG or JPEG image"):
        decode_image(b"<html>oops</html>")
    with pytest.raises(ValueError, match="80x120 pixels is more than the limit of 100 pixels"):
        decode_image(draw_illustration("x", "anime", 80, 120), max_pixels=100)
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, "JPEG")
    jpeg = buf.getvalue()
    assert decode_image(jpeg) == ("jpeg", 120, 80)
    with pytest.raises(ValueError, match="truncated JPEG"):
        decode_image(jpeg[: len(jpeg) // 2])
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, "GIF")
    with pytest.raises(ValueError, match="a GIF image; only PNG and JPEG are accepted"):
        decode_image(buf.getvalue())


def test_deadline_and_limit_arguments_are_checked():
    for name in ("attempt_timeout", "image_timeout", "timeout", "connect_timeout"):
        for bad in (0, -1, float("nan"), float("inf"), "5", True):
            with pytest.raises(ValueError, match=f"^{name} must be a number of seconds > 0"):
                HttpImageBackend("http://127.0.0.1:1", **{name: bad})
    with pytest.raises(ValueError, match="max_response_bytes"):
        HttpImageBackend("http://127.0.0.1:1", max_response_bytes=0)
    with pytest.raises(ValueError, match="base_url must be an http:// or https:// URL"):
        HttpImageBackend("ftp://bob:hunter22@example.org")
    for url in ("nohost://bob:hunter22@", "http://bob:hunter22@[::1"):
        with pytest.raises(ValueError, match="^base_url must be an http") as info:
            HttpImageBackend(url)
        assert "hunter22" not in str(info.value) and "***" in str(info.value)


# -- credentials never shown -----------------------------------------------------------


async def test_url_credentials_are_sent_as_a_header_and_never_shown(monkeypatch):
    monkeypatch.delenv("STORYLAB_IMAGES_API_KEY", raising=False)
    basic = base64.b64encode(b"bob:hunter22").decode()
    with HostileServer("echo", status=401) as server:
        url = server.url.replace("http://", "http://bob:hunter22@")
        backend = HttpImageBackend(url)
        with pytest.raises(ImageRequestRejected) as info:
            await backend.generate(_req(1))
        await backend.aclose()
    # The server did get the credentials, the way httpx sends a URL's user info...
    assert server.headers_seen[0]["authorization"] == f"Basic {basic}"
    # ...and echoed them back, in both forms; neither is repeated by us.
    shown = "\n".join([str(info.value), repr(backend), backend.base_url, backend.endpoint])
    for secret in ("hunter22", basic, "bob:"):
        assert secret not in shown, shown
    assert backend.base_url == server.url.replace("http://", "http://***@")
    assert "HTTP 401: credentials refused: 'Basic ***' (***)" in str(info.value)


async def test_an_api_key_echoed_by_the_server_is_redacted(monkeypatch):
    key = "sk-test-Zq81x"
    monkeypatch.setenv("STORYLAB_IMAGES_API_KEY", key)
    with HostileServer("echo", status=500) as server:
        backend = HttpImageBackend(server.url + "/", max_attempts=2, backoff=0.001)
        with pytest.raises(ImageServiceUnavailable) as info:
            await backend.generate(_req(1))
        await backend.aclose()
    assert server.headers_seen[0]["authorization"] == f"Bearer {key}"
    message = str(info.value)
    assert key not in message and "Zq81x" not in message
    assert "last error: HTTP 500: credentials refused: 'Bearer ***'" in message


async def test_the_client_is_built_with_the_backend_not_on_the_first_request(monkeypatch):
    # Building an httpx client loads the certificate store, which blocks the
    # loop; built on the first request, it held up every task of a run that
    # started together. It must exist before any request is made.
    import storylab.story.backends.http as http_layer

    built = []

    class CountingClient(http_layer.httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            built.append(asyncio.current_task())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(http_layer.httpx, "AsyncClient", CountingClient)
    async with ImageServer(SimulatedImageBackend(time_scale=0.001)) as server:
        backend = HttpImageBackend(server.url)
        assert len(built) == 1
        built.clear()
        outs = await asyncio.gather(*(backend.generate(_req(i)) for i in range(1, 4)))
        await backend.aclose()
    assert built == [], "a client was built while the requests were running"
    assert [o.data[:4] for o in outs] == [b"\x89PNG"] * 3 and backend.attempts == 3

