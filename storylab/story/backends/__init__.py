"""Backends of the story pipeline, one small protocol per kind (like httpx transports).

The protocols, the request/result records and the error tree live in
:mod:`storylab.story.backends.base`; every backend has ``aclose()``.

* images: ``await backend.generate(ImageRequest) -> GeneratedImage``;
  :class:`SimulatedImageBackend` (default, offline) or ``HttpImageBackend``
  (OpenAI-compatible HTTP; imported on first use so httpx stays out of the
  default path).
* text: ``await backend.check_safety(topic)`` and
  ``await backend.write_story(topic, customization)``;
  :class:`SimulatedTextBackend` (default, offline).
"""

from __future__ import annotations

from typing import Any

from storylab.story.backends.base import (
    BackendError,
    ContentSafetyResult,
    GeneratedImage,
    ImageBackend,
    ImageBackendError,
    ImageRequest,
    ModerationBackend,
    ModerationBackendError,
    StoryOutputInvalid,
    TextBackend,
    TextBackendError,
)
from storylab.story.backends.images import (
    SimulatedImageBackend,
    SimulatedImageFailure,
    check_time_scale,
)
from storylab.story.backends.text import SimulatedTextBackend

__all__ = [
    "IMAGE_BACKENDS",
    "BackendError",
    "ContentSafetyResult",
    "GeneratedImage",
    "HttpImageBackend",
    "ImageBackend",
    "ImageBackendError",
    "ImageRequest",
    "ImageServer",
    "ModerationBackend",
    "ModerationBackendError",
    "SimulatedImageBackend",
    "SimulatedImageFailure",
    "SimulatedTextBackend",
    "StoryOutputInvalid",
    "TextBackend",
    "TextBackendError",
    "check_time_scale",
    "make_image_backend",
]

IMAGE_BACKENDS = ("simulated", "http")


def make_image_backend(name: str, **options: Any) -> ImageBackend:
    """An image backend by name: ``simulated`` or ``http``; options go to its constructor."""
    if name == "simulated":
        return SimulatedImageBackend(**options)
    if name == "http":
        from storylab.story.backends.http_images import HttpImageBackend

        return HttpImageBackend(**options)
    raise ValueError(f"Unknown image backend {name!r}. Must be one of: {', '.join(IMAGE_BACKENDS)}")


def __getattr__(name: str) -> Any:
    # Lazy names: importing these pulls in httpx or the HTTP server.
    if name == "HttpImageBackend":
        from storylab.story.backends.http_images import HttpImageBackend

        return HttpImageBackend
    if name == "ImageServer":
        from storylab.story.backends.server import ImageServer

        return ImageServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
