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
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib", "dask-core": "dask"}

# Served by Binder's base image; pinning them over it risks a mixed install.
SERVER_SIDE = {"jupyterlab", "jupyter-server", "notebook", "jupyterhub", "ipykernel"}

HEAVY_MODULES = ("matplotlib", "ipywidgets", "networkx", "httpx", "PIL", "dask", "distributed")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def runtime_requirements() -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def extra_requirements(extra: str) -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def tutorial_requirements() -> dict[str, SpecifierSet]:
    """What the notebooks need: the runtime dependencies and the `lab` extra."""
    return {**runtime_requirements(), **extra_requirements("lab")}


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
    expected = tutorial_requirements()
    assert {"dask", "distributed", "jupyterlab", "papermill"} <= set(expected)
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
    dask, _, _ = conda_requirements({"dependencies": ["dask-core>=2026.1"]})
    assert dask == {"dask": SpecifierSet(">=2026.1")}


def binder_requirements() -> list[str]:
    lines = (REPO / "binder" / "requirements.txt").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def binder_pins() -> dict[str, Requirement]:
    return {
        canonicalize_name(Requirement(e).name): Requirement(e)
        for e in binder_requirements()
        if e != "-e ."
    }


def binder_pin_problems(pins: dict[str, Requirement], installed) -> list[str]:
    """Why Binder's pins are not the versions this environment resolved for storylab."""
    needed = {n: s for n, s in tutorial_requirements().items() if n not in SERVER_SIDE}
    found = []
    for name in sorted(set(needed) - set(pins)):
        found.append(f"{name} is needed by the notebooks but not pinned for Binder")
    for name, req in sorted(pins.items()):
        if name in SERVER_SIDE:
            found.append(f"{name} is served by Binder's base image; do not pin it")
            continue
        if name not in needed:
            found.append(f"{name} is pinned for Binder but storylab does not need it")
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            found.append(f"{req}: pin an exact version")
            continue
        pinned = Version(specs[0].version)
        if pinned not in needed[name]:
            found.append(f"Binder pins {req} but pyproject requires {name}{needed[name]}")
        have = installed(name)
        if have is not None and Version(have) != pinned:
            found.append(f"Binder pins {req} but {have} is installed here (the tested set)")
    return found


def _installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def test_binder_installs_the_package_and_pins_what_the_tests_ran_with():
    assert "-e ." in binder_requirements(), (
        "binder/requirements.txt must install the repository (-e .)"
    )
    problems = binder_pin_problems(binder_pins(), _installed)
    assert problems == [], (
        "binder/requirements.txt is out of step with the tested environment "
        "(rewrite its pins from `pip freeze`):\n" + "\n".join(problems)
    )


def test_the_binder_pin_check_sees_drift():
    pins = binder_pins()
    pins["httpx"] = Requirement("httpx==0.27.0")
    pins["jupyterlab"] = Requirement("jupyterlab==4.2.0")
    del pins["dask"]
    problems = binder_pin_problems(pins, lambda name: "0.29.0" if name == "httpx" else None)
    assert any("httpx==0.27.0 but 0.29.0 is installed" in p for p in problems)
    assert any(p.startswith("jupyterlab is served") for p in problems)
    assert any(p.startswith("dask is needed") for p in problems)


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
    # The tutorial's notebook 08 runs on Dask: the lab extra has the same pins.
    assert extra_requirements("dask").items() <= extra_requirements("lab").items()


def test_the_lab_and_tooling_are_an_extra_not_the_base_install():
    runtime = runtime_requirements()
    assert not {"jupyterlab", "papermill", "jupyter-book"} & set(runtime)
    assert {"jupyterlab", "ipykernel", "papermill"} <= set(extra_requirements("lab"))
    assert "jupyter-book" in extra_requirements("docs")
    assert extra_requirements("docs")["jupyter-book"].contains("1.0.4")
    assert not extra_requirements("docs")["jupyter-book"].contains("2.0.0")
    # The README's test command installs .[test]: it must bring the Lab and the book.
    test_extra = pyproject()["project"]["optional-dependencies"]["test"]
    assert "storylab[lab,docs]" in test_extra
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
    # Dask is imported only by the cluster modules, psycopg only by the PostgreSQL
    # store: the optional extras serve them.
    optional = {
        canonicalize_name(Requirement(r).name)
        for extra in ("dask", "postgres")
        for r in pyproject()["project"]["optional-dependencies"][extra]
    }
    assert undeclared(imports, set(runtime_requirements()) | optional) == []


def test_the_dependency_check_sees_an_undeclared_library():
    declared = set(runtime_requirements()) - {"h11"}
    assert undeclared({"h11", "httpx"}, declared) == ["h11 (from h11)"]


