"""The browser harness itself: it must see success, and it must see failure.

A throwaway notebook with a progress bar that fills and turns green, a
matplotlib figure and an HTML story image proves the harness reads a good run;
a notebook whose second cell raises proves it reports the error with the
cell's index instead of hanging or passing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import labharness
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]

GOOD_CELLS = [
    "fast: bool = False  # tiny sleeps, for CI\nsteps: int = 4  # how many updates",
    'import os\nfast = fast or os.environ.get("STORYLAB_FAST") == "1"\n'
    'assert fast, "STORYLAB_FAST=1 did not reach the kernel"',
    "import asyncio\nimport ipywidgets as w\n"
    'bar = w.IntProgress(min=0, max=steps, description="images")\n'
    "display(bar)\n"
    "for _ in range(steps):\n"
    "    await asyncio.sleep(0.05)\n"
    "    bar.value += 1\n"
    'bar.bar_style = "success"',
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(4, 2))\n"
    "ax.bar(range(steps), range(1, steps + 1))\n"
    'ax.set_title("self-check")\nax.set_xlabel("model seconds")\nplt.show()',
    "import base64, io\nfrom IPython.display import HTML\n"
    "buf = io.BytesIO()\nfig.savefig(buf, format='png')\n"
    "b64 = base64.b64encode(buf.getvalue()).decode()\n"
    'HTML(f\'<h3>A story</h3><img src="data:image/png;base64,{b64}" alt="page 1">\')',
]

BAD_CELLS = [
    "x = 1",
    "raise ValueError('boom in the self-check')",
    "y = 2  # never reached: Run All stops at the first error",
]


def write_notebook(path: Path, cells: list[str]) -> str:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [new_markdown_cell("# Harness self-check")]
    for i, src in enumerate(cells):
        cell = new_code_cell(src)
        if i == 0:
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path.name


def test_harness_sees_a_good_run(lab_server, page, screenshots):
    write_notebook(lab_server.root / "selfcheck" / "good.ipynb", GOOD_CELLS)
    labharness.open_notebook(page, lab_server, "selfcheck/good.ipynb")
    report = labharness.run_all_and_wait(page, timeout_ms=60_000)
    assert report.ok, report.describe()
    assert report.executed == report.total == len(GOOD_CELLS)

    expect = labharness.UIExpect(min_bars=1, min_figures=1, story=True)
    problems = labharness.wait_for_view(page, expect)
    labharness.screenshot_series(page, screenshots, "good")
    assert problems == [], problems

    # The same page judged against a stricter expectation must fall short:
    # proof that the checks read the page rather than pass by default.
    stricter = labharness.UIExpect(min_bars=2, min_figures=3, bar_styles=("danger",))
    found = labharness.problems_in(labharness.dom_state(page), stricter)
    assert any("at least 2 progress bar" in p for p in found), found
    assert any("at least 3 figure" in p for p in found), found
    assert any("ended with style 'success'" in p for p in found), found
    labharness.shutdown_kernel(page)
    assert list(screenshots.glob("good-*.png"))


def test_harness_reports_an_error_with_its_cell(lab_server, page, screenshots):
    write_notebook(lab_server.root / "selfcheck" / "bad.ipynb", BAD_CELLS)
    labharness.open_notebook(page, lab_server, "selfcheck/bad.ipynb")
    report = labharness.run_all_and_wait(page, timeout_ms=60_000)
    labharness.screenshot_series(page, screenshots, "bad", max_shots=1)

    assert not report.ok
    assert not report.timed_out, report.describe()
    assert [(e["cell"], e["ename"]) for e in report.errors] == [(2, "ValueError")]
    assert "boom in the self-check" in report.describe()
    assert "cell 2 raised ValueError" in report.describe()
    assert report.pending == [3]  # the cell after the error never ran
    # The error is visible in the page as well.
    state = labharness.dom_state(page)
    assert state["errors"] == 1, state
    labharness.shutdown_kernel(page)


MISSING = {labharness.CHROMIUM_ENV: "/nonexistent/chromium"}


@pytest.mark.parametrize(
    ("env", "action", "words"),
    [
        ({}, "skip", ["apt-get install -y chromium", "/nonexistent/chromium"]),
        ({"CI": ""}, "skip", ["apt-get install -y chromium"]),
        ({"CI": "true"}, "fail", ["apt-get install -y chromium", "because CI is set"]),
        ({"STORYLAB_REQUIRE_UI": "1"}, "fail", ["because STORYLAB_REQUIRE_UI=1 is set"]),
        ({"STORYLAB_REQUIRE_UI": "0"}, "skip", ["apt-get install -y chromium"]),
        ({"CI": "1", "STORYLAB_SKIP_UI": "1"}, "skip", ["switched off"]),
    ],
)
def test_missing_browser_skips_with_a_hint_or_fails_where_required(env, action, words):
    decision = labharness.decide({**MISSING, **env})
    assert decision.action == action, decision
    for word in words:
        assert word in decision.reason, decision.reason
    if action == "fail":
        assert "set STORYLAB_SKIP_UI=1" in decision.reason


def test_an_executable_browser_is_run_and_a_plain_file_is_not(tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o644)  # not executable: not a browser we can start
    decision = labharness.decide({labharness.CHROMIUM_ENV: str(fake), "CI": "1"})
    assert decision.action == "fail" and str(fake) in decision.reason
    fake.chmod(0o755)
    decision = labharness.decide({labharness.CHROMIUM_ENV: str(fake), "CI": "1"})
    assert decision == labharness.UIDecision("run", browser=str(fake))


def test_browser_found_on_path_when_not_at_the_debian_location(tmp_path, monkeypatch):
    monkeypatch.setattr(labharness, "DEFAULT_CHROMIUM", str(tmp_path / "not-installed"))
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert labharness.chromium_path({"PATH": str(tmp_path)}) == str(fake)
    assert labharness.chromium_path({"PATH": str(tmp_path / "empty")}) == ""


def _pytest_without_browser(tmp_path: Path, **env: str) -> tuple[int, ET.Element]:
    """Run one real browser test in a child pytest with Chromium pointed at nothing."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "STORYLAB_REQUIRE_UI", "STORYLAB_SKIP_UI")
    }
    child_env.update(MISSING, **env)
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            f"{Path(__file__)}::test_harness_sees_a_good_run",
        ],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.exists(), proc.stdout + proc.stderr
    (case,) = ET.parse(report).getroot().iter("testcase")
    return proc.returncode, case


def test_test_run_passes_without_a_browser_and_says_how_to_get_one(tmp_path):
    code, case = _pytest_without_browser(tmp_path)
    assert code == 0
    (skipped,) = case.findall("skipped")
    assert "apt-get install -y chromium" in skipped.get("message")
    assert not case.findall("error") and not case.findall("failure")


def test_test_run_fails_without_a_browser_on_ci(tmp_path):
    code, case = _pytest_without_browser(tmp_path, CI="1")
    assert code == 1
    assert not case.findall("skipped")
    problems = case.findall("error") + case.findall("failure")
    assert problems, ET.tostring(case, encoding="unicode")
    message = problems[0].get("message")
    assert "apt-get install -y chromium" in message and "because CI is set" in message
