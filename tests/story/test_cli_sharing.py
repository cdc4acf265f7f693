"""Sharing a graph and its pages with another user, checked as that user.

The tests run as root in CI containers, where every permission check passes;
so the reading side runs as a plain user made for the purpose (``useradd``),
through ``runuser``. Without root (or without those tools, or without a Python
that user may run) they are skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USER = "storylab-reader"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _interpreter_for(user: str) -> str | None:
    """A Python 3.11+ that ``user`` may execute (ours may live under /root)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if not candidate:
            continue
        probe = subprocess.run(
            ["runuser", "-u", user, "--", candidate, "-c",
             "import sys, sqlite3; assert sys.version_info >= (3, 11)"],
            capture_output=True, text=True,
        )  # fmt: skip
        if probe.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def as_reader():
    """``as_reader(*argv) -> CompletedProcess``: ``storylab`` run as a plain user."""
    if os.geteuid() != 0:
        pytest.skip("run these tests as root: they create a plain user and act as it")
    if not (shutil.which("useradd") and shutil.which("runuser")):
        pytest.skip("needs useradd(8) and runuser(1) to act as a plain user")
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "-M", "-s", "/bin/sh", USER], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot create the user {USER}: {made.stderr.decode().strip()}")
    python = _interpreter_for(USER)
    if python is None:
        pytest.skip(f"no Python 3.11+ that {USER} may run (ours is {sys.executable})")

    def run(*argv: str) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", USER, "--", "env", f"PYTHONPATH={REPO}", "HOME=/tmp",
               python, "-m", "storylab.cli", *argv]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")

    return run


@pytest.fixture
def shared(tmp_path):
    """A folder others may enter (pytest's own is its owner's only), with a
    story made by ``storylab run`` under the usual umask 022."""
    folder = Path(tempfile.mkdtemp(prefix="storylab-shared-"))
    try:
        folder.chmod(0o755)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = (
            f"umask 022 && exec {sys.executable} -m storylab.cli run 'an owl' --images 2 "
            f"--graph {folder}/graph.sqlite --out {folder}/out --no-tree --time-scale 0.001"
        )
        done = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_pages_and_pictures_are_readable_by_others(shared, as_reader):
    files = [*shared.glob("out/*.html"), *shared.glob("graph.blobs/*/*")]
    assert len(files) == 4  # the page, its copy in the blob store, two pictures
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    (page,) = shared.glob("out/*.html")
    shown = subprocess.run(
        ["runuser", "-u", USER, "--", "head", "-c", "15", str(page)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert shown.returncode == 0 and shown.stdout.lower().startswith("<!doctype html>")


def test_eg_reads_a_graph_in_a_folder_it_cannot_write(shared, as_reader):
    graph = shared / "graph.sqlite"
    before, names = _digest(graph), _listing(shared)
    for argv in (["list"], ["tree", "an owl"], ["node", "io", "an owl"], ["check"]):
        done = as_reader("eg", "--graph", str(graph), *argv)
        assert done.returncode == 0, (argv, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout
    assert _digest(graph) == before and _listing(shared) == names  # no -wal, no -shm


def test_eg_leaves_no_file_beside_a_graph_it_refuses(shared, as_reader):
    bad = shared / "notes.sqlite"
    bad.write_bytes(b"these are my notes, not a database" * 100)
    bad.chmod(0o644)
    names = _listing(shared)
    done = as_reader("eg", "--graph", str(bad), "list")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("storylab eg: error: ")
    assert _listing(shared) == names


def test_eg_as_the_owner_leaves_no_file_beside_the_graph(shared):
    graph = shared / "graph.sqlite"
    names = _listing(shared)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["list"], ["tree", "an owl"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "storylab.cli", "eg", "--graph", str(graph), *argv],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert _listing(shared) == names
