"""Text backends: the safety check and the story writer.

One protocol, :class:`TextBackend`, with two calls: ``check_safety(topic)``
and ``write_story(topic, customization)``. The default,
:class:`SimulatedTextBackend`, needs no network and no model: the rule-based
check of :mod:`storylab.story.offline.safety` and the seeded writer of
:mod:`storylab.story.offline.writing` (a character the topic names is the
hero, a subject it names is what the story is about, its theme picks the
plot). Both take a little simulated time (model seconds times
``time_scale``), so stage timings look plausible.

The writer honours the customization the way a prompted model would: the
number of illustrations, the age range (shorter sentences for the youngest)
and the style (each image prompt carries the style's description, and the
same description of the hero, so pictures can keep its look). Every piece of
user text it puts into HTML is escaped.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

from storylab.story.backends.base import TextBackend
from storylab.story.backends.images import check_time_scale
from storylab.story.models import ContentSafetyResult, StoryOutput
from storylab.story.offline.safety import SAFE_THRESHOLD, assess_topic
from storylab.story.offline.themes import THEMES
from storylab.story.offline.writing import StoryPlan, plan_offline_story, write_offline_story

__all__ = [
    "SAFE_THRESHOLD",
    "THEMES",
    "SimulatedTextBackend",
    "StoryPlan",
    "TextBackend",
    "assess_topic",
    "plan_offline_story",
    "write_offline_story",
]


class SimulatedTextBackend:
    """Offline safety check and story writer with simulated model latency.

    ``safety_seconds`` and ``writer_seconds`` are model seconds, multiplied
    by ``time_scale``. ``calls`` counts ``"safety"`` and ``"writer"`` calls.
    """

    def __init__(
        self,
        *,
        time_scale: float = 0.05,
        seed: int = 0,
        safety_seconds: float = 1.0,
        writer_seconds: float = 4.0,
    ) -> None:
        self.time_scale = check_time_scale(time_scale)
        self.seed = seed
        self.safety_seconds = safety_seconds
        self.writer_seconds = writer_seconds
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"SimulatedTextBackend(time_scale={self.time_scale}, seed={self.seed})"

    async def check_safety(self, topic: str) -> ContentSafetyResult:
        self.calls["safety"] += 1
        await asyncio.sleep(self.safety_seconds * self.time_scale)
        return assess_topic(topic)

    async def write_story(
        self, topic: str, customization: Mapping[str, Any] | None = None
    ) -> StoryOutput:
        self.calls["writer"] += 1
        await asyncio.sleep(self.writer_seconds * self.time_scale)
        return write_offline_story(topic, customization, seed=self.seed)

    async def aclose(self) -> None:
        """Nothing to close: the offline writer holds no connection."""
