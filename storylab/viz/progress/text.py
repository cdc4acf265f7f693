"""The text form of a progress panel: plain lines for a terminal, a file or a pipe.

One line per thing that happened (written by the panel as it happens) and,
when a pipeline ends, its summary: a line for the pipeline and a line per
child, each child's glyph first. No cursor movement, no colour codes.
"""

from __future__ import annotations

from collections.abc import Iterable

from storylab.viz._palette import Status
from storylab.viz.labels import task_label
from storylab.viz.progress.model import PipelineProgress

__all__ = ["pipeline_lines", "summary_text"]


def pipeline_lines(p: PipelineProgress, max_rows: int, *, compact: bool = False,
                   detail: bool = False) -> list[str]:
    """The summary line of ``p`` and one indented line per child (at most ``max_rows``),
    or with ``compact`` one line of glyphs for all of them. Lines name things in the
    reader's words (``image-2``); ``detail`` adds each one's entity class and raw name."""
    lines = [p.summary_line(detail=detail)]
    if compact:
        if not p.rows:
            return lines
        failed = [task_label(r.name) for r in p.rows if r.status is Status.FAILED]
        named = f"  (✗ {', '.join(failed)})" if failed else ""  # which glyph is which
        return [*lines, "  " + "".join(r.symbol for r in p.rows) + named]
    shown = p.rows[:max_rows]
    for r in shown:
        message = f": {r.message}" if r.message and r.status is Status.FAILED else ""
        title = f"{r.title} · {r.detail}" if detail else r.title
        lines.append(f"  {r.symbol} {title} {r.status_text}{message}")
    if len(p.rows) > len(shown):
        lines.append(f"  … and {len(p.rows) - len(shown)} more")
    return lines


def summary_text(title: str | None, pipelines: Iterable[PipelineProgress], max_rows: int,
                 *, compact: bool = False, detail: bool = False) -> str:
    """A whole panel as text: its title, then every pipeline's lines."""
    lines = [title] if title else []
    pipelines = list(pipelines)
    if not pipelines:
        lines.append("(no pipelines yet)")
    for p in pipelines:
        lines.extend(pipeline_lines(p, max_rows, compact=compact, detail=detail))
    return "\n".join(lines)
