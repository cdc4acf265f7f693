"""A live progress panel for one or many pipelines, fed with entity envelopes.

While a story runs, its envelopes say everything a learner wants to watch:
the pipeline announces that it is about to fan out N images (a ``VALUE``
envelope with ``sub_type="progress"`` and ``{"stage", "total", "items"}``),
then every image reports ``STARTED``, ``COMPLETED`` or ``FAILED``. The panel
turns that stream into one bar per pipeline (images done of total) and one
row per child, coloured by status: *waiting for capacity* (announced, not
started: the runner has no unit for it yet), *running*, *completed*,
*failed*.

One panel, three places it has to look right, and the environment (never the
caller) picks the form:

* in a Jupyter kernel with ipywidgets installed it is a widget (bars and an
  HTML table per pipeline), updated on the kernel's loop;
* anywhere else (a terminal, ``storylab run``, a script, a pipe) it prints
  a log: one plain line per thing that happened (a child started, finished,
  was handed back from an earlier run, failed; a pipeline's message), each
  prefixed with the pipeline's label, and when a pipeline ends its summary.
  No cursor movement and no colour codes, so the same lines read well in a
  terminal, a file or ``| grep``;
* in a papermill/nbclient run the saved notebook must show the *finished*
  state, not the 0 % it had when displayed: the panel is displayed through a
  display handle, and every final flush replaces that output with the widget
  view plus a fresh ``text/plain`` summary.

Widget updates are throttled (at most one render per ``min_interval``, 0.1 s
by default) so a thousand entities do not flood the frontend; a pending
change is rendered by a timer on the running loop, and the final state is
always rendered when a watched run ends and on :meth:`ProgressPanel.close`.
The text form prints each line as it happens: a log loses nothing by being
read later.

Typical use in a notebook::

    panel = ProgressPanel("stories")
    results = await asyncio.gather(*(panel.watch(p.start()) for p in pipelines))
"""

from __future__ import annotations

import asyncio
import html
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from storylab.viz._palette import COLOURS, Status

__all__ = [
    "PipelineProgress",
    "ProgressPanel",
    "RowState",
    "in_jupyter_kernel",
    "static_snapshot_html",
]

Form = Literal["widget", "text"]
_FORMS = ("widget", "text")

_ENVELOPE_FIELDS = ("type", "entity_id", "entity_type", "entity_name", "status", "message",
                    "value", "sub_type", "error")
