"""Fixtures for the book tests: the built book and a headless Chromium.

The book is built once per session with the documented command,
``docs/build_book.sh`` (it executes the notebooks, about two minutes), unless
``STORYLAB_BOOK_HTML`` names an already built ``_build/html`` folder. The
browser is Debian's Chromium, chosen, skipped or required exactly as for the
JupyterLab tests (:func:`labharness.decide`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "ui"))

import labharness  # noqa: E402

BOOK_ENV = "STORYLAB_BOOK_HTML"
# The build runs the notebooks: about two minutes on an idle machine, many more
# on a loaded one. It has a deadline of its own, and the tests that wait for it
# get that deadline and more, not the suite's per-test default: a slow machine
# makes the build slow, never a book test fail.
BUILD_TIMEOUT = 1800
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT + 600))
BUILT = REPO / "build" / "book" / "_build" / "html"
STAGED = REPO / "build" / "book-src"


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    return labharness.browser_or_skip()


@pytest.fixture(scope="session")
def book_html() -> Path:
    """The built book's HTML folder (built now, unless $STORYLAB_BOOK_HTML names one)."""
    given = os.environ.get(BOOK_ENV)
    if given:
        folder = Path(given)
        if not (folder / "index.html").is_file():
            pytest.fail(f"${BOOK_ENV}={given} holds no index.html", pytrace=False)
        return folder
    # The script runs `python` and `jupyter-book`: those of this interpreter's environment.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    log = REPO / "build" / "book-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        # A session of its own: if the build is cut short (its deadline, Ctrl-C),
        # the whole group goes, not only bash (the notebooks' kernels with it).
        proc = subprocess.Popen(
            ["bash", str(REPO / "docs" / "build_book.sh")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            returncode = proc.wait(timeout=BUILD_TIMEOUT)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"docs/build_book.sh failed (log: {log}):\n{tail}", pytrace=False)
    return BUILT


@pytest.fixture(scope="module")
def browser(chromium_executable):
    # Module scope on purpose (see labharness.open_browser).
    with labharness.open_browser(chromium_executable) as b:
        yield b
