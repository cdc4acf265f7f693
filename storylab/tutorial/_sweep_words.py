"""The sentence under notebook 7's heatmaps, read from a sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SweepSummary:
    """What a learner should read off the two heatmaps of one sweep."""

    text: str  #: the "In words" sentence
    jumps: int  #: places where utilisation rises from one global limit to the next
    off_bound: tuple[tuple[int, int], ...]  #: (per-story, global) cells above the bound


def sweep_summary(result: Any) -> SweepSummary:
    """Fastest and slowest cells, the utilisation range, where utilisation rises again
    along a row (and whether the makespan drops a step there), and the framed cells."""
    cells = result.cells
    fastest = min(cells, key=lambda c: (c.makespan, c.global_limit, c.story_limit))
    slowest = max(cells, key=lambda c: c.makespan)
    busiest = max(cells, key=lambda c: c.utilisation)
    idlest = min(cells, key=lambda c: c.utilisation)
    jumps = []
    for p in result.story_limits:
        row = [result.cell(p, g) for g in result.global_limits]
        jumps += [(a, b) for a, b in zip(row, row[1:], strict=False)
                  if b.utilisation > a.utilisation + 1e-9]
    steps = sum(b.makespan < a.makespan for a, b in jumps)
    where = "each" if steps == len(jumps) else f"{steps} of them"
    off = tuple((c.story_limit, c.global_limit) for c in cells if c.makespan > c.ideal + 1e-6)
    framed = "; ".join(f"per-story {p}, global {g}" for p, g in off)
    text = (f"makespans from {fastest.makespan:.0f} model s (first reached at per-story "
            f"{fastest.story_limit}, global {fastest.global_limit}) to {slowest.makespan:.0f} "
            f"(global {slowest.global_limit}); utilisation from {busiest.utilisation:.0%} "
            f"(global {busiest.global_limit}) down to {idlest.utilisation:.0%} (per-story "
            f"{idlest.story_limit}, global {idlest.global_limit}); along a row it rises "
            f"again in {len(jumps)} places, {where} where the makespan drops a step"
            + (f"; framed in dashes, above the bound: {framed}" if framed else ""))
    return SweepSummary(text, len(jumps), off)