_STATUS_EVENTS = {
    "STARTED": Status.RUNNING,
    "RUNNING": Status.RUNNING,
    "COMPLETED": Status.COMPLETED,
    "FAILED": Status.FAILED,
    "CANCELLED": Status.CANCELLED,
}
_FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
_SYMBOLS = {
    Status.WAITING: "·",
    Status.RUNNING: "▶",
    Status.COMPLETED: "✓",
    Status.FAILED: "✗",
    Status.CANCELLED: "⊘",
}


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (Lab, Notebook, papermill, nbclient) with ipywidgets.

    The same test tqdm uses: ``ipykernel.zmqshell`` is imported only by a
    kernel, never by a terminal IPython or a plain interpreter.
    """
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


# -- state ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RowState:
    """One child as the panel shows it."""

    name: str
    entity_type: str | None
    entity_id: str | None
    status: Status
    message: str | None
    counted: bool  # announced by a progress envelope, so it counts towards the bar

    @property
    def colour(self) -> str:
        return COLOURS[self.status]

    @property
    def title(self) -> str:
        return f"{self.entity_type} ({self.name})" if self.entity_type else self.name


@dataclass(frozen=True, slots=True)
class PipelineProgress:
    """A snapshot of one pipeline (root entity) of the panel."""

    key: str
    entity_id: str | None
    entity_type: str | None
    name: str | None
    status: Status
    message: str | None
    stage: str | None
    total: int
    rows: tuple[RowState, ...]

    @property
    def done(self) -> int:
        """Announced children that finished, whichever way."""
        return sum(1 for r in self.rows if r.counted and r.status in _FINISHED)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.rows if r.counted and r.status is Status.COMPLETED)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r.counted and r.status is Status.FAILED)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.rows if r.counted and r.status is status)

    @property
    def title(self) -> str:
        if self.entity_type and self.name:
            return f"{self.entity_type} ({self.name})"
        return self.name or self.key

    @property
    def bar_style(self) -> str:
        """ipywidgets bar style: green when all went well, orange/red otherwise."""
        if self.status is Status.FAILED:
            return "danger"
        if self.status is Status.CANCELLED:
            return "warning"
        if self.status is Status.COMPLETED:
            return "warning" if self.failed or self.count(Status.CANCELLED) else "success"
        return "danger" if self.failed else "info"

    def counts_text(self) -> str:
        stage = f"{self.stage}: " if self.stage else ""
        parts = [f"{self.done}/{self.total} done"]
        detail = [
            f"{n} {s}" for s in (Status.COMPLETED, Status.FAILED, Status.CANCELLED,
                                 Status.RUNNING, Status.WAITING)
            if (n := self.count(s))
        ]
        if detail:
            parts.append(f"({', '.join(detail)})")
        return stage + " ".join(parts)

    def summary_line(self) -> str:
        message = f" — {self.message}" if self.message else ""
        return f"{self.title} [{self.status}] {self.counts_text()}{message}"


class _Root:
    __slots__ = ("key", "entity_id", "entity_type", "name", "status", "message", "stage",
                 "stages", "rows", "by_id", "label")

    def __init__(self, key: str) -> None:
        self.key = key
        self.entity_id: str | None = None
        self.entity_type: str | None = None
        self.name: str | None = None
        self.status = Status.WAITING
        self.message: str | None = None
        self.stage: str | None = None
        self.stages: dict[str, int] = {}
        self.rows: dict[str, dict[str, Any]] = {}  # by child name, in announcement order
        self.by_id: dict[str, str] = {}  # child entity id -> row name
        self.label: str | None = None  # the text form's line prefix (default: the name)

    @property
    def prefix(self) -> str:
        return f"[{self.label or self.name or self.key}] "

    def snapshot(self) -> PipelineProgress:
        rows = tuple(
            RowState(r["name"], r["entity_type"], r["entity_id"], r["status"], r["message"],
                     r["counted"])
            for r in self.rows.values()
        )
        counted = sum(1 for r in rows if r.counted)
        total = max(sum(self.stages.values()), counted) if self.stages else counted
        return PipelineProgress(self.key, self.entity_id, self.entity_type, self.name,
                                self.status, self.message, self.stage, total, rows)


def _fields(envelope: Any) -> dict[str, Any]:
    if isinstance(envelope, dict):
        get = envelope.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(envelope, name, default)
    out = {name: get(name, None) for name in _ENVELOPE_FIELDS}
    for name in ("type", "entity_id"):
        if not isinstance(out[name], str) or not out[name]:
            raise ValueError(
                f"envelope field {name!r} must be a non-empty string, got {out[name]!r}"
            )
    if out["type"] not in ("STATUS", "VALUE", "ERROR", "INTERNAL_UPDATE"):
        raise ValueError(
            "envelope field 'type' must be one of STATUS, VALUE, ERROR, INTERNAL_UPDATE; "
            f"got {out['type']!r}"
        )
    return out


def _progress_value(value: Any) -> tuple[str, int, list[str]]:
    if not isinstance(value, dict):
        raise ValueError(
            "a progress envelope's value must be a dict with 'stage', 'total' and 'items'; "
            f"got {type(value).__name__}"
        )
    total = value.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"progress value['total'] must be an integer >= 0, got {total!r}")
    items = value.get("items", [])
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"progress value['items'] must be a list of child names, got {items!r}")
    stage = value.get("stage") or "items"
    return str(stage), total, list(items)


def _error_message(error: Any) -> str | None:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return f"{kind}: {message}" if kind and message else (message or kind)
    return None if error is None else str(error)


# -- the panel -----------------------------------------------------------------
class ProgressPanel:
    """Bars per pipeline and a coloured row per child, fed with entity envelopes.

    ``panel.update(envelope)`` applies one envelope (an ``Envelope`` or its
    ``to_json()`` dict); ``await panel.watch(run)`` consumes a run handle,
    feeds every envelope to the panel and returns the run's result (or
    re-raises its failure after showing it). With several pipelines in one
    panel, use ``watch`` (or pass ``root=`` to ``update``) so that children
    with the same names in different stories are kept apart.

    ``min_interval`` bounds how often the frontend is redrawn; ``max_rows``
    bounds the rows shown per pipeline (the counts always cover all).
    ``form`` is chosen from the environment (see :func:`in_jupyter_kernel`);
    passing ``"widget"`` or ``"text"`` is meant for tests and tools that know
    better. ``stream`` is where the text form prints (default ``sys.stdout``);
    ``summary_at_end=False`` leaves out the summary it prints when a pipeline
    ends (for a command that reports the outcome itself).
    """

    def __init__(
        self,
        title: str | None = None,
        *,
        min_interval: float = 0.1,
        max_rows: int = 50,
        form: Form | None = None,
        stream: TextIO | None = None,
        summary_at_end: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if form is not None and form not in _FORMS:
            raise ValueError(f"form must be one of {', '.join(_FORMS)} or None; got {form!r}")
        if isinstance(min_interval, bool) or not isinstance(min_interval, int | float) \
                or min_interval < 0:
            raise ValueError(f"min_interval must be a number >= 0, got {min_interval!r}")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.title = title
        self.form: Form = form or ("widget" if in_jupyter_kernel() else "text")
        self.min_interval = float(min_interval)
        self.max_rows = max_rows
        self.renders = 0
        self._stream = stream
        self.summary_at_end = bool(summary_at_end)
        self._clock = clock
        self._roots: dict[str, _Root] = {}
        self._dirty = False
        self._last_render: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._final_printed: set[str] = set()
        self._widgets: _WidgetView | None = None
        self._handle: Any = None
        if self.form == "widget":
            self._widgets = _WidgetView(self)
            self._handle = self._widgets.display()

    # -- reading -------------------------------------------------------------
    @property
    def pipelines(self) -> list[PipelineProgress]:
        """A snapshot of every pipeline, in the order they appeared."""
        return [root.snapshot() for root in self._roots.values()]

    def summary(self) -> str:
        """The panel as plain text: a line per pipeline and a line per child."""
        lines = [self.title] if self.title else []
        pipelines = self.pipelines
        if not pipelines:
            lines.append("(no pipelines yet)")
        for p in pipelines:
            lines.append(p.summary_line())
            shown = p.rows[: self.max_rows]
            for r in shown:
                message = f": {r.message}" if r.message and r.status is Status.FAILED else ""
                lines.append(f"  {_SYMBOLS[r.status]} {r.title} {r.status}{message}")
            if len(p.rows) > len(shown):
                lines.append(f"  … and {len(p.rows) - len(shown)} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<ProgressPanel {self.form} {len(self._roots)} pipeline(s)>"

    # -- feeding -------------------------------------------------------------
    def update(self, envelope: Any, *, root: str | None = None) -> None:
        """Apply one envelope; ``root`` names the pipeline it belongs to (see class doc)."""
        if self._closed:
            raise RuntimeError("this progress panel is closed; create a new one")
        env = _fields(envelope)
        state = self._root_for(env, root)
        if env["entity_id"] == state.entity_id:
            said = self._apply_root(state, env)
        else:
            said = self._apply_child(state, env)
        if said and self.form == "text":
            self._say(state, said)
        self._dirty = True
        self._maybe_render()

    def note(self, text: str, *, root: str, label: str | None = None) -> None:
        """A line about pipeline ``root`` that no envelope carries ("resuming", "page written").

        The text form prints it with the pipeline's label; the widget shows it
        as the pipeline's message.
        """
        if self._closed:
            raise RuntimeError("this progress panel is closed; create a new one")
        state = self._labelled(root, label)
        if self.form == "text":
            self._say(state, str(text))
        else:
            state.message = str(text)
            self._dirty = True
            self._maybe_render()

    def _labelled(self, key: str, label: str | None) -> _Root:
        state = self._roots.get(key)
        if state is None:
            state = self._roots[key] = _Root(key)
        if label is not None:
            state.label = label
        return state

    def _root_for(self, env: dict[str, Any], key: str | None) -> _Root:
        eid = env["entity_id"]
        if key is not None:
            state = self._roots.get(key)
            if state is None:
                state = self._roots[key] = _Root(key)
            if state.entity_id is None and (eid == key or not state.rows):
                self._identify(state, env)
            return state
        for state in self._roots.values():
            if eid == state.entity_id or eid in state.by_id:
                return state
        name = env["entity_name"]
        for state in self._roots.values():
            row = state.rows.get(name)
            if row is not None and row["entity_id"] is None:
                return state
        state = self._roots[eid] = _Root(eid)
        self._identify(state, env)
        return state

    @staticmethod
    def _identify(state: _Root, env: dict[str, Any]) -> None:
        state.entity_id = env["entity_id"]
        state.entity_type = env["entity_type"]
        state.name = env["entity_name"]

    def _apply_root(self, state: _Root, env: dict[str, Any]) -> str | None:
        """Apply a pipeline's own envelope; the log line it is worth, if any."""
        kind = env["type"]
        if kind == "STATUS":
            state.status = _STATUS_EVENTS.get(env["status"], state.status)
            if env["message"]:
                state.message = env["message"]
                if state.status is Status.RUNNING:  # how it ended is the summary's to say
                    return str(env["message"])
        elif kind == "VALUE" and env["sub_type"] == "progress":
            stage, total, items = _progress_value(env["value"])
            state.stage = stage
            state.stages[stage] = total
            for name in items:
                row = state.rows.get(name)
                if row is None:
                    state.rows[name] = {"name": name, "entity_type": None, "entity_id": None,
                                        "status": Status.WAITING, "message": None,
                                        "counted": True}
                else:
                    row["counted"] = True
        elif kind == "VALUE" and env["sub_type"] == "return":
            state.status = Status.COMPLETED  # a finished entity started again sends only this
        elif kind == "ERROR":
            state.status = Status.FAILED
            state.message = _error_message(env["error"]) or state.message
        return None

    def _apply_child(self, state: _Root, env: dict[str, Any]) -> str | None:
        """Apply a child's envelope; the log line its change of status is worth, if any."""
        eid, name = env["entity_id"], env["entity_name"] or env["entity_id"]
        row_name = state.by_id.get(eid)
        if row_name is None:
            row = state.rows.get(name)
            if row is not None and row["entity_id"] not in (None, eid):
                row_name = f"{name} [{eid}]"  # same name, another entity
                row = None
            else:
                row_name = name
            if row is None:
                state.rows[row_name] = {"name": name, "entity_type": None, "entity_id": None,
                                        "status": Status.WAITING, "message": None,
                                        "counted": False}
            state.by_id[eid] = row_name
        row = state.rows[row_name]
        before = row["status"]
        row["entity_id"] = eid
        row["entity_type"] = env["entity_type"] or row["entity_type"]
        kind = env["type"]
        if kind == "STATUS":
            row["status"] = _STATUS_EVENTS.get(env["status"], row["status"])
            if env["message"]:
                row["message"] = env["message"]
        elif kind == "VALUE" and env["sub_type"] == "return":
            row["status"] = Status.COMPLETED
        elif kind == "ERROR":
            row["status"] = Status.FAILED
            row["message"] = _error_message(env["error"]) or row["message"]
        if row["status"] is before:
            return None
        change = _change(row)
        return f"{row_name} {change}" if change else None

    async def watch(self, run: Any, *, root: str | None = None,
                    label: str | None = None) -> Any:
        """Feed every envelope of ``run`` to the panel and return ``run.result``.

        The final state of this pipeline is rendered when the run ends, also
        when it fails (the failure is then raised again). ``label`` is the
        prefix of the text form's lines for this pipeline (default: its name).
        """
        key = root or _run_root_id(run)
        try:
            async for envelope in run:
                if key is None:
                    key = _fields(envelope)["entity_id"]
                if label is not None:
                    self._labelled(key, label)
                self.update(envelope, root=key)
        finally:
            if not self._closed:
                self.flush(final=True)
        return getattr(run, "result", None)

    # -- rendering -----------------------------------------------------------
    def _maybe_render(self) -> None:
        now = self._clock()
        if self._last_render is None or now - self._last_render >= self.min_interval:
            self._render()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: the next update or flush() renders
            delay = self.min_interval - (now - self._last_render)
            self._timer = loop.call_later(max(delay, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._dirty and not self._closed:
            self._render()

    def _render(self) -> None:
        self._dirty = False
        self._last_render = self._clock()
        self.renders += 1
        if self._widgets is not None:
            self._widgets.refresh()
        else:
            self._print_changes()

    def flush(self, *, final: bool = False) -> None:
        """Render now, whatever the throttle says.

        With ``final=True`` the display output is replaced as well, so a saved
        notebook shows this state in its ``text/plain`` too.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._render()
        if final and self._widgets is not None and self._handle is not None:
            self._handle.update(self._widgets.view())
            self._widgets.update_snapshot()

    def close(self) -> None:
        """Render the final state (idempotent); later updates are refused."""
        if self._closed:
            return
        self._closed = True  # also when printing fails (a closed pipe): closed is closed
        self.flush(final=True)
        if self.form == "text" and self.summary_at_end:
            for p in self.pipelines:
                if p.key not in self._final_printed:
                    self._print_final(p)

    def __enter__(self) -> ProgressPanel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self._widgets is not None:
            display(self._widgets.view())
        else:
            print(self.summary())

    # -- text form -----------------------------------------------------------
    def _out(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _say(self, state: _Root, text: str) -> None:
        print(state.prefix + text, file=self._out(), flush=True)

    def _print_changes(self) -> None:
        # The log lines were printed as they happened; what is left is the
        # summary of each pipeline that has just ended.
        if not self.summary_at_end:
            return
        for p in self.pipelines:
            if p.key not in self._final_printed and p.status in _FINISHED:
                self._print_final(p)

    def _print_final(self, p: PipelineProgress) -> None:
        out = self._out()
        self._final_printed.add(p.key)
        print(p.summary_line(), file=out)
        shown = p.rows[: self.max_rows]
        for r in shown:
            message = f": {r.message}" if r.message and r.status is Status.FAILED else ""
            print(f"  {_SYMBOLS[r.status]} {r.title} {r.status}{message}", file=out)
        if len(p.rows) > len(shown):
            print(f"  … and {len(p.rows) - len(shown)} more", file=out)
        out.flush()


def _change(row: dict[str, Any]) -> str | None:
    """How the log words a child's new status (``None``: not worth a line)."""
    status = row["status"]
    if status is Status.RUNNING:
        row["started"] = True
        return "started"
    if status is Status.COMPLETED:
        # Completed without starting in this run: handed back from the graph.
        return "done" if row.get("started") else "already done"
    if status is Status.FAILED:
        return f"FAILED: {row['message']}" if row["message"] else "FAILED"
    if status is Status.CANCELLED:
        return "cancelled"
    return None


def _run_root_id(run: Any) -> str | None:
    for attr in ("entity_id", "id"):
        value = getattr(run, attr, None)
        if isinstance(value, str) and value:
            return value
    entity = getattr(run, "entity", None)
    value = getattr(entity, "id", None)
    return value if isinstance(value, str) and value else None


# -- widget form ---------------------------------------------------------------
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


class _WidgetView:
    """ipywidgets for a panel: per pipeline a title, a bar, counts and an HTML table.

    The rows are one HTML widget per pipeline (not a widget per row) so a
    thousand children cost one model, not a thousand.
    """

    def __init__(self, panel: ProgressPanel) -> None:
        import ipywidgets as w

        self._w = w
        self.panel = panel
        self.header = w.HTML(self._header_html())
        self.box = w.VBox([self.header])
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
        # A second output, right under the widget, that a page exported
        # without widget JavaScript (nbconvert, GitHub) can still show.
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
        return f"<b>{title}</b>"

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
        for p in self.panel.pipelines:
            part = self._part(p)
            total = max(p.total, 1)
            value = p.done if p.total else (1 if p.status in _FINISHED else 0)
            bar = part["bar"]
            with bar.hold_sync():
                bar.max = total
                bar.value = min(value, total)
                bar.bar_style = p.bar_style
            title = html.escape(p.title)
            colour = COLOURS[p.status]
            message = f" — {html.escape(p.message)}" if p.message else ""
            new_title = (f"<b>{title}</b> <span style='color:{colour}'>{p.status}</span>"
                         f"{message}")
            if part["title"].value != new_title:
                part["title"].value = new_title
            counts = p.counts_text()
            if part["counts"].value != counts:
                part["counts"].value = counts
            rows = self.rows_html(p)
            if part["rows"].value != rows:
                part["rows"].value = rows

    def rows_html(self, p: PipelineProgress) -> str:
        return _rows_table(p, self.panel.max_rows)


# -- static snapshot -----------------------------------------------------------
SNAPSHOT_CLASS = "storylab-progress-snapshot"
# Inside JupyterLab or Notebook 7 the live widget is right above, so the
# snapshot hides itself there; an exported page has neither shell and shows it.
_SNAPSHOT_STYLE = (
    f"<style>.jp-LabShell .{SNAPSHOT_CLASS}, .jp-NotebookShell .{SNAPSHOT_CLASS}"
    "{display:none}</style>"
)


def static_snapshot_html(panel: ProgressPanel) -> str:
    """The panel's current state as plain HTML: no widget, no script, no CDN.

    One block per pipeline: its title and status, a bar drawn with two
    ``div`` elements (width in percent), the counts, and a row per child.
    """
    title = html.escape(panel.title) if panel.title else "Progress"
    parts = [_SNAPSHOT_STYLE, f"<div class='{SNAPSHOT_CLASS}' style='font-size:90%'>",
             f"<b>{title}</b>"]
    pipelines = panel.pipelines
    if not pipelines:
        parts.append("<div>(no pipelines yet)</div>")
    for p in pipelines:
        total = max(p.total, 1)
        value = p.done if p.total else (1 if p.status in _FINISHED else 0)
        percent = round(100 * min(value, total) / total)
        colour = _BAR_COLOURS.get(p.bar_style, _BAR_COLOURS[""])
        parts.append(
            f"<div data-pipeline='{html.escape(p.key, quote=True)}' style='margin:4px 0'>"
            f"<b>{html.escape(p.title)}</b> "
            f"<span style='color:{COLOURS[p.status]}'>{p.status}</span>"
            f"<div style='display:flex;align-items:center;gap:8px'>"
            f"<div style='width:40%;height:12px;background:#eeeeee;border-radius:2px'>"
            f"<div class='bar' style='width:{percent}%;height:12px;background:{colour};"
            f"border-radius:2px'></div></div>"
            f"<span class='counts'>{html.escape(p.counts_text())}</span></div>"
        )
        parts.append(_rows_table(p, panel.max_rows))
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


_BAR_COLOURS = {"success": "#5cb85c", "warning": "#f0ad4e", "danger": "#d9534f",
                "info": "#5bc0de", "": "#428bca"}


def _rows_table(p: PipelineProgress, max_rows: int) -> str:
    shown = p.rows[:max_rows]
    cells = []
    for r in shown:
        message = html.escape(r.message) if r.message else ""
        cells.append(
            f"<tr data-name='{html.escape(r.name, quote=True)}' data-status='{r.status}'>"
            f"<td style='color:{r.colour}'>{_SYMBOLS[r.status]}</td>"
            f"<td>{html.escape(r.title)}</td>"
            f"<td style='color:{r.colour};font-weight:bold'>{r.status}</td>"
            f"<td style='color:#666'>{message}</td></tr>"
        )
    if len(p.rows) > len(shown):
        cells.append(f"<tr><td></td><td colspan='3'>… and {len(p.rows) - len(shown)} "
                     "more</td></tr>")
    return "<table style='border-collapse:collapse;font-size:90%'>" + "".join(cells) + "</table>"
