"""The progress panel in an executed notebook: the saved output is the finished state."""

from __future__ import annotations

import time

import nbformat
import pytest

CELLS = [
    # parameters
    'graph_path = "graph.sqlite"',
    """
import asyncio
from storylab.entities import EntityGraph, Return, RunnableEntity
from storylab.scheduling import CapacitySource, HierarchicalTaskPoolRunner, TaskEventType
from storylab.viz import ProgressPanel

class NbImage(RunnableEntity):
    async def run_impl(self):
        await asyncio.sleep(0.01)
        if self.data["n"] == 2:
            raise RuntimeError("no ink")
        yield Return(self.data["n"])

class NbStory(RunnableEntity):
    async def run_impl(self):
        items = [{"name": f"image-{n}", "data": {"n": n}} for n in range(1, 5)]
        yield self.progress({"stage": "images", "total": 4, "items": [i["name"] for i in items]})
        runner = HierarchicalTaskPoolRunner(
            self.name, self.parallel_calls(NbImage, items), CapacitySource(2, name="story"))
        async for env in runner.run_tasks():
            if env.type is TaskEventType.INTERMEDIATE:
                yield env.value
        yield Return("done")

graph = EntityGraph.open(graph_path)
story = graph.create(NbStory, "notebook story")
""",
    """
panel = ProgressPanel("stories")
result = await panel.watch(story.start())
print(panel.form, result)
""",
]


def _notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.strip()) for src in CELLS]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


@pytest.mark.slow
def test_papermill_saves_the_finished_widget_state_and_text(tmp_path):
    papermill = pytest.importorskip("papermill")
    source, output = tmp_path / "panel.ipynb", tmp_path / "panel.out.ipynb"
    nbformat.write(_notebook(), source)
    started = time.perf_counter()
    papermill.execute_notebook(
        str(source), str(output), parameters={"graph_path": str(tmp_path / "g.sqlite")},
        kernel_name="python3", cwd=str(tmp_path), execution_timeout=60, start_timeout=60,
        progress_bar=False,
    )
    elapsed = time.perf_counter() - started
    nb = nbformat.read(output, as_version=4)
    cell = nb.cells[-1]
    streams = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert streams.strip() == "widget done"
    shown, snapshot = [o for o in cell.outputs if o.output_type == "display_data"]
    text = shown.data["text/plain"]
    assert text.splitlines()[:2] == [
        "stories",
        "notebook story [completed with errors] images: 4/4 done (3 completed, 1 failed)",
    ]
    assert "  ✗ image-2 failed: no ink" in text.splitlines()
    view = shown.data["application/vnd.jupyter.widget-view+json"]
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert view["model_id"] in state
    bars = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert [(b["value"], b["max"], b["bar_style"]) for b in bars] == [(4, 4, "warning")]
    rows = [m["state"]["value"] for m in state.values()
            if m["model_name"] == "HTMLModel" and "data-status" in m["state"]["value"]]
    assert len(rows) == 1
    assert "data-name='image-2' data-status='failed'" in rows[0]
    assert rows[0].count("data-status='completed'") == 3
    # Right under the widget: a static snapshot of the final state, plain HTML.
    assert set(snapshot.data) == {"text/html"}
    static = snapshot.data["text/html"]
    assert "4/4 done (3 completed, 1 failed)" in static and "<script" not in static
    assert "data-name='image-2' data-status='failed'" in static
    assert "width:100%" in static  # the bar is drawn full
    print(f"papermill run took {elapsed:.1f}s")
    _exported_page_shows_the_snapshot(output)


def _exported_page_shows_the_snapshot(executed):
    """nbconvert's HTML page holds the finished bars and rows without widget JavaScript."""
    nbconvert = pytest.importorskip("nbconvert")
    page, _ = nbconvert.HTMLExporter().from_filename(str(executed))
    page = page.replace("'", '"')  # nbconvert rewrites attribute quotes
    start = page.index('class="storylab-progress-snapshot"')
    block = page[start:start + 4000]
    assert "4/4 done (3 completed, 1 failed)" in block
    assert "NbImage (image-2)" in block and 'data-status="failed"' in block
    assert "width:100%" in block
    # The widget view itself needs a CDN script to render; the snapshot does not.
    assert "<script" not in block.split("</table>")[0]
