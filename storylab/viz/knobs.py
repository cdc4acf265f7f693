"""Turn the knobs: sliders over a simulated run, redrawn at every move.

"What if the global limit were 12?" is answered fastest by trying it. A
:class:`Knobs` widget holds a simulation function (``storylab.sweep.what_if``
is the one the notebooks use, through ``storylab.sweep.knobs()``) and one
control per knob: the per-story limit, the global limit, the number of
stories, the wake-up policy (fair or FIFO) and which picture, if any,
fails. Every change runs the simulation again (virtual time: milliseconds)
and redraws the timeline, whose key moments (the split, the first hand-off,
the failure) are marked, with a one-line summary of the numbers under it.

The simulation is passed in rather than imported: ``storylab.sweep`` is the
layer above this one (it measures, this draws), so this module never imports
it. ipywidgets and matplotlib load when the widget is built or drawn.

Usage (in a notebook)::

    from storylab.sweep import knobs
    k = knobs(global_limit=12)     # last line of the cell: the widget
    k.set(story_limit=2)           # turn a knob from code
    k.result.cell.makespan         # the numbers on show
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

from storylab.viz.readings import key_moments

__all__ = ["KNOBS", "Knobs", "knob_summary"]

KNOBS = ("story_limit", "global_limit", "stories", "policy", "fail")  # "fail" stays last
KNOBS_SNAPSHOT_CLASS = "storylab-knobs-snapshot"
_POLICIES = ("fair", "fifo")


def _letter(k: int) -> str:
    return chr(ord("A") + k - 1) if 1 <= k <= 26 else str(k)


def knob_summary(result: Any) -> str:
    """The summary line under the chart: the run's numbers and how the units were split."""
    split = next((m.text for m in key_moments(result.trace) if m.kind == "split"), None)
    text = result.summary()
    return f"{text}; {split}." if split else f"{text}."


