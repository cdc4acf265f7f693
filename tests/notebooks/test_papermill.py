"""Execute every tutorial notebook headless and check what a reader would see.

Each notebook runs with papermill (``fast=True``) in a scratch copy of the
notebooks folder, several at once in worker processes, and its executed copy
is kept in ``build/executed/`` (git-ignored) for inspection. The expectations
below are per notebook, so they can be tuned as the notebooks evolve.

Under pytest-xdist each worker runs only the notebooks of its own tests.
STORYLAB_NB_WORKERS sets the number of concurrent notebooks (default: the
machine's CPU count, at least 2).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbcheck
import pytest
from nbcheck import Expect

FAST = {"fast": True}

EXPECT: dict[str, Expect] = {
    # one story, images one at a time: progress, timeline, story
    "01_sequential_generation": Expect(min_figures=1),
    # entities + runner under a per-story limit: timeline and the entity tree
    "02_entities_and_parallel_calls": Expect(min_figures=2),
    # two, then five stories: capacity chart, distribution, fair vs FIFO
    "03_two_levels_of_capacity": Expect(min_figures=2),
    # a run interrupted half-way, then resumed: the first bar stops short
    "04_crash_and_resume": Expect(min_figures=2, bad_bars="allowed", unfinished_bars_ok=True),
    # one image fails (a bar ends warning/danger), then a retry completes it
    "05_failures": Expect(min_figures=1, bad_bars="required"),
    # the local HTTP image server: 429s under unbounded parallelism, retries
    "06_http_backend": Expect(min_figures=1, bad_bars="allowed"),
    # sweep of the two limits: makespan and utilisation charts
    "07_research_sweep": Expect(min_figures=2),
    # 5 stories on 4 Dask worker processes, then a worker killed: charts, two bars
    "08_beyond_one_process": Expect(min_figures=3, min_bars=2),
}

PARAMETERS: dict[str, dict] = {name: dict(FAST) for name in EXPECT}


def test_the_series_is_complete():
    present = sorted(p.stem for p in nbcheck.NOTEBOOKS.glob("*.ipynb"))
    assert present, f"no notebooks found in {nbcheck.NOTEBOOKS.name}/"
    assert sorted(EXPECT) == sorted(nbcheck.SERIES)
    assert present == sorted(EXPECT), (
        f"notebooks without expectations here: {sorted(set(present) - set(EXPECT))}; "
        f"expected but missing: {sorted(set(EXPECT) - set(present))}"
    )


@pytest.fixture(scope="module")
def series(request, tmp_path_factory):
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ
    here = Path(__file__)
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.path == here and "name" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    if not under_xdist:  # stale copies from an earlier run would mislead
        for old in nbcheck.BUILD_EXECUTED.glob("*.ipynb"):
            old.unlink()
    workers = int(os.environ.get("STORYLAB_NB_WORKERS") or max(2, os.cpu_count() or 2))
    runner = nbcheck.SeriesRunner(
        notebooks=nbcheck.NOTEBOOKS,
        scratch=tmp_path_factory.mktemp("executed"),
        parameters=PARAMETERS,
        workers=workers,
        keep_in=nbcheck.BUILD_EXECUTED,
        # Start them all at once; xdist already spreads tests over processes.
        queue=[] if under_xdist else list(dict.fromkeys(selected)),
    )
    yield runner
    runner.close()


def _run(series, name):
    if not (nbcheck.NOTEBOOKS / f"{name}.ipynb").exists():
        pytest.fail(f"notebooks/{name}.ipynb is missing", pytrace=False)
    return series.result(name)


@pytest.mark.parametrize("name", list(EXPECT))
def test_notebook_runs_without_error(series, name):
    run = _run(series, name)
    assert run.ok, run.describe()


@pytest.mark.parametrize("name", list(EXPECT))
def test_notebook_shows_figures_widgets_and_story(series, name):
    run = _run(series, name)
    if not run.output.exists():
        pytest.fail(f"papermill wrote no executed copy of {name}:\n{run.describe()}")
    problems = nbcheck.executed_problems(nbcheck.read(run.output), EXPECT[name])
    where = f"{name} (executed copy: build/executed/{name}.ipynb)"
    assert problems == [], where + ":\n" + "\n".join(problems)
