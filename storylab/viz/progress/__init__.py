"""Progress you can watch live and scrub afterwards.

* :mod:`.model`: what is known about each pipeline and child, built from
  entity envelopes (:class:`ProgressModel`) into frozen snapshots
  (:class:`PipelineProgress`, :class:`RowState`);
* :mod:`.panel`: :class:`ProgressPanel`, the live panel, which picks its form
  from the environment: :mod:`.widget` in a Jupyter kernel (ipywidgets, plus a
  static HTML snapshot for exported pages) or :mod:`.text` anywhere else;
* :mod:`.replay`: :func:`replay` and :func:`replay_state`, a time slider over
  a recorded trace that shows the same panel, a capacity-tree gauge and a
  cursor on the timeline at any moment of the run.
"""

from storylab.viz.progress.model import PipelineProgress, ProgressModel, RowState
from storylab.viz.progress.panel import ProgressPanel, in_jupyter_kernel
from storylab.viz.progress.replay import (
    LevelState,
    ReplayState,
    TraceReplay,
    WaitState,
    replay,
    replay_state,
)
from storylab.viz.progress.widget import static_snapshot_html

__all__ = [
    "LevelState",
    "PipelineProgress",
    "ProgressModel",
    "ProgressPanel",
    "ReplayState",
    "RowState",
    "TraceReplay",
    "WaitState",
    "in_jupyter_kernel",
    "replay",
    "replay_state",
    "static_snapshot_html",
]
