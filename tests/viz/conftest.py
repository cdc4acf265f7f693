"""Fixtures for the viz tests (helpers live in ``vizkit.py``).

Figures are drawn with the headless Agg backend; every test closes what it
opens so pyplot does not keep figures alive between tests.
"""

from __future__ import annotations

import pytest
from vizkit import in_virtual_time, run_sequential, run_stories

from storylab.entities import EntityGraph


@pytest.fixture(autouse=True)
def _agg_backend():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


@pytest.fixture
def stories():
    return run_stories


@pytest.fixture
def sequential():
    return run_sequential


@pytest.fixture
def virtual_stories():
    """:func:`vizkit.run_stories` in virtual time."""
    return in_virtual_time(run_stories)


@pytest.fixture
def virtual_sequential():
    """:func:`vizkit.run_sequential` in virtual time."""
    return in_virtual_time(run_sequential)


@pytest.fixture
def graph(tmp_path):
    g = EntityGraph.open(tmp_path / "graph.sqlite")
    yield g
    g.close()
