"""The notebooks as committed: clean, parameterised, short-celled, launchable.

Committed notebooks carry no outputs (stale widget text and figures would
confuse a reader and bloat diffs); each opens with a literal ``parameters``
cell papermill can list and inject, followed by the STORYLAB_FAST switch; each
runs on the ``python3`` kernel CI and Binder provide; code cells stay short
enough to read at a glance; each has the scaffolding of a tutorial (objectives,
prerequisites and time on top; summary, exercises with a checker and a hidden
solution, what comes next and references at the end); it imports only the
public face of storylab and draws only through storylab.viz; and the README
launches the series on Binder.
"""

from __future__ import annotations

import re

import nbcheck
import nbformat
import pytest

BINDER_LINK = re.compile(
    r"https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/[\w./-]+"
    r"\?urlpath=lab/tree/notebooks/00_start_here\.ipynb"
)
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"


def paths():
    return sorted(nbcheck.NOTEBOOKS.glob("*.ipynb"))


def test_the_series_is_there():
    present = [p.stem for p in paths()]
    assert present, f"no notebooks found in {nbcheck.NOTEBOOKS.name}/"
    assert present == sorted(nbcheck.SERIES), (
        f"unexpected: {sorted(set(present) - set(nbcheck.SERIES))}, "
        f"missing: {sorted(set(nbcheck.SERIES) - set(present))}"
    )


def test_nbstripout_verify_passes():
    found = paths()
    assert found, "no notebooks to verify"
    code, said = nbcheck.nbstripout_verify(found)
    assert code == 0, (
        "notebooks carry outputs or metadata; run `nbstripout --keep-id --extra-keys "
        f'"{nbcheck.STRIP_EXTRA_KEYS}" notebooks/*.ipynb` (or pre-commit):\n{said}'
    )


@pytest.mark.parametrize("name", nbcheck.SERIES)
def test_notebook_hygiene(name):
    path = nbcheck.NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        pytest.fail(f"notebooks/{name}.ipynb is missing", pytrace=False)
    nb = nbcheck.read(path)
    nbformat.validate(nb)
    problems = (
        nbcheck.output_problems(nb)
        + nbcheck.kernel_problems(nb)
        + nbcheck.parameter_problems(nb)
        + nbcheck.long_cells(nb)
        + nbcheck.scaffold_problems(nb)
        + nbcheck.import_problems(nb)
        + nbcheck.drawing_problems(nb)
    )
    assert problems == [], f"{name}:\n" + "\n".join(problems)


def test_readme_launches_the_start_here_notebook_on_binder():
    readme = (nbcheck.REPO / "README.md").read_text()
    assert BINDER_BADGE in readme, "README needs the Binder badge image"
    assert BINDER_LINK.search(readme), (
        "README needs a Binder link ending in "
        "?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    )


def test_every_solution_of_the_kit_is_offered_by_a_notebook():
    from storylab.tutorial import EXPLAINED, SOLUTIONS

    kit = set(SOLUTIONS) | set(EXPLAINED)
    offered = {key for path in paths() for key in nbcheck.solution_keys(nbcheck.read(path))}
    assert offered == kit, (
        f"solutions no notebook offers: {sorted(kit - offered)}; "
        f"offered but missing from the kit: {sorted(offered - kit)}")


@pytest.mark.parametrize("name", nbcheck.SERIES)
def test_no_learner_cell_calls_remember(name):
    # The facts the tests check live in the notebook's metadata (see nbcheck's
    # with_facts_cell): the learner sees no bookkeeping.
    nb = nbformat.read(nbcheck.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    calls = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and re.search(r"\bremember\b", c.source)]
    assert calls == [], f"{name}: cells {calls} still call or import remember"


@pytest.mark.parametrize("name", nbcheck.SERIES)
def test_a_story_page_is_shown_scoped_not_as_a_whole_document(name):
    # story_html is a whole page whose stylesheet would restyle the notebook
    # around it; show_story scopes it to the story.
    nb = nbformat.read(nbcheck.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    raw = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and re.search(r"HTML\(\s*story_html\(", c.source)]
    assert raw == [], f"{name}: cells {raw} show story_html(...) unscoped: use show_story"
    # ... nor through a name: page = story_html(...), then HTML(page) a line later
    pages: set[str] = set()
    shown = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        pages |= set(re.findall(r"\b(\w+)\s*=\s*story_html\(", c.source))
        if any(re.search(rf"HTML\(\s*{re.escape(p)}\s*\)", c.source) for p in pages):
            shown.append(i)
    assert shown == [], f"{name}: cells {shown} show a story_html page unscoped: use show_story"
