"""``serve-images`` against clients that send too much, or nothing: real sockets on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storylab.story.backends import server as server_module
from storylab.story.backends.server import IDLE_TIMEOUT, MAX_BODY, ImageServer

REPO = Path(__file__).resolve().parents[2]
PATH = "/v1/images/generations"


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(ln.lower().split(": ", 1) for ln in lines if ln)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
    return int(status_line.split()[1]), headers, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (waits for it, within 30 s)."""
    try:
        return await asyncio.wait_for(reader.read(1), 30) == b""
    except ConnectionResetError:
        return True


def _serve(coro_fn, **options):
    async def main():
        async with ImageServer(**options) as server:
            return await coro_fn(server)

    return asyncio.run(main())


def test_an_announced_body_over_the_limit_is_refused_with_413_unread():
    sent_after = 0

    async def client(server):
        nonlocal sent_after
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {1 << 30}\r\n\r\n".encode()
        )
        await writer.drain()
        status, headers, body = await _response(reader)
        # The server answered before 1 GiB arrived; it closes rather than read it.
        closed = await _closed(reader)
        writer.close()
        return status, headers, json.loads(body), closed, server.statistics()

    status, headers, body, closed, stats = _serve(client, max_body=4096)
    assert status == 413 and headers["connection"] == "close" and closed
    assert body["error"]["message"] == "request body larger than 4096 bytes"
    assert stats.requests == 0  # nothing reached the model


def test_a_chunked_body_is_cut_off_at_the_limit():
    async def client(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * 1000
        for _ in range(5):  # 5000 bytes: past the 4096-byte limit, no end of body sent
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        status, headers, _ = await _response(reader)
        writer.close()
        return status, headers

    status, headers = _serve(client, max_body=4096)
    assert status == 413 and headers["connection"] == "close"


def test_a_body_within_the_limit_is_served():
    async def client(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        payload = json.dumps({"prompt": "an owl", "n": 1, "size": "1024x1024"}).encode()
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        status, _, _ = await _response(reader)
        writer.close()
        return status

    from storylab.story.backends.images import SimulatedImageBackend

    assert _serve(client, generator=SimulatedImageBackend(time_scale=0.001)) == 200


def test_idle_connections_are_closed_after_the_timeout():
    async def client(server):
        conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(50)]
        # Half never send a byte; half start a request and stall half-way.
        for _, writer in conns[25:]:
            writer.write(f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-len".encode())
            await writer.drain()
        closed = await asyncio.gather(*(_closed(reader) for reader, _ in conns))
        for _, writer in conns:
            writer.close()
        return closed, len(server._writers)

    closed, still_open = _serve(client, idle_timeout=0.2)
    assert closed == [True] * 50 and still_open == 0


def test_defaults_and_bad_options():
    assert server_module.MAX_BODY == MAX_BODY == 1 << 20 and IDLE_TIMEOUT == 30.0
    for bad in ({"max_body": 0}, {"idle_timeout": 0}, {"idle_timeout": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ImageServer(**bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-body", "0"], "argument --max-body: must be a whole number >= 1"),
        (["--idle-timeout", "-1"], "argument --idle-timeout: must be a number > 0"),
    ],
)
def test_the_limits_flags_are_checked(argv, message):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "storylab.cli", "serve-images", *argv],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
