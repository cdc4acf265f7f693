"""Drive a real JupyterLab in headless Chromium, the way a learner would.

Papermill proves that cells run; it cannot prove that progress bars move and
figures appear in the browser. This harness starts ``jupyter lab`` on
loopback with its own token and its own settings, workspace and root folders,
opens a notebook in Chromium through Playwright (the system browser, never a
downloaded one), runs every cell, and waits until either all cells have run
or one of them shows an error.

The waiting follows what proved reliable on these machines: the kernel status
indicator can read "idle" before the session is connected, so we await the
panel's ``context.ready`` and ``sessionContext.ready`` and then the kernel's
own status before asking Lab to run all cells.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SKIP_ENV = "STORYLAB_SKIP_UI"
REQUIRE_ENV = "STORYLAB_REQUIRE_UI"
CHROMIUM_ENV = "STORYLAB_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    "on Debian or Ubuntu: `sudo apt-get install -y chromium fonts-dejavu-core` "
    "(`.ci/run` does this), or point $STORYLAB_CHROMIUM at a Chromium binary"
)


class UIUnavailable(RuntimeError):
    """Chromium or Playwright is missing."""


@dataclass(frozen=True)
class UIDecision:
    """What to do with the browser tests: ``run`` (with ``browser``), ``skip`` or ``fail``."""

    action: str
    reason: str = ""
    browser: str = ""


def chromium_path(env: Mapping[str, str] | None = None) -> str:
    """The system Chromium to drive: $STORYLAB_CHROMIUM, /usr/bin/chromium or PATH."""
    env = os.environ if env is None else env
    explicit = env.get(CHROMIUM_ENV)
    if explicit:
        return explicit  # an explicit choice is never second-guessed by a PATH lookup
    if Path(DEFAULT_CHROMIUM).exists():
        return DEFAULT_CHROMIUM
    path = env.get("PATH")
    return shutil.which("chromium", path=path) or shutil.which("chromium-browser", path=path) or ""


def skip_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Why the UI tests are switched off on purpose, or None."""
    env = os.environ if env is None else env
    if env.get(SKIP_ENV) == "1":
        return f"{SKIP_ENV}=1 is set: real-browser JupyterLab tests are switched off"
    return None


def required_because(env: Mapping[str, str] | None = None) -> str | None:
    """Why a missing browser must fail the run (CI, or an explicit request), or None."""
    env = os.environ if env is None else env
    if env.get(REQUIRE_ENV) == "1":
        return f"{REQUIRE_ENV}=1 is set"
    if env.get("CI"):
        return "CI is set"
    return None


