"""A local OpenAI-compatible model server on loopback, backed by the simulated models.

``storylab serve-images`` (and :class:`ImageServer` in-process) speaks the
parts of the OpenAI API the pipeline uses, so the whole HTTP path of a story
runs offline:

* ``POST /v1/images/generations``: a JSON body (``prompt``, ``size``,
  ``quality``, ``n``, ``response_format``) answered with base64 PNG data
  drawn by the simulated image generator;
* ``POST /v1/chat/completions``: the offline writer behind a chat model. It
  reads the topic, the age range, the style and the number of illustrations
  from storylab's own prompt and answers with the story as one JSON object
  (whatever ``response_format`` asked for); a question whether a topic is
  suitable is answered by the offline safety rules, as JSON too;
* ``POST /v1/moderations``: the offline safety rules, in the moderation
  API's shape (``flagged``, ``categories``, ``category_scores``).

Like a hosted service it has a limit: past ``max_concurrent`` requests in
flight (of any kind) it answers ``429 Too Many Requests`` with a
``Retry-After`` header. A notebook can point a pipeline at it with and
without capacity limits and watch what the limits save.

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
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import h11

from storylab._checks import check_positive_int, check_seconds
from storylab.story.backends.base import BackendError, TextBackend
from storylab.story.backends.images import (
    ASPECT_RATIOS,
    ImageBackend,
    ImageRequest,
    SimulatedImageBackend,
)
from storylab.story.models import (
    MAX_ILLUSTRATIONS,
    STYLE_DESCRIPTIONS,
    ContentSafetyResult,
)

__all__ = [
    "ImageServer",
    "ServerStatistics",
    "moderation_result",
    "quality_for_api",
    "ratio_for_size",
    "story_request",
]

MAX_BODY = 1 << 20  # bytes of a request body the server accepts (default)
IDLE_TIMEOUT = 30.0  # seconds a connection may send nothing before it is closed (default)
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


_TOPIC = re.compile(r"story about:\s*(.+)", re.I)
_AGES = re.compile(r"aged\s+(\d{1,2}\s*-\s*\d{1,2})", re.I)
_COUNT = re.compile(r"exactly\s+(\d+)\s+illustrations?", re.I)
_VERDICT_TOPIC = re.compile(r"^Topic:\s*(.+)$", re.M)


def story_request(text: str) -> tuple[str, dict[str, Any]]:
    """``(topic, customization)`` read from a request for a story in storylab's words.

    What is not said falls back to the defaults; text that is not storylab's
    prompt at all is taken whole as the topic.
    """
    found = _TOPIC.search(text)
    topic = found.group(1).strip() if found else " ".join(text.split())[:500]
    cust: dict[str, Any] = {}
    if m := _AGES.search(text):
        cust["age_range"] = m.group(1).replace(" ", "")
    if m := _COUNT.search(text):
        cust["illustration_count"] = max(1, min(MAX_ILLUSTRATIONS, int(m.group(1))))
    for style, description in STYLE_DESCRIPTIONS.items():
        if description in text:
            cust["style"] = style
            break
    return topic or "a story", cust


# Moderation categories of the API, and which of them an offline concern falls under.
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_CONCERN_CATEGORY = (
    ("self", "self-harm"),
    ("sex", "sexual"),
    ("hate", "hate"),
    ("drug", "illicit"),
    ("alcohol", "illicit"),
    ("weapon", "illicit/violent"),
    ("graphic", "violence/graphic"),
)


def moderation_result(verdict: ContentSafetyResult) -> dict[str, Any]:
    """One ``results`` item of the moderation API for an offline verdict."""
    hits: set[str] = set()
    if not verdict.is_safe:
        for concern in verdict.concerns or ["violence"]:
            low = concern.lower()
            hits.add(next((cat for key, cat in _CONCERN_CATEGORY if key in low), "violence"))
    level = round(max(0.5, 1.0 - verdict.safety_score / 100.0), 3)
    return {
        "flagged": not verdict.is_safe,
        "categories": {cat: cat in hits for cat in MODERATION_CATEGORIES},
        "category_scores": {cat: level if cat in hits else 0.0 for cat in MODERATION_CATEGORIES},
        "category_applied_input_types": {cat: ["text"] for cat in MODERATION_CATEGORIES},
    }


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
    """An OpenAI-compatible model server on loopback (see the module doc).

    ``async with ImageServer(max_concurrent=2) as server: server.url``.
    ``generator`` draws the pictures and ``text`` writes and judges (both
    simulated by default).
    ``kill()`` drops the listener and every open connection at once, as a
    crashed server would; ``close()`` stops it cleanly. ``api_key``, if set,
    is required as a bearer token.
    """

    def __init__(
        self,
        generator: ImageBackend | None = None,
        *,
        text: TextBackend | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent: int = 4,
        retry_after: float = 1.0,
        api_key: str | None = None,
        max_body: int = MAX_BODY,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        check_positive_int("max_concurrent", max_concurrent)
        check_positive_int("max_body", max_body)
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after!r}")
        self.max_body = max_body
        self.idle_timeout = check_seconds("idle_timeout", idle_timeout)
        self.generator = generator if generator is not None else SimulatedImageBackend()
        if text is None:
            from storylab.story.backends.text import SimulatedTextBackend

            text = SimulatedTextBackend(time_scale=getattr(self.generator, "time_scale", 0.05))
        self.text = text
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
                too_big = _announced_length(event) > self.max_body
                while not too_big:
                    part = await self._next_event(conn, reader)
                    if isinstance(part, h11.Data):
                        body += part.data
                        too_big = len(body) > self.max_body
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
                if too_big:
                    # Answer at once and close: the rest of the body is never read.
                    status, headers, payload = self._error(
                        _HttpError(413, f"request body larger than {self.max_body} bytes")
                    )
                    await self._send(conn, writer, status, [("connection", "close")], payload)
                    break
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
        except TimeoutError:
            pass  # idle for idle_timeout seconds (between requests or within one): closed
        except asyncio.CancelledError:
            # Only close()/kill() cancel a handler; ending quietly keeps asyncio's
            # stream callback from reporting the cancellation as an error.
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        """The next HTTP event; ``TimeoutError`` if the client sends nothing for
        ``idle_timeout`` seconds (a connection left open, or a request sent
        slowly, byte by byte with long pauses)."""
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(self.idle_timeout):
                data = await reader.read(65536)
            conn.receive_data(data)

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
            route = self._routes.get(path)
            if route is None:
                raise _HttpError(404, f"no route for {method} {path}")
            if method != "POST":
                raise _HttpError(405, "use POST")
            self._requests += 1
            self._check_key(request)
            spec = _json_body(body)
            async with self._slot():
                return await route(self, request, spec)
        except _HttpError as err:
            if err.status == 429:
                retry = f"{self.retry_after:g}"
                return self._error(err, [("retry-after", retry)])
            return self._error(err)
        except Exception as exc:  # a bug here must not kill the connection silently
            self._failed += 1
            return self._error(_HttpError(500, f"internal error: {exc!r}", "server_error"))

    def _check_key(self, request: h11.Request) -> None:
        if self.api_key is not None:
            if _header(request, b"authorization") != f"Bearer {self.api_key}":
                raise _HttpError(401, "missing or wrong API key", "authentication_error")

    @contextlib.asynccontextmanager
    async def _slot(self):
        """One request in flight, or 429 past the limit; a failed model call counts as failed."""
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
            yield
        except BackendError as exc:
            self._failed += 1
            raise _HttpError(500, f"generation failed: {exc}", "server_error") from None
        finally:
            self._in_flight -= 1
        self._served += 1

    async def _generate(self, request: h11.Request, spec: dict[str, Any]):
        prompt = spec.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _HttpError(400, "prompt is required")
        n = spec.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4:
            raise _HttpError(400, "n must be an integer from 1 to 4")
        if spec.get("response_format", "b64_json") != "b64_json":
            raise _HttpError(400, "only response_format 'b64_json' is supported")
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

    async def _chat(self, request: h11.Request, spec: dict[str, Any]):
        messages = spec.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HttpError(400, "messages must be a non-empty list")
        texts = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _HttpError(400, f"messages[{i}] must be an object with a role")
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            texts.append(str(content or ""))
        asked = texts[-1]
        format_name = ((spec.get("response_format") or {}).get("json_schema") or {}).get("name")
        verdict_topic = _VERDICT_TOPIC.search(asked)
        if format_name == "topic_verdict" or (format_name is None and verdict_topic):
            topic = verdict_topic.group(1).strip() if verdict_topic else asked
            verdict = await self.text.check_safety(topic)
            answer: dict[str, Any] = {
                "is_safe": verdict.is_safe,
                "safety_score": verdict.safety_score,
                "concerns": verdict.concerns,
                "reason": verdict.reason or verdict.reasoning,
            }
        else:
            topic, customization = story_request(asked)
            story = await self.text.write_story(topic, customization)
            answer = {
                "title": story.title,
                "hero": story.reference_image_description or "",
                "html_content": story.html_content,
                "image_prompts": [p.to_json() for p in story.image_prompts],
                "moral": story.moral,
                "age_range": story.age_range,
            }
        content = json.dumps(answer, ensure_ascii=False)
        prompt_tokens = sum(len(t.split()) for t in texts)
        completion_tokens = len(content.split())
        payload = {
            "id": f"chatcmpl-storylab-{self._served + 1}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(spec.get("model") or "storylab-offline"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, [], json.dumps(payload).encode()

    async def _moderate(self, request: h11.Request, spec: dict[str, Any]):
        given = spec.get("input")
        inputs = [given] if isinstance(given, str) else given
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(x, str) for x in inputs)
        ):
            raise _HttpError(400, "input must be a string or a list of strings")
        results = [moderation_result(await self.text.check_safety(x)) for x in inputs]
        payload = {
            "id": f"modr-storylab-{self._served + 1}",
            "model": str(spec.get("model") or "storylab-offline-rules"),
            "results": results,
        }
        return 200, [], json.dumps(payload).encode()

    _routes = {
        "/v1/images/generations": _generate,
        "/v1/chat/completions": _chat,
        "/v1/moderations": _moderate,
    }


def _announced_length(request: h11.Request) -> int:
    """The request's Content-Length (0 if it has none or it is unreadable)."""
    text = _header(request, b"content-length")
    return int(text) if text.isdigit() else 0


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        spec = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise _HttpError(400, f"body is not JSON: {exc.msg}") from None
    if not isinstance(spec, dict):
        raise _HttpError(400, "body must be a JSON object")
    return spec
