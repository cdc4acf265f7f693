"""The README's code works as printed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import storylab

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_the_scheduling_example_runs_and_prints_in_completion_order():
    code = python_block_after("The scheduling core in ten lines")
    assert "async with runner.run_tasks() as results" in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        storylab.run_sync(namespace["story"]("A", [0.06, 0.02, 0.04]))
    lines = out.getvalue().split("\n")[:-1]
    assert lines == ["A FINAL 2 0.02", "A FINAL 3 0.04", "A FINAL 1 0.06"]
    assert namespace["GLOBAL"].in_use == 0