def check_prerequisites(env: Mapping[str, str] | None = None) -> str:
    """Return the Chromium path, or raise UIUnavailable saying what is missing and how to
    get it."""
    env = os.environ if env is None else env
    problems = []
    browser = chromium_path(env)
    if not browser or not Path(browser).is_file() or not os.access(browser, os.X_OK):
        looked = (
            f"${CHROMIUM_ENV}={browser}"
            if env.get(CHROMIUM_ENV)
            else f"${CHROMIUM_ENV}, {DEFAULT_CHROMIUM} and PATH"
        )
        problems.append(f"Chromium not found (looked at {looked}); install it {INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        problems.append(f"Python Playwright is not importable ({exc}); pip install -e '.[test]'")
    if problems:
        raise UIUnavailable("; ".join(problems))
    return browser


def decide(env: Mapping[str, str] | None = None) -> UIDecision:
    """Run, skip or fail the browser tests, from the environment and what is installed.

    An explicit ``STORYLAB_SKIP_UI=1`` always skips. Otherwise a missing browser
    skips on a developer's machine (so the README's test command passes on a
    fresh one) and fails where the tests are required (``CI`` set, or
    ``STORYLAB_REQUIRE_UI=1``), so CI can never go green without them.
    """
    off = skip_reason(env)
    if off:
        return UIDecision("skip", off)
    try:
        browser = check_prerequisites(env)
    except UIUnavailable as exc:
        required = required_because(env)
        if required:
            return UIDecision(
                "fail",
                f"{exc}. The browser tests are required because {required}; "
                f"to skip them on purpose set {SKIP_ENV}=1.",
            )
        return UIDecision(
            "skip",
            f"{exc}. (With CI set or {REQUIRE_ENV}=1 this is a failure.)",
        )
    return UIDecision("run", browser=browser)



def browser_or_skip() -> str:
    """The Chromium binary for a browser test, or the test skipped or failed as
    :func:`decide` rules (the one fixture body of every browser suite)."""
    import pytest

    decision = decide()
    if decision.action == "skip":
        pytest.skip(decision.reason)
    if decision.action == "fail":
        pytest.fail(decision.reason, pytrace=False)
    return decision.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_lab_settings(settings_dir: Path) -> None:
    """No news toast over the screenshots; every cell kept in the DOM."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none",
        },
    }
    for rel, content in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


@dataclass
class LabServer:
    """A ``jupyter lab`` process of our own, on 127.0.0.1 with a random token.

    ``base`` is the temporary folder holding the root, settings, workspaces,
    runtime and config folders and the server log. The server and the kernels
    it starts share one process group, so ``stop()`` can prove that nothing
    is left behind.
    """

    base: Path
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 90.0
    port: int = 0
    token: str = ""
    proc: subprocess.Popen | None = None

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> LabServer:
        for name in ("root", "settings", "workspaces", "runtime", "config", "data"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        write_lab_settings(self.base / "settings")
        self.port = free_port()
        self.token = secrets.token_hex(16)
        env = dict(os.environ)
        env.update(
            JUPYTERLAB_SETTINGS_DIR=str(self.base / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            JUPYTER_CONFIG_DIR=str(self.base / "config"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--ServerApp.open_browser=False",
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        status_url = f"{self.url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with code {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(status_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"jupyter lab not ready after {self.startup_timeout:.0f} s:\n" + self.log_tail()
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and its kernels; raise if any process of ours survives."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session made it the group leader
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # jupyter's own clean shutdown (asks twice)
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        # Kernels run in sessions of their own; they are ours when their command
        # line points into our runtime folder. Give them a moment to exit.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.leftovers(pgid):
            time.sleep(0.2)
        leftovers = self.leftovers(pgid)
        if leftovers:
            for pid, _, _ in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise RuntimeError(
                "processes of the jupyter lab server were still running after shutdown "
                f"(killed now): {leftovers}"
            )

    def leftovers(self, pgid: int) -> list[tuple[int, str, str]]:
        """Live processes in the server's group or started with our folders."""
        marker = str(self.base)
        return [
            (pid, state, cmd)
            for pid, state, pgrp, cmd in _processes()
            if state != "Z" and (pgrp == pgid or marker in cmd)
        ]

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _processes() -> list[tuple[int, str, int, str]]:
    """(pid, state, process group, command line) for every process in /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # stat reads "pid (comm) state ppid pgrp ..."; comm may hold spaces.
        rest = stat.rsplit(")", 1)[1].split()
        found.append((int(entry.name), rest[0], int(rest[2]), cmdline.strip()))
    return found


# --------------------------------------------------------------------------- browser side


def launch_browser(playwright, executable: str):
    return playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    )


@contextlib.contextmanager
def open_browser(executable: str) -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API), closed when the block ends.

    Give the fixture that holds it module scope at most: while the sync API is
    active it keeps an event loop running in this thread, and later
    ``asyncio.run`` tests would fail.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_browser(pw, executable)
        try:
            yield browser
        finally:
            browser.close()


_CURRENT = "window.jupyterapp?.shell?.currentWidget"

_KERNEL_READY_JS = f"""async () => {{
  const w = {_CURRENT};
  await w.context.ready;
  await w.sessionContext.ready;
}}"""

_KERNEL_IDLE_JS = f"""() => {{
  const k = {_CURRENT}?.sessionContext?.session?.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}}"""

# Reads the notebook *model*: returns null while work is pending, else a report.
# Done = kernel idle and every non-empty code cell has an execution count, or
# kernel idle and some cell holds an error output (Run All stops there).
_PROGRESS_JS = f"""(final) => {{
  const w = {_CURRENT};
  if (!w || !w.model) return null;
  const cells = w.model.cells;
  const errors = [];
  const pending = [];
  let total = 0, executed = 0;
  for (let i = 0; i < cells.length; i++) {{
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    if (c.sharedModel.getSource().trim() === '') continue;
    total++;
    if (c.executionCount !== null && c.executionCount !== undefined) executed++;
    else pending.push(i);
    for (let j = 0; j < c.outputs.length; j++) {{
      const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error') {{
        errors.push({{cell: i, ename: o.ename, evalue: o.evalue,
                      traceback: (o.traceback || []).join('\\n')}});
      }}
    }}
  }}
  const status = w.sessionContext?.session?.kernel?.status ?? 'none';
  const report = {{total, executed, pending, errors, status}};
  if (final) return report;
  if (status !== 'idle') return null;
  if (errors.length > 0 || executed === total) return report;
  return null;
}}"""


@dataclass(frozen=True)
class RunReport:
    """What Run All left behind, read from the notebook model."""

    total: int
    executed: int
    pending: list[int]
    errors: list[dict]
    status: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and not self.errors and self.executed == self.total

    def describe(self) -> str:
        lines = [
            f"{self.executed}/{self.total} code cells executed, kernel {self.status}"
            + (", TIMED OUT" if self.timed_out else "")
        ]
        if self.pending:
            lines.append(f"cells not executed (0-based cell index): {self.pending}")
        for err in self.errors:
            lines.append(f"cell {err['cell']} raised {err['ename']}: {err['evalue']}")
            tb = _strip_ansi(err.get("traceback", ""))
            if tb:
                lines.append("  " + "\n  ".join(tb.splitlines()[-12:]))
        return "\n".join(lines)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def open_notebook(page, server: LabServer, rel_path: str, timeout_ms: int = 90_000) -> None:
    """Open ``rel_path`` (relative to the server root) and wait for an idle, connected kernel."""
    page.goto(
        f"{server.url}/lab/tree/{rel_path}?token={server.token}&reset",
        wait_until="domcontentloaded",
        timeout=timeout_ms,
    )
    page.wait_for_function(
        f"() => {_CURRENT}?.sessionContext !== undefined && "
        f"{_CURRENT}?.context?.path === {json.dumps(rel_path)}",
        timeout=timeout_ms,
    )
    page.evaluate(_KERNEL_READY_JS)
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=timeout_ms, polling=100)
    # Give the notebook the full width in screenshots.
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")


def run_all_and_wait(page, timeout_ms: int = 120_000) -> RunReport:
    """Run every cell, then wait for all of them to finish or for an error output."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # Let the queued executions reach the model before polling for "done".
    page.wait_for_function(
        f"() => {_CURRENT}.sessionContext.session?.kernel?.status !== 'idle' || "
        f"{_CURRENT}.model.cells.length === 0 || "
        f"Array.from({{length: {_CURRENT}.model.cells.length}}, (_, i) => "
        f"{_CURRENT}.model.cells.get(i)).some(c => c.type === 'code' && c.executionCount)",
        timeout=timeout_ms,
        polling=50,
    )
    try:
        handle = page.wait_for_function(_PROGRESS_JS, arg=False, timeout=timeout_ms, polling=100)
    except Exception as exc:  # Playwright's TimeoutError
        if type(exc).__name__ != "TimeoutError":
            raise
        data = page.evaluate(_PROGRESS_JS, True)
        return RunReport(timed_out=True, **data)
    return RunReport(**handle.json_value())


