"""Seeing a run: live progress, the entity tree as a graph, timelines of capacity.

This layer reads a :class:`~storylab.scheduling.Trace` and an entity graph
store; it never imports the story pipeline. matplotlib, networkx and
ipywidgets are imported inside the functions that need them, so importing
``storylab.viz`` (and the CLI that uses the text progress panel) stays fast
and needs no display.
"""

from storylab.viz.timeline import (
    makespan,
    plot_capacity,
    plot_sequential_vs_parallel,
    plot_timeline,
    timeline_lanes,
)

__all__ = [
    "makespan",
    "plot_capacity",
    "plot_sequential_vs_parallel",
    "plot_timeline",
    "timeline_lanes",
]
