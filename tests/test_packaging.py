"""Packaging stays in step: pyproject, conda's environment.yml, Binder, light import.

Three files describe the same runtime: pyproject.toml for pip, environment.yml
for conda users, binder/ for repo2docker (which ignores the root files once a
binder folder exists). They drift apart silently unless a test compares them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]

# conda-forge names that differ from the PyPI distribution they stand for.
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}

# Served by Binder's base image; pinning them over it risks a mixed install.
SERVER_SIDE = {"jupyterlab", "jupyter-server", "notebook", "jupyterhub"}

HEAVY_MODULES = ("matplotlib", "ipywidgets", "networkx", "httpx", "PIL", "dask", "distributed")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def runtime_requirements() -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def conda_requirements(env: dict) -> tuple[dict[str, SpecifierSet], list[str], str]:
    """(PyPI-named specs, pip entries, python spec) from an environment.yml mapping."""
    specs: dict[str, SpecifierSet] = {}
    pip_entries: list[str] = []
    python = ""
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_entries.extend(dep.get("pip", []))
            continue
        name, spec = _CONDA_SPEC.match(dep).groups()
        if name == "python":
            python = spec
            continue
        if name == "pip":
            continue
        name = canonicalize_name(CONDA_TO_PYPI.get(name, name))
        specs[name] = SpecifierSet(spec)
    return specs, pip_entries, python


def test_environment_yml_matches_pyproject_dependencies():
    env = environment()
    assert env["name"] == "storylab"
    assert env["channels"] == ["conda-forge"]
    specs, pip_entries, python = conda_requirements(env)
    expected = runtime_requirements()
    assert sorted(specs) == sorted(expected), (
        "environment.yml and pyproject.toml list different runtime dependencies: "
        f"only in environment.yml {sorted(set(specs) - set(expected))}, "
        f"only in pyproject.toml {sorted(set(expected) - set(specs))}"
    )
    for name, spec in expected.items():
        assert specs[name] == spec, f"{name}: environment.yml says {specs[name]}, pyproject {spec}"
    assert SpecifierSet(python) == SpecifierSet(pyproject()["project"]["requires-python"])
    assert pip_entries == ["-e ."], "environment.yml must install storylab itself with pip"


def test_conda_spec_parser_normalises_names_and_sees_differences():
    specs, pip_entries, python = conda_requirements(
        {"dependencies": ["python >=3.11", "nest_asyncio2>=1.7", "matplotlib-base", {"pip": ["x"]}]}
    )
    assert specs == {"nest-asyncio2": SpecifierSet(">=1.7"), "matplotlib": SpecifierSet()}
    assert pip_entries == ["x"] and python == ">=3.11"
    assert specs["nest-asyncio2"] != runtime_requirements()["networkx"]


def binder_requirements() -> list[str]:
    lines = (REPO / "binder" / "requirements.txt").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def test_binder_installs_the_package_and_pins_only_kernel_side_libraries():
    entries = binder_requirements()
    assert "-e ." in entries, "binder/requirements.txt must install the repository (-e .)"
    expected = runtime_requirements()
    # Notebook 08 runs on Dask: Binder installs the dask extra as well.
    for extra in pyproject()["project"]["optional-dependencies"]["dask"]:
        req = Requirement(extra)
        expected[canonicalize_name(req.name)] = req.specifier
    pins = [Requirement(e) for e in entries if e != "-e ."]
    assert pins, "binder/requirements.txt should pin the kernel-side libraries"
    for req in pins:
        name = canonicalize_name(req.name)
        assert name not in SERVER_SIDE, f"{name} is served by Binder's base image; do not pin it"
        assert name in expected, (
            f"{name} is pinned for Binder but is neither a runtime dependency nor in the dask extra"
        )
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req}: pin an exact version"
        assert Version(spec.version) in expected[name], (
            f"Binder pins {req} but pyproject requires {name}{expected[name]}"
        )


def test_binder_runtime_is_a_supported_python():
    runtime = (REPO / "binder" / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"binder/runtime.txt should read like python-3.11, not {runtime!r}"
    assert Version(match.group(1)) in SpecifierSet(pyproject()["project"]["requires-python"])
    assert not (REPO / ".binder").exists(), "binder/ and .binder/ together are an error"
    assert not (REPO / "binder" / "environment.yml").exists(), (
        "a binder/environment.yml would make repo2docker ignore binder/requirements.txt"
    )


def test_binder_postbuild_writes_lab_overrides(tmp_path):
    script = REPO / "binder" / "postBuild"
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text, "postBuild errors are ignored without set -e"
    app_dir = tmp_path / "lab-app"
    env = dict(os.environ, JUPYTERLAB_DIR=str(app_dir))
    subprocess.run(["bash", str(script)], cwd=REPO, env=env, check=True, timeout=60)
    overrides = json.loads((app_dir / "settings" / "overrides.json").read_text())
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}


def _import_report(module: str) -> dict:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, f"import {module} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _light_modules() -> list[str]:
    """The package root, the CLI, and every non-viz layer present in this tree."""
    # The cluster modules import Dask only when a cluster is used.
    found = ["storylab", "storylab.cli"]
    found += ["storylab.scheduling.distributed", "storylab.story.cluster"]
    for layer in ("scheduling", "entities", "story"):
        if (REPO / "storylab" / layer / "__init__.py").exists():
            found.append(f"storylab.{layer}")
    return found


@pytest.mark.parametrize("module", _light_modules())
def test_import_stays_light(module):
    heavy = _import_report(module)
    assert heavy == [], f"import {module} pulled in {heavy}; import them lazily (viz only)"


def test_light_import_check_can_see_a_heavy_import():
    assert _import_report("matplotlib") == ["PIL", "matplotlib"]


def test_the_dask_extra_is_optional_and_tested():
    project = pyproject()["project"]
    runtime = runtime_requirements()
    assert "distributed" not in runtime and "dask" not in runtime
    extras = project["optional-dependencies"]
    assert {Requirement(r).name for r in extras["dask"]} == {"dask", "distributed"}
    # CI installs .[test]: without distributed there the cluster tests would not run.
    assert "distributed" in {Requirement(r).name for r in extras["test"]}
def third_party_imports(root: Path) -> set[str]:
    """Top-level names of the non-stdlib modules imported anywhere under ``root``."""
    import ast

    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "storylab"}


def undeclared(imports: set[str], declared: set[str]) -> list[str]:
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    missing = []
    for module in sorted(imports):
        provided_by = {canonicalize_name(d) for d in dists.get(module, [module])}
        if not provided_by & declared:
            missing.append(f"{module} (from {', '.join(sorted(provided_by))})")
    return missing


def test_every_library_the_package_imports_is_a_declared_dependency():
    imports = third_party_imports(REPO / "storylab")
    assert {"h11", "httpx", "PIL", "distributed"} <= imports  # the scan sees real imports
    # Dask is imported only by the cluster modules, which the optional extra serves.
    optional = {
        canonicalize_name(Requirement(r).name)
        for r in pyproject()["project"]["optional-dependencies"]["dask"]
    }
    assert undeclared(imports, set(runtime_requirements()) | optional) == []


def test_the_dependency_check_sees_an_undeclared_library():
    declared = set(runtime_requirements()) - {"h11"}
    assert undeclared({"h11", "httpx"}, declared) == ["h11 (from h11)"]
