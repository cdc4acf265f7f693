"""Backends of the story pipeline, one small protocol per kind (like httpx transports).

The protocols, the request/result records and the error tree live in
:mod:`storylab.story.backends.base`; every backend has ``aclose()``.

* images: ``await backend.generate(ImageRequest) -> GeneratedImage``;
  :class:`SimulatedImageBackend` (default, offline) or ``HttpImageBackend``
  (OpenAI-compatible HTTP; imported on first use so httpx stays out of the
  default path).
* text: ``await backend.check_safety(topic)`` and
  ``await backend.write_story(topic, customization)``;
  :class:`SimulatedTextBackend` (default, offline) or ``ChatTextBackend``
  (any OpenAI-compatible chat-completions service; its safety check uses
  ``/v1/moderations`` or the chat model).
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
    "TEXT_BACKENDS",
    "ChatTextBackend",
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
    "make_text_backend",
]

IMAGE_BACKENDS = ("simulated", "http")
TEXT_BACKENDS = ("simulated", "http")


def make_image_backend(name: str, **options: Any) -> ImageBackend:
    """An image backend by name: ``simulated`` or ``http``; options go to its constructor."""
    if name == "simulated":
        return SimulatedImageBackend(**options)
    if name == "http":
        from storylab.story.backends.http_images import HttpImageBackend

        return HttpImageBackend(**options)
    raise ValueError(f"Unknown image backend {name!r}. Must be one of: {', '.join(IMAGE_BACKENDS)}")


def make_text_backend(name: str, **options: Any) -> TextBackend:
    """A text backend by name: ``simulated`` or ``http`` (an OpenAI-compatible chat service)."""
    if name == "simulated":
        return SimulatedTextBackend(**options)
    if name == "http":
        from storylab.story.backends.openai_text import ChatTextBackend

        return ChatTextBackend(**options)
    raise ValueError(f"Unknown text backend {name!r}. Must be one of: {', '.join(TEXT_BACKENDS)}")


def __getattr__(name: str) -> Any:
    # Lazy names: importing these pulls in httpx or the HTTP server.
    if name == "HttpImageBackend":
        from storylab.story.backends.http_images import HttpImageBackend

        return HttpImageBackend
    if name == "ChatTextBackend":
        from storylab.story.backends.openai_text import ChatTextBackend

        return ChatTextBackend
    if name == "ImageServer":
        from storylab.story.backends.server import ImageServer

        return ImageServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
