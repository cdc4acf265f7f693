"""The notebook checks themselves, on small notebooks made here.

A check that passes everything proves nothing, so each one is run on a
notebook that meets it and on one that falls short. Two real papermill runs
(one good, one raising) go through the same concurrent runner the tutorial
series uses.
"""

from __future__ import annotations

import json

import nbcheck
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

PARAMS = "fast: bool = False  # tiny sleeps, for CI\ntime_scale: float = 1.0  # model s per s"
SWITCH = ("from storylab.tutorial import lesson_pace\n"
          "time_scale, watch_scale = lesson_pace(fast, time_scale)")

GOOD = [
    PARAMS,
    SWITCH,
    "from pathlib import Path\nPath('.storylab').mkdir(exist_ok=True)\n"
    "Path('.storylab/ran-here').write_text(str(fast))",
    "import ipywidgets as w\nbar = w.IntProgress(min=0, max=3, description='images')\n"
    "display(bar)\nfor _ in range(3):\n    bar.value += 1\nbar.bar_style = 'success'",
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\n"
    "ax.plot([0, 10, 20], [0, 1, 2])\nax.set_title('t')\nax.set_xlabel('model seconds')\n"
    "plt.show()",
    "import base64, io\nfrom IPython.display import HTML\nbuf = io.BytesIO()\n"
    "fig.savefig(buf, format='png')\nb64 = base64.b64encode(buf.getvalue()).decode()\n"
    "HTML(f'<h2>Story</h2><img src=\"data:image/png;base64,{b64}\">')",
]

BAD = [PARAMS, SWITCH, "raise ValueError('boom in a notebook')", "print('never')"]


def make(cells: list[str], *, tag_first: bool = True) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [new_markdown_cell("# A throwaway notebook")]
    for i, src in enumerate(cells):
        cell = new_code_cell(src)
        if i == 0 and tag_first:
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    return nb


def write(tmp_path, name, nb):
    path = tmp_path / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- hygiene


def test_clean_notebook_passes_hygiene(tmp_path):
    nb = make(GOOD)
    assert nbcheck.output_problems(nb) == []
    assert nbcheck.kernel_problems(nb) == []
    assert nbcheck.parameter_problems(nb) == []
    assert nbcheck.long_cells(nb) == []
    assert nbcheck.nbstripout_verify([write(tmp_path, "clean", nb)]) == (0, "")


def test_outputs_counts_and_widget_state_are_caught(tmp_path):
    nb = make(GOOD)
    nb.cells[1].execution_count = 3
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="hi\n")]
    nb.metadata["widgets"] = {nbcheck.WIDGET_STATE: {"state": {}}}
    problems = nbcheck.output_problems(nb)
    assert "cell 1 has execution_count 3" in problems
    assert "cell 2 has 1 saved output(s)" in problems
    assert "notebook metadata carries 'widgets'" in problems
    code, said = nbcheck.nbstripout_verify([write(tmp_path, "dirty", nb)])
    assert code == 1, said


def test_parameters_cell_rules():
    untagged = nbcheck.parameter_problems(make(GOOD, tag_first=False))
    assert any("not tagged 'parameters'" in p for p in untagged)
    computed = make(["fast: bool = os.environ.get('X') == '1'\ntime_scale: float = 1.0", SWITCH])
    assert "parameter 'fast' has a non-literal default" in nbcheck.parameter_problems(computed)
    bare = make(["fast = False\ntime_scale: float = 0.1", SWITCH])
    assert any("use `name: type = literal`" in p for p in nbcheck.parameter_problems(bare))
    no_scale = make(["fast: bool = False", SWITCH])
    assert any("time_scale" in p for p in nbcheck.parameter_problems(no_scale))
    no_switch = make([PARAMS, "x = 1"])
    assert any("STORYLAB_FAST" in p for p in nbcheck.parameter_problems(no_switch))


