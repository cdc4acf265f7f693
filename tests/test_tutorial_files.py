"""``storylab notebooks [DEST]`` copies the tutorial out, and ``python -m storylab`` works.

Everything runs the real command in a subprocess (``python -m storylab``) on
real folders; the shipped notebooks are whatever this storylab ships (the
built package's ``storylab/notebooks/``, or ``notebooks/`` of a checkout).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import storylab
from storylab import _tutorial_files as tf

REPO = Path(__file__).resolve().parents[1]


def storylab_cmd(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storylab", *argv],
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )


@pytest.fixture
def shipped() -> dict[str, bytes]:
    files = {name: path.read_bytes() for name, path in tf.shipped_files().items()}
    assert len(files) >= 8 and all(name.endswith(".ipynb") for name in files)
    return files


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ipynb"))}


def test_python_dash_m_storylab_is_the_storylab_command():
    done = storylab_cmd("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"storylab {storylab.__version__}\n"
    helped = storylab_cmd("--help")
    assert helped.returncode == 0 and "notebooks" in helped.stdout


def test_copies_the_tutorial_and_says_how_to_start_it(tmp_path, shipped):
    done = storylab_cmd("notebooks", "tut", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert contents(tmp_path / "tut") == shipped
    assert f"{len(shipped)} copied" in done.stdout
    assert "cd tut && jupyter lab" in [ln.strip() for ln in done.stdout.splitlines()]


def test_the_default_destination_and_a_quoted_one(tmp_path, shipped):
    done = storylab_cmd("notebooks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert contents(tmp_path / tf.DEFAULT_DEST) == shipped
    odd = storylab_cmd("notebooks", "my tutorial", cwd=tmp_path)
    assert "cd 'my tutorial' && jupyter lab" in odd.stdout
    assert contents(tmp_path / "my tutorial") == shipped


def test_running_it_again_changes_nothing(tmp_path, shipped):
    assert storylab_cmd("notebooks", str(tmp_path / "t")).returncode == 0
    again = storylab_cmd("notebooks", str(tmp_path / "t"))
    assert again.returncode == 0, again.stderr
    assert f"0 copied, 0 updated, {len(shipped)} already up to date" in again.stdout


def test_an_edited_copy_is_never_overwritten_without_force(tmp_path, shipped):
    dest = tmp_path / "t"
    assert storylab_cmd("notebooks", str(dest)).returncode == 0
    first, second = sorted(shipped)[:2]
    edited = shipped[first] + b"\n"  # the learner's own work
    (dest / first).write_bytes(edited)
    (dest / second).unlink()  # would be copied back, were anything copied

    refused = storylab_cmd("notebooks", str(dest))
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("storylab notebooks: error: ")
    assert first in line and "--force" in line and "nothing was copied" in line
    assert (dest / first).read_bytes() == edited
    assert not (dest / second).exists()

    forced = storylab_cmd("notebooks", str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"edited copies replaced ({first})" in forced.stdout
    assert contents(dest) == shipped


def test_an_untouched_copy_of_an_older_release_is_updated(tmp_path, shipped):
    dest = tmp_path / "t"
    assert storylab_cmd("notebooks", str(dest)).returncode == 0
    name = sorted(shipped)[0]
    older = b'{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}\n'
    (dest / name).write_bytes(older)
    record = json.loads((dest / tf.RECORD).read_text())
    record["files"][name] = hashlib.sha256(older).hexdigest()  # as an older release left it
    (dest / tf.RECORD).write_text(json.dumps(record))

    done = storylab_cmd("notebooks", str(dest))
    assert done.returncode == 0, done.stderr
    assert "1 updated" in done.stdout
    assert contents(dest) == shipped


def test_a_file_already_equal_to_the_shipped_one_is_kept_without_a_record(tmp_path, shipped):
    dest = tmp_path / "t"
    dest.mkdir()
    name = sorted(shipped)[0]
    (dest / name).write_bytes(shipped[name])
    (dest / "notes.txt").write_text("mine")
    done = storylab_cmd("notebooks", str(dest))
    assert done.returncode == 0, done.stderr
    assert contents(dest) == shipped and (dest / "notes.txt").read_text() == "mine"


def test_a_destination_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    done = storylab_cmd("notebooks", str(target))
    assert done.returncode == 1
    assert "is not a folder" in done.stderr and target.read_text() == "not a folder"


def test_the_shipped_notebooks_are_the_tutorial(shipped):
    here = Path(storylab.__file__).resolve().parent
    source = tf.shipped_dir()
    # A built package carries its own copy; a checkout reads notebooks/ beside the package.
    assert source in (here / "notebooks", here.parent / "notebooks")
    if (REPO / "notebooks").is_dir():
        assert shipped == contents(REPO / "notebooks")


def test_no_tutorial_found_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tf, "__file__", str(tmp_path / "pkg" / "_tutorial_files.py"))
    with pytest.raises(tf.TutorialFilesError, match="no tutorial notebooks found"):
        tf.shipped_dir()