# -- licence, metadata, one version --------------------------------------------------
def test_the_licence_is_mit_and_declared_the_spdx_way():
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c)" in text and "the storylab authors" in text
    # PEP 639: a licence classifier next to an SPDX expression is an error.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    build_requires = [Requirement(r) for r in pyproject()["build-system"]["requires"]]
    (setuptools,) = [r for r in build_requires if r.name == "setuptools"]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")


def test_classifiers_keywords_and_typing():
    project = pyproject()["project"]
    classifiers = set(project["classifiers"])
    for needed in ("Framework :: Jupyter", "Framework :: AsyncIO", "Intended Audience :: Education",
                   "Typing :: Typed", "Programming Language :: Python :: 3 :: Only"):
        assert needed in classifiers
    lowest = SpecifierSet(project["requires-python"])
    versions = [c.rsplit(" :: ", 1)[1] for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions and all(Version(v) in lowest for v in versions)
    assert min(versions, key=Version) == "3.11"
    assert {"asyncio", "jupyter", "tutorial"} <= set(project["keywords"])
    assert (REPO / "storylab" / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["storylab"]


def test_the_project_urls_and_the_readme_badge_agree():
    urls = pyproject()["project"]["urls"]
    assert set(urls) == {"Source", "Documentation", "Issues", "Binder"}
    assert urls["Issues"] == urls["Source"] + "/issues"
    readme = (REPO / "README.md").read_text()
    badge = re.search(r"\[!\[Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]\(([^)\s]+)\)",
                      readme)
    assert badge, "README needs the Binder badge"
    assert badge.group(1) == urls["Binder"], "the README's Binder badge and pyproject differ"
    # The book's launch buttons point at the same repository and branch.
    book = yaml.safe_load((REPO / "docs" / "_config.yml").read_text())
    assert book["repository"]["url"] == urls["Source"]
    org_repo = urls["Source"].removeprefix("https://github.com/")
    branch = book["repository"]["branch"]
    assert urls["Binder"] == (
        f"{book['launch_buttons']['binderhub_url']}/v2/gh/{org_repo}/{branch}"
        "?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    )
    assert book["launch_buttons"]["notebook_interface"] == "jupyterlab"


def test_one_version_source():
    project = pyproject()["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    attr = pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "storylab.__version__"
    from importlib.metadata import version

    from storylab.cli import version as cli_version

    assert cli_version() == version("storylab") == __import__("storylab").__version__


# -- the built sdist and wheel ---------------------------------------------------------
# Run from the unpacked sdist, against the wheel installed in a fresh venv.
SDIST_QUICK_SUBSET = (
    "tests/test_packaging.py",
    "tests/test_tutorial_files.py",
    "tests/test_storylab_command.py",
    "tests/test_readme.py",
    "tests/scheduling/test_capacity.py",
    "tests/entities/test_graph.py",
    "tests/story/test_models.py",
    # (no wall-clock-sensitive tests here: this runs on a busy machine too)
    "tests/viz/test_layering.py",
    "tests/notebooks/test_hygiene.py",
    "tests/ui/test_harness_selfcheck.py",
)
_NOT_IN_SDIST = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache",
                 ".ruff_cache", ".mypy_cache", ".hypothesis", ".ipynb_checkpoints",
                 ".storylab", "out", "storylab.egg-info", "_build"}


def _copy_source(target: Path) -> Path:
    import shutil

    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*_NOT_IN_SDIST))
    return target


def _files_under(root: Path, folder: str) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in (root / folder).rglob("*")
        if p.is_file() and not _NOT_IN_SDIST & set(p.relative_to(root).parts)
        # a stray built copy of the notebooks; the sdist ships notebooks/ itself
        and not p.relative_to(root).as_posix().startswith("storylab/notebooks/")
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``python -m build`` of a copy of this tree: (sdist, wheel, build output)."""
    base = tmp_path_factory.mktemp("dist")
    source = _copy_source(base / "src")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(base / "out"), str(source)],
        capture_output=True, text=True, timeout=900,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    (sdist,) = (base / "out").glob("*.tar.gz")
    (wheel,) = (base / "out").glob("*.whl")
    return sdist, wheel, said


@pytest.mark.slow
def test_build_prints_no_deprecation_warning(built):
    _, _, said = built
    flagged = [ln for ln in said.splitlines() if "deprecat" in ln.lower()]
    assert flagged == [], "python -m build warned:\n" + "\n".join(flagged)


@pytest.mark.slow
def test_the_sdist_is_the_whole_project(built):
    import tarfile

    sdist, _, _ = built
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz")
        names = {m.name.removeprefix(top + "/") for m in tar.getmembers() if m.isfile()}
    expected = (
        {"LICENSE", "README.md", "pyproject.toml", "setup.py", "environment.yml", ".ci/run"}
        | _files_under(REPO, "tests")
        | _files_under(REPO, "notebooks")
        | _files_under(REPO, "binder")
        | _files_under(REPO, "docs")
        | _files_under(REPO, "bench")
        | _files_under(REPO, "storylab")
    )
    assert {"tests/conftest.py", "tests/story/conftest.py", "tests/book/conftest.py",
            "docs/_config.yml", "binder/requirements.txt"} <= expected
    missing = sorted(expected - names)
    assert missing == [], f"the sdist lacks {missing}"
    assert not [n for n in names if n.endswith((".pyc", ".sqlite"))]


@pytest.mark.slow
def test_the_wheel_ships_the_tutorial_the_licence_and_the_metadata(built):
    import zipfile

    from packaging.metadata import Metadata

    import storylab

    _, wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Metadata.from_email(zf.read(info), validate=True)
        shipped = {n.rsplit("/", 1)[1]: zf.read(n) for n in names
                   if n.startswith("storylab/notebooks/")}
        licence = zf.read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE")))
    assert "storylab/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "notebooks/", "docs/"))]
    assert shipped == {p.name: p.read_bytes() for p in (REPO / "notebooks").glob("*.ipynb")}
    assert licence == (REPO / "LICENSE").read_bytes()
    assert str(meta.version) == storylab.__version__
    assert meta.license_expression == "MIT" and meta.license_files == ["LICENSE"]
    assert meta.project_urls == pyproject()["project"]["urls"]
    base = {Requirement(str(r)).name for r in meta.requires_dist if r.marker is None}
    assert base == set(runtime_requirements())
    assert {"lab", "docs", "test", "dask"} <= set(meta.provides_extra)


@pytest.mark.slow
def test_the_quick_subset_passes_from_the_unpacked_sdist_against_the_wheel(built, tmp_path):
    import tarfile

    sdist, wheel, _ = built
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    unpacked = tmp_path / sdist.name.removesuffix(".tar.gz")
    venv = tmp_path / "venv"
    # The venv sees the dependencies installed here; storylab itself is the wheel's.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
                   check=True, timeout=300)
    where = subprocess.run(
        [str(python), "-P", "-c", "import storylab; print(storylab.__file__)"],
        capture_output=True, text=True, cwd=unpacked, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), f"storylab came from {where}, not the wheel"
    # -P: the unpacked folder is not put on sys.path, so the tests import the wheel.
    done = subprocess.run(
        [str(python), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "not slow and not ui and not book", *SDIST_QUICK_SUBSET],
        capture_output=True, text=True, cwd=unpacked, timeout=900,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d{2,} passed", summary) and "failed" not in summary, summary


# -- the README's commands ---------------------------------------------------------------
def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_the_quick_start_makes_a_venv_then_installs_the_lab_and_tests():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make a virtual environment first" in " ".join(section.split())
    assert quick_start_commands() == [
        "python3 -m venv .venv && source .venv/bin/activate",
        'pip install -e ".[lab]" && storylab run',
        'pip install -e ".[test]" && python -m pytest',
    ]


def test_ci_runs_exactly_the_readmes_test_command():
    test_command = quick_start_commands()[-1]
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    assert ci.count(test_command) == 1, f".ci/run must run {test_command!r}"
    assert not [ln for ln in ci if "pytest" in ln and not ln.startswith("#")
                and ln != test_command]


@pytest.mark.slow
def test_the_readmes_first_command_works_in_a_fresh_venv(tmp_path):
    """``pip install -e ".[lab]" && storylab run`` in a new venv, on a copy of this tree.

    The venv sees the libraries installed here (no download), so what this
    proves is that the extra resolves and the command runs from the install.
    """
    source = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", STORYLAB_HOME=str(tmp_path / "home"))
    install, run = quick_start_commands()[1].split(" && ")
    done = subprocess.run(install + " --quiet", shell=True, cwd=source,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    ran = subprocess.run(run + " --time-scale 0.01", shell=True, cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert list((work / "out").glob("*.html")), "storylab run wrote no page"
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import storylab; print(storylab.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(source)


# -- what Binder (repo2docker) would build -----------------------------------------------
def test_repo2docker_builds_from_binder_with_pip_python_and_postbuild(tmp_path):
    """repo2docker's own plan for this repository (``--no-build --debug`` prints the
    Dockerfile without Docker): Python from binder/runtime.txt, binder/requirements.txt
    installed with pip into the kernel's environment, binder/postBuild run; the root
    environment.yml (for conda users) not used."""
    pytest.importorskip("repo2docker", reason="jupyter-repo2docker is in the test extra")
    source = _copy_source(tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-m", "repo2docker", "--no-build", "--debug", str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    runtime = (REPO / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    assert f"python={runtime}" in said, "repo2docker did not take the Python of runtime.txt"
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in said
    assert "RUN ./binder/postBuild" in said
    assert "environment.yml" not in said, "repo2docker would read an environment.yml"
    assert "src/binder/requirements.txt" in said
