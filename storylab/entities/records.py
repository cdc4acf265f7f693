"""What the entity store hands out: node and lease records, statuses, ids.

These are plain values, the same whatever store holds the graph (see
:mod:`storylab.entities.store`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "EDGE_PREFIX",
    "HOST",
    "LEASE_EXPIRED",
    "LEASE_LIVE",
    "LEASE_OWNER_GONE",
    "EntityStatus",
    "LeaseRecord",
    "NodeRecord",
    "edge",
    "new_id",
    "node_record",
    "pid_alive",
]

# are not a table of their own: the edge is the node's ``parent_id``, its
# position is the node's rank among its siblings in creation (rowid) order,
# and its id is derived from the child's id.
EDGE_PREFIX = "calls-"


class EntityStatus(StrEnum):
    """A node's stored status. The values are what the tree listing prints."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as stored: what ``storylab eg node`` prints."""

    id: str
    name: str
    type: str
    status: str
    data: dict
    parent_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: dict | None
    output: Any
    call_path: str | None = None
    """The child's key under its parent: its name, prefixed by the
    ``label/key`` frames of the condition branches it was created in
    (``safety-gate/safe/story-writer``). ``None`` for a root entity."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


LEASE_LIVE, LEASE_EXPIRED, LEASE_OWNER_GONE = "live", "expired", "owner gone"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """Who runs a node right now, as stored (see :meth:`EntityGraph.lease`)."""

    node_id: str
    owner: str
    """``host:pid`` of the owning process."""
    host: str
    pid: int
    token: str
    """Random per open graph: only its holder may store the node's result."""
    taken_at: float
    heartbeat_at: float
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, it is someone else's
        return True
    # A process killed but not yet reaped by its parent still answers signal 0.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


HOST = socket.gethostname()


# Records are made once per node written or read. A frozen dataclass's
# __init__ sets its fields one object.__setattr__ at a time; setting the slots
# directly builds the same immutable object in a third of the time.
_NODE_SETTERS = tuple(getattr(NodeRecord, f.name).__set__ for f in dataclasses.fields(NodeRecord))


(
    _set_id,
    _set_name,
    _set_type,
    _set_status,
    _set_data,
    _set_parent_id,
    _set_created_at,
    _set_started_at,
    _set_finished_at,
    _set_error,
    _set_output,
    _set_call_path,
) = _NODE_SETTERS


def node_record(
    id, name, type, status, data, parent_id, created_at, started_at, finished_at, error, output,
    call_path,
) -> NodeRecord:  # fmt: skip
    record = object.__new__(NodeRecord)
    _set_id(record, id)
    _set_name(record, name)
    _set_type(record, type)
    _set_status(record, status)
    _set_data(record, data)
    _set_parent_id(record, parent_id)
    _set_created_at(record, created_at)
    _set_started_at(record, started_at)
    _set_finished_at(record, finished_at)
    _set_error(record, error)
    _set_output(record, output)
    _set_call_path(record, call_path)
    return record


def new_id() -> str:
    """A UUID version 7 string: random, but ordered by creation time.

    Time-ordered keys append to the right edge of SQLite's B-trees instead of
    landing on a random page, so a commit writes a few pages, not dozens."""
    ms = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"  # 48 bits of milliseconds
    r = os.urandom(10).hex()  # 74 of these 80 random bits are used
    variant = "89ab"[int(r[3], 16) & 3]  # the two top bits are 10 (RFC 9562)
    return f"{ms[:8]}-{ms[8:]}-7{r[:3]}-{variant}{r[4:7]}-{r[8:20]}"


_ENTITY_BASE: list[type] = []


def edge(source: str, target: str, position: int) -> dict[str, Any]:
    return {
        "id": EDGE_PREFIX + target,
        "source": source,
        "target": target,
        "edge_type": "Calls",
        "position": position,
    }
