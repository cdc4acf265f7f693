"""What notebook 6 reads from the capacity tree's run: peaks per source and the opening split.

A few lines of bookkeeping (which source is the global one, what each source's
limit was, when both stories had asked) kept out of the lesson, so that the
lesson's cell is about the chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CapacityReadout", "capacity_readout"]


@dataclass(frozen=True)
class CapacityReadout:
    """The units a run's capacity sources had in use, read from its trace.

    ``root`` is the global source's name; ``peaks`` and ``limits`` map every
    source to its highest units in use and its limit; ``labels`` gives the
    readable name of each ("global", "story A", ...); ``asked_at`` is the first
    model second by which every story had asked for a unit and the global source
    was as full as the limits allow, and ``start_split`` the units the stories
    held then, largest first.
    """

    root: str
    peaks: dict[str, int]
    limits: dict[str, int]
    labels: dict[str, str]
    asked_at: float
    start_split: list[int]

    def lines(self) -> list[str]:
        """One line per source (global first), then one for the opening split."""
        order = sorted(self.peaks, key=lambda n: (n != self.root, self.labels.get(n, n)))
        out = [f"{self.labels.get(n, n):<20} peak {self.peaks[n]} units in use "
               f"(limit {self.limits[n]})" for n in order]
        held = " and ".join(map(str, self.start_split))
        out.append(f"once every story had asked and the pool was full ({self.asked_at:.1f} model "
                   f"s) they held {held} units")
        return out


def capacity_readout(trace: Any, *, global_limit: int, story_limit: int) -> CapacityReadout:
    """Read ``trace`` (a story run under a global and a per-story limit): see
    :class:`CapacityReadout`."""
    from storylab.tutorial import global_image_capacity
    from storylab.viz import all_asked_at, first_full, in_use_at, peaks_in_use, source_labels

    root = global_image_capacity(global_limit).name
    peaks = peaks_in_use(trace)
    limits = {name: global_limit if name == root else story_limit for name in peaks}
    stories = [name for name in peaks if name != root]
    asked = all_asked_at(trace, stories)
    # Read the split once the pool is as full as the limits let it be, not at the
    # instant the last story asked: a story asks for one picture at a time, so at
    # that instant its later requests may still be on their way.
    full = first_full(trace, root, min(global_limit, story_limit * len(stories)))
    if full is not None:
        asked = max(asked, full)
    split = sorted((in_use_at(trace, asked).get(s, 0) for s in stories), reverse=True)
    return CapacityReadout(root, peaks, limits, source_labels(trace), asked, split)
