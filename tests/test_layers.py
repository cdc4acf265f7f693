"""The layer rule, read from the source: ``story`` never imports ``viz``,
``entities`` imports neither ``story``, ``viz`` nor the command line, and the
command line (``storylab/cli/``) is the top layer that nothing else imports.

The check reads every module's text, so an import tucked inside a function
(as the command modules do to keep ``--help`` fast) counts as well."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "storylab"


def _imports(target: str) -> re.Pattern[str]:
    """An ``import storylab.<target>...`` or ``from storylab[.<target>...] import ...``
    statement anywhere in a file, indented or not."""
    dotted = re.escape(target)
    last = re.escape(target.rsplit(".", 1)[-1])
    parent = re.escape(target.rsplit(".", 1)[0]) if "." in target else None
    forms = [rf"from\s+storylab\.{dotted}\b", rf"import\s+storylab\.{dotted}\b"]
    if parent:
        forms.append(rf"from\s+storylab\.{parent}\s+import\s+[^\n]*\b{last}\b")
    else:
        forms.append(rf"from\s+storylab\s+import\s+[^\n]*\b{last}\b")
    return re.compile(rf"^\s*(?:{'|'.join(forms)})", re.MULTILINE)


def _offenders(folder: Path, pattern: re.Pattern[str], skip: Path | None = None) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        if skip is not None and skip in path.parents:
            continue
        if pattern.search(path.read_text(encoding="utf-8")):
            found.append(str(path.relative_to(PACKAGE.parent)))
    return found


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ("from storylab.viz.progress import ProgressPanel\n", "viz"),
        ("    from storylab.viz import progress\n", "viz"),
        ("import storylab.viz.progress as p\n", "viz"),
        ("from storylab import sweep, viz\n", "viz"),
        ("from storylab.cli.args import EXIT_OK\n", "cli"),
        ("        from storylab.cli import main\n", "cli"),
        ("from storylab import cli\n", "cli"),
    ],
)
def test_the_check_sees_an_import(line, target):
    assert _imports(target).search(f'"""doc"""\n\nimport os\n{line}')


def test_the_check_ignores_other_modules_and_prose():
    assert not _imports("cli").search("from storylab.client import x\n")
    assert not _imports("viz").search("from storylab.vizier import x\n")
    assert not _imports("viz").search("the viz layer draws (see storylab.viz.progress)\n")


def test_no_story_module_imports_the_viz_layer():
    assert _offenders(PACKAGE / "story", _imports("viz")) == []


@pytest.mark.parametrize("layer", ["story", "viz", "cli"])
def test_no_entities_module_imports_a_higher_layer(layer):
    assert _offenders(PACKAGE / "entities", _imports(layer)) == []


def test_only_the_command_line_imports_the_command_line():
    offenders = _offenders(PACKAGE, _imports("cli"), skip=PACKAGE / "cli")
    # `python -m storylab` is the command itself, as the console script is.
    assert offenders == ["storylab/__main__.py"]


def test_every_command_is_a_module_of_the_cli_package():
    from storylab.cli import COMMANDS

    assert set(COMMANDS) == {"run", "serve-images", "eg", "stories", "demo", "notebooks"}
    for name, (module, _help) in COMMANDS.items():
        assert module.__name__.startswith("storylab.cli."), name
        assert callable(module.configure) and callable(module.main), name


@pytest.mark.parametrize("entry", [["-m", "storylab"], ["-m", "storylab.cli"]])
def test_both_module_entry_points_run_the_command(entry):
    done = subprocess.run(
        [sys.executable, *entry, "eg", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage: storylab eg" in done.stdout
