"""The parallel-generation and capacity notebooks, run by hand in a real JupyterLab.

Papermill proves the cells run; this proves a learner sees the result: the
progress widgets render and end full and coloured, the figures appear, the
finished story is shown, and no cell shows an error. The server runs a copy
of notebooks/ with STORYLAB_FAST=1 in the kernel's environment; screenshots
land in the test's temp folder and in build/ui-screenshots/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import labharness
import pytest
from labharness import UIExpect

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = Path(os.environ.get("STORYLAB_NOTEBOOKS_DIR") or REPO / "notebooks")

EXPECT = {
    "02_entities_and_parallel_calls": UIExpect(min_bars=1, min_figures=2, story=True),
    "03_two_levels_of_capacity": UIExpect(min_bars=1, min_figures=2, story=True),
}
# STORYLAB_UI_ALL=1 opens the whole series (for reading the notebooks as a
# learner sees them, from the screenshots); CI opens the two above.
if os.environ.get("STORYLAB_UI_ALL") == "1":
    EXPECT = {
        "01_sequential_generation": UIExpect(min_bars=1, min_figures=1),
        **EXPECT,
        "04_crash_and_resume": UIExpect(
            min_bars=1, min_figures=2, bar_styles=("success", "warning"), bars_full=False
        ),
        "05_failures": UIExpect(min_bars=1, min_figures=1, bar_styles=("success", "warning")),
        "06_http_backend": UIExpect(
            min_bars=0, min_figures=2, bar_styles=("success", "warning", "danger")
        ),
        "07_research_sweep": UIExpect(min_bars=0, min_figures=3),
    }


@pytest.fixture(scope="module")
def notebooks_copy(lab_server):
    dest = lab_server.root / "notebooks"
    if not NOTEBOOKS.is_dir() or not any(NOTEBOOKS.glob("*.ipynb")):
        pytest.fail(f"no notebooks in {NOTEBOOKS.name}/ to open", pytrace=False)
    shutil.copytree(
        NOTEBOOKS, dest, ignore=shutil.ignore_patterns(".storylab", ".ipynb_checkpoints")
    )
    return dest


@pytest.mark.parametrize("name", list(EXPECT))
def test_notebook_in_jupyterlab(name, lab_server, notebooks_copy, page, screenshots):
    if not (notebooks_copy / f"{name}.ipynb").exists():
        pytest.fail(f"notebooks/{name}.ipynb is missing", pytrace=False)
    labharness.open_notebook(page, lab_server, f"notebooks/{name}.ipynb")
    report = labharness.run_all_and_wait(page, timeout_ms=150_000)
    try:
        assert report.ok, f"{name} in JupyterLab:\n{report.describe()}"
        problems = labharness.wait_for_view(page, EXPECT[name])
    finally:
        labharness.screenshot_series(page, screenshots, name)
    assert problems == [], f"{name} in JupyterLab:\n" + "\n".join(problems)
    labharness.shutdown_kernel(page)
