"""The live progress panel for one or many pipelines, fed with entity envelopes.

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
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

from storylab.viz.progress.model import (
    FINISHED,
    PipelineProgress,
    ProgressModel,
    _fields,
    _Root,
    _run_root_id,
)
from storylab.viz.progress.text import pipeline_lines, summary_text
from storylab.viz.progress.widget import _WidgetView

__all__ = ["ProgressPanel", "in_jupyter_kernel"]

Form = Literal["widget", "text"]
_FORMS = ("widget", "text")


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

    ``trace`` (a :class:`~storylab.scheduling.Trace` the run records into,
    settable later as ``panel.trace``) adds the capacity-tree gauge above the
    bars, live: ``global 7/10 · A ●●● B ●●○ …`` with each wait marked by the
    level that blocks it (the same gauge as :func:`storylab.viz.replay`);
    ``names`` relabels its stories. ``compact=True`` draws each pipeline's
    children as one line of glyphs (· ▶ ✓ ✗ ↺) instead of a row each, so
    five stories fit in a screenful. ``waiting_text`` words the rows that have
    not started when no capacity source holds them back (a plain loop that has
    not reached them): ``"not started yet"`` instead of "waiting for capacity".
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
        trace: Any = None,
        names: Mapping[str, str] | None = None,
        compact: bool = False,
        waiting_text: str | None = None,
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
        self.trace = trace
        self.names = dict(names) if names else None
        self.compact = bool(compact)
        self._model = ProgressModel(waiting_text)
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
        return self._model.pipelines

    def gauge_state(self) -> Any:
        """The capacity gauge now (a :class:`~storylab.viz.ReplayState`), or ``None``
        without a trace or before its first event."""
        if self.trace is None or not getattr(self.trace, "events", None):
            return None
        from storylab.viz.progress.replay import replay_state

        return replay_state(self.trace, math.inf, names=self.names)

    def gauge_html(self) -> str:
        state = self.gauge_state()
        return "" if state is None else state.gauge_html()

    def summary(self, *, detail: bool = False) -> str:
        """The panel as plain text: a line per pipeline and a line per child, named in the
        reader's words; ``detail=True`` adds each entity's class and raw name."""
        text = summary_text(self.title, self.pipelines, self.max_rows, compact=self.compact,
                            detail=detail)
        state = self.gauge_state()
        if state is None:
            return text
        lines = text.split("\n")
        at = 1 if self.title else 0
        return "\n".join([*lines[:at], state.gauge_text(), *lines[at:]])

    def __repr__(self) -> str:
        return f"<ProgressPanel {self.form} {len(self._model.roots)} pipeline(s)>"

    # -- feeding -------------------------------------------------------------
    def update(self, envelope: Any, *, root: str | None = None) -> None:
        """Apply one envelope; ``root`` names the pipeline it belongs to (see class doc)."""
        if self._closed:
            raise RuntimeError("this progress panel is closed; create a new one")
        state, said = self._model.apply(envelope, root)
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
        state = self._model.labelled(root, label)
        if self.form == "text":
            self._say(state, str(text))
        else:
            state.message = str(text)
            self._dirty = True
            self._maybe_render()


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
                    self._model.labelled(key, label)
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
            if p.key not in self._final_printed and p.status in FINISHED:
                self._print_final(p)

    def _print_final(self, p: PipelineProgress) -> None:
        out = self._out()
        self._final_printed.add(p.key)
        for line in pipeline_lines(p, self.max_rows, compact=self.compact):
            print(line, file=out)
        out.flush()