def test_kernel_and_cell_length_rules():
    nb = make(GOOD + ["\n".join(f"x{i} = {i}" for i in range(26))])
    nb.metadata["kernelspec"]["name"] = "conda-env-lab-py"
    assert nbcheck.kernel_problems(nb) == [
        "kernelspec name is 'conda-env-lab-py', expected 'python3' (CI and Binder run python3)"
    ]
    assert nbcheck.long_cells(nb) == [
        f"cell {len(GOOD) + 1} has 26 lines of code (keep code cells to 25 or fewer)"
    ]


# --------------------------------------------------------------------------- execution


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("selfcheck")
    good = make(GOOD)
    good.metadata["storylab"] = {"facts": {"bar_end": "bar.value", "twice": "bar.value * 2"}}
    write(base, "good", good)
    write(base, "bad", make(BAD))
    runner = nbcheck.SeriesRunner(
        notebooks=base / "notebooks",
        scratch=base / "scratch",
        parameters={"good": {"fast": True, "time_scale": 0.01}, "bad": {"fast": True}},
        workers=2,
        keep_in=base / "kept",
        queue=["good", "bad"],
    )
    yield {name: runner.result(name) for name in ("good", "bad")}
    runner.close()


def test_good_run_is_judged_complete(runs):
    run = runs["good"]
    assert run.ok, run.describe()
    nb = nbcheck.read(run.output)
    assert nbcheck.executed_problems(nb, nbcheck.Expect()) == []
    # It ran in its scratch copy with the injected parameter, not in the repository.
    assert (run.workdir / ".storylab" / "ran-here").read_text() == "True"
    assert not (nbcheck.REPO / "notebooks" / ".storylab" / "ran-here").exists()
    assert (run.output.parent.parent / "kept" / "good.ipynb").exists()
    bars = nbcheck.progress_bars(nb)
    assert [(b["value"], b["max"], b["bar_style"]) for b in bars] == [(3, 3, "success")]


def test_good_run_falls_short_of_stricter_expectations(runs):
    nb = nbcheck.read(runs["good"].output)
    found = nbcheck.executed_problems(
        nb, nbcheck.Expect(min_figures=2, min_bars=2, bad_bars="required", min_story_images=2)
    )
    assert "expected at least 2 PNG figure(s), found 1" in found
    assert any("at least 2 progress bar(s)" in p for p in found)
    assert any("a failure is expected" in p for p in found)
    assert any("at least 2" in p and "<img" in p for p in found)


def test_bar_and_story_faults_are_named(runs):
    nb = nbcheck.read(runs["good"].output)
    state = nb.metadata["widgets"][nbcheck.WIDGET_STATE]["state"]
    (model,) = [m for m in state.values() if m["model_name"] == "IntProgressModel"]
    model["state"]["value"] = 1  # green but stopped at 1/3
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text/html" in out.get("data", {}):
                out["data"]["text/html"] = '<img src="data:image/png;base64,bm90IGEgcG5n">'
    found = nbcheck.executed_problems(nb, nbcheck.Expect())
    assert "progress bar 'images' is green but stopped at 1/3" in found
    assert "progress bar 'images' stopped at 1/3" in found
    assert any("inline image 0 is not PNG data" in p for p in found)
    with pytest.raises(ValueError, match="bad_bars must be one of"):
        nbcheck.Expect(bad_bars="sometimes")


def test_failing_run_names_the_cell(runs):
    run = runs["bad"]
    assert not run.ok
    text = run.describe()
    assert "cell 3 raised ValueError: boom in a notebook" in text, text
    nb = nbcheck.read(run.output)
    found = nbcheck.executed_problems(nb, nbcheck.Expect())
    assert any("holds an error output" in p for p in found)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "fast = True" in injected[0].source
    assert json.loads(json.dumps(run.seconds)) > 0


