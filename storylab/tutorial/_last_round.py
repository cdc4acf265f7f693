"""Notebook 7's mark for the knobs: where the last round of pictures begins."""

from __future__ import annotations

from typing import Any

__all__ = ["last_round"]


def last_round(run: Any) -> list[tuple[float, str]]:
    """The moment the last pictures start, as one ``(t, text)`` moment for a chart: how
    many pictures run in that round and how many of the global units sit idle.

    ``run`` is what the knobs simulate (it has a ``trace`` and a ``cell`` with the
    ``global_limit``); every picture starting at the same model second as the last
    one counts as part of that round.
    """
    from storylab.viz import timeline_lanes

    starts = [lane.run[0] for lane in timeline_lanes(run.trace)]
    if not starts:
        return []
    begin = max(starts)
    alone = sum(abs(s - begin) < 1e-6 for s in starts)
    idle = run.cell.global_limit - alone
    picture = "picture" if alone == 1 else "pictures"
    return [(begin, f"last round: {alone} {picture}, {idle} of {run.cell.global_limit} "
                    "units idle")]
