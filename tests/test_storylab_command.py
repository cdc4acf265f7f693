"""The ``storylab`` command itself (storylab.cli): --version, the exit codes and their docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import storylab
from storylab.cli import args as _cli_args
from storylab.cli import main, version

README = Path(__file__).resolve().parents[1] / "README.md"
CODES = (
    _cli_args.EXIT_OK,
    _cli_args.EXIT_FAILED,
    _cli_args.EXIT_USAGE,
    _cli_args.EXIT_INTERRUPTED,
    _cli_args.EXIT_PIPE,
)


def _storylab(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "storylab.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_version_prints_the_name_and_the_version_and_exits_0():
    done = _storylab("--version")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"storylab {version()}\n"
    assert re.fullmatch(r"storylab \d+\.\d+\.\d+\S*\n", done.stdout)


def test_version_falls_back_to_the_package_when_not_installed(monkeypatch):
    import importlib.metadata as md

    def not_installed(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", not_installed)
    assert version() == storylab.__version__


def test_the_exit_codes_are_the_documented_ones():
    assert CODES == (0, 1, 2, 130, 141)
    epilog = _storylab("--help").stdout
    table = README.read_text(encoding="utf-8")
    for code in CODES:
        assert re.search(rf"^\s+{code}\s+\S", epilog, re.M), f"--help lacks exit code {code}"
        assert re.search(rf"^\| `{code}` \|", table, re.M), f"README lacks exit code {code}"
    for sub in ("run", "eg", "serve-images", "demo"):
        assert "exit codes:" in _storylab(sub, "--help").stdout


def test_no_command_shows_the_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fly"], "storylab: error: argument COMMAND: invalid choice: 'fly'"),
        (["--colour"], "storylab: error: unrecognized arguments: --colour"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(argv, message):
    done = _storylab(*argv)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(message) and line.endswith("(see `storylab --help`)")
