"""Seeing a run: live progress, the entity tree as a graph, timelines of capacity.

This layer reads a :class:`~storylab.scheduling.Trace` and an entity graph
store; it never imports the story pipeline. matplotlib, networkx and
ipywidgets are imported inside the functions that need them, so importing
``storylab.viz`` (and the CLI that uses the text progress panel) stays fast
and needs no display.

* :class:`ProgressPanel`: bars per pipeline and a coloured row per child, fed
  with entity envelopes; a widget in Jupyter, lines in a terminal; with
  ``trace=`` a live capacity-tree gauge, with ``compact=True`` a line of
  glyphs per pipeline.
* :func:`replay` / :func:`replay_state`: a time slider over a recorded trace
  (capacity-tree gauge, the panel at that moment, a cursor on the timeline),
  and the same state as plain data for tests and text.
* :func:`entity_graph`, :func:`plot_entity_tree`, :class:`LiveEntityTree`:
  the entity tree as a networkx graph and as a top-down picture.
* :func:`plot_timeline`, :func:`plot_timelines`, :func:`plot_capacity`,
  :func:`plot_sequential_vs_parallel`, :func:`plot_in_use`,
  :func:`plot_children`: charts of traced runs, in model seconds counted
  from one origin (:func:`time_origin`, the first event), with the makespan
  bracketed and key moments marked (:func:`key_moments`,
  :func:`mark_moments`). Every figure keeps a one-line text equivalent
  built from its numbers (:func:`figure_summary`; also its ``text/plain``).
* :class:`storylab.viz.knobs.Knobs`: sliders over a simulated run (made by
  ``storylab.sweep.knobs()``, which hands it the simulation).
* :func:`plot_sweep_heatmaps`, :func:`plot_sweep_lines`,
  :func:`plot_simulated_vs_wall`: charts of a limits sweep.
* :mod:`storylab.viz.readings`: the numbers behind the charts (units in use
  at a moment, peaks, hand-offs, retries marked, how busy a pool was, how
  many children the graph held while a run went on).
* Colours are Okabe and Ito's colour-blind-safe set (:mod:`._palette`), and
  never the only cue: statuses have glyphs, waits hatches and words;
  ``story:…`` sources read ``story A``, ``story B``… (:func:`source_labels`).
"""

from storylab.viz.crash_plot import picture_times, plot_kill_and_resume
from storylab.viz.graph_plot import LiveEntityTree, entity_graph, plot_entity_tree
from storylab.viz.labels import source_labels, task_label
from storylab.viz.progress import (
    LevelState,
    PipelineProgress,
    ProgressPanel,
    ReplayState,
    RowState,
    TraceReplay,
    WaitState,
    in_jupyter_kernel,
    replay,
    replay_state,
    static_snapshot_html,
)
from storylab.viz.readings import (
    ChildCounter,
    Handoff,
    Moment,
    PoolUse,
    all_asked_at,
    first_full,
    handoffs,
    in_use_at,
    in_use_series,
    key_moments,
    marks,
    model_time,
    peaks_in_use,
    pool_use,
    root_source,
    story_sources,
    time_origin,
)
from storylab.viz.sweep_plots import plot_simulated_vs_wall, plot_sweep_heatmaps, plot_sweep_lines
from storylab.viz.timeline import (
    figure_summary,
    makespan,
    mark_moments,
    plot_capacity,
    plot_children,
    plot_in_use,
    plot_sequential_vs_parallel,
    plot_timeline,
    plot_timelines,
    timeline_lanes,
)

__all__ = [
    "ChildCounter",
    "Handoff",
    "LevelState",
    "LiveEntityTree",
    "Moment",
    "PipelineProgress",
    "PoolUse",
    "ProgressPanel",
    "ReplayState",
    "RowState",
    "TraceReplay",
    "WaitState",
    "all_asked_at",
    "entity_graph",
    "figure_summary",
    "first_full",
    "handoffs",
    "in_jupyter_kernel",
    "in_use_at",
    "in_use_series",
    "key_moments",
    "makespan",
    "mark_moments",
    "marks",
    "model_time",
    "peaks_in_use",
    "plot_capacity",
    "plot_children",
    "picture_times",
    "plot_entity_tree",
    "plot_kill_and_resume",
    "plot_in_use",
    "plot_sequential_vs_parallel",
    "plot_simulated_vs_wall",
    "plot_sweep_heatmaps",
    "plot_sweep_lines",
    "plot_timeline",
    "plot_timelines",
    "pool_use",
    "replay",
    "replay_state",
    "root_source",
    "source_labels",
    "static_snapshot_html",
    "story_sources",
    "task_label",
    "time_origin",
    "timeline_lanes",
]
