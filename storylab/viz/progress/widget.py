"""The widget form of a progress panel, and the static HTML it leaves behind.

In a Jupyter kernel the panel is ipywidgets: per pipeline a title, a bar,
the counts and an HTML table of the children (one HTML widget per pipeline,
not a widget per row, so a thousand children cost one model). ipywidgets is
imported when the first widget is built, never at import time.

Right under the widget the panel displays a second output: the same state as
plain HTML (:func:`static_snapshot_html`), which a page exported without
widget JavaScript (nbconvert, GitHub) can still show. Inside JupyterLab or
Notebook 7 that snapshot hides itself, since the live widget is right above.
:func:`pipeline_html` (one pipeline's block) is shared with the trace replay.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from storylab.viz._palette import BAR_COLOURS, COLOURS, Status
from storylab.viz.labels import task_label
from storylab.viz.progress.model import FINISHED, PipelineProgress

if TYPE_CHECKING:  # pragma: no cover
    from storylab.viz.progress.panel import ProgressPanel

__all__ = ["SNAPSHOT_CLASS", "glyph_strip", "pipeline_html", "rows_table", "static_snapshot_html"]


class _View:
    """The widget view with a ``text/plain`` we control (fresh at every final flush)."""

    def __init__(self, widget: Any, text: str) -> None:
        self.widget = widget
        self.text = text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = self.text
        return data

    def __repr__(self) -> str:
        return self.text


def _bar_value(p: PipelineProgress) -> tuple[int, int]:
    """(value, max) of the pipeline's bar: children done of the total."""
    total = max(p.total, 1)
    value = p.done if p.total else (1 if p.status in FINISHED else 0)
    return min(value, total), total


def _title_html(p: PipelineProgress) -> str:
    message = f" — {html.escape(p.activity)}" if p.activity else ""
    colour = BAR_COLOURS["warning"] if p.status_text != str(p.status) else COLOURS[p.status]
    return (f"<b title='{html.escape(p.detail, quote=True)}'>{html.escape(p.title)}</b> "
            f"<span style='color:{colour}'>{p.status_text}</span>{message}")


class _WidgetView:
    """ipywidgets for a panel: per pipeline a title, a bar, counts and an HTML table."""

    def __init__(self, panel: ProgressPanel) -> None:
        import ipywidgets as w

        self._w = w
        self.panel = panel
        self.header = w.HTML(self._header_html())
        self.gauge = w.HTML()
        self.box = w.VBox([self.header, self.gauge])
        self.parts: dict[str, dict[str, Any]] = {}
        self.snapshot_handle: Any = None

    def display(self) -> Any:
        try:
            from IPython.core.interactiveshell import InteractiveShell
            from IPython.display import display
        except ImportError:
            return None
        if not InteractiveShell.initialized():
            return None
        handle = display(self.view(), display_id=True)
        self.snapshot_handle = display(
            {"text/html": static_snapshot_html(self.panel)}, raw=True, display_id=True
        )
        return handle

    def update_snapshot(self) -> None:
        if self.snapshot_handle is not None:
            self.snapshot_handle.update(
                {"text/html": static_snapshot_html(self.panel)}, raw=True
            )

    def view(self) -> _View:
        return _View(self.box, self.panel.summary())

    def _header_html(self) -> str:
        title = html.escape(self.panel.title) if self.panel.title else "Progress"
        return f"{WIDGET_HIDES_SNAPSHOT}<b>{title}</b>"

    def _part(self, p: PipelineProgress) -> dict[str, Any]:
        part = self.parts.get(p.key)
        if part is None:
            w = self._w
            part = {
                "title": w.HTML(),
                "bar": w.IntProgress(value=0, min=0, max=1,
                                     layout=w.Layout(width="40%")),
                "counts": w.Label(),
                "rows": w.HTML(),
            }
            # Wrap rather than clip: a long title or count moves to the next line.
            header = w.HBox([part["title"], part["bar"], part["counts"]],
                            layout=w.Layout(flex_flow="row wrap", align_items="center"))
            part["box"] = w.VBox([header, part["rows"]])
            self.parts[p.key] = part
            self.box.children = (*self.box.children, part["box"])
        return part

    def refresh(self) -> None:
        gauge = self.panel.gauge_html()
        if self.gauge.value != gauge:
            self.gauge.value = gauge
        for p in self.panel.pipelines:
            part = self._part(p)
            value, total = _bar_value(p)
            bar = part["bar"]
            with bar.hold_sync():
                bar.max = total
                bar.value = value
                bar.bar_style = p.bar_style
            new_title = _title_html(p)
            if part["title"].value != new_title:
                part["title"].value = new_title
            counts = p.counts_text()
            if part["counts"].value != counts:
                part["counts"].value = counts
            rows = self.rows_html(p)
            if part["rows"].value != rows:
                part["rows"].value = rows

    def rows_html(self, p: PipelineProgress) -> str:
        if self.panel.compact:
            return glyph_strip(p)
        return rows_table(p, self.panel.max_rows)


