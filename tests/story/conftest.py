from __future__ import annotations

import pytest

from storylab.entities import EntityGraph
from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.settings import StorySettings

FAST = 0.001  # 10 model seconds per image -> 10 ms


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
