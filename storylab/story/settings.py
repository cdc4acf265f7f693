"""Settings of the story pipeline: which backends, which limits, which mode.

Entities are revived from the graph by type, so they cannot be handed their
backends through a constructor. They read the *current settings* instead: a
context variable (so two pipelines in one process may use different
backends, and tasks started inside inherit them), falling back to a
process-wide default that ``configure()`` changes.

The global image limit is process-wide on purpose: every pipeline asking
for a global limit of 10 shares the *same* ``CapacitySource(10)``, whatever
story it belongs to. The per-story limit is a fresh source for each run.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from storylab._checks import check_positive_int as _positive_int
from storylab.scheduling import CapacitySource
from storylab.scheduling.capacity import POLICIES, Policy
from storylab.story.backends import (
    ImageBackend,
    SimulatedImageBackend,
    SimulatedTextBackend,
    TextBackend,
)
from storylab.story.models import DEFAULT_MODEL_POOL

__all__ = [
    "DEFAULT_GLOBAL_LIMIT",
    "DEFAULT_STORY_LIMIT",
    "StorySettings",
    "configure",
    "current_settings",
    "global_image_capacity",
    "use_settings",
]

DEFAULT_STORY_LIMIT = 3
DEFAULT_GLOBAL_LIMIT = 10
ImageMode = Literal["parallel", "sequential"]
_MODES = ("parallel", "sequential")


@dataclass(frozen=True)
class StorySettings:
    """Backends, limits and mode used by the story entities.

    ``image_mode="sequential"`` generates one image after another (the
    loop a pipeline starts with), for comparing against the parallel stage.
    ``model_pool`` defaults to ``$IMAGE_MODEL_POOL`` or ``fb-image-gen``.
    """

    images: ImageBackend = field(default_factory=SimulatedImageBackend)
    text: TextBackend = field(default_factory=SimulatedTextBackend)
    story_limit: int = DEFAULT_STORY_LIMIT
    global_limit: int = DEFAULT_GLOBAL_LIMIT
    image_mode: ImageMode = "parallel"
    forward_child_progress: bool = True
    model_pool: str | None = None
    # Wake-up policy of the shared global capacity ("fair" or "fifo"); each
    # (limit, policy) pair has its own process-wide source.
    policy: Policy = "fair"
    # A global limit given as a source, used instead of the process-wide one
    # for ``global_limit``: e.g. a DistributedCapacityRoot shared with other
    # processes through a Dask scheduler.
    global_source: CapacitySource | None = None

    def __post_init__(self) -> None:
        if self.global_source is not None and not isinstance(self.global_source, CapacitySource):
            raise TypeError(
                "global_source must be a CapacitySource or None, got "
                f"{type(self.global_source).__name__}"
            )
        _positive_int("story_limit", self.story_limit)
        _positive_int("global_limit", self.global_limit)
        _check_policy(self.policy)
        if self.image_mode not in _MODES:
            raise ValueError(
                f"image_mode must be one of: {', '.join(_MODES)}; got {self.image_mode!r}"
            )

    @property
    def resolved_model_pool(self) -> str:
        return self.model_pool or os.environ.get("IMAGE_MODEL_POOL") or DEFAULT_MODEL_POOL

    @property
    def global_capacity(self) -> CapacitySource:
        if self.global_source is not None:
            return self.global_source
        return global_image_capacity(self.global_limit, self.policy)


_GLOBALS: dict[tuple[int, str], CapacitySource] = {}


def _check_policy(policy: Any) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of: {', '.join(POLICIES)}; got {policy!r}")


def global_image_capacity(
    limit: int = DEFAULT_GLOBAL_LIMIT, policy: Policy = "fair"
) -> CapacitySource:
    """The process-wide global image capacity for ``limit`` and ``policy``
    (created once, then shared by every pipeline asking for the same pair)."""
    _positive_int("global_limit", limit)
    _check_policy(policy)
    cap = _GLOBALS.get((limit, policy))
    if cap is None:
        name = "global" if limit == DEFAULT_GLOBAL_LIMIT else f"global-{limit}"
        if policy != "fair":
            name = f"{name}-{policy}"
        cap = _GLOBALS[(limit, policy)] = CapacitySource(limit, name=name, policy=policy)
    return cap


_default: StorySettings | None = None
_CURRENT: contextvars.ContextVar[StorySettings | None] = contextvars.ContextVar(
    "storylab_story_settings", default=None
)


def current_settings() -> StorySettings:
    """The settings in effect here: ``use_settings`` if active, else the process default."""
    global _default
    settings = _CURRENT.get()
    if settings is not None:
        return settings
    if _default is None:
        _default = StorySettings()
    return _default


def configure(settings: StorySettings | None = None, **changes: Any) -> StorySettings:
    """Change the process-wide default settings (``configure(images=..., story_limit=2)``)."""
    global _default
    base = settings if settings is not None else current_settings()
    _default = replace(base, **changes) if changes else base
    return _default


@contextlib.contextmanager
def use_settings(settings: StorySettings | None = None, **changes: Any) -> Iterator[StorySettings]:
    """Use these settings inside the ``with`` block (and in tasks started from it)."""
    base = settings if settings is not None else current_settings()
    active = replace(base, **changes) if changes else base
    token = _CURRENT.set(active)
    try:
        yield active
    finally:
        _CURRENT.reset(token)