# -- static snapshot -----------------------------------------------------------
SNAPSHOT_CLASS = "storylab-progress-snapshot"
# Inside JupyterLab or Notebook 7 the live widget is right above, so the
# snapshot hides itself there; an exported page has neither shell and shows it.
SNAPSHOT_STYLE = (
    f"<style>.jp-LabShell .{SNAPSHOT_CLASS}, .jp-NotebookShell .{SNAPSHOT_CLASS}"
    "{display:none}</style>"
)
# The same, for every front end that draws widgets (VS Code, Colab, classic Notebook
# too): this style is part of the live widget's own HTML, so it reaches the page only
# when the widget is drawn; a page with no widget manager keeps the snapshot.
WIDGET_HIDES_SNAPSHOT = f"<style>.{SNAPSHOT_CLASS}{{display:none}}</style>"


def pipeline_html(p: PipelineProgress, max_rows: int, *, rows_html: str | None = None) -> str:
    """One pipeline as plain HTML: title and status, a two-``div`` bar, counts, rows.

    ``rows_html`` replaces the table of rows (the replay shows a glyph per child).
    """
    value, total = _bar_value(p)
    percent = round(100 * value / total)
    colour = BAR_COLOURS.get(p.bar_style, BAR_COLOURS[""])
    return (
        f"<div data-pipeline='{html.escape(p.key, quote=True)}' style='margin:4px 0'>"
        f"{_title_html(p)}"
        f"<div style='display:flex;align-items:center;gap:8px'>"
        f"<div style='width:40%;height:12px;background:#eeeeee;border-radius:2px'>"
        f"<div class='bar' style='width:{percent}%;height:12px;background:{colour};"
        f"border-radius:2px'></div></div>"
        f"<span class='counts'>{html.escape(p.counts_text())}</span></div>"
        f"{rows_table(p, max_rows) if rows_html is None else rows_html}</div>"
    )


def pipelines_html(title: str | None, pipelines: Iterable[PipelineProgress],
                   max_rows: int) -> str:
    """A titled block of pipelines (no style, no snapshot class)."""
    parts = [f"<b>{html.escape(title) if title else 'Progress'}</b>"]
    pipelines = list(pipelines)
    if not pipelines:
        parts.append("<div>(no pipelines yet)</div>")
    parts.extend(pipeline_html(p, max_rows) for p in pipelines)
    return "".join(parts)


def static_snapshot_html(panel: ProgressPanel) -> str:
    """The panel's current state as plain HTML: no widget, no script, no CDN.

    One block per pipeline: its title and status, a bar drawn with two
    ``div`` elements (width in percent), the counts, and a row per child.
    """
    title = f"<b>{html.escape(panel.title) if panel.title else 'Progress'}</b>"
    blocks = [
        pipeline_html(p, panel.max_rows, rows_html=glyph_strip(p) if panel.compact else None)
        for p in panel.pipelines
    ] or ["<div>(no pipelines yet)</div>"]
    return (f"{SNAPSHOT_STYLE}<div class='{SNAPSHOT_CLASS}' style='font-size:90%'>"
            f"{title}{panel.gauge_html()}{''.join(blocks)}</div>")


def glyph_strip(p: PipelineProgress) -> str:
    """A glyph per child on one line (· waiting, ▶ running, ✓ done, ✗ failed, ↺ reused):
    the compact form of the rows, for many pipelines at once."""
    glyphs = "".join(
        f"<span data-name='{html.escape(r.name, quote=True)}' data-status='{r.status}' "
        f"title='{html.escape(r.title, quote=True)}: {r.status_text}' "
        f"style='color:{r.colour};font-size:15px'>{r.symbol}</span>"
        for r in p.rows
    )
    # A glyph alone does not say which picture failed: name the failed ones after the strip.
    failed = [html.escape(task_label(r.name)) for r in p.rows if r.status is Status.FAILED]
    named = (f"<span class='failed-names' style='color:#666;letter-spacing:0;margin-left:8px'>"
             f"✗ {', '.join(failed)}</span>") if failed else ""
    return f"<div class='glyphs' style='letter-spacing:2px'>{glyphs}{named}</div>"


def rows_table(p: PipelineProgress, max_rows: int) -> str:
    """A row per child: glyph, name, status (coloured and spelled out), message."""
    shown = p.rows[:max_rows]
    cells = []
    for r in shown:
        message = html.escape(r.activity) if r.activity else ""
        cells.append(
            f"<tr data-name='{html.escape(r.name, quote=True)}' data-status='{r.status}'"
            f"{' data-reused=' + chr(39) + '1' + chr(39) if r.reused else ''}>"
            f"<td style='color:{r.colour}'>{r.symbol}</td>"
            f"<td title='{html.escape(r.detail, quote=True)}'>{html.escape(r.title)}</td>"
            f"<td style='color:{r.colour};font-weight:bold'>{r.status_text}</td>"
            f"<td style='color:#666'>{message}</td></tr>"
        )
    if len(p.rows) > len(shown):
        cells.append(f"<tr><td></td><td colspan='3'>… and {len(p.rows) - len(shown)} "
                     "more</td></tr>")
    return "<table style='border-collapse:collapse;font-size:90%'>" + "".join(cells) + "</table>"