def _scaffolded() -> nbformat.NotebookNode:
    nb = make([PARAMS, SWITCH])
    nb.cells[0] = new_markdown_cell(
        "# T\n\n**Objectives.** a\n\n**Prerequisites.** b\n\n**Time.** 5 minutes"
    )
    nb.cells += [
        new_markdown_cell("## Summary\n\n* x\n\n## Exercises\n\n**Exercise 1.**"),
        new_code_cell("answer = None", metadata={"tags": ["exercise"]}),
        new_code_cell("check_it(answer)", metadata={"tags": ["exercise"]}),
        new_markdown_cell('<details><summary>Solution</summary>\n\nshow_solution("01-1")'
                          '\n</details>', metadata={"tags": ["solution", "remove-cell"]}),
        new_markdown_cell("## What comes next\n\nmore\n\n## References\n\n* r"),
    ]
    return nb


def test_scaffold_check_accepts_a_full_notebook_and_names_each_gap():
    nb = _scaffolded()
    assert nbcheck.scaffold_problems(nb) == []
    nb.cells[0].source = "# T\n\n**Objectives.** a"
    nb.cells[-1].source = "## References\n\n* r"
    nb.cells[-2].metadata["tags"] = ["solution"]
    nb.cells[-3].source = "print(answer)"
    problems = nbcheck.scaffold_problems(nb)
    assert any("not tagged 'remove-cell'" in p for p in problems)
    assert "the first markdown cell lacks **Prerequisites.**" in problems
    assert "the first markdown cell lacks **Time.**" in problems
    assert "no '## What comes next' section" in problems
    assert "no cell tagged 'exercise' calls a check_... function" in problems
    order = _scaffolded()
    order.cells[-1].source = "## What comes next\n\nmore"
    order.cells.insert(1, new_markdown_cell("## References\n\n* r"))
    assert nbcheck.scaffold_problems(order) == [
        "the closing sections are out of order (expected ## Summary, ## Exercises, "
        "## What comes next, ## References)"
    ]


