"""The replay and the knobs in an executed notebook: papermill keeps a readable
static snapshot under each widget, and nbconvert's page shows it."""

from __future__ import annotations

import re

import nbformat
import pytest

CELLS = [
    "from storylab.sweep import knobs, what_if\nfrom storylab.viz import replay\n"
    "run = what_if(3, 10)",
    "replay(run.trace, title='Five stories')",
    "knobs(global_limit=12)",
]


@pytest.mark.slow
def test_papermill_keeps_a_static_snapshot_of_replay_and_knobs(tmp_path):
    papermill = pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    source, output = tmp_path / "replay.ipynb", tmp_path / "replay.out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(output), kernel_name="python3",
                               cwd=str(tmp_path), execution_timeout=120, start_timeout=60,
                               progress_bar=False)
    done = nbformat.read(output, as_version=4)
    widget, snapshot = [o for o in done.cells[1].outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in widget.data
    # The widget's text/plain is the state's one-line summary (its alt text).
    assert widget.data["text/plain"].startswith(
        "At 0.0 of 30.0 model s: global 10/10 · A ●●● B ●●● C ●●● D ●○○ E ○○○;")
    static = snapshot.data["text/html"]
    assert "storylab-replay-snapshot" in static and "<script" not in static
    levels = dict(re.findall(r"data-level='([^']+)'[^>]*?data-in-use='(\d+)'", static))
    assert levels == {"global": "10", "story:1": "3", "story:2": "3", "story:3": "3",
                      "story:4": "1", "story:5": "0"}
    assert "data:image/png;base64," in static and "storylab-cursor" in static
    knob_widget, knob_snapshot = [o for o in done.cells[2].outputs
                                  if o.output_type == "display_data"]
    assert "split 3,3,3,3,0" in knob_widget.data["text/plain"]
    assert "split 3,3,3,3,0" in knob_snapshot.data["text/html"]

    nbconvert = pytest.importorskip("nbconvert")
    page, _ = nbconvert.HTMLExporter().from_filename(str(output))
    page = page.replace("'", '"')
    start = page.index('class="storylab-replay-snapshot"')
    block = page[start:start + 200_000]
    assert 'data-level="story:4"' in block and "waits: global" in block
    assert "split 3,3,3,3,0" in page[page.index('class="storylab-knobs-snapshot"'):]