def shutdown_kernel(page) -> None:
    page.evaluate(f"async () => {{ await {_CURRENT}?.sessionContext?.shutdown(); }}")


def screenshot_series(page, out_dir: Path, stem: str, max_shots: int = 12) -> list[Path]:
    """Scroll the notebook top to bottom, one screenshot per screenful."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scroller = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer"
    page.evaluate(f"() => {{ const s = document.querySelector({json.dumps(scroller)}); "
                  f"if (s) s.scrollTop = 0; }}")  # fmt: skip
    shots = []
    for i in range(max_shots):
        page.wait_for_timeout(150)
        path = out_dir / f"{stem}-{i:02d}.png"
        page.screenshot(path=str(path))
        shots.append(path)
        moved = page.evaluate(
            f"""() => {{
              const s = document.querySelector({json.dumps(scroller)});
              if (!s) return false;
              const before = s.scrollTop;
              s.scrollTop = before + s.clientHeight * 0.9;
              return s.scrollTop > before;
            }}"""
        )
        if not moved:
            break
    return shots


# --------------------------------------------------------------------------- what the learner sees


@dataclass(frozen=True)
class UIExpect:
    """What a finished notebook must show in the browser.

    min_bars: progress bars (``.widget-hprogress .progress-bar``) rendered.
    bar_styles: the allowed final ``progress-bar-<style>`` classes, each bar
        must carry one of them; at least one bar must be ``success``.
    bars_full: every bar drawn at 100 % width.
    min_figures: matplotlib figures (inline PNG images) shown.
    story: the rendered story HTML with at least one inline PNG image.
    """

    min_bars: int = 1
    bar_styles: tuple[str, ...] = ("success",)
    bars_full: bool = True
    min_figures: int = 1
    story: bool = True


_DOM_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const bars = Array.from(panel.querySelectorAll('.widget-hprogress .progress-bar')).map(b => ({
    classes: Array.from(b.classList), width: b.style.width }));
  const loaded = img => img.complete && img.naturalWidth > 0;
  const figures = Array.from(panel.querySelectorAll('.jp-OutputArea-output.jp-RenderedImage img'));
  const story = Array.from(panel.querySelectorAll(
      '.jp-OutputArea-output.jp-RenderedHTMLCommon img[src^="data:image/png;base64,"]'));
  // Lab renders error outputs like stderr; a traceback banner tells them apart.
  const errors = Array.from(panel.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
      .filter(e => e.textContent.includes('Traceback')).length;
  return {bars, figures: figures.filter(loaded).length, figures_total: figures.length,
          story: story.filter(loaded).length, story_total: story.length, errors};
}"""