def test_scaffold_check_lets_an_exercise_notebook_close_with_its_summary():
    nb = _scaffolded()
    nb.cells[2].source = "## Exercises\n\n**Exercise 1.**"
    nb.cells.insert(-1, new_markdown_cell("## Summary\n\n* x"))
    assert "the closing sections are out of order" in " ".join(nbcheck.scaffold_problems(nb))
    nb.metadata["storylab"] = {"layout": "exercise"}
    assert nbcheck.scaffold_problems(nb) == []
    first = next(i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", []))
    nb.cells.insert(1, nb.cells.pop(first))  # an exercise cell above its heading
    assert "an exercise cell comes before the Exercises heading" in nbcheck.scaffold_problems(nb)


def test_import_check_refuses_inner_modules():
    nb = make([PARAMS, SWITCH, "from storylab.tutorial import remember\nimport storylab.viz",
               "from storylab.story.entities import create_story"])
    assert nbcheck.import_problems(nb) == [
        "cell 4 imports storylab.story.entities (use one of "
        "['storylab', 'storylab.sweep', 'storylab.tutorial', 'storylab.viz'])"
    ]


def test_drawing_check_refuses_matplotlib_in_a_cell():
    nb = make([PARAMS, SWITCH, "from storylab.viz import plot_timeline",
               "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()",
               "x = 1\nfrom matplotlib import colors"])
    assert nbcheck.drawing_problems(nb) == [
        "cell 4 imports matplotlib (draw with a storylab.viz function instead)",
        "cell 5 imports matplotlib (draw with a storylab.viz function instead)",
    ]


def test_verdict_check_refuses_any_right_and_needs_not_yet_for_defaults():
    nb = _scaffolded()
    check = nb.cells[-3]
    check.outputs = [new_output("execute_result", {"text/plain": "✘ not yet: fill in"})]
    assert nbcheck.verdict_problems(nb) == []
    check.outputs = [new_output("execute_result", {"text/plain": "✔ right: 22"})]
    problems = nbcheck.verdict_problems(nb)
    assert len(problems) == 2
    assert "shows a solution's verdict" in problems[0]
    assert "did not say 'not yet'" in problems[1]
    nb.cells[2].outputs = [new_output("stream", text="✔ right: printed anywhere")]
    assert any("cell 2 shows a solution's verdict" in p for p in nbcheck.verdict_problems(nb))


def test_solution_check_refuses_a_solution_that_would_run():
    nb = _scaffolded()
    assert nbcheck.solution_problems(nb) == []
    assert nbcheck.solution_keys(nb) == ["01-1"]
    nb.cells[-2] = new_code_cell("solution = 22\ncheck_it(solution)",
                                 metadata={"tags": ["solution", "remove-cell"]})
    problems = nbcheck.solution_problems(nb)
    assert any("is a code cell: make it Markdown" in p for p in problems)
    nb.cells[-2] = new_markdown_cell('solution = 22\n\nshow_solution("99-9")',
                                     metadata={"tags": ["solution", "remove-cell"]})
    problems = nbcheck.solution_problems(nb)
    assert any("collapsed <details>" in p for p in problems)
    assert any("'99-9', which storylab.tutorial.SOLUTIONS lacks" in p for p in problems)
    nb.cells.append(new_code_cell("solution = [3, 3, 3, 3, 0]"))
    assert any("computes or checks a solution" in p for p in nbcheck.solution_problems(nb))


def test_parameter_check_wants_the_pace_from_the_kit_and_no_plumbing():
    assert nbcheck.parameter_problems(make([PARAMS, SWITCH])) == []
    old = make([PARAMS, 'import os\nfast = fast or os.environ.get("STORYLAB_FAST") == "1"'])
    problems = nbcheck.parameter_problems(old)
    assert any("storylab.tutorial.lesson_pace" in p for p in problems)
    assert any("handles CI plumbing" in p for p in problems)
    two = make([PARAMS, SWITCH, "x: int = 1"])
    two.cells[3].metadata["tags"] = ["parameters"]
    assert any("2 cells are tagged 'parameters'" in p for p in nbcheck.parameter_problems(two))


def test_summary_check_wants_words_under_every_figure():
    nb = make([PARAMS, SWITCH, "fig", "print(summary)"])
    png = new_output("display_data", {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    nb.cells[3].outputs = [png]
    nb.cells[4].outputs = [new_output("display_data", {nbcheck.FACTS_MIME: {"a": 1}}),
                           new_output("stream", text="In words: five bars, 52 model s\n")]
    assert nbcheck.summary_problems(nb) == []
    nb.cells[4].outputs = [new_output("stream", text="done\n")]
    assert nbcheck.summary_problems(nb) == [
        "the figure in cell 3 is not followed by its text summary ('In words: '...); "
        "next output: 'done\\n'"]
    nb.cells[4].outputs = []
    assert len(nbcheck.summary_problems(nb)) == 1


def test_facts_are_read_from_the_custom_mime_type():
    nb = make([PARAMS, SWITCH, "x", "y"])
    nb.cells[3].outputs = [new_output("display_data", {nbcheck.FACTS_MIME: {"a": 1, "b": 2}})]
    nb.cells[4].outputs = [new_output("display_data", {nbcheck.FACTS_MIME: {"a": 3}}),
                           new_output("stream", text="a=9")]
    assert nbcheck.facts(nb) == {"a": 3, "b": 2}


def test_declared_facts_are_evaluated_after_the_last_cell(runs):
    nb = nbcheck.read(runs["good"].output)
    assert nbcheck.facts(nb) == {"bar_end": 3, "twice": 6}
    # the committed notebook has no such cell: only the executed copy does
    assert "storylab-facts" in nb.cells[-1].metadata.get("tags", [])


def test_a_fact_that_cannot_be_computed_names_itself(tmp_path):
    nb = make([PARAMS, SWITCH, "x = 1"])
    nb.metadata["storylab"] = {"facts": {"y": "x + undefined_name"}}
    write(tmp_path, "nofact", nb)
    run = nbcheck.execute(tmp_path / "notebooks" / "nofact.ipynb", tmp_path / "scratch",
                          {"fast": True})
    assert not run.ok
    assert "fact y = x + undefined_name failed" in run.describe()


def test_declared_facts_must_map_names_to_expressions():
    nb = make([PARAMS])
    nb.metadata["storylab"] = {"facts": {"not a name": "1"}}
    with pytest.raises(ValueError, match="must map names to expressions"):
        nbcheck.declared_facts(nb)
