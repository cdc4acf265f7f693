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


# -- a PostgreSQL graph for the command line ----------------------------------------
PG_ENV = "STORYLAB_TEST_PG"


@pytest.fixture
def pg_graph_url():
    """A ``postgresql://`` graph URL in a fresh schema (dropped afterwards) of
    the database ``$STORYLAB_TEST_PG`` names. Without a server the test skips,
    saying why; with ``$CI`` or ``$STORYLAB_REQUIRE_PG`` set it fails instead,
    as the store's own conformance tests do."""
    import os
    import uuid

    def unavailable(why: str) -> None:
        message = f"PostgreSQL not tested: {why} (.ci/run shows how to start a server)"
        if os.environ.get("CI") or os.environ.get("STORYLAB_REQUIRE_PG"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    base = os.environ.get(PG_ENV, "").strip()
    if not base:
        unavailable(f"${PG_ENV} is not set")
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install 'storylab[postgres]')")
    try:
        psycopg.connect(base, connect_timeout=5).close()
    except psycopg.Error as exc:
        unavailable(f"the server at ${PG_ENV} does not answer ({type(exc).__name__})")
    schema = f"cli_{uuid.uuid4().hex[:12]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
