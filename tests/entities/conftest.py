from __future__ import annotations

import pytest

from storylab.entities import EntityGraph


@pytest.fixture
def graph(tmp_path):
    g = EntityGraph.open(tmp_path / "graph.sqlite")
    yield g
    g.close()
