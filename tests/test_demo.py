"""``storylab demo``: its flags are checked, and it runs."""

from __future__ import annotations

import pytest

from storylab.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "-1"], "argument --seconds: must be a number of seconds >= 0, like 0.2"),
        (["--seconds", "inf"], "argument --seconds: must be a number of seconds >= 0"),
        (["--seconds", "soon"], "argument --seconds: must be a number of seconds >= 0"),
        (["--groups", "0"], "argument --groups: must be a whole number from 1 to 1000; got '0'"),
        (["--tasks", "1e9"], "argument --tasks: must be a whole number from 1 to 1000"),
        (["--per-group", "0"], "argument --per-group: must be a whole number >= 1; got '0'"),
        (["--global-limit", "-3"], "argument --global-limit: must be a whole number >= 1"),
    ],
)
def test_bad_values_are_refused_with_the_flag_and_the_allowed_values(capsys, argv, message):
    assert main(["demo", *argv]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert out == "" and line.startswith(f"storylab demo: error: {message}")


def test_the_demo_runs_every_task_under_the_shared_limit(capsys):
    argv = ["demo", "--groups", "3", "--tasks", "2", "--global-limit", "4", "--seconds", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("FINAL") for line in out) == 6
    assert out[-1].startswith("6 tasks in ") and out[-1].endswith("/4")
