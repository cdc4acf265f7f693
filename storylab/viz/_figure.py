"""Figures that say what they show in words as well.

Every chart of this layer keeps a one-line summary built from its numbers
(``fig.storylab_summary``, read with :func:`storylab.viz.figure_summary`).
Figures are created with :func:`new_figure`, whose figure class returns that
summary as its text form: in a notebook the ``text/plain`` next to the
picture reads "Timeline: 25 tasks in 5 group(s) ...; makespan 30.0 model s"
instead of ``<Figure size 1000x368 with 1 Axes>``, so a screen reader, a
text-only export and a diff of executed notebooks all get the facts.

matplotlib is imported on the first call, never at import time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new_figure"]

_CLASS: Any = None


def _figure_class() -> Any:
    global _CLASS
    if _CLASS is None:
        from matplotlib.figure import Figure

        class SummarisedFigure(Figure):
            """A matplotlib figure whose text form is its one-line summary, once it has one."""

            def __repr__(self) -> str:
                text = getattr(self, "storylab_summary", None)
                return text if isinstance(text, str) and text else super().__repr__()

        _CLASS = SummarisedFigure
    return _CLASS


def new_figure(*args: Any, **kwargs: Any) -> Any:
    """``plt.subplots(*args, **kwargs)`` with a figure whose text form is its summary."""
    import matplotlib.pyplot as plt

    return plt.subplots(*args, FigureClass=_figure_class(), **kwargs)
