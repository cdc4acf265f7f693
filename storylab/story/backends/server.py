"""A real images server on loopback, backed by the simulated generator.

``storylab serve-images`` (and :class:`ImageServer` in-process) speaks the
part of the OpenAI images API the pipeline uses: ``POST
/v1/images/generations`` with a JSON body (``prompt``, ``size``,
``quality``, ``n``, ``response_format``) answered with base64 PNG data. Like
a hosted model it has a limit: past ``max_concurrent`` requests in flight it
answers ``429 Too Many Requests`` with a ``Retry-After`` header. A notebook
can point a pipeline at it with and without capacity limits and watch what
the limits save.

The server is a small HTTP/1.1 implementation on asyncio streams, with
``h11`` (already installed with httpx) doing the protocol work. It is for
local teaching and tests: it binds to 127.0.0.1 by default and keeps no
state but counters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import h11

from storylab.scheduling.capacity import check_positive_int
from storylab.story.backends.images import (
    ASPECT_RATIOS,
    ImageBackend,
    ImageBackendError,
    ImageRequest,
    SimulatedImageBackend,
)

__all__ = ["ImageServer", "ServerStatistics", "ratio_for_size", "quality_for_api"]

MAX_BODY = 1 << 20
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    requests: int
    served: int
    rejected: int  # answered 429
    failed: int  # answered 5xx
    in_flight: int
    peak_in_flight: int
    max_concurrent: int


def ratio_for_size(size: Any) -> str:
    """``"1536x1024"`` -> the closest of the supported ratios (``"3:2"``); else ``"1:1"``."""
    try:
        w, h = (int(part) for part in str(size).lower().split("x"))
        target = w / h
    except (ValueError, ZeroDivisionError):
        return "1:1"
    return min(ASPECT_RATIOS, key=lambda r: abs(ASPECT_RATIOS[r][0] / ASPECT_RATIOS[r][1] - target))


def quality_for_api(quality: Any) -> str:
    """The API's quality words (``standard``, ``hd``, ``auto`` too) as low/medium/high."""
    return {"low": "low", "medium": "medium", "high": "high", "hd": "high"}.get(
        str(quality).lower(), "medium"
    )


def _header(request: h11.Request, name: bytes) -> str:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class _HttpError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class ImageServer:
    """An OpenAI-compatible images endpoint on loopback (see the module doc).

    ``async with ImageServer(max_concurrent=2) as server: server.url``.
    ``kill()`` drops the listener and every open connection at once, as a
    crashed server would; ``close()`` stops it cleanly. ``api_key``, if set,
    is required as a bearer token.
    """

    def __init__(
        self,
        generator: ImageBackend | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent: int = 4,
        retry_after: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        check_positive_int("max_concurrent", max_concurrent)
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after!r}")
        self.generator = generator if generator is not None else SimulatedImageBackend()
        self.host = host
        self.port = port
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        self.api_key = api_key
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._requests = self._served = self._rejected = self._failed = 0
        self._in_flight = self._peak = 0

    # -- lifecycle -----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> ImageServer:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, close idle connections and end the handlers."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        await self._cancel_handlers()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def kill(self) -> None:
        """Die now: no more listening, every connection reset mid-request."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._handlers):
            task.cancel()

    async def _cancel_handlers(self) -> None:
        tasks = [t for t in self._handlers if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ImageServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            requests=self._requests,
            served=self._served,
            rejected=self._rejected,
            failed=self._failed,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
            max_concurrent=self.max_concurrent,
        )

    # -- HTTP ----------------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                body = bytearray()
                too_big = False
                while True:
                    part = await self._next_event(conn, reader)
                    if isinstance(part, h11.Data):
                        if not too_big:  # past the limit, read on but keep nothing
                            body += part.data
                            too_big = len(body) > MAX_BODY
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
                if too_big:
                    status, headers, payload = self._error(_HttpError(413, "request too large"))
                else:
                    status, headers, payload = await self._dispatch(event, bytes(body))
                await self._send(conn, writer, status, headers, payload)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(Exception):
                    status, headers, payload = self._error(
                        _HttpError(400, "malformed HTTP request")
                    )
                    await self._send(conn, writer, status, headers, payload)
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            # Only close()/kill() cancel a handler; ending quietly keeps asyncio's
            # stream callback from reporting the cancellation as an error.
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(65536))

    @staticmethod
    async def _send(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
    ) -> None:
        headers = [
            *headers,
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("server", "storylab-images"),
        ]
        data = conn.send(
            h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
        )
        data += conn.send(h11.Data(data=payload))
        data += conn.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()

    def _error(self, err: _HttpError, headers: list[tuple[str, str]] | None = None):
        body = {"error": {"message": err.message, "type": err.kind, "code": err.status}}
        return err.status, headers or [], json.dumps(body).encode()

    async def _dispatch(self, request: h11.Request, body: bytes):
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0]
        try:
            if path in ("/health", "/healthz"):
                stats = self.statistics()
                return 200, [], json.dumps({"status": "ok", **asdict(stats)}).encode()
            if path == "/v1/images/generations":
                if method != "POST":
                    raise _HttpError(405, "use POST")
                return await self._generate(request, body)
            raise _HttpError(404, f"no route for {method} {path}")
        except _HttpError as err:
            if err.status == 429:
                retry = f"{self.retry_after:g}"
                return self._error(err, [("retry-after", retry)])
            return self._error(err)
        except Exception as exc:  # a bug here must not kill the connection silently
            self._failed += 1
            return self._error(_HttpError(500, f"internal error: {exc!r}", "server_error"))

    async def _generate(self, request: h11.Request, body: bytes):
        self._requests += 1
        if self.api_key is not None:
            if _header(request, b"authorization") != f"Bearer {self.api_key}":
                raise _HttpError(401, "missing or wrong API key", "authentication_error")
        try:
            spec = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise _HttpError(400, f"body is not JSON: {exc.msg}") from None
        if not isinstance(spec, dict):
            raise _HttpError(400, "body must be a JSON object")
        prompt = spec.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _HttpError(400, "prompt is required")
        n = spec.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4:
            raise _HttpError(400, "n must be an integer from 1 to 4")
        if spec.get("response_format", "b64_json") != "b64_json":
            raise _HttpError(400, "only response_format 'b64_json' is supported")
        if self._in_flight >= self.max_concurrent:
            self._rejected += 1
            raise _HttpError(
                429,
                f"too many concurrent requests (limit {self.max_concurrent}); retry later",
                "rate_limit_exceeded",
            )
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        try:
            ratio = ratio_for_size(spec.get("size", "1024x1024"))
            quality = quality_for_api(spec.get("quality", "medium"))
            req = ImageRequest(
                prompt=prompt,
                placeholder=_header(request, b"x-storylab-placeholder"),
                quality=quality,
                aspect_ratio=ratio,
                model_pool=str(spec.get("model") or ""),
            )
            images = [await self.generator.generate(req) for _ in range(n)]
        except ImageBackendError as exc:
            self._failed += 1
            raise _HttpError(500, f"generation failed: {exc}", "server_error") from None
        finally:
            self._in_flight -= 1
        self._served += 1
        first = images[0]
        payload = {
            "created": int(time.time()),
            "data": [
                {"b64_json": base64.b64encode(img.data).decode("ascii"), "revised_prompt": prompt}
                for img in images
            ],
            "output_format": first.format,
            "size": f"{first.width}x{first.height}",
            "quality": quality,
        }
        return 200, [], json.dumps(payload).encode()
