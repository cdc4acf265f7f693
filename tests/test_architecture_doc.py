"""docs/architecture.md stays true of the code.

The page names modules by path (``storylab/scheduling/capacity.py``) and code
by dotted name (``capacity.CapacitySource.release``), both in backticks. These
tests import every such name, check that every module of the package has a row
in the module map, and check the import arrows between layers that the page
states. Each checker is also shown to catch a fault, so none of them can pass
by looking at nothing.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "storylab"
DOC = REPO / "docs" / "architecture.md"

SPAN = re.compile(r"`([^`\n]+)`")
# A module path: storylab/... ending in .py, or a folder ending in /.
PATH = re.compile(r"^storylab(/[A-Za-z_]\w*)*(\.py|/)$")
# A file named short: capacity.py, offline/prompt.py (one module must end so).
SHORT_PATH = re.compile(r"^([A-Za-z_]\w*/)*[A-Za-z_]\w*\.py$")
# A dotted name: identifiers joined by dots (a trailing "()" is allowed).
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(\(\))?$")


def package_modules(root: Path = PACKAGE) -> list[str]:
    """Every module file of the package, as a repository path."""
    return sorted(
        p.relative_to(root.parent).as_posix()
        for p in root.rglob("*.py")
        if "__pycache__" not in p.parts
    )


def module_names(root: Path = PACKAGE) -> list[str]:
    names = []
    for path in package_modules(root):
        dotted = path[: -len(".py")].replace("/", ".")
        names.append(dotted.removesuffix(".__init__"))
    return names


def spans(text: str) -> list[str]:
    return [m.group(1).strip() for m in SPAN.finditer(text)]


def section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md has no '## {heading}' section"
    return match.group(1)


def missing_paths(text: str, repo: Path = REPO) -> list[str]:
    """Paths the page names that are not in the repository: full ones
    (``storylab/x/y.py``), and other file names (``capacity.py``) that are
    neither a repository path nor the end of exactly one module's path."""
    modules = package_modules(repo / "storylab")
    bad = set()
    for s in spans(text):
        if PATH.match(s):
            if not (repo / s.rstrip("/")).exists():
                bad.add(s)
        elif SHORT_PATH.match(s) and not (repo / s).is_file():
            if len([m for m in modules if m.endswith("/" + s)]) != 1:
                bad.add(s)
    return sorted(bad)


def resolve(name: str, modules: list[str]) -> object:
    """The object a dotted name of the page stands for, or raise LookupError.

    Looked up under ``storylab`` first; else its leading parts name the one
    module whose dotted path ends with them, and the rest are attributes.
    """
    parts = name.removesuffix("()").split(".")
    if parts[0] == "storylab":  # written out in full
        parts = parts[1:]
        if not parts:
            return importlib.import_module("storylab")
    known = set(modules)
    candidates: list[tuple[str, list[str]]] = []
    for i in range(len(parts), 0, -1):
        head, rest = ".".join(parts[:i]), parts[i:]
        if f"storylab.{head}" in known:
            candidates = [(f"storylab.{head}", rest)]
            break
    else:
        candidates = [("storylab", parts)]
        for i in range(len(parts), 0, -1):
            head, rest = ".".join(parts[:i]), parts[i:]
            owners = [m for m in modules if m.endswith("." + head)]
            if len(owners) > 1:
                raise LookupError(f"{name}: {head!r} is ambiguous ({', '.join(owners)})")
            if owners:
                candidates = [(owners[0], rest), ("storylab", parts)]
                break
    errors = []
    for module, rest in candidates:
        try:
            obj: object = importlib.import_module(module)
            for attr in rest:
                obj = getattr(obj, attr)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{module}: {exc}")
            continue
        return obj
    raise LookupError(f"{name}: not found ({'; '.join(errors)})")


def unresolved_names(text: str, modules: list[str]) -> list[str]:
    bad = []
    for s in sorted({s for s in spans(text) if DOTTED.match(s) and not SHORT_PATH.match(s)}):
        try:
            resolve(s, modules)
        except LookupError as exc:
            bad.append(str(exc))
    return bad


def unmapped_modules(text: str, modules: list[str]) -> list[str]:
    mapped = set(spans(section(text, "Module map")))
    return [m for m in modules if m not in mapped]


# -- the page against the code ------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_module_path_the_page_names_exists(doc):
    assert any(PATH.match(s) for s in spans(doc))
    assert missing_paths(doc) == []


def test_every_dotted_name_the_page_names_exists(doc):
    names = [s for s in spans(doc) if DOTTED.match(s)]
    assert len(names) > 50  # the two walks name their functions
    assert unresolved_names(doc, module_names()) == []


def test_every_module_of_the_package_is_in_the_module_map(doc):
    assert unmapped_modules(doc, package_modules()) == []


