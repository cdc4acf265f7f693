"""The entity graph in one SQLite file: :class:`EntityGraph`.

The store itself is the package :mod:`storylab.entities.sqlite` (its
docstring has the design: group commits, leases, fencing, waiting for the
lock), in parts: :mod:`~storylab.entities.sqlite.store` (opening and the
shared state), :mod:`~storylab.entities.sqlite.transactions`,
:mod:`~storylab.entities.sqlite.leases`, :mod:`~storylab.entities.sqlite.queries`,
:mod:`~storylab.entities.sqlite.writes`, and :mod:`~storylab.entities.sqlite.schema`.
This module keeps the names everything imports.
"""

from __future__ import annotations

from storylab.entities.encoding import dumps
from storylab.entities.records import HOST, EntityStatus, LeaseRecord, NodeRecord
from storylab.entities.sqlite import (
    APPLICATION_ID,
    COMMIT_MODES,
    SCHEMA_VERSION,
    EntityGraph,
    default_graph_path,
)

__all__ = [
    "APPLICATION_ID",
    "COMMIT_MODES",
    "HOST",
    "SCHEMA_VERSION",
    "EntityGraph",
    "EntityStatus",
    "LeaseRecord",
    "NodeRecord",
    "default_graph_path",
    "dumps",
]