def dom_state(page) -> dict:
    return page.evaluate(_DOM_STATE_JS) or {}


def problems_in(state: dict, expect: UIExpect) -> list[str]:
    """Everything the page shows that falls short of ``expect`` (empty list: all good)."""
    found = []
    bars = state.get("bars", [])
    if len(bars) < expect.min_bars:
        found.append(f"expected at least {expect.min_bars} progress bar(s), saw {len(bars)}")
    styles = []
    for i, bar in enumerate(bars):
        prefix = "progress-bar-"
        style = next((c[len(prefix) :] for c in bar["classes"] if c.startswith(prefix)), "")
        styles.append(style)
        if style not in expect.bar_styles:
            found.append(
                f"progress bar {i} ended with style {style or '(none)'!r}, "
                f"expected one of {list(expect.bar_styles)}"
            )
        if expect.bars_full and bar["width"] != "100%":
            found.append(f"progress bar {i} stopped at width {bar['width'] or '0'}, expected 100%")
    if bars and "success" not in styles:
        found.append(f"no progress bar finished green (styles: {styles})")
    if state.get("figures", 0) < expect.min_figures:
        found.append(
            f"expected at least {expect.min_figures} figure(s) shown, saw "
            f"{state.get('figures', 0)} loaded of {state.get('figures_total', 0)}"
        )
    if expect.story and state.get("story", 0) < 1:
        found.append(
            "the rendered story (HTML with an inline PNG image) is not shown "
            f"({state.get('story_total', 0)} inline image(s) found, none loaded)"
        )
    if state.get("errors", 0):
        found.append(f"{state['errors']} error output(s) visible")
    return found


def wait_for_view(page, expect: UIExpect, timeout_s: float = 30.0) -> list[str]:
    """Poll the DOM until it meets ``expect`` (widgets render after the run); return problems."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = problems_in(dom_state(page), expect)
        if not problems or time.monotonic() > deadline:
            return problems
        page.wait_for_timeout(250)
