"""The progress panel: final widget state, text summary, throttling, forms."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import textwrap
import types

import pytest
from vizkit import VizStory

from storylab.entities import Envelope
from storylab.viz import ProgressPanel, in_jupyter_kernel
from storylab.viz._palette import COLOURS, Status


def _bars(panel: ProgressPanel) -> list:
    return [part["bar"] for part in panel._widgets.parts.values()]


def _row_statuses(panel: ProgressPanel, key: str | None = None) -> dict[str, str]:
    part = panel._widgets.parts[key or next(iter(panel._widgets.parts))]
    return dict(re.findall(r"data-name='([^']+)' data-status='([^']+)'", part["rows"].value))


async def test_finished_run_leaves_a_full_green_bar_and_completed_rows(graph):
    story = graph.create(VizStory, "fox", {"images": 4, "seconds": 0.001})
    panel = ProgressPanel("stories", form="widget")
    result = await panel.watch(story.start())
    assert result == {"done": 4, "failed": 0}
    (bar,) = _bars(panel)
    assert (bar.value, bar.max, bar.bar_style) == (4, 4, "success")
    assert _row_statuses(panel) == {
        "writer": "completed", **{f"image-{i}": "completed" for i in range(1, 5)}
    }
    rows_html = next(iter(panel._widgets.parts.values()))["rows"].value
    assert rows_html.count(f"color:{COLOURS[Status.COMPLETED]}") == 2 * 5
    (p,) = panel.pipelines
    assert (p.entity_id, p.title, p.status, p.total, p.done) == (
        story.id, "fox", Status.COMPLETED, 4, 4)
    text = panel.summary()
    assert text.splitlines()[:2] == [
        "stories",
        "fox [completed] images: 4/4 done (4 completed)",
    ]
    assert "  ✓ image-4 completed" in text.splitlines()
    view = panel._widgets.view()._repr_mimebundle_()
    assert view["text/plain"] == text
    assert "application/vnd.jupyter.widget-view+json" in view


async def test_a_failed_image_turns_its_row_red_and_the_bar_orange(graph):
    story = graph.create(VizStory, "owl", {"images": 3, "seconds": 0.001, "fail": [2]})
    panel = ProgressPanel(form="widget")
    assert await panel.watch(story.start()) == {"done": 2, "failed": 1}
    (bar,) = _bars(panel)
    assert (bar.value, bar.max, bar.bar_style) == (3, 3, "warning")
    statuses = _row_statuses(panel)
    assert statuses["image-2"] == "failed"
    assert statuses["image-1"] == statuses["image-3"] == "completed"
    rows = {r.name: r for r in panel.pipelines[0].rows}
    assert rows["image-2"].colour == COLOURS[Status.FAILED]
    assert "no ink for image-2" in rows["image-2"].message
    html = next(iter(panel._widgets.parts.values()))["rows"].value
    failed_row = re.search(r"<tr data-name='image-2'.*?</tr>", html).group(0)
    assert COLOURS[Status.FAILED] in failed_row and "no ink for image-2" in failed_row
    text = panel.summary()
    assert "owl [completed with errors] images: 3/3 done (2 completed, 1 failed)" \
        in text
    title = next(iter(panel._widgets.parts.values()))["title"].value
    assert "completed with errors" in title
    assert "  ✗ image-2 failed: no ink for image-2" in text


async def test_a_failed_pipeline_is_shown_then_its_error_raised(graph):
    story = graph.create(VizStory, "cat", {"images": 2, "seconds": 0.001, "explode": True})
    panel = ProgressPanel(form="widget")
    with pytest.raises(ValueError, match="the story itself failed"):
        await panel.watch(story.start())
    (bar,) = _bars(panel)
    assert bar.bar_style == "danger" and bar.value == 2
    assert panel.pipelines[0].status is Status.FAILED
    assert "cat [failed]" in panel.summary()


async def test_several_pipelines_with_the_same_child_names_stay_apart(graph):
    a = graph.create(VizStory, "a", {"images": 3, "seconds": 0.002, "fail": [1]})
    b = graph.create(VizStory, "b", {"images": 5, "seconds": 0.001})
    panel = ProgressPanel(form="widget")
    results = await asyncio.gather(panel.watch(a.start()), panel.watch(b.start()))
    assert results == [{"done": 2, "failed": 1}, {"done": 5, "failed": 0}]
    by_name = {p.name: p for p in panel.pipelines}
    assert (by_name["a"].total, by_name["a"].failed, by_name["b"].total) == (3, 1, 5)
    assert [(bar.value, bar.max, bar.bar_style) for bar in _bars(panel)] == [
        (3, 3, "warning"), (5, 5, "success")]
    assert _row_statuses(panel, a.id)["image-1"] == "failed"
    assert _row_statuses(panel, b.id)["image-1"] == "completed"


def _env(kind, eid, name, etype="Image", **fields):
    return Envelope(kind, eid, etype, name, **fields)


def test_rows_wait_for_capacity_until_their_entity_starts():
    panel = ProgressPanel(form="widget", min_interval=0)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"))
    panel.update(_env("VALUE", "p", "story", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 3, "items": ["i1", "i2", "i3"]}))
    panel.update(_env("STATUS", "c1", "i1", status="STARTED"))
    assert _row_statuses(panel) == {"i1": "running", "i2": "waiting for capacity",
                                    "i3": "waiting for capacity"}
    (bar,) = _bars(panel)
    assert (bar.value, bar.max, bar.bar_style) == (0, 3, "info")
    panel.update(_env("STATUS", "c1", "i1", status="COMPLETED"))
    assert bar.value == 1
    assert panel.pipelines[0].counts_text() == \
        "images: 1/3 done (1 completed, 2 waiting for capacity)"


def test_rows_no_capacity_holds_back_say_they_have_not_started_yet():
    panel = ProgressPanel(form="widget", min_interval=0, waiting_text="not started yet")
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"))
    panel.update(_env("VALUE", "p", "story", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 3, "items": ["i1", "i2", "i3"]}))
    panel.update(_env("STATUS", "c1", "i1", status="STARTED"))
    (pipeline,) = panel.pipelines
    assert [r.status_text for r in pipeline.rows] == ["running", "not started yet",
                                                      "not started yet"]
    assert pipeline.counts_text() == "images: 0/3 done (1 running, 2 not started yet)"
    rows = panel._widgets.parts[next(iter(panel._widgets.parts))]["rows"].value
    shown = re.sub(r"data-status='[^']*'", "", rows)  # the attribute keeps the status's id
    assert "not started yet" in shown and "waiting for capacity" not in shown
    assert "waiting for capacity" not in panel.summary()


def test_a_thousand_entities_are_rendered_a_few_times_and_the_end_always():
    now = [0.0]

    def clock():
        now[0] += 0.0005  # 2,000 envelopes per second of (fake) time
        return now[0]

    panel = ProgressPanel(form="widget", clock=clock, min_interval=0.1)
    names = [f"image-{i}" for i in range(1000)]
    panel.update(_env("STATUS", "p", "big", "Pipeline", status="STARTED"))
    panel.update(_env("VALUE", "p", "big", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 1000, "items": names}))
    for i, name in enumerate(names):
        panel.update(_env("STATUS", f"c{i}", name, status="STARTED"))
        panel.update(_env("STATUS", f"c{i}", name,
                          status="FAILED" if i % 100 == 0 else "COMPLETED"))
    panel.update(_env("STATUS", "p", "big", "Pipeline", status="COMPLETED"))
    # About 1 s of fake time at <= 10 renders per second.
    assert panel.renders <= 12
    (bar,) = _bars(panel)
    assert bar.value < 1000 or bar.bar_style != "warning"  # the last state was throttled...
    panel.close()
    assert panel.renders <= 13
    assert (bar.value, bar.max, bar.bar_style) == (1000, 1000, "warning")  # ...and flushed
    html = next(iter(panel._widgets.parts.values()))["rows"].value
    assert html.count("<tr data-name=") == 50 and "… and 950 more" in html
    assert "1000/1000 done (990 completed, 10 failed)" in panel.summary()


async def test_a_pending_change_is_rendered_by_a_timer_on_the_loop():
    # The interval is wide enough that the two updates below always fall inside
    # it, however busy the machine; the timer's render is then awaited, not timed.
    panel = ProgressPanel(form="widget", min_interval=0.3)
    panel.update(_env("STATUS", "p", "s", "Pipeline", status="STARTED"))
    panel.update(_env("VALUE", "p", "s", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 1, "items": ["i1"]}))
    (bar,) = _bars(panel)
    assert bar.max == 1 and panel.renders == 1  # second update was throttled
    for _ in range(100):  # the pending change is drawn by a timer, with no new update
        if panel.renders == 2:
            break
        await asyncio.sleep(0.05)
    assert panel.renders == 2 and _row_statuses(panel) == {"i1": "waiting for capacity"}


def test_bad_input_names_the_field():
    panel = ProgressPanel(form="text", stream=io.StringIO())
    with pytest.raises(ValueError, match="envelope field 'type' must be one of"):
        panel.update({"type": "NOPE", "entity_id": "x"})
    with pytest.raises(ValueError, match="envelope field 'entity_id'"):
        panel.update({"type": "STATUS"})
    panel.update(_env("STATUS", "p", "s", "Pipeline", status="STARTED"))
    with pytest.raises(ValueError, match=r"progress value\['total'\] must be an integer >= 0"):
        panel.update(_env("VALUE", "p", "s", "Pipeline", sub_type="progress",
                          value={"total": -1, "items": []}))
    with pytest.raises(ValueError, match=r"progress value\['items'\]"):
        panel.update(_env("VALUE", "p", "s", "Pipeline", sub_type="progress",
                          value={"total": 1, "items": "abc"}))
    assert panel.pipelines[0].total == 0  # nothing half-applied
    with pytest.raises(ValueError, match="form must be one of widget, text"):
        ProgressPanel(form="html")
    with pytest.raises(ValueError, match="min_interval"):
        ProgressPanel(min_interval=-1)
    with pytest.raises(ValueError, match="max_rows"):
        ProgressPanel(max_rows=0)
    panel.close()
    panel.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        panel.update(_env("STATUS", "p", "s", "Pipeline", status="COMPLETED"))


def test_the_environment_picks_the_form(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell", raising=False)
    assert not in_jupyter_kernel()
    assert ProgressPanel(stream=io.StringIO()).form == "text"
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    assert in_jupyter_kernel()
    assert ProgressPanel().form == "widget"


async def test_text_form_prints_lines_and_the_final_state(graph):
    out = io.StringIO()
    story = graph.create(VizStory, "text", {"images": 3, "seconds": 0.001, "fail": [3]})
    panel = ProgressPanel(form="text", stream=out)
    assert await panel.watch(story.start()) == {"done": 2, "failed": 1}
    lines = out.getvalue().splitlines()
    assert "text [completed with errors] images: 3/3 done (2 completed, 1 failed)" in lines
    assert "  ✗ image-3 failed: no ink for image-3" in lines


async def test_a_labelled_story_is_titled_by_its_label_in_every_form(graph):
    story = graph.create(VizStory, "titled", {"images": 2, "seconds": 0.001, "fail": []})
    out = io.StringIO()
    panel = ProgressPanel(form="text", stream=out)
    await panel.watch(story.start(), root=story.id, label="story A")
    (pipeline,) = panel.pipelines
    assert pipeline.title == "story A"
    assert "story A [completed] images: 2/2 done" in out.getvalue()
    assert "VizStory (titled)" not in out.getvalue()
    # Without a label the entity's own name is the title; its class only in the detail.
    plain = ProgressPanel(form="text", stream=io.StringIO())
    await plain.watch(story.start())
    assert plain.pipelines[0].title == "titled"
    assert plain.pipelines[0].detail == "VizStory (titled)"


async def test_text_form_logs_one_labelled_line_per_change(graph):
    out = io.StringIO()
    story = graph.create(VizStory, "log", {"images": 2, "seconds": 0.001, "fail": [2]})
    panel = ProgressPanel(form="text", stream=out, summary_at_end=False)
    panel.note("starting", root=story.id, label="my story")
    await panel.watch(story.start(), root=story.id, label="my story")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[my story] starting"
    assert lines.count("[my story] image-1 started") == 1
    assert lines.count("[my story] image-1 done") == 1  # once, not per envelope
    assert "[my story] image-2 FAILED: RuntimeError: no ink for image-2" in lines
    assert all(line.startswith("[my story] ") for line in lines)  # no summary block
    assert "\x1b" not in out.getvalue()  # plain lines: no terminal control codes

    again = io.StringIO()
    panel = ProgressPanel(form="text", stream=again)
    await panel.watch(story.start())
    panel.close()
    text = again.getvalue()
    # The story ended Completed: started again, it hands back its stored result.
    assert " started" not in text and "[completed]" in text


def test_a_child_handed_back_from_the_graph_is_logged_as_already_done():
    out = io.StringIO()
    panel = ProgressPanel(form="text", stream=out, summary_at_end=False)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"), root="p")
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="RUNNING",
                      message="Drawing"), root="p")
    # A child finished by an earlier run sends only its stored return value.
    panel.update(_env("VALUE", "c1", "i1", sub_type="return", value=1), root="p")
    panel.update(_env("STATUS", "c2", "i2", status="STARTED"), root="p")
    panel.update(_env("VALUE", "c2", "i2", sub_type="return", value=2), root="p")
    panel.update(_env("STATUS", "c2", "i2", status="COMPLETED"), root="p")
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="COMPLETED"), root="p")
    assert out.getvalue().splitlines() == [
        "[story] Drawing", "[story] i1 already done", "[story] i2 started", "[story] i2 done"
    ]
    panel.close()
    assert out.getvalue().count("\n") == 4  # summary_at_end=False: nothing more at the end
    with pytest.raises(RuntimeError, match="closed"):
        panel.note("late", root="p")


def test_a_note_is_the_pipelines_message_in_the_widget():
    panel = ProgressPanel(form="widget", min_interval=0)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"), root="p")
    panel.note("resuming (Failed)", root="p", label="my story")
    (p,) = panel.pipelines
    assert p.message == "resuming (Failed)" and "resuming (Failed)" in p.summary_line()
    part = next(iter(panel._widgets.parts.values()))
    assert "resuming (Failed)" in part["title"].value


def test_text_form_in_a_terminal_run(tmp_path):
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from vizkit import VizStory
        from storylab.entities import EntityGraph
        from storylab.viz import ProgressPanel

        async def main():
            with EntityGraph.open({str(tmp_path / "g.sqlite")!r}) as g:
                story = g.create(VizStory, "terminal", {{"images": 4, "seconds": 0.001,
                                                         "fail": [2]}})
                panel = ProgressPanel("stories")
                print("form:", panel.form)
                result = await panel.watch(story.start())
                panel.close()
                print("result:", result)

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0] == "form: text"
    assert ("terminal [completed with errors] images: 4/4 done (3 completed, "
            "1 failed)") in lines
    assert "  ✓ image-1 completed" in lines
    assert "  ✗ image-2 failed: no ink for image-2" in lines
    assert lines[-1] == "result: {'done': 3, 'failed': 1}"
    assert "ipywidgets" not in out.stderr


async def test_a_finished_pipeline_started_again_shows_full(graph):
    story = graph.create(VizStory, "again", {"images": 2, "seconds": 0.001})
    await story.run()
    panel = ProgressPanel(form="widget")
    assert await panel.watch(story.start()) == {"done": 2, "failed": 0}  # stored result
    (bar,) = _bars(panel)
    assert (bar.value, bar.max, bar.bar_style) == (1, 1, "success")
    assert panel.pipelines[0].status is Status.COMPLETED


def test_static_snapshot_is_plain_html_of_the_final_state():
    from storylab.viz.progress import static_snapshot_html

    panel = ProgressPanel("stories", form="text", stream=io.StringIO(), min_interval=0)
    assert "(no pipelines yet)" in static_snapshot_html(panel)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"))
    panel.update(_env("VALUE", "p", "story", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 2, "items": ["i1", "i2"]}))
    panel.update(_env("STATUS", "c1", "i1", status="COMPLETED"))
    half = static_snapshot_html(panel)
    assert "width:50%" in half and "1/2 done" in half
    panel.update(_env("STATUS", "c2", "i2", status="FAILED", message="no ink"))
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="COMPLETED"))
    page = static_snapshot_html(panel)
    assert "<script" not in page and "http" not in page  # nothing to fetch from a CDN
    assert "width:100%" in page and "2/2 done (1 completed, 1 failed)" in page
    assert "data-name='i2' data-status='failed'" in page and "no ink" in page
    assert "<b>stories</b>" in page
    # Hidden where the live widget is shown (JupyterLab, Notebook 7), visible elsewhere.
    assert ".jp-LabShell .storylab-progress-snapshot" in page


def test_a_trace_adds_the_live_capacity_gauge_and_compact_rows_fit_a_screen():
    from storylab.scheduling import Trace
    from storylab.sweep import what_if
    from storylab.viz.progress import static_snapshot_html

    run = what_if(3, 10)
    # The trace as it stood when every story had asked: the split, mid-run.
    first_end = next(i for i, e in enumerate(run.trace.events) if e.kind == "task_end")
    live = Trace(meta=dict(run.trace.meta), events=run.trace.events[:first_end],
                 started_at=run.trace.started_at)
    panel = ProgressPanel("stories", form="widget", trace=live, compact=True)
    for k in range(1, 3):
        panel.update(_env("STATUS", f"p{k}", f"story {k}", "Pipeline", status="STARTED"),
                     root=f"p{k}")
        panel.update(_env("VALUE", f"p{k}", f"story {k}", "Pipeline", sub_type="progress",
                          value={"stage": "images", "total": 5,
                                 "items": [f"image-{i}" for i in range(1, 6)]}), root=f"p{k}")
        panel.update(_env("STATUS", f"c{k}", "image-1", status="STARTED"), root=f"p{k}")
    panel.update(_env("VALUE", "c9", "image-2", sub_type="return", value=1), root="p1")
    panel.flush(final=True)
    assert panel.summary().splitlines()[:4] == [
        "stories", "global 10/10 · A ●●● B ●●● C ●●● D ●○○ E ○○○",
        "story 1 [running] images: 1/5 done (1 completed, 1 running, 3 waiting for "
        "capacity)",
        "  ▶↺···"]
    gauge = panel._widgets.gauge.value
    assert "data-level='story:4' data-label='story D' data-in-use='1'" in gauge
    assert gauge.count("data-blocked-by='global'") == 2 + 1  # D and E, and the legend
    rows = next(iter(panel._widgets.parts.values()))["rows"].value
    assert rows.startswith("<div class='glyphs'") and "<table" not in rows
    # A child handed back from the graph has its own glyph and colour.
    assert "data-name='image-2' data-status='completed'" in rows and "↺" in rows
    assert "completed, reused from the graph" in rows
    static = static_snapshot_html(panel)
    assert "data-level='global'" in static and "<script" not in static


def test_a_row_is_titled_in_the_readers_words_not_by_its_placeholder():
    from storylab.viz.progress.model import RowState

    row = RowState("image-{{IMAGE_2}}", "ImageGenerationEntity", None, Status.RUNNING, None, True)
    assert row.title == "image-2"
    assert row.detail == "ImageGenerationEntity (image-{{IMAGE_2}})"
    bare = RowState("image-{{IMAGE_4}}", None, None, Status.WAITING, None, True)
    assert bare.title == "image-4"


def test_a_finished_pipeline_drops_its_last_activity():
    panel = ProgressPanel(form="text", stream=io.StringIO())
    panel.update(_env("STATUS", "p", "story", etype="Story", status="RUNNING",
                      message="Storing results"), root="p")
    assert "— Storing results" in panel.pipelines[0].summary_line()
    panel.update(_env("STATUS", "p", "story", etype="Story", status="COMPLETED", message=None),
                 root="p")
    (p,) = panel.pipelines
    assert p.activity is None and "Storing results" not in p.summary_line()
    assert p.summary_line().startswith("story [completed]")


def test_a_compact_row_names_its_failed_pictures():
    from storylab.viz.progress.widget import glyph_strip

    panel = ProgressPanel("stories", form="text", compact=True)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"), root="p")
    panel.update(_env("VALUE", "p", "story", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 3,
                             "items": ["image-1", "image-2", "image-3"]}), root="p")
    for k in (1, 2, 3):
        panel.update(_env("STATUS", f"c{k}", f"image-{k}", status="STARTED"), root="p")
    panel.update(_env("STATUS", "c2", "image-2", status="FAILED", message="refused"), root="p")
    (pipeline,) = panel.pipelines
    assert glyph_strip(pipeline).count("✗") == 2  # the glyph, and the name after the strip
    assert "✗ image-2</span>" in glyph_strip(pipeline)
    assert panel.summary().splitlines()[-1].endswith("  (✗ image-2)")


def test_the_live_widget_carries_the_style_that_hides_the_snapshot():
    from storylab.viz.progress import static_snapshot_html
    from storylab.viz.progress.widget import SNAPSHOT_CLASS

    panel = ProgressPanel(form="widget", min_interval=0)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"), root="p")
    hide = f"<style>.{SNAPSHOT_CLASS}{{display:none}}</style>"
    assert hide in panel._widgets.header.value  # drawn only where widgets are
    assert hide not in static_snapshot_html(panel)  # the snapshot alone stays visible


def test_a_completed_row_drops_its_last_in_progress_words():
    panel = ProgressPanel(form="widget", min_interval=0)
    panel.update(_env("STATUS", "p", "story", "Pipeline", status="STARTED"), root="p")
    panel.update(_env("VALUE", "p", "story", "Pipeline", sub_type="progress",
                      value={"stage": "images", "total": 2, "items": ["i1", "i2"]}), root="p")
    for k in (1, 2):
        panel.update(_env("STATUS", f"c{k}", f"i{k}", status="RUNNING",
                          message=f"Saving i{k} to the blob store"), root="p")
    rows_html = next(iter(panel._widgets.parts.values()))["rows"]
    assert "Saving i1 to the blob store" in rows_html.value  # still at work: worth saying
    panel.update(_env("STATUS", "c1", "i1", status="COMPLETED"), root="p")
    row = re.search(r"<tr data-name='i1'.*?</tr>", rows_html.value).group(0)
    assert "data-status='completed'" in row and "blob store" not in row
    assert "Saving i2 to the blob store" in rows_html.value  # the running row keeps its words
    (done, running) = panel.pipelines[0].rows
    assert done.activity is None and running.activity == "Saving i2 to the blob store"