def test_both_walks_are_on_the_page(doc):
    one = section(doc, "Path 1: one unit of capacity, from `acquire` to `release`")
    two = section(
        doc, "Path 2: one image prompt, from `storylab run` to the stored picture and the page"
    )
    for name in (
        "capacity.CapacitySource.acquire",
        "capacity.CapacitySource.release",
        "capacity.CapacitySource._give_up",
        "runner._Run.shutdown",
        "distributed.DistributedCapacityRoot.lease",
    ):
        assert f"`{name}`" in one, name
    for name in (
        "cli.run.main",
        "story.entities.StoryPipelineEntity.run_impl",
        "story.entities.ImageGenerationEntity.run_impl",
        "blobs.BlobStore.put",
        "html.render_story_page",
    ):
        assert f"`{name}`" in two, name


# -- the checkers can fail -------------------------------------------------------------


def test_the_path_check_finds_a_module_that_is_not_there():
    text = (
        "`storylab/scheduling/capacity.py` and `storylab/scheduling/gone.py`, "
        "`runner.py`, `gone.py` and `__init__.py` (many modules end so)"
    )
    assert missing_paths(text) == ["__init__.py", "gone.py", "storylab/scheduling/gone.py"]


def test_the_name_check_finds_a_renamed_function_and_an_ambiguous_module():
    modules = module_names()
    text = (
        "`capacity.CapacitySource.acquire` `runner._Run.fill` `CapacitySource.release` "
        "`storylab.scheduling.runner` `storylab.CapacitySource.acquire` "
        "`capacity.CapacitySource.acquire_all` `nowhere.thing`"
    )
    bad = unresolved_names(text, modules)
    assert [b.split(":")[0] for b in bad] == [
        "capacity.CapacitySource.acquire_all",
        "nowhere.thing",
    ]
    assert "ambiguous" in unresolved_names("`text.SimulatedTextBackend`", modules)[0]


def test_the_map_check_finds_a_module_without_a_row(tmp_path):
    pkg = tmp_path / "storylab"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/new.py"):
        (pkg / name).write_text("")
    text = (
        "## Module map\n`storylab/__init__.py` `storylab/sub/__init__.py`\n"
        "## Next\n`storylab/sub/new.py`\n"
    )
    assert unmapped_modules(text, package_modules(pkg)) == ["storylab/sub/new.py"]


# -- the arrows between layers -----------------------------------------------------------

# Under every layer: standard-library-only modules that any layer may import.
FOUNDATION = {"storylab.errors", "storylab._checks", "storylab._text"}
# Which storylab layers each layer's modules may import (its own always).
# Command-line code ("cli") may import every layer, so it has no entry.
ALLOWED = {
    "foundation": set(),
    "storylab.scheduling": {"foundation"},
    "storylab.entities": {"foundation", "storylab.scheduling"},
    "storylab.story": {"foundation", "storylab.scheduling", "storylab.entities"},
    "storylab.viz": {"foundation", "storylab.scheduling", "storylab.entities"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module == "storylab.__main__" or parts[:2] == ["storylab", "cli"]:
        return "cli"
    if module in FOUNDATION:
        return "foundation"
    return ".".join(parts[:2]) if len(parts) > 1 else module


class _Imports(ast.NodeVisitor):
    """Collects imported module names, anywhere (also inside functions), but
    not under ``if TYPE_CHECKING:``: those are for annotations only."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            self.found.add(node.module)


def storylab_imports(source: str) -> set[str]:
    """The storylab modules ``source`` imports when it runs."""
    visitor = _Imports()
    visitor.visit(ast.parse(source))
    return {m for m in visitor.found if m == "storylab" or m.startswith("storylab.")}


def forbidden_arrows(sources: dict[str, str]) -> list[str]:
    bad = []
    for module, source in sorted(sources.items()):
        layer = layer_of(module)
        if layer not in ALLOWED:
            continue
        for target in sorted(storylab_imports(source)):
            to = layer_of(target)
            if to == layer or to in ALLOWED[layer]:
                continue
            bad.append(f"{module} imports {target}")
    return bad


def test_the_layers_import_only_what_the_page_allows():
    sources = {
        name: (REPO / path).read_text(encoding="utf-8")
        for name, path in zip(module_names(), package_modules(), strict=True)
    }
    assert any(layer_of(m) == "storylab.viz" for m in sources)
    assert forbidden_arrows(sources) == []


def test_the_arrow_check_sees_a_forbidden_import():
    sources = {
        "storylab.scheduling.x": "def f():\n    from storylab.entities import EntityGraph\n",
        "storylab.viz.y": "import storylab.story.models\n",
        "storylab.story.z": "from storylab._sync import run_sync\n",
        "storylab.entities.w": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import storylab.story\n"
        ),
        "storylab.cli.run": "from storylab.viz.progress import ProgressPanel\n",
        "storylab.entities.v": "from storylab.errors import StorylabError\n",
        "storylab._checks": "from storylab.errors import ArgumentError\nimport storylab.viz\n",
    }
    assert forbidden_arrows(sources) == [
        "storylab._checks imports storylab.viz",
        "storylab.scheduling.x imports storylab.entities",
        "storylab.story.z imports storylab._sync",
        "storylab.viz.y imports storylab.story.models",
    ]
