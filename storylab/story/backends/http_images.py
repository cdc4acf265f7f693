"""Images over HTTP: an OpenAI-compatible ``POST /v1/images/generations`` client.

:class:`HttpImageBackend` implements the same ``generate(ImageRequest)``
protocol as the simulated backend, so a pipeline switches between them by
configuration only. What a remote model needs and a local one does not:

* **timeouts** on connecting and on waiting for the picture;
* **retries with backoff** on connection failures, timeouts, ``429`` and
  ``5xx`` answers. A ``Retry-After`` header (seconds or an HTTP date) is
  honoured; otherwise the wait doubles from ``backoff`` up to
  ``max_backoff``, with jitter so that many clients do not retry in step;
* **secrets from the environment only**: the API key is read from
  ``api_key_env`` at call time and goes into a header, never into entity
  data, progress or traces.

After the last attempt the error says where it tried, how often and what
went wrong last (:class:`ImageServiceUnavailable`). A ``4xx`` other than
``429`` is not retried (:class:`ImageRequestRejected`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
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
    normalize_aspect_ratio,
    normalize_quality,
)

__all__ = [
    "DEFAULT_IMAGES_URL",
    "OPENAI_SIZES",
    "HttpImageBackend",
    "ImageRequestRejected",
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


class ImageServiceUnavailable(ImageBackendError):
    """The image service could not produce an image after every retry."""


class ImageRequestRejected(ImageBackendError):
    """The image service refused the request itself (a 4xx other than 429)."""


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
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str = "gpt-image-1",
        api_key_env: str = "STORYLAB_IMAGES_API_KEY",
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        sizes: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        check_positive_int("max_attempts", max_attempts)
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be > 0")
        self.base_url = base_url or os.environ.get("STORYLAB_IMAGES_URL") or DEFAULT_IMAGES_URL
        self.base_url = self.base_url.rstrip("/")
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
        if key:
            headers["authorization"] = f"Bearer {key}"
        client = self._get_client()
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            retry_after: float | None = None
            try:
                response = await client.post(self.endpoint, json=payload, headers=headers)
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc or 'connection failed'}"
            else:
                if response.status_code == 200:
                    return self._parse(response, request)
                message = _error_message(response)
                if response.status_code not in _RETRY_STATUS:
                    raise ImageRequestRejected(
                        f"image service at {self.base_url} refused the request for "
                        f"{request.placeholder or 'an image'}: "
                        f"HTTP {response.status_code}: {message}"
                    )
                last = f"HTTP {response.status_code}: {message}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt < self.max_attempts:
                self.retries += 1
                delay = self._delay(attempt, retry_after)
                mark(f"retry {attempt}: {last}; next try in {delay:.2f} s")
                await self._sleep(delay)
        raise ImageServiceUnavailable(
            f"image service at {self.base_url} failed for {request.placeholder or 'an image'} "
            f"after {self.max_attempts} attempts; last error: {last}"
        )

    def _parse(self, response: httpx.Response, request: ImageRequest) -> GeneratedImage:
        try:
            body = response.json()
            data = base64.b64decode(body["data"][0]["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
            raise ImageServiceUnavailable(
                f"image service at {self.base_url} sent an unreadable answer for "
                f"{request.placeholder or 'an image'}: {type(exc).__name__}"
            ) from None
        fmt, width, height = _describe(data)
        return GeneratedImage(data, fmt, width, height)


def _error_message(response: httpx.Response) -> str:
    try:
        err = response.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    except (ValueError, AttributeError):
        pass
    return response.reason_phrase or "error"


def _describe(data: bytes) -> tuple[str, int, int]:
    """Format and size of PNG or JPEG bytes (PNG read from its header, JPEG via Pillow)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return (img.format or "jpeg").lower(), img.width, img.height
    except Exception as exc:  # any decoder failure means "not an image"
        raise ImageServiceUnavailable(
            f"image service sent bytes that are not an image: {exc}"
        ) from None
