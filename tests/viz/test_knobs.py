"""The knobs widget: every control re-runs the simulation and redraws at once."""

from __future__ import annotations

import pytest

from storylab.sweep import knobs, what_if
from storylab.viz.knobs import Knobs


def test_moving_the_global_limit_redraws_with_the_new_split():
    k = knobs()
    box = k.widget()
    w = k._widgets
    first_png = w["chart"].value
    assert first_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "split 3,3,3,1,0" in w["text"].value
    w["global_limit"].value = 12
    assert k.values["global_limit"] == 12 and k.result.cell.global_limit == 12
    assert "split 3,3,3,3,0" in w["text"].value and "12 in total" in w["text"].value
    assert w["chart"].value != first_png
    assert "storylab-knobs" in box._dom_classes


def test_every_knob_reaches_the_simulation():
    calls = []

    def simulate(story_limit, global_limit, stories, **kw):
        calls.append((story_limit, global_limit, stories, kw["policy"], kw["fail"]))
        return what_if(story_limit, global_limit, stories, **kw)

    k = Knobs(simulate)
    k.widget()
    w = k._widgets
    w["story_limit"].value = 2
    w["stories"].value = 3
    w["policy"].value = "fifo"
    assert w["fail"].value == "none"  # shown as a word, not an empty box
    w["fail"].value = "story B, picture 1"
    assert calls == [(3, 10, 5, "fair", None), (2, 10, 5, "fair", None),
                     (2, 10, 3, "fair", None), (2, 10, 3, "fifo", None),
                     (2, 10, 3, "fifo", (2, 1))]
    assert k.result.cell.failed == 1 and "1 picture failed" in k.summary()
    # Fewer stories than the failing one: the failure goes, the menu shrinks.
    w["stories"].value = 1
    assert k.values["fail"] is None and w["fail"].value == "none"
    assert list(w["fail"].options) == ["none", "story A, picture 1"]


def test_a_refused_setting_is_shown_and_the_last_good_run_stays():
    k = knobs()
    k.widget()
    good = k.result
    with pytest.raises(ValueError, match="policy must be one of fair, fifo"):
        k.set(policy="random")
    assert k.result is good and k.values["policy"] == "fair"
    with pytest.raises(ValueError, match="knobs are story_limit"):
        k.set(speed=2)


def test_the_static_picture_carries_its_summary_as_alt_text():
    k = knobs(global_limit=12)
    page = k.html()
    assert "data:image/png;base64," in page and "<script" not in page
    assert f"alt='{k.summary()}'" in page


def test_the_policy_reads_as_its_button_names_it():
    from storylab.sweep import what_if

    assert ", FIFO: makespan" in what_if(story_limit=3, global_limit=10, stories=2,
                                         policy="fifo").summary()


def test_extra_moments_are_marked_and_follow_the_knobs(monkeypatch):
    import storylab.viz.timeline as timeline

    seen = []
    real = timeline.plot_timeline

    def spy(trace, **kw):
        seen.append(kw.get("moments"))
        return real(trace, **kw)

    monkeypatch.setattr(timeline, "plot_timeline", spy)
    k = knobs(4, 16, 5, moments=lambda run: [(run.cell.makespan - 10,
                                              f"last round ends {run.cell.makespan:.0f}")])
    k.png()
    texts = [m.text for m in seen[-1]]
    assert "last round ends 30" in texts and any(t.startswith("split") for t in texts)
    k.set(story_limit=5)
    k.png()
    assert "last round ends 20" in [m.text for m in seen[-1]]
    with pytest.raises(TypeError, match="moments must be callable"):
        knobs(moments=3)


def test_sweep_panel_titles_count_cells_in_words():
    import asyncio

    import matplotlib.pyplot as plt

    from storylab.sweep import sweep
    from storylab.viz import plot_sweep_lines

    result = asyncio.run(sweep([4], [12, 16], stories=5, images=5))
    fig = plot_sweep_lines(result)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    plt.close(fig)
    assert "per-story limit 4: 1 cell above" in titles


def test_the_live_widget_carries_the_style_that_hides_the_snapshot():
    # In any front end that draws the widget (not only JupyterLab), the still snapshot
    # under it goes away; a page without widgets never gets the style and keeps it.
    from storylab.viz.knobs import KNOBS_SNAPSHOT_CLASS

    k = knobs()
    k.widget()
    hide = f"<style>.{KNOBS_SNAPSHOT_CLASS}{{display:none}}</style>"
    assert hide in k._widgets["text"].value
    assert hide not in k.html()


def test_knobs_can_mark_the_split_with_a_diamond(monkeypatch):
    # A notebook where ▼ means a retry asks for ◆ at the split; the default stays ▼.
    import storylab.viz.timeline as timeline

    drawn = []
    real = timeline.plot_timeline

    def spy(*args, **kwargs):
        drawn.append(fig := real(*args, **kwargs))
        return fig

    monkeypatch.setattr(timeline, "plot_timeline", spy)

    def split_labels(k):
        k.png()
        return [t.get_text() for t in drawn[-1].axes[0].texts if "split" in t.get_text()]

    assert split_labels(knobs(story_limit=3, global_limit=4, stories=2, tick="D")) == [
        "◆ split 3,1"]
    assert split_labels(knobs(story_limit=3, global_limit=4, stories=2)) == ["▼ split 3,1"]
