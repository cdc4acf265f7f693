"""Legend words a lesson chooses for its own figure.

A timeline's legend names outcomes in general terms ("ran, failed"). When a
lesson knows better what a failure was (a picture the server refused on every
attempt), :func:`relabel_legend` renames the entry, in every legend of the
figure, without touching the chart code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["relabel_legend"]


def relabel_legend(fig: Any, words: Mapping[str, str]) -> int:
    """Rename legend entries of ``fig`` (``{"ran, failed": "refused: lost"}``).

    Looks at the figure's own legends and each axes' legend; returns how many
    entries were renamed. An entry the figure does not have is refused, so a
    chart that changed its words never keeps a stale rename silently.
    """
    legends = [*getattr(fig, "legends", []), *(ax.get_legend() for ax in fig.axes)]
    texts = [t for legend in legends if legend is not None for t in legend.get_texts()]
    renamed = 0
    for old, new in words.items():
        hits = [t for t in texts if t.get_text() == old]
        if not hits:
            have = sorted({t.get_text() for t in texts})
            raise ValueError(f"no legend entry {old!r} in this figure; it has {have}")
        for t in hits:
            t.set_text(new)
            renamed += 1
    return renamed
