"""Seeing a run: live progress, the entity tree as a graph, timelines of capacity.

This layer reads a :class:`~storylab.scheduling.Trace` and an entity graph
store; it never imports the story pipeline. matplotlib, networkx and
ipywidgets are imported inside the functions that need them, so importing
``storylab.viz`` (and the CLI that uses the text progress panel) stays fast
and needs no display.

* :class:`ProgressPanel`: bars per pipeline and a coloured row per child, fed
  with entity envelopes; a widget in Jupyter, lines in a terminal.
* :func:`entity_graph`, :func:`plot_entity_tree`, :class:`LiveEntityTree`:
  the entity tree as a networkx graph and as a top-down picture.
* :func:`plot_timeline`, :func:`plot_capacity`,
  :func:`plot_sequential_vs_parallel`: charts of a traced run, in model
  seconds.
"""

from storylab.viz.graph_plot import LiveEntityTree, entity_graph, plot_entity_tree
from storylab.viz.progress import ProgressPanel, in_jupyter_kernel
from storylab.viz.timeline import (
    makespan,
    plot_capacity,
    plot_sequential_vs_parallel,
    plot_timeline,
    timeline_lanes,
)

__all__ = [
    "LiveEntityTree",
    "ProgressPanel",
    "entity_graph",
    "in_jupyter_kernel",
    "makespan",
    "plot_capacity",
    "plot_entity_tree",
    "plot_sequential_vs_parallel",
    "plot_timeline",
    "timeline_lanes",
]
