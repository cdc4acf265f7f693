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
    "OKABE_ITO",
    "REUSED_COLOUR",
    "SERIES",
    "WAIT_COLOURS",
    "Status",
    "status_colour",
    "series_style",
    "status_from_node",
]


class Status(StrEnum):
    """What a learner sees of a task or an entity, in the tutorial's words."""

    WAITING = "waiting for capacity"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Okabe & Ito's colour-blind-safe set (2008): the eight colours stay apart for
# the common colour-vision deficiencies. Colour is never the only cue: every
# status also has a glyph (· ▶ ✓ ✗ ⊘) or a word, waits a hatch and a label.
OKABE_ITO = {
    "orange": "#e69f00",
    "sky blue": "#56b4e9",
    "bluish green": "#009e73",
    "yellow": "#f0e442",
    "blue": "#0072b2",
    "vermillion": "#d55e00",
    "reddish purple": "#cc79a7",
    "black": "#000000",
}

COLOURS: dict[Status, str] = {
    Status.WAITING: "#767676",  # grey dark enough to read as text on white (4.5:1)
    Status.RUNNING: OKABE_ITO["blue"],
    Status.COMPLETED: OKABE_ITO["bluish green"],
    Status.FAILED: OKABE_ITO["vermillion"],
    Status.CANCELLED: OKABE_ITO["reddish purple"],
}

# Waiting bars on the timeline, by which level of the capacity tree held them.
# Index 0 is the task's own (leaf) limit, 1 its parent (the global limit), ...
WAIT_COLOURS: tuple[str, ...] = (OKABE_ITO["orange"], OKABE_ITO["sky blue"],
                                 OKABE_ITO["yellow"], "#bbbbbb")
# Marks inside a task (an HTTP retry, say): dark so they read on any bar.
MARK_COLOUR = OKABE_ITO["black"]
# Something taken from the graph instead of being run again (a resumed story's
# finished pictures): its own colour and, where drawn, a dotted outline.
REUSED_COLOUR = OKABE_ITO["reddish purple"]

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
BAR_COLOURS = {"success": OKABE_ITO["bluish green"], "warning": OKABE_ITO["orange"],
               "danger": OKABE_ITO["vermillion"], "info": OKABE_ITO["sky blue"],
               "": OKABE_ITO["blue"]}

# Several runs on one chart: colours in this order, each with its own line
# style, so two lines stay apart in grey print too.
SERIES: tuple[tuple[str, str], ...] = (
    (OKABE_ITO["blue"], "-"),
    (OKABE_ITO["orange"], "--"),
    (OKABE_ITO["bluish green"], "-."),
    (OKABE_ITO["reddish purple"], ":"),
    (OKABE_ITO["sky blue"], "-"),
    (OKABE_ITO["vermillion"], "--"),
)


def series_style(i: int) -> tuple[str, str]:
    """(colour, line style) of the ``i``-th line of a chart."""
    return SERIES[i % len(SERIES)]
