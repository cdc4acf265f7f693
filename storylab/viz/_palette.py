"""One set of colours for every picture, so a status looks the same everywhere.

A learner who has seen a red row in the progress panel should find the same
red on the failed node of the entity tree and on the failed bar of the
timeline. Colours are plain hex strings (no plotting library needed).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BAR_COLOURS",
    "COLOURS",
    "MARK_COLOUR",
    "WAIT_COLOURS",
    "Status",
    "status_colour",
    "status_from_node",
]


class Status(StrEnum):
    """What a learner sees of a task or an entity, in the tutorial's words."""

    WAITING = "waiting for capacity"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


COLOURS: dict[Status, str] = {
    Status.WAITING: "#9e9e9e",  # grey: exists (or is announced) but holds no unit yet
    Status.RUNNING: "#1f77b4",  # blue
    Status.COMPLETED: "#2ca02c",  # green
    Status.FAILED: "#d62728",  # red
    Status.CANCELLED: "#8c564b",  # brown
}

# Waiting bars on the timeline, by which level of the capacity tree held them.
# Index 0 is the task's own (leaf) limit, 1 its parent (the global limit), ...
WAIT_COLOURS: tuple[str, ...] = ("#ffbb78", "#c5b0d5", "#f7b6d2", "#dbdb8d")
# Marks inside a task (an HTTP retry, say): dark so they read on any bar.
MARK_COLOUR = "#7b1fa2"

# Entity node statuses as stored in the graph ("Pending", "InProgress", ...).
_NODE_STATUS = {
    "Pending": Status.WAITING,
    "InProgress": Status.RUNNING,
    "Completed": Status.COMPLETED,
    "Failed": Status.FAILED,
    "Cancelled": Status.CANCELLED,
}


def status_from_node(node_status: str) -> Status:
    """Map a stored entity status (``"Pending"``...) to a display status."""
    try:
        return _NODE_STATUS[node_status]
    except KeyError:
        raise ValueError(
            f"status must be one of {', '.join(_NODE_STATUS)}; got {node_status!r}"
        ) from None


def status_colour(status: Status | str) -> str:
    return COLOURS[Status(status)]


# Progress bars drawn as plain HTML (the static snapshot), by ipywidgets bar style.
BAR_COLOURS = {"success": "#5cb85c", "warning": "#f0ad4e", "danger": "#d9534f",
               "info": "#5bc0de", "": "#428bca"}
