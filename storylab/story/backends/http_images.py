"""Images over HTTP: an OpenAI-compatible ``POST /v1/images/generations`` client.

:class:`HttpImageBackend` implements the same ``generate(ImageRequest)``
protocol as the simulated backend, so a pipeline switches between them by
configuration only. What a remote model needs and a local one does not:

* **timeouts** on connecting and on each read, and two *deadlines*: one
  per attempt (a server that trickles its answer a byte at a time never
  trips a per-read timeout) and one per image, all attempts and waits
  included. Each ends with an error naming the deadline;
* **limits on what comes back**: an answer larger than
  ``max_response_bytes`` is refused while it streams in (or at once, from
  its ``Content-Length``), and the picture is decoded in full, so half a PNG
  is an error, not a picture;
* **retries with backoff** on connection failures, timeouts, ``429`` and
  ``5xx`` answers. A ``Retry-After`` header (seconds or an HTTP date) is
  honoured; otherwise the wait doubles from ``backoff`` up to
  ``max_backoff``, with jitter so that many clients do not retry in step;
* **secrets from the environment only**: the API key is read from
  ``api_key_env`` at call time and goes into a header, never into entity
  data, progress or traces. Credentials in the URL
  (``http://user:pass@host``) are sent as a ``Basic`` header and shown as
  ``http://***@host``; every message built from the server's words hides the
  key and the password (:mod:`storylab.story.redaction`), even when a server
  echoes them back.

After the last attempt the error says where it tried, how often and what
went wrong last (:class:`ImageServiceUnavailable`; :class:`ImageDeadlineExceeded`
when the image's deadline ended it). A ``4xx`` other than ``429`` is not
retried (:class:`ImageRequestRejected`), nor is an answer that is too large
or not a whole picture (:class:`ImageResponseInvalid`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from storylab.scheduling import mark
from storylab.scheduling.capacity import check_positive_int
from storylab.story.backends.images import (
    GeneratedImage,
    ImageBackendError,
    ImageRequest,
    decode_image,
    normalize_aspect_ratio,
    normalize_quality,
)
from storylab.story.redaction import Redactor, redact_url, split_credentials

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "DEFAULT_IMAGES_URL",
    "DEFAULT_IMAGE_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "OPENAI_SIZES",
    "HttpImageBackend",
    "ImageDeadlineExceeded",
    "ImageRequestRejected",
    "ImageResponseInvalid",
    "ImageServiceUnavailable",
    "parse_retry_after",
]

DEFAULT_IMAGES_URL = "http://127.0.0.1:8765"
# Aspect ratio -> the ``size`` sent. The first three are what current OpenAI image
# models accept; the others are the nearest common sizes (override with ``sizes=``).
OPENAI_SIZES: dict[str, str] = {
    "1:1": "1024x1024",
    "3:2": "1536x1024",
    "2:3": "1024x1536",
    "4:3": "1024x768",
    "16:9": "1792x1024",
}
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# A hosted model takes up to a minute or two for a large picture.
DEFAULT_ATTEMPT_TIMEOUT = 180.0
DEFAULT_IMAGE_TIMEOUT = 600.0
# A 1536x1024 PNG is a few MiB, a third more in base64: 32 MiB leaves room
# for the largest sizes and still stops a runaway answer early.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Error answers are read only this far: enough for any message.
_MAX_ERROR_BODY = 64 * 1024


class ImageServiceUnavailable(ImageBackendError):
    """The image service could not produce an image after every retry."""


class ImageRequestRejected(ImageBackendError):
    """The image service refused the request itself (a 4xx other than 429)."""


class ImageDeadlineExceeded(ImageServiceUnavailable):
    """The image's deadline (all attempts and waits) ended before a picture came back."""


class ImageResponseInvalid(ImageServiceUnavailable):
    """The service answered, but not with a usable picture (too large, unreadable, broken)."""


