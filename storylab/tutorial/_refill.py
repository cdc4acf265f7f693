"""Notebook 2's replay opens at a refill: the moment a freed unit starts the next picture."""

from __future__ import annotations

from dataclasses import dataclass

from storylab.scheduling import Trace

__all__ = ["Refill", "refill_moment"]


@dataclass(frozen=True, slots=True)
class Refill:
    """When ``label`` started, and what had happened around it by then."""

    at: float  # model seconds, on the charts' time axis
    ended_before: tuple[str, ...]  # the tasks that had ended by then
    next_start: float | None  # when the task after ``label`` started (None: there is none)

    def words(self, short: str, next_short: str) -> str:
        """One line: how many of the first tasks had ended, and whether the next waited."""
        line = (f"at {self.at:.1f} model s, when {short} starts, {len(self.ended_before)} of "
                f"the first three had ended; {next_short} ")
        if self.next_start is None:
            return line + "does not exist"
        if self.next_start <= self.at:
            return line + "started at the same moment"
        return line + f"waits for the next unit, until {self.next_start:.1f}"


def refill_moment(trace: Trace, label: str = "image-{{IMAGE_4}}",
                  next_label: str = "image-{{IMAGE_5}}") -> Refill:
    """The start of ``label`` in ``trace``: the first picture a freed unit let in."""
    from storylab.viz import timeline_lanes

    lanes = {lane.label: lane for lane in timeline_lanes(trace)}
    if label not in lanes:
        raise ValueError(f"no task {label!r} in the trace; it has {sorted(lanes)}")
    at = lanes[label].run[0]
    ended = tuple(name for name, lane in lanes.items() if lane.run[1] <= at)
    after = lanes.get(next_label)
    return Refill(at, ended, after.run[0] if after else None)
