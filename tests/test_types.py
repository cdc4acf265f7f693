"""The package type-checks: mypy over storylab/ with the configuration in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("mypy", reason="mypy is part of the test extra: pip install -e .[test]")


def mypy(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MYPYPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_package_has_no_type_errors():
    proc = mypy()  # the files and the settings come from pyproject.toml
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


def test_the_type_check_reports_an_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\n"
        "class Record:\n"
        "    name: str\n\n\n"
        "def name_of(record: Record) -> int:\n"
        "    return record.name\n"
    )
    config = REPO / "pyproject.toml"
    proc = mypy("--config-file", str(config), str(bad), cwd=tmp_path)
    assert proc.returncode == 1
    assert 'Incompatible return value type (got "str", expected "int")' in proc.stdout
