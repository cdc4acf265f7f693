from __future__ import annotations

import pytest

from storylab.entities import EntityGraph
from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.settings import StorySettings

FAST = 0.001  # 10 model seconds per image -> 10 ms

# The variables an OpenAI-compatible client reads as fallbacks: a developer's own
# key or service must never be picked up (or billed) by a test.
_SERVICE_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "STORYLAB_IMAGES_URL",
    "STORYLAB_IMAGES_API_KEY",
    "STORYLAB_TEXT_URL",
    "STORYLAB_TEXT_API_KEY",
    "STORYLAB_TEXT_MODEL",
    "STORYLAB_IMAGES_MODEL",
)


@pytest.fixture(autouse=True)
def _no_service_from_the_environment(monkeypatch):
    for name in _SERVICE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def graph(tmp_path):
    g = EntityGraph.open(tmp_path / "graph.sqlite")
    yield g
    g.close()


@pytest.fixture
def fast_settings():
    """A factory of settings with fast simulated backends (fresh counters each call)."""
    return make_fast_settings


def make_fast_settings(*, fail=(), slow=(), images=None, **changes) -> StorySettings:
    return StorySettings(
        images=images or SimulatedImageBackend(time_scale=FAST, fail=fail, slow=slow),
        text=SimulatedTextBackend(time_scale=FAST),
        **changes,
    )
