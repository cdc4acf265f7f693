"""What every backend of the story pipeline promises: three small protocols.

The pipeline never names a service. It asks a *text* backend to write a
story, an *image* backend to draw one picture, and a *moderation* backend
(or the text backend itself) whether a topic suits children. Each is a
protocol, like an httpx transport: the simulated backends that run offline
and the HTTP backends that talk to an OpenAI-compatible service implement
the same calls, so a pipeline switches between them by configuration only.

Every backend also has ``aclose()``: an HTTP backend holds a connection pool
that must be closed on the loop that opened it; an offline one has nothing
to close and returns at once. Whoever builds a backend closes it.

The errors form one small tree a caller can catch at the level it cares
about::

    BackendError
    ├── ImageBackendError        a picture could not be made
    ├── TextBackendError         the writer failed
    │   └── StoryOutputInvalid   ... it answered, but not with a usable story
    └── ModerationBackendError   the safety check could not give a verdict

(:mod:`storylab.story.backends.http` adds the transport errors: unavailable,
rejected, out of time, unreadable answer.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from storylab.errors import StorylabError
from storylab.story.models import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_IMAGE_QUALITY,
    DEFAULT_MODEL_POOL,
    ContentSafetyResult,
    StoryOutput,
)

__all__ = [
    "BackendError",
    "ContentSafetyResult",
    "GeneratedImage",
    "ImageBackend",
    "ImageBackendError",
    "ImageRequest",
    "ModerationBackend",
    "ModerationBackendError",
    "StoryOutputInvalid",
    "TextBackend",
    "TextBackendError",
]


class BackendError(StorylabError):
    """A backend could not do what the pipeline asked. Subclasses say which and why."""


class ImageBackendError(BackendError):
    """An image could not be generated. Subclasses say why."""


class TextBackendError(BackendError):
    """The writer could not produce a story."""


class StoryOutputInvalid(TextBackendError):
    """The writer answered, but its answer is not a usable story; the message names the field."""


class ModerationBackendError(BackendError):
    """The safety check could not reach a verdict (the service failed or answered nonsense)."""


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What the image entity asks for. Unknown quality/ratio fall back to the defaults.

    ``model_pool`` is the pool the entity was created with; an HTTP backend
    uses it as the model's name when it names a model it knows.
    """

    prompt: str
    placeholder: str = ""
    quality: str = DEFAULT_IMAGE_QUALITY.value
    aspect_ratio: str = DEFAULT_ASPECT_RATIO.value
    model_pool: str = DEFAULT_MODEL_POOL


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """A picture as it came back: its bytes, format and size in pixels.

    A remote backend also says which ``model`` drew it and which ``size`` it
    asked for (``"1536x1024"``), next to ``requested_size`` (the size the
    aspect ratio and quality asked for before it was mapped to one the model
    accepts); the image entity stores these with the picture's data.
    """

    data: bytes
    format: str  # "png" or "jpeg"
    width: int
    height: int
    model_seconds: float | None = None
    model: str | None = None
    requested_size: str | None = None
    size: str | None = None


@runtime_checkable
class ImageBackend(Protocol):
    async def generate(self, request: ImageRequest) -> GeneratedImage: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ModerationBackend(Protocol):
    """Says whether a topic suits a children's story, and who said so (``source``)."""

    async def check_safety(self, topic: str) -> ContentSafetyResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TextBackend(Protocol):
    """Writes the story; checks the topic's safety too (itself, or through a moderation backend)."""

    async def check_safety(self, topic: str) -> ContentSafetyResult: ...

    async def write_story(
        self, topic: str, customization: Mapping[str, Any] | None = None
    ) -> StoryOutput: ...

    async def aclose(self) -> None: ...
