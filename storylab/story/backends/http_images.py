"""Images over HTTP: an OpenAI-compatible ``POST /v1/images/generations`` client.

:class:`HttpImageBackend` implements the same ``generate(ImageRequest)``
protocol as the simulated backend, so a pipeline switches between them by
configuration only. Timeouts, deadlines, size limits, retries and secrets
are the shared HTTP layer's (:mod:`storylab.story.backends.http`); this
module knows the images API's *contract*, which differs per model family:

==============  ==========================================  ====================  ===============
family          sizes                                        quality               response_format
==============  ==========================================  ====================  ===============
``gpt-image``   1024x1024, 1536x1024, 1024x1536              low, medium, high     never sent (the
                                                                                   answer is always
                                                                                   ``b64_json``)
``dall-e-3``    1024x1024, 1792x1024, 1024x1792              standard, hd          ``b64_json``
``dall-e-2``    256x256, 512x512, 1024x1024                  not sent              ``b64_json``
other names     as ``gpt-image``                             low, medium, high     ``b64_json``
==============  ==========================================  ====================  ===============

Only the parameters a family accepts are sent: a hosted API answers an
unknown one with ``400`` and retrying does not help. The story's aspect
ratio is mapped to the family's nearest size (by shape, then by the long
side the quality asks for), and the picture records both the size asked for
and the size sent. A request no family size can serve (a ``sizes=`` override
the model does not accept, an aspect ratio or a quality storylab does not
know) is refused before any call, naming the field and the allowed values.

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
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storylab._checks import check_positive_int
from storylab.story.backends.base import (
    GeneratedImage,
    ImageBackendError,
    ImageRequest,
)
from storylab.story.backends.http import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    DeadlineExceeded,
    ErrorKinds,
    HttpService,
    RequestRejected,
    ResponseInvalid,
    ServiceUnavailable,
    Wording,
    first_env,
    parse_retry_after,
)
from storylab.story.backends.images import (
    ASPECT_RATIOS,
    QUALITY_LONG_SIDE,
    decode_image,
    image_size,
)
from storylab.story.models import DEFAULT_MODEL_POOL
from storylab.story.redaction import Redactor

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "DEFAULT_IMAGES_MODEL",
    "DEFAULT_IMAGES_URL",
    "DEFAULT_IMAGE_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "FAMILIES",
    "ImageFamily",
    "HttpImageBackend",
    "ImageDeadlineExceeded",
    "ImageRequestRejected",
    "ImageResponseInvalid",
    "ImageServiceUnavailable",
    "family_of",
    "parse_retry_after",
]

DEFAULT_IMAGES_URL = "http://127.0.0.1:8765"
DEFAULT_IMAGES_MODEL = "gpt-image-1.5"
DEFAULT_IMAGE_TIMEOUT = 600.0
IMAGES_PATH = "/v1/images/generations"


class ImageServiceUnavailable(ImageBackendError, ServiceUnavailable):
    """The image service could not produce an image after every retry."""


class ImageRequestRejected(ImageBackendError, RequestRejected):
    """The image service refused the request itself (a 4xx other than 429), or storylab
    refused it before sending because the model cannot serve it."""


class ImageDeadlineExceeded(ImageServiceUnavailable, DeadlineExceeded):
    """The image's deadline (all attempts and waits) ended before a picture came back."""


class ImageResponseInvalid(ImageServiceUnavailable, ResponseInvalid):
    """The service answered, but not with a usable picture (too large, unreadable, broken)."""


_ERRORS = ErrorKinds(
    unavailable=ImageServiceUnavailable,
    deadline=ImageDeadlineExceeded,
    invalid=ImageResponseInvalid,
    rejected=ImageRequestRejected,
)


@dataclass(frozen=True, slots=True)
class ImageFamily:
    """What one family of image models accepts (see the module doc's table)."""

    name: str
    sizes: tuple[str, ...]
    # storylab quality -> the API's word; None: the parameter is not sent.
    quality: Mapping[str, str] | None
    # Sent as response_format: b64_json; False where the API refuses the parameter.
    response_format: bool

    def payload(self, model: str, prompt: str, size: str, quality: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "n": 1, "size": size}
        if self.quality is not None:
            body["quality"] = self.quality[quality]
        if self.response_format:
            body["response_format"] = "b64_json"
        return body

    def nearest_size(self, aspect_ratio: str, quality: str) -> str:
        """The accepted size closest in shape to the ratio, then in long side to the quality."""
        w, h = ASPECT_RATIOS[aspect_ratio]
        want_shape, want_long = math.log(w / h), math.log(QUALITY_LONG_SIDE[quality])

        def distance(size: str) -> tuple[float, float]:
            sw, sh = _dims(size)
            return abs(math.log(sw / sh) - want_shape), abs(math.log(max(sw, sh)) - want_long)

        return min(self.sizes, key=distance)


_GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536")
_SAME_QUALITY = {"low": "low", "medium": "medium", "high": "high"}
FAMILIES: dict[str, ImageFamily] = {
    "gpt-image": ImageFamily("gpt-image", _GPT_SIZES, _SAME_QUALITY, response_format=False),
    "dall-e-3": ImageFamily(
        "dall-e-3",
        ("1024x1024", "1792x1024", "1024x1792"),
        {"low": "standard", "medium": "standard", "high": "hd"},
        response_format=True,
    ),
    "dall-e-2": ImageFamily(
        "dall-e-2", ("256x256", "512x512", "1024x1024"), None, response_format=True
    ),
    # Any other name: an OpenAI-compatible server of its own (LocalAI, storylab's
    # own); the common sizes, and b64_json asked for since many default to URLs.
    "other": ImageFamily("other", _GPT_SIZES, _SAME_QUALITY, response_format=True),
}


def family_of(model: str) -> ImageFamily:
    """The family a model name belongs to (``gpt-image-1-mini`` -> ``gpt-image``)."""
    name = model.strip().lower()
    if name.startswith(("gpt-image", "chatgpt-image")):
        return FAMILIES["gpt-image"]
    if name.startswith("dall-e-3"):
        return FAMILIES["dall-e-3"]
    if name.startswith("dall-e-2"):
        return FAMILIES["dall-e-2"]
    return FAMILIES["other"]


def _dims(size: str) -> tuple[int, int]:
    w, _, h = size.lower().partition("x")
    return int(w), int(h)


