"""The trace replay and the knobs in a real JupyterLab: a learner drags the
slider and reads the capacity gauge; turns a knob and sees a new split.

The notebook is written by the test (a five-story run on the simulated clock,
so every number is exact), opened in headless Chromium, run, and driven
through the widgets' own controls: the slider's handle by keyboard, a
key-moment button and a knob's slider by mouse and keyboard.
"""

from __future__ import annotations

import labharness
import nbformat
import pytest

pytestmark = pytest.mark.ui

CELLS = [
    "from storylab.sweep import knobs, what_if\n"
    "from storylab.viz import replay\n"
    "run = what_if(3, 10)  # five stories of five pictures, 3 per story, 10 in total",
    "replay(run.trace, title='Five stories, 10 units')",
    "knobs()",
]

GAUGE = ".storylab-replay .storylab-gauge"
READ_GAUGE = f"""() => {{
  const g = document.querySelector({GAUGE!r});
  if (!g) return null;
  const levels = {{}};
  for (const el of g.querySelectorAll('.storylab-level'))
    levels[el.dataset.level] = [Number(el.dataset.inUse), el.dataset.limit];
  const waits = Array.from(g.querySelectorAll('.storylab-level'))
    .map(el => [el.dataset.level, Array.from(el.querySelectorAll('.storylab-wait'))
                .map(w => w.dataset.blockedBy)]);
  return {{t: Number(g.dataset.t), levels, waits: Object.fromEntries(waits)}};
}}"""


def _in_use(state: dict) -> list[int]:
    return [state["levels"][name][0] for name in
            ("global", "story:1", "story:2", "story:3", "story:4", "story:5")]


def _cursor_left(page) -> float:
    """The cursor's offset from the timeline picture's left edge, as laid out."""
    return page.evaluate("""() => {
      const c = document.querySelector('.storylab-replay .storylab-cursor');
      const img = document.querySelector('.storylab-replay .widget-image');
      return c.getBoundingClientRect().left - img.getBoundingClientRect().left;
    }""")


@pytest.fixture
def replay_notebook(lab_server):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = lab_server.root / "replay_ui.ipynb"
    nbformat.write(nb, path)
    return "replay_ui.ipynb"


def test_the_replay_slider_moves_the_gauge(lab_server, replay_notebook, page, screenshots):
    labharness.open_notebook(page, lab_server, replay_notebook)
    report = labharness.run_all_and_wait(page, timeout_ms=120_000)
    assert report.ok, report.describe()
    page.wait_for_function(f"() => document.querySelector({GAUGE!r}) !== null", timeout=30_000)
    try:
        # Position 1, where the replay opens: the split of the five stories.
        at_split = page.evaluate(READ_GAUGE)
        assert at_split["t"] == 0
        assert _in_use(at_split) == [10, 3, 3, 3, 1, 0]
        assert at_split["waits"]["story:1"] == ["story"]  # A is full: its own limit
        assert at_split["waits"]["story:5"] == ["global"]  # E has room: the pool is full
        page.locator(".storylab-replay").screenshot(path=str(screenshots / "replay-split.png"))

        # Position 2: the learner drags the handle to the end of the run (keyboard: End).
        handle = page.locator(".storylab-replay .noUi-handle").first
        handle.focus()
        page.keyboard.press("End")
        page.wait_for_function(f"() => Number(document.querySelector({GAUGE!r})"
                               ".dataset.t) > 29", timeout=15_000)
        at_end = page.evaluate(READ_GAUGE)
        assert _in_use(at_end) == [0, 0, 0, 0, 0, 0]
        assert all(w == [] for w in at_end["waits"].values())
        cursor_end = _cursor_left(page)

        # Position 3: a key-moment button (the first hand-off) moves slider and cursor back.
        page.locator(".storylab-replay .storylab-moment-handoff").click()
        page.wait_for_function(f"() => Number(document.querySelector({GAUGE!r})"
                               ".dataset.t) === 10", timeout=15_000)
        at_handoff = page.evaluate(READ_GAUGE)
        # Right after the hand-off, not after the whole instant: A gave a unit back, E has it.
        assert _in_use(at_handoff) == [10, 2, 3, 3, 1, 1]
        assert 0 < _cursor_left(page) < cursor_end  # the cursor on the timeline moved back
        page.locator(".storylab-replay").screenshot(path=str(screenshots / "replay-handoff.png"))

        # The knobs: global 10 -> 11 with the keyboard, and the split changes.
        summary = page.locator(".storylab-knobs .storylab-summary")
        assert "split 3,3,3,1,0" in summary.inner_text()
        global_handle = page.locator(".storylab-knobs .widget-slider").nth(1) \
            .locator(".noUi-handle")
        global_handle.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("() => document.querySelector('.storylab-knobs "
                               ".storylab-summary')?.textContent.includes('split 3,3,3,2,0')",
                               timeout=20_000)
        page.locator(".storylab-knobs").screenshot(path=str(screenshots / "knobs.png"))
    finally:
        labharness.screenshot_series(page, screenshots, "replay_ui")
    labharness.shutdown_kernel(page)
