"""Stage the book's sources: execute the notebooks and lay them out beside the pages.

Run by docs/build_book.sh (which then calls Jupyter Book). The staged folder
(build/book-src/) mirrors the repository, docs/ and notebooks/, so that a
chapter's Binder button opens the same path in the repository.

Each notebook is executed with papermill exactly as CI runs it (``fast=True``,
the ``python3`` kernel), in a scratch folder of its own under build/book-work/
(the notebooks keep their scratch graphs in their working folder), two at a
time. Then, for the book:

- the invisible ``application/vnd.storylab.facts+json`` outputs (numbers kept
  for the tests, never shown) are dropped, so no page has an output type the
  HTML builder does not know;
- MathJax is copied from the jupyter-server-mathjax package, so formulas
  are typeset without loading anything from another site;
- papermill's injected-parameters cell is removed from the page (the
  notebook's own ``parameters`` cell still shows the defaults);
- a cell tagged ``solution`` that carries no hiding tag of its own
  (``remove-cell`` or ``hide-cell``) gets ``remove-cell``, so an exercise's
  answer can never reach the book.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
FACTS_MIME = "application/vnd.storylab.facts+json"
HIDING_TAGS = {"remove-cell", "hide-cell"}


def toc_pages(toc: Path = REPO / "docs" / "_toc.yml") -> list[str]:
    """The docs/ pages the table of contents names (as "name.md"), root first.

    The staged pages are read from the table of contents, so a page added
    there is staged too and a page left out of it is never built.
    """
    import yaml  # PyYAML comes with Jupyter Book

    data = yaml.safe_load(toc.read_text(encoding="utf-8"))
    files = [data["root"]]
    for part in data.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return [f.removeprefix("docs/") + ".md" for f in files if f.startswith("docs/")]


def execute(source: Path, target: Path, work: Path, timeout: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "papermill", str(source), str(target),
        "-p", "fast", "True", "-k", "python3", "--cwd", str(work),
        "--execution-timeout", str(timeout), "--no-progress-bar", "--log-level", "WARNING",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"{source.name} failed to execute (see {target}):\n{tail}")


def for_the_book(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if "solution" in tags and not HIDING_TAGS.intersection(tags):
            tags.append("remove-cell")
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            data = output.get("data")
            if data is not None and FACTS_MIME in data:
                del data[FACTS_MIME]
                if not data:
                    continue
            kept.append(output)
        cell.outputs = kept
    return nb


def stage_mathjax(target: Path) -> None:
    """A local copy of MathJax for the pages with formulas (the book loads nothing remote)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SystemExit(
            "jupyter-server-mathjax is missing (it provides the book's local MathJax): "
            'pip install -e ".[docs]"'
        ) from None
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(source, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "book-src")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "docs"))
    import reference_pages  # docs/reference_pages.py, beside this script

    differ = reference_pages.stale()
    if differ:
        raise SystemExit(
            f"{', '.join('docs/' + p for p in differ)} "
            f"{'differs' if len(differ) == 1 else 'differ'} from the source, "
            "storylab/tutorial/_overview.py: run python docs/reference_pages.py"
        )
    out: Path = args.out
    work = out.parent / "book-work"
    for folder in (out, work):
        shutil.rmtree(folder, ignore_errors=True)
    (out / "docs").mkdir(parents=True)
    (out / "notebooks").mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(REPO / "docs" / name, out / name)
    shutil.copytree(REPO / "docs" / "_ext", out / "_ext")
    # Jupyter Book adds every stylesheet in the book's _static/ to every page.
    shutil.copytree(REPO / "docs" / "_static", out / "_static")
    for name in toc_pages():
        shutil.copyfile(REPO / "docs" / name, out / "docs" / name)

    stage_mathjax(out / "_extra" / "mathjax")

    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if not notebooks:
        raise SystemExit("no notebooks in notebooks/")
    executed = work / "executed"
    executed.mkdir(parents=True)
    env_note = "STORYLAB_FAST" in os.environ
    print(f"executing {len(notebooks)} notebooks, {args.jobs} at a time"
          + (" (STORYLAB_FAST is set)" if env_note else ""), flush=True)

    def one(path: Path) -> Path:
        target = executed / path.name
        execute(path, target, work / path.stem, args.timeout)
        print(f"  executed {path.name}", flush=True)
        return target

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(one, notebooks))
    for path in done:
        nb = for_the_book(nbformat.read(path, as_version=4))
        nbformat.write(nb, out / "notebooks" / path.name)
    print(f"staged the book in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