class Knobs:
    """Controls over ``simulate(story_limit, global_limit, stories, images=, policy=, fail=)``.

    ``simulate`` returns an object with ``cell`` (a ``SweepCell``),
    ``trace`` and ``summary()`` (``storylab.sweep.WhatIf``). :meth:`set`
    changes knobs from code, :attr:`result` is the run on show,
    :meth:`png` its chart and :meth:`summary` its text. The first run is
    made at once, so a bad setting is refused here, with the field named.
    """

    def __init__(self, simulate: Callable[..., Any], *, story_limit: int = 3,
                 global_limit: int = 10, stories: int = 5, images: int = 5,
                 policy: str = "fair", fail: tuple[int, int] | None = None,
                 max_stories: int = 8, max_limit: int = 20,
                 moments: Callable[[Any], list[Any]] | None = None,
                 tick: str | None = None) -> None:
        if not callable(simulate):
            raise TypeError(f"simulate must be callable, got {type(simulate).__name__}")
        for name, value in (("max_stories", max_stories), ("max_limit", max_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if moments is not None and not callable(moments):
            raise TypeError(f"moments must be callable, got {type(moments).__name__}")
        self._simulate = simulate
        self._extra_moments = moments
        self.tick = tick  # the marker of a moment at 0 ("D": ◆), passed to plot_timeline
        self.images = images
        self.max_stories = max_stories
        self.max_limit = max_limit
        self.values: dict[str, Any] = {"story_limit": story_limit, "global_limit": global_limit,
                                       "stories": stories, "policy": policy, "fail": fail}
        self.runs = 0
        self.result = self._run()
        self._png: bytes | None = None
        self._png_width = 800
        self._widgets: dict[str, Any] | None = None
        self._snapshot_handle: Any = None

    # -- the pure part -------------------------------------------------------
    def _run(self) -> Any:
        v = self.values
        if v["policy"] not in _POLICIES:
            raise ValueError(f"policy must be one of {', '.join(_POLICIES)}; got {v['policy']!r}")
        self.runs += 1
        return self._simulate(v["story_limit"], v["global_limit"], v["stories"],
                              images=self.images, policy=v["policy"], fail=v["fail"])

    def set(self, **changes: Any) -> Any:
        """Turn knobs (``story_limit=``, ``global_limit=``, ``stories=``, ``policy=``,
        ``fail=``), run again and redraw; returns the new result.

        A failing picture outside the new number of stories is dropped.
        """
        unknown = sorted(set(changes) - set(KNOBS))
        if unknown:
            raise ValueError(f"knobs are {', '.join(KNOBS)}; got {', '.join(unknown)}")
        before = dict(self.values)
        self.values.update(changes)
        fail = self.values["fail"]
        if fail is not None and fail[0] > self.values["stories"]:
            self.values["fail"] = None
        try:
            self.result = self._run()
        except Exception:
            self.values = before  # a refused setting leaves the last good one on show
            raise
        self._png = None
        self._sync_controls()
        self._redraw()
        return self.result

    def summary(self) -> str:
        return knob_summary(self.result)

    def png(self) -> bytes:
        """The timeline of the run on show, as PNG bytes (drawn once per setting)."""
        if self._png is None:
            import matplotlib.pyplot as plt

            from storylab.viz.timeline import _moments, plot_timeline

            v = self.values
            marked: Any = True
            if self._extra_moments is not None:  # the caller's moments, on top of the usual
                marked = [*_moments(self.result.trace, True, None),
                          *_moments(self.result.trace, self._extra_moments(self.result), None)]
            fig = plot_timeline(
                self.result.trace,
                title=f"{v['stories']} {'story' if v['stories'] == 1 else 'stories'}, "
                      f"{v['story_limit']} per story, "
                      f"{v['global_limit']} in total "
                      f"({'FIFO' if v['policy'] == 'fifo' else v['policy']}): makespan "
                      f"{self.result.cell.makespan:.1f} model s",
                moments=marked,
                tick=self.tick,
            )
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80)
            self._png_width = round(fig.get_size_inches()[0] * 80)
            plt.close(fig)
            self._png = buf.getvalue()
        return self._png

    def html(self) -> str:
        """A static picture of the current setting: the chart and its summary line."""
        data = base64.b64encode(self.png()).decode("ascii")
        text = html.escape(self.summary(), quote=True)
        return (f"<div class='{KNOBS_SNAPSHOT_CLASS}'><div class='storylab-summary' "
                f"style='font-size:14px'>In words: {text}</div><img alt='{text}' "
                f"src='data:image/png;base64,{data}'></div>")

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return f"<Knobs> {self.summary()}"

    # -- the widget ------------------------------------------------------------
    def _fail_choices(self) -> dict[str, Any]:
        """The failing-picture menu: its labels (the widget's values) and what each means.

        Labels, not ``None``/tuples, are the widget's values: a dropdown whose
        value is ``None`` shows an empty box instead of "none".
        """
        choices: dict[str, Any] = {"none": None}
        choices.update({f"story {_letter(k)}, picture 1": (k, 1)
                        for k in range(1, self.values["stories"] + 1)})
        fail = self.values["fail"]
        if fail is not None and fail not in choices.values():
            choices[f"story {_letter(fail[0])}, picture {fail[1]}"] = tuple(fail)
        return choices

    def _fail_label(self) -> str:
        return next(label for label, v in self._fail_choices().items()
                    if v == self.values["fail"])

    def widget(self) -> Any:
        """The controls, the chart and the summary line (built once)."""
        if self._widgets is not None:
            return self._widgets["box"]
        import ipywidgets as w

        v = self.values
        style = {"description_width": "initial"}
        controls = {
            "story_limit": w.IntSlider(value=v["story_limit"], min=1,
                                       max=max(self.max_limit, v["story_limit"]),
                                       description="per-story limit", style=style,
                                       continuous_update=False),
            "global_limit": w.IntSlider(value=v["global_limit"], min=1,
                                        max=max(self.max_limit, v["global_limit"]),
                                        description="global limit", style=style,
                                        continuous_update=False),
            "stories": w.IntSlider(value=v["stories"], min=1,
                                   max=max(self.max_stories, v["stories"]),
                                   description="stories", style=style, continuous_update=False),
            "policy": w.ToggleButtons(options=[("fair", "fair"), ("FIFO", "fifo")],
                                      value=v["policy"], description="policy", style=style),
            "fail": w.Dropdown(options=list(self._fail_choices()), value=self._fail_label(),
                               description="a failing picture", style=style),
        }
        chart = w.Image(value=self.png(), format="png",
                        layout=w.Layout(width=f"{self._png_width}px"))
        text = w.HTML()
        box = w.VBox([w.HBox([controls["story_limit"], controls["global_limit"],
                              controls["stories"]], layout=w.Layout(flex_flow="row wrap")),
                      w.HBox([controls["policy"], controls["fail"]],
                             layout=w.Layout(flex_flow="row wrap")),
                      text, chart])
        box.add_class("storylab-knobs")
        self._widgets = {"box": box, "chart": chart, "text": text, **controls}
        for name in KNOBS:
            controls[name].observe(lambda ch, name=name: self._on_control(name, ch["new"]),
                                   names="value")
        self._redraw()
        return box

    def _on_control(self, name: str, value: Any) -> None:
        if name == "fail":
            value = self._fail_choices().get(value)
        if self._syncing or self.values.get(name) == value:
            return
        try:
            self.set(**{name: value})
        except ValueError as err:  # shown where the chart's summary is, not lost in a log
            if self._widgets is not None:
                self._widgets["text"].value = (f"<b style='color:#d55e00'>refused:</b> "
                                               f"{html.escape(str(err))}")

    _syncing = False

    def _sync_controls(self) -> None:
        if self._widgets is None:
            return
        self._syncing = True
        try:
            fail = self._widgets["fail"]
            fail.options = list(self._fail_choices())
            fail.value = self._fail_label()
            for name in KNOBS[:-1]:
                if self._widgets[name].value != self.values[name]:
                    self._widgets[name].value = self.values[name]
        finally:
            self._syncing = False

    def _redraw(self) -> None:
        if self._widgets is not None:
            self._widgets["chart"].value = self.png()
            # The hiding style travels inside the widget, so the snapshot disappears in
            # any front end that draws the widget (not only JupyterLab and Notebook 7).
            self._widgets["text"].value = (f"<style>.{KNOBS_SNAPSHOT_CLASS}{{display:none}}"
                                           "</style>"
                                           f"<div class='storylab-summary' style='font-size:14px'>"
                                           f"{html.escape(self.summary())}</div>")
        if self._snapshot_handle is not None:
            self._snapshot_handle.update({"text/html": self._snapshot_html()}, raw=True)

    def _snapshot_html(self) -> str:
        return (f"<style>.jp-LabShell .{KNOBS_SNAPSHOT_CLASS}, .jp-NotebookShell "
                f".{KNOBS_SNAPSHOT_CLASS}{{display:none}}</style>{self.html()}")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        from storylab.viz.progress.panel import in_jupyter_kernel

        if not in_jupyter_kernel():
            display({"text/plain": repr(self), "text/html": self.html()}, raw=True)
            return
        box = self.widget()
        data = box._repr_mimebundle_()
        data["text/plain"] = self.summary()
        display(data, raw=True)
        self._snapshot_handle = display({"text/html": self._snapshot_html()}, raw=True,
                                        display_id=True)
