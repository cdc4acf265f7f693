"""Charts of a limits sweep (:mod:`storylab.sweep`): makespan and utilisation per cell.

The sweep measures; these draw. Each function takes what the sweep hands
back (a :class:`~storylab.sweep.SweepResult`, read through its ``grid``,
``cell`` and limit tuples only) and imports matplotlib when called.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from storylab.viz._figure import new_figure
from storylab.viz._palette import OKABE_ITO

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_simulated_vs_wall", "plot_sweep_heatmaps", "plot_sweep_lines"]


def plot_sweep_heatmaps(result: Any, *, title: str | None = None) -> Figure:
    """Makespan (model seconds) and utilisation side by side, one square per cell."""
    from matplotlib.patches import Rectangle

    fig, (left, right) = new_figure(
        1, 2, figsize=(12, 0.9 + 0.75 * len(result.story_limits)), layout="constrained"
    )
    panels = (
        (left, "makespan", "makespan (model seconds)", "viridis_r", "{:.0f}"),
        (right, "utilisation", "utilisation of the global pool", "magma", "{:.0%}"),
    )
    for ax, field, label, cmap, fmt in panels:
        values = result.grid(field)
        vmax = 1.0 if field == "utilisation" else None
        # Makespans run from the fastest cell, not from 0, so the scale spends its colours on
        # the values the grid holds; utilisation keeps its natural 0 to 100 %.
        vmin = 0 if field == "utilisation" else min(min(row) for row in values)
        image = ax.imshow(values, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                rgba = image.cmap(image.norm(v))
                # Dark squares get white numbers: luminance of the square's colour.
                dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=10,
                        color="white" if dark else "black")
        # The cells that end above the bound, outlined (white under black dashes, so the
        # frame shows on a dark square and on a light one).
        above = [(i, j) for i, p in enumerate(result.story_limits)
                 for j, g in enumerate(result.global_limits)
                 if result.cell(p, g).makespan > result.cell(p, g).ideal + 1e-6]
        for i, j in above:
            p, g = result.story_limits[i], result.global_limits[j]
            for colour, style, width in (("white", "solid", 4.0), ("black", "dashed", 2.0)):
                ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False,
                                       edgecolor=colour, linestyle=style, lw=width,
                                       gid=f"above:{p}:{g}" if colour == "black" else None))
        ax.set_xticks(range(len(result.global_limits)), [str(g) for g in result.global_limits])
        ax.set_yticks(range(len(result.story_limits)), [str(p) for p in result.story_limits])
        ax.set_xlabel("global limit (images at once, all stories)")
        ax.set_ylabel("per-story limit (images at once, one story)")
        ax.set_title(label + ("  (dashed frame: above the bound)" if above else ""))
        fig.colorbar(image, ax=ax, label=label, shrink=0.9)
    fig.suptitle(
        title
        or f"{result.stories} stories x {result.images} images of "
        f"{result.image_seconds:g} model s each, started together"
    )
    _summarise_sweep(fig, result)
    return fig


def _summarise_sweep(fig: Any, result: Any) -> None:
    cells = list(result.cells)
    best = min(cells, key=lambda c: c.makespan)
    worst = max(cells, key=lambda c: c.makespan)
    on_bound = sum(1 for c in cells if c.makespan <= c.ideal + 1e-6)
    fig.storylab_summary = (
        f"Sweep of {len(cells)} limit pairs: makespan from {best.makespan:.0f} model s "
        f"(per-story {best.story_limit}, global {best.global_limit}) to {worst.makespan:.0f} "
        f"(per-story {worst.story_limit}, global {worst.global_limit}); {on_bound} of "
        f"{len(cells)} on the ideal bound.")


def plot_sweep_lines(result: Any, *, title: str | None = None) -> Figure:
    """Makespan against the global limit: one small panel per per-story limit.

    Each panel draws the measured makespan (dots) over the ideal bound (a
    wide grey line), and a vermillion bar and ring at each cell whose measurement sits
    above the bound.
    Panels share both axes, so a legend of two entries is enough.
    """
    n = len(result.story_limits)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = new_figure(rows, cols, sharex=True, sharey=True, squeeze=False,
                             figsize=(3.6 * cols + 1, 2.4 * rows + 1), layout="constrained")
    flat = [ax for row in axes for ax in row]
    top = max(max(c.makespan, c.ideal) for c in result.cells) * 1.1
    for ax, p in zip(flat, result.story_limits, strict=False):
        cells = [result.cell(p, g) for g in result.global_limits]
        xs = list(result.global_limits)
        bound = [c.ideal for c in cells]
        measured = [c.makespan for c in cells]
        above = [m > b + 1e-9 for m, b in zip(measured, bound, strict=True)]
        ax.plot(xs, bound, "-", color="#bbbbbb", lw=6, solid_capstyle="round",
                label="ideal bound (wide, grey)", gid=f"bound:{p}")
        # Only at the cells above the bound: a bar from the bound up to the measurement
        # and a ring on its dot (a band between the points would shade their neighbours).
        off = [(x, b, m) for x, b, m, a in zip(xs, bound, measured, above, strict=True) if a]
        ax.vlines([x for x, _, _ in off], [b for _, b, _ in off], [m for _, _, m in off],
                  color=OKABE_ITO["vermillion"], lw=3.5, zorder=4.5, label="above the bound",
                  gid=f"above:{p}")  # over the band and the measured line, under the ring
        ax.plot(xs, measured, "o-", color=OKABE_ITO["blue"], lw=1.5, ms=4, label="measured",
                gid=f"measured:{p}", zorder=4)
        if off:
            ax.plot([x for x, _, _ in off], [m for _, _, m in off], "o", ms=8, mfc="none",
                    mec=OKABE_ITO["vermillion"], mew=1.5, gid=f"ring:{p}", zorder=5)
        misses = sum(above)
        noun = "cell" if misses == 1 else "cells"
        note = "on the bound everywhere" if not misses else f"{misses} {noun} above"
        ax.set_title(f"per-story limit {p}: {note}", fontsize=10)
        ax.set_xticks(xs)
        ax.set_ylim(0, top)
        ax.grid(color="#e5e5e5")
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("global limit")
    for row in axes:
        row[0].set_ylabel("makespan (model s)")
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=10, frameon=False)
    fig.suptitle(title or "Measured makespan against the ideal bound, per per-story limit")
    _summarise_sweep(fig, result)
    return fig


def plot_simulated_vs_wall(
    pairs: Iterable[tuple[float, float, str]], *, title: str | None = None,
    gap: bool = False,
) -> Figure:
    """Each cell's simulated makespan against the same cell run in real time.

    ``pairs`` are ``(simulated, real, label)`` in model seconds. Points on the
    dashed diagonal mean the simulated clock told the truth. With ``gap``, one
    bar per cell instead: how much longer the real run took, in percent of the
    simulated makespan (a few percent do not show on the diagonal).
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (simulated, real, label) triple")
    if gap:
        return _gap_bars(pairs, title)
    fig, ax = new_figure(figsize=(6, 5), layout="constrained")
    top = max(max(v, w) for v, w, _ in pairs) * 1.1
    ax.plot([0, top], [0, top], "--", color="#888888", label="simulation = real")
    for v, w, label in pairs:
        ax.plot(v, w, "o", color=OKABE_ITO["blue"], gid=f"cell:{label}")
        ax.annotate(label, (v, w), textcoords="offset points", xytext=(6, -10), fontsize=10)
    ax.set(xlim=(0, top), ylim=(0, top),
           title=title or "Simulated vs real-time makespan (per-story / global)",
           xlabel="simulated makespan (model seconds)",
           ylabel="real-time makespan (model seconds)")
    ax.legend(loc="upper left")
    worst = max(abs(w - v) / v for v, w, _ in pairs if v > 0) if any(v > 0 for v, _, _ in pairs) \
        else 0.0
    cells = f"{len(pairs)} cell" + ("" if len(pairs) == 1 else "s")
    fig.storylab_summary = (f"Simulated against real-time makespan for {cells}: "
                            f"at most {worst:.0%} apart.")
    return fig


def _gap_bars(pairs: list[tuple[float, float, str]], title: str | None) -> Figure:
    if any(v <= 0 for v, _, _ in pairs):
        raise ValueError("a simulated makespan must be > 0 to give a gap in percent")
    gaps = [100 * (w / v - 1) for v, w, _ in pairs]
    fig, ax = new_figure(figsize=(7, 3.2), layout="constrained")
    bars = ax.bar([label for *_, label in pairs], gaps, color=OKABE_ITO["blue"])
    for bar, (*_, label) in zip(bars, pairs, strict=True):
        bar.set_gid(f"gap:{label}")
    ax.bar_label(bars, labels=[f"{g:+.1f} %" for g in gaps], fontsize=10, padding=2)
    ax.axhline(0, color="black", lw=0.8)
    ax.margins(y=0.25)
    ax.set(title=title or "Real-time makespan above the simulated one, per cell",
           xlabel="limits of the cell (per story / global)",
           ylabel="real above simulated (%)")
    fig.storylab_summary = (f"{len(pairs)} cells: the real run took from {min(gaps):+.1f} % to "
                            f"{max(gaps):+.1f} % longer than the simulation.")
    return fig