def _check_sizes(sizes: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for ratio, size in sizes.items():
        if ratio not in ASPECT_RATIOS:
            raise ValueError(
                f"sizes: unknown aspect ratio {ratio!r}; allowed: {', '.join(ASPECT_RATIOS)}"
            )
        try:
            w, h = _dims(str(size))
        except ValueError:
            w = h = 0
        if w <= 0 or h <= 0:
            raise ValueError(f"sizes[{ratio!r}] must be WIDTHxHEIGHT, got {size!r}")
        out[ratio] = f"{w}x{h}"
    return out


class HttpImageBackend:
    """Generate images with an OpenAI-compatible HTTP service (see the module doc).

    ``base_url`` defaults to ``$STORYLAB_IMAGES_URL``, then ``$OPENAI_BASE_URL``,
    then a local ``storylab serve-images``; it may end in ``/v1`` or not. The
    key is read at call time from ``api_key_env``, then ``$OPENAI_API_KEY``.
    ``model`` is used unless the request's ``model_pool`` names a model (any
    pool but the tutorial's default). ``image_timeout`` bounds one image, every
    attempt and wait included, in seconds; ``sizes`` maps an aspect ratio to
    the size sent, instead of the family's nearest size. The other options
    are the shared HTTP layer's (:class:`~storylab.story.backends.http.HttpService`):
    ``timeout`` (each read), ``connect_timeout``, ``attempt_timeout`` (one
    whole attempt: connect, send, the whole answer), ``max_response_bytes``,
    ``max_attempts`` (the first try included), ``backoff``, ``max_backoff``,
    ``max_retry_after``, ``transport`` and ``sleep``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str = DEFAULT_IMAGES_MODEL,
        api_key_env: str = "STORYLAB_IMAGES_API_KEY",
        image_timeout: float = DEFAULT_IMAGE_TIMEOUT,
        max_image_pixels: int = 40_000_000,
        sizes: Mapping[str, str] | None = None,
        **http: Any,
    ) -> None:
        check_positive_int("max_image_pixels", max_image_pixels)
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a model's name, got {model!r}")
        url = base_url or first_env("STORYLAB_IMAGES_URL", "OPENAI_BASE_URL") or DEFAULT_IMAGES_URL
        # timeout, connect_timeout, attempt_timeout, max_response_bytes, max_attempts,
        # backoff, max_backoff, max_retry_after, transport, sleep: the shared layer's.
        self._http = HttpService(
            url,
            key_envs=(api_key_env, "OPENAI_API_KEY"),
            wording=Wording("image service", "picture", "image"),
            errors=_ERRORS,
            call_timeout=image_timeout,
            call_timeout_name="image_timeout",
            **http,
        )
        self.max_image_pixels = max_image_pixels
        self.model = model.strip()
        self.api_key_env = api_key_env
        self.sizes = _check_sizes(sizes) if sizes is not None else None
        if self.sizes is not None:
            self._check_family_sizes(self.model, "sizes")

    def __repr__(self) -> str:
        return f"HttpImageBackend({self.base_url!r}, model={self.model!r})"

    # The shared layer's settings, read where they always were.
    base_url = property(lambda self: self._http.base_url, doc="The URL as it may be shown.")
    attempts = property(lambda self: self._http.attempts, doc="Every HTTP attempt made.")
    retries = property(lambda self: self._http.retries, doc="Attempts that were retries.")
    attempt_timeout = property(lambda self: self._http.attempt_timeout)
    image_timeout = property(lambda self: self._http.call_timeout)
    max_response_bytes = property(lambda self: self._http.max_response_bytes)
    max_attempts = property(lambda self: self._http.max_attempts)

    @property
    def endpoint(self) -> str:
        """The generations endpoint as it may be shown (credentials redacted)."""
        return self._http.endpoint(IMAGES_PATH)

    async def aclose(self) -> None:
        await self._http.aclose()

    def model_for(self, request: ImageRequest) -> str:
        """The model asked for: the request's pool when it names one, else ``model``."""
        pool = (request.model_pool or "").strip()
        return pool if pool and pool != DEFAULT_MODEL_POOL else self.model

    def _check_family_sizes(self, model: str, field: str) -> None:
        family = family_of(model)
        if family.name == "other" or self.sizes is None:
            return
        for ratio, size in self.sizes.items():
            if size not in family.sizes:
                raise ImageRequestRejected(
                    f"{field}: {model} does not accept size {size} (for {ratio}); allowed: "
                    f"{', '.join(family.sizes)}"
                )

    def plan(self, request: ImageRequest) -> tuple[str, dict[str, Any], str]:
        """``(model, body, requested size)`` for ``request``, checked before any call.

        Raises :class:`ImageRequestRejected` naming the field and the allowed
        values when the model cannot serve it.
        """
        if request.quality not in QUALITY_LONG_SIDE:
            raise ImageRequestRejected(
                f"quality {request.quality!r} is not one storylab knows; allowed: "
                f"{', '.join(QUALITY_LONG_SIDE)}"
            )
        if request.aspect_ratio not in ASPECT_RATIOS:
            raise ImageRequestRejected(
                f"aspect_ratio {request.aspect_ratio!r} is not one storylab knows; allowed: "
                f"{', '.join(ASPECT_RATIOS)}"
            )
        model = self.model_for(request)
        family = family_of(model)
        if self.sizes is not None and request.aspect_ratio in self.sizes:
            self._check_family_sizes(model, "sizes")
            size = self.sizes[request.aspect_ratio]
        else:
            size = family.nearest_size(request.aspect_ratio, request.quality)
        w, h = image_size(request.quality, request.aspect_ratio)
        body = family.payload(model, request.prompt, size, request.quality)
        return model, body, f"{w}x{h} ({request.aspect_ratio}, {request.quality})"

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        model, payload, requested = self.plan(request)
        headers = {}
        if request.placeholder:
            # Ignored by hosted services; lets the local server inject faults per image.
            headers["x-storylab-placeholder"] = request.placeholder
        what = request.placeholder or "an image"
        body = await self._http.post_json(IMAGES_PATH, payload, what=what, headers=headers)
        image = await self._parse(body, what, self._http.redactor())
        return GeneratedImage(
            image.data,
            image.format,
            image.width,
            image.height,
            model=model,
            requested_size=requested,
            size=payload["size"],
        )

    async def _parse(self, body: bytes, what: str, redact: Redactor) -> GeneratedImage:
        where = f"image service at {self.base_url}"
        try:
            answer = json.loads(body)
            item = answer["data"][0]
            if "b64_json" not in item and item.get("url"):
                raise ImageResponseInvalid(
                    f"{where} answered {what} with a URL, not the base64 picture asked for "
                    "(response_format b64_json)"
                )
            data = base64.b64decode(item["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
            raise ImageResponseInvalid(
                f"{where} sent an unreadable answer for {what}: {type(exc).__name__}"
            ) from None
        try:
            # Decoding every pixel takes a moment for a large picture: off the loop.
            fmt, width, height = await asyncio.to_thread(
                decode_image, data, max_pixels=self.max_image_pixels
            )
        except ValueError as exc:
            raise ImageResponseInvalid(
                f"{where} sent a broken picture for {what}: {redact(exc)}"
            ) from None
        return GeneratedImage(data, fmt, width, height)