class _TooLarge(Exception):
    def __init__(self, size: int | None) -> None:
        self.size = size  # the announced Content-Length, or None when cut off while reading


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpImageBackend:
    """Generate images with an OpenAI-compatible HTTP service (see the module doc).

    ``base_url`` defaults to ``$STORYLAB_IMAGES_URL`` or a local
    ``storylab serve-images``. ``max_attempts`` counts the first try.
    ``timeout`` bounds each read, ``attempt_timeout`` one whole attempt
    (connect, send, the whole answer) and ``image_timeout`` one image, every
    attempt and wait between them included; all in seconds.
    ``max_response_bytes`` caps the size of an answer.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str = "gpt-image-1",
        api_key_env: str = "STORYLAB_IMAGES_API_KEY",
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        image_timeout: float = DEFAULT_IMAGE_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_image_pixels: int = 40_000_000,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        sizes: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        check_positive_int("max_attempts", max_attempts)
        check_positive_int("max_response_bytes", max_response_bytes)
        check_positive_int("max_image_pixels", max_image_pixels)
        _seconds("timeout", timeout)
        _seconds("connect_timeout", connect_timeout)
        self.attempt_timeout = _seconds("attempt_timeout", attempt_timeout)
        self.image_timeout = _seconds("image_timeout", image_timeout)
        self.max_response_bytes = max_response_bytes
        self.max_image_pixels = max_image_pixels
        url = (base_url or os.environ.get("STORYLAB_IMAGES_URL") or DEFAULT_IMAGES_URL).rstrip("/")
        # The URL's credentials never stay in the URL: they go into a header at
        # call time, and what is shown (repr, every message) is the redacted URL.
        try:
            self._redact_url = Redactor.for_url(url)
            clean, user, password = split_credentials(url)
        except ValueError:  # urlsplit's own complaint, e.g. a broken [IPv6] host
            clean, user, password = "", None, None
        self._auth = httpx.BasicAuth(user or "", password or "") if user or password else None
        self._url = clean
        #: The service's URL as it may be shown: user info replaced by ``***``.
        self.base_url = redact_url(url)
        _check_url(self._url, self.base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.sizes = dict(OPENAI_SIZES if sizes is None else sizes)
        self._transport = transport
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.attempts = 0  # every HTTP attempt made, for tests and notebooks
        self.retries = 0

    def __repr__(self) -> str:
        return f"HttpImageBackend({self.base_url!r}, model={self.model!r})"

    @property
    def endpoint(self) -> str:
        """The generations endpoint as it may be shown (credentials redacted)."""
        return f"{self.base_url}/v1/images/generations"

    def _get_client(self) -> httpx.AsyncClient:
        # An AsyncClient belongs to the loop it first ran on; notebooks and
        # run_sync may use a fresh loop per call, so keep one client per loop.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
        self._client_loop = None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        payload = {
            "model": self.model,
            "prompt": request.prompt,
            "n": 1,
            "size": self.sizes.get(normalize_aspect_ratio(request.aspect_ratio), "1024x1024"),
            "quality": normalize_quality(request.quality),
            "response_format": "b64_json",
        }
        headers = {"accept": "application/json"}
        if request.placeholder:
            # Ignored by hosted services; lets the local server inject faults per image.
            headers["x-storylab-placeholder"] = request.placeholder
        key = os.environ.get(self.api_key_env)
        auth = self._auth
        if key:
            headers["authorization"] = f"Bearer {key}"
            auth = None  # an API key wins over a URL's user and password
        # Everything said about this request goes through ``redact``: the
        # server's words may echo the key or the password back.
        redact = self._redact_url.with_secrets(key)
        what = request.placeholder or "an image"
        client = self._get_client()
        loop = asyncio.get_running_loop()
        image_deadline = loop.time() + self.image_timeout
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            retry_after: float | None = None
            attempt_deadline = min(loop.time() + self.attempt_timeout, image_deadline)
            outcome: tuple[int, bytes, str, str | None] | None = None
            try:
                async with asyncio.timeout_at(attempt_deadline):
                    outcome = await self._attempt(client, payload, headers, auth)
            except TimeoutError:
                if attempt_deadline >= image_deadline:
                    raise ImageDeadlineExceeded(
                        f"image service at {self.base_url} gave no picture for {what} within "
                        f"its deadline of {self.image_timeout:g} s per image (attempt {attempt} "
                        f"of {self.max_attempts} cut off); last error: {last}"
                    ) from None
                last = (
                    f"no complete answer within the {self.attempt_timeout:g} s deadline per attempt"
                )
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = redact(f"{type(exc).__name__}: {exc or 'connection failed'}")
            except _TooLarge as exc:
                announced = f" (Content-Length {exc.size:,} bytes)" if exc.size is not None else ""
                raise ImageResponseInvalid(
                    f"image service at {self.base_url} sent an answer for {what} larger than "
                    f"the limit of {_mib(self.max_response_bytes)}{announced}; reading stopped "
                    "there"
                ) from None
            if outcome is not None:
                status, body, reason, retry_header = outcome
                if status == 200:
                    return await self._parse(body, what, redact)
                message = redact(_error_message(body, reason))
                if status not in _RETRY_STATUS:
                    raise ImageRequestRejected(
                        f"image service at {self.base_url} refused the request for "
                        f"{what}: HTTP {status}: {message}"
                    )
                last = f"HTTP {status}: {message}"
                retry_after = parse_retry_after(retry_header)
            if attempt < self.max_attempts:
                delay = self._delay(attempt, retry_after)
                if loop.time() + delay >= image_deadline:
                    raise ImageDeadlineExceeded(
                        f"image service at {self.base_url} gave no picture for {what} within "
                        f"its deadline of {self.image_timeout:g} s per image (the next attempt "
                        f"would start {delay:.2f} s later, past it; {attempt} of "
                        f"{self.max_attempts} attempts made); last error: {last}"
                    )
                self.retries += 1
                mark(f"retry {attempt}: {last}; next try in {delay:.2f} s")
                await self._sleep(delay)
        raise ImageServiceUnavailable(
            f"image service at {self.base_url} failed for {what} "
            f"after {self.max_attempts} attempts; last error: {last}"
        )

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        payload: dict[str, Any],
        headers: dict[str, str],
        auth: httpx.Auth | None,
    ) -> tuple[int, bytes, str, str | None]:
        """One POST, its answer read in full but never past the size limit."""
        extra: dict[str, Any] = {"auth": auth} if auth is not None else {}
        url = f"{self._url}/v1/images/generations"
        async with client.stream("POST", url, json=payload, headers=headers, **extra) as response:
            ok = response.status_code == 200
            body = await _read_limited(
                response, self.max_response_bytes if ok else _MAX_ERROR_BODY, refuse=ok
            )
            return (
                response.status_code,
                body,
                response.reason_phrase,
                response.headers.get("retry-after"),
            )

    async def _parse(self, body: bytes, what: str, redact: Redactor) -> GeneratedImage:
        try:
            answer = json.loads(body)
            data = base64.b64decode(answer["data"][0]["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
            raise ImageResponseInvalid(
                f"image service at {self.base_url} sent an unreadable answer for "
                f"{what}: {type(exc).__name__}"
            ) from None
        try:
            # Decoding every pixel takes a moment for a large picture: off the loop.
            fmt, width, height = await asyncio.to_thread(
                decode_image, data, max_pixels=self.max_image_pixels
            )
        except ValueError as exc:
            raise ImageResponseInvalid(
                f"image service at {self.base_url} sent a broken picture for {what}: {redact(exc)}"
            ) from None
        return GeneratedImage(data, fmt, width, height)


async def _read_limited(response: httpx.Response, limit: int, *, refuse: bool) -> bytes:
    """The body, read chunk by chunk. Past ``limit``: raise ``_TooLarge`` if ``refuse``,
    else keep the first ``limit`` bytes. Either way the rest is never read."""
    length = response.headers.get("content-length", "")
    if refuse and length.isdigit() and int(length) > limit:
        raise _TooLarge(int(length))
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            if refuse:
                raise _TooLarge(None)
            return bytes(body[:limit])
    return bytes(body)


def _error_message(body: bytes, reason: str) -> str:
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    except (ValueError, AttributeError):
        pass
    return reason or "error"


def _check_url(url: str, shown: str) -> None:
    try:
        parsed = httpx.URL(url)
    except Exception:  # httpx.InvalidURL and friends
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {shown!r}")
