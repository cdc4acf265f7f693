"""Fixtures for the real-browser JupyterLab tests.

One ``jupyter lab`` server per test session, one headless Chromium per test
module, a fresh browser context per test. The server's teardown fails the session if any of
its processes (server or kernels) survives the shutdown.

Without Chromium or Playwright the tests skip, with a reason that says how to
install them, so the README's test command passes on a fresh machine. Where
they are required (``CI`` set, or ``STORYLAB_REQUIRE_UI=1``) the same lack is
a failure, so CI can never go green without running them.
``STORYLAB_SKIP_UI=1`` skips them on purpose anywhere. The choice is
:func:`labharness.decide`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import labharness
import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO / "build" / "ui-screenshots"


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    return labharness.browser_or_skip()


@pytest.fixture(scope="session")
def lab_server(chromium_executable, tmp_path_factory):
    server = labharness.LabServer(
        base=tmp_path_factory.mktemp("lab"),
        # The notebooks read STORYLAB_FAST so a browser run takes seconds.
        env={"STORYLAB_FAST": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium_executable):
    # Module scope on purpose (see labharness.open_browser).
    with labharness.open_browser(chromium_executable) as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def screenshots(tmp_path, request):
    """Folder for this test's screenshots; copied to build/ui-screenshots/ afterwards."""
    out = tmp_path / "screenshots"
    out.mkdir()
    yield out
    dest = SCREENSHOT_DIR / request.node.name.replace("/", "_")
    if dest.exists():
        shutil.rmtree(dest)
    if any(out.iterdir()):
        shutil.copytree(out, dest)
