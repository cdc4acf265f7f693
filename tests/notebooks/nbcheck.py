"""Run the tutorial notebooks headless and judge what they hold.

Two halves. Hygiene reads the notebooks as committed: no outputs, a literal
``parameters`` cell first, the STORYLAB_FAST switch right after it, a
``python3`` kernel, short code cells. Execution runs each notebook with
papermill in a scratch copy of the notebooks folder (so no ``.storylab/`` or
story files land in the repository) and then checks the executed copy for what
a reader must see: PNG figures, progress bars in their final state, and the
finished story rendered as HTML with inline PNG images.

Every check returns a list of problems (empty when all is well) so the tests
can show all of them at once, and so the self-check can prove each check fails
on a notebook that falls short.
"""

from __future__ import annotations

import ast
import base64
import binascii
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = Path(os.environ.get("STORYLAB_NOTEBOOKS_DIR") or REPO / "notebooks")
BUILD_EXECUTED = REPO / "build" / "executed"

SERIES = (
    "00_start_here",
    "01_sequential_generation",
    "02_entities_and_parallel_calls",
    "03_two_levels_of_capacity",
    "04_crash_and_resume",
    "05_failures",
    "06_http_backend",
    "07_research_sweep",
    "08_beyond_one_process",
    "09_capstone",
)

MAX_CODE_LINES = 25
MAX_SCRIPT_LINES = 40
STRIP_EXTRA_KEYS = "metadata.papermill cell.metadata.papermill cell.metadata.execution"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS_MODELS = {"IntProgressModel", "FloatProgressModel"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FACTS_MIME = "application/vnd.storylab.facts+json"
CLOSING_TAGS = {"exercise", "solution"}
_INLINE_PNG = re.compile(
    r"""<img\b[^>]*?\bsrc\s*=\s*["']data:image/png;base64,([A-Za-z0-9+/=\s]+)["']""",
    re.IGNORECASE,
)


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


# --------------------------------------------------------------------------- hygiene


def output_problems(nb) -> list[str]:
    """Outputs, counts, widget state or papermill traces left in a committed notebook."""
    found = []
    for i, cell in code_cells(nb):
        if cell.get("outputs"):
            found.append(f"cell {i} has {len(cell.outputs)} saved output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has execution_count {cell.execution_count}")
        for key in ("papermill", "execution"):
            if key in cell.metadata:
                found.append(f"cell {i} carries metadata.{key}")
    for key in ("widgets", "papermill"):
        if key in nb.metadata:
            found.append(f"notebook metadata carries {key!r}")
    return found


def kernel_problems(nb) -> list[str]:
    name = nb.metadata.get("kernelspec", {}).get("name")
    if name != "python3":
        return [f"kernelspec name is {name!r}, expected 'python3' (CI and Binder run python3)"]
    return []


def parameter_problems(nb) -> list[str]:
    """First code cell tagged ``parameters`` with literal annotated defaults, then the switch."""
    cells = code_cells(nb)
    if not cells:
        return ["no code cells"]
    i, first = cells[0]
    found = []
    if "parameters" not in first.metadata.get("tags", []):
        tagged = [j for j, c in cells if "parameters" in c.metadata.get("tags", [])]
        where = f"cell {tagged[0]} is tagged instead" if tagged else "no cell is tagged"
        found.append(f"the first code cell (cell {i}) is not tagged 'parameters' ({where})")
    try:
        tree = ast.parse(first.source)
    except SyntaxError as exc:
        return found + [f"parameters cell does not parse: {exc}"]
    names = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            found.append(
                f"parameters cell line {stmt.lineno}: use `name: type = literal` "
                "so papermill --help-notebook lists it"
            )
            continue
        try:
            names[stmt.target.id] = ast.literal_eval(stmt.value) if stmt.value else None
        except ValueError:
            found.append(f"parameter {stmt.target.id!r} has a non-literal default")
    if names.get("fast", None) is not False:
        found.append("parameters cell must define `fast: bool = False`")
    if not isinstance(names.get("time_scale"), int | float) or isinstance(
        names.get("time_scale"), bool
    ):
        found.append("parameters cell must define a numeric `time_scale: float = ...`")
    tagged = [j for j, c in cells if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) > 1:
        found.append(f"{len(tagged)} cells are tagged 'parameters' (cells {tagged}); keep one")
    if len(cells) < 2 or "lesson_pace(" not in cells[1][1].source:
        found.append("the code cell after the parameters must set the speeds with "
                     "storylab.tutorial.lesson_pace (it honours STORYLAB_FAST=1)")
    for j, c in cells:
        if _PLUMBING.search(c.source):
            found.append(f"cell {j} handles CI plumbing ({_PLUMBING.search(c.source).group(0)!r}); "
                         "that belongs in storylab.tutorial.lesson_pace")
    return found


_PLUMBING = re.compile(r"STORYLAB_FAST|os\.environ")


def long_cells(nb, limit: int = MAX_CODE_LINES, script_limit: int = MAX_SCRIPT_LINES) -> list[str]:
    """Code cells longer than ``limit`` lines; a cell that writes a script file for a
    separate process (``%%writefile``) may have ``script_limit``."""
    found = []
    for i, c in code_cells(nb):
        n = len(c.source.rstrip("\n").splitlines())
        most = script_limit if c.source.startswith("%%writefile") else limit
        if n > most:
            found.append(f"cell {i} has {n} lines of code (keep code cells to {most} or fewer)")
    return found


# Opening and closing sections every notebook has, as in numpy-tutorials and Pythia.
OPENING = ("**Objectives.**", "**Prerequisites.**", "**Time.**")
CLOSING = ("## Summary", "## Exercises", "## What comes next", "## References")
# A notebook that is one exercise from start to end (the capstone) declares
# ``metadata.storylab.layout = "exercise"``: its Summary closes the exercise, after it.
CLOSING_EXERCISE = ("## Exercises", "## Summary", "## What comes next", "## References")
PUBLIC_MODULES = {"storylab", "storylab.viz", "storylab.tutorial", "storylab.sweep"}
_STORYLAB_IMPORT = re.compile(r"^\s*(?:from\s+(storylab[\w.]*)\s+import|import\s+(storylab[\w.]*))",
                              re.MULTILINE)


def scaffold_problems(nb) -> list[str]:
    """Objectives, prerequisites and time on top; closing sections in order; exercises
    with a ``check_...`` call and a hidden solution cell that calls it too."""
    found = []
    markdown = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    if not markdown:
        return ["no markdown cells"]
    first = markdown[0][1].source
    found += [f"the first markdown cell lacks {key}" for key in OPENING if key not in first]
    where: list[int] = []
    exercise_layout = nb.metadata.get("storylab", {}).get("layout") == "exercise"
    closing = CLOSING_EXERCISE if exercise_layout else CLOSING
    for heading in closing:
        at = [i for i, c in markdown if re.search(rf"^{re.escape(heading)}\s*$", c.source,
                                                   re.MULTILINE)]
        if not at:
            found.append(f"no {heading!r} section")
        else:
            where.append(at[-1])
    if len(where) == len(closing) and where != sorted(where):
        found.append(f"the closing sections are out of order (expected {', '.join(closing)})")
    tagged = {t: [c for c in nb.cells if t in c.metadata.get("tags", [])]
              for t in ("exercise", "solution")}
    if not any("check_" in c.source for c in tagged["exercise"]):
        found.append("no cell tagged 'exercise' calls a check_... function")
    if not tagged["solution"]:
        found.append("no cell tagged 'solution'")
    found += solution_problems(nb)
    if where and tagged["exercise"]:
        first_ex = nb.cells.index(tagged["exercise"][0])
        if first_ex < where[0]:
            found.append("an exercise cell comes before the "
                         + ("Exercises heading" if exercise_layout else "Summary"))
    return found


_SHOW_SOLUTION = re.compile(r"""show_solution\(["']([\w-]+)["']\)""")


def solution_problems(nb) -> list[str]:
    """Solutions never run and never show on a first line: each cell tagged
    ``solution`` is Markdown (Run All and papermill skip it), tagged ``remove-cell``
    for the book, opens with a collapsed ``<details>`` summary and names a solution
    of the kit with ``show_solution("NN-k")``; no code cell checks a ``solution``."""
    from storylab.tutorial import EXPLAINED, SOLUTIONS

    found = []
    for i, c in enumerate(nb.cells):
        tags = c.metadata.get("tags", [])
        if "solution" in tags:
            if c.cell_type != "markdown":
                found.append(f"solution cell {i} is a {c.cell_type} cell: make it Markdown so "
                             "that Run All and papermill skip it")
                continue
            if "remove-cell" not in tags:
                found.append(f"solution cell {i} is not tagged 'remove-cell' (the book shows it)")
            if not c.source.lstrip().startswith("<details><summary>"):
                found.append(f"solution cell {i} does not open with a collapsed <details> summary")
            keys = _SHOW_SOLUTION.findall(c.source)
            if not keys:
                found.append(f"solution cell {i} names no show_solution(\"NN-k\")")
            found += [f"solution cell {i} names {k!r}, which storylab.tutorial.SOLUTIONS lacks"
                      for k in keys if k not in SOLUTIONS and k not in EXPLAINED]
        elif c.cell_type == "code" and re.search(r"^\s*solution\s*=|check_\w+\(solution",
                                                  c.source, re.MULTILINE):
            found.append(f"code cell {i} computes or checks a solution; it would run with Run All")
    return found


def solution_keys(nb) -> list[str]:
    """The kit's solutions a notebook's solution cells point to."""
    return [k for c in nb.cells if "solution" in c.metadata.get("tags", [])
            for k in _SHOW_SOLUTION.findall(c.source)]


def import_problems(nb) -> list[str]:
    """Notebooks import only the public face of storylab, never a layer's inner modules."""
    found = []
    for i, cell in code_cells(nb):
        for m in _STORYLAB_IMPORT.finditer(cell.source):
            module = m.group(1) or m.group(2)
            if module not in PUBLIC_MODULES:
                found.append(f"cell {i} imports {module} (use one of {sorted(PUBLIC_MODULES)})")
    return found


_DRAWING = re.compile(r"^\s*(?:import\s+matplotlib|from\s+matplotlib[\w.]*\s+import)",
                      re.MULTILINE)


def drawing_problems(nb) -> list[str]:
    """Notebooks draw through ``storylab.viz``: a chart drawn in a cell is a chart
    the package does not test and the next notebook cannot reuse."""
    return [
        f"cell {i} imports matplotlib (draw with a storylab.viz function instead)"
        for i, cell in code_cells(nb)
        if _DRAWING.search(cell.source)
    ]


RIGHT = "✔ right"
_CHECK_CALL = re.compile(r"\bcheck_\w+\(")
SUMMARY_PREFIX = "In words: "


def verdict_problems(nb) -> list[str]:
    """In an executed notebook: no output says an answer is right (no solution ran), and
    each exercise check answers the answer as shipped with 'not yet'."""
    found = []
    for i, cell in code_cells(nb):
        said = " ".join(_text(out) for out in cell.get("outputs", []))
        where = source_index(nb, i)
        if RIGHT in said:
            found.append(f"cell {where} shows a solution's verdict: {said[:200]!r}")
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags and _CHECK_CALL.search(cell.source) and "✘ not yet" not in said:
            found.append(f"exercise check in cell {where} did not say 'not yet' for the default "
                         f"answer: {said[:200]!r}")
    return found


def summary_problems(nb) -> list[str]:
    """Every figure is followed by its one-line text summary (``In words: ...``): the
    next visible output after each PNG, in its cell or the next."""
    outs = [(i, out) for i, out in _outputs(nb) if FACTS_MIME not in out.get("data", {})]
    found = []
    for k, (i, out) in enumerate(outs):
        if "image/png" not in out.get("data", {}):
            continue
        following = _text(outs[k + 1][1]) if k + 1 < len(outs) else ""
        if not following.lstrip().startswith(SUMMARY_PREFIX):
            found.append(f"the figure in cell {source_index(nb, i)} is not followed by its text "
                         f"summary ({SUMMARY_PREFIX!r}...); next output: {following[:80]!r}")
    return found


def _text(out) -> str:
    if out.get("output_type") == "stream":
        return out.get("text", "")
    plain = out.get("data", {}).get("text/plain", "")
    return "".join(plain) if isinstance(plain, list) else plain


def facts(nb) -> dict:
    """The numbers the notebook remembered (``storylab.tutorial.remember``), later cells win."""
    found: dict = {}
    for _, out in _outputs(nb):
        found.update(out.get("data", {}).get(FACTS_MIME, {}))
    return found


def nbstripout_verify(paths: list[Path]) -> tuple[int, str]:
    """``nbstripout --verify`` as the pre-commit hook runs it: (exit code, what it said).

    ``--keep-id`` keeps the cell ids JupyterLab writes, so a notebook saved
    from Lab with its outputs cleared passes without renumbering.
    """
    exe = shutil.which("nbstripout") or str(Path(sys.executable).with_name("nbstripout"))
    proc = subprocess.run(
        [exe, "--verify", "--keep-id", "--extra-keys", STRIP_EXTRA_KEYS, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class Run:
    """One papermill run: where its executed copy is, and how it ended."""

    name: str
    output: Path
    workdir: Path
    returncode: int
    seconds: float
    log: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """The failing cell(s) with index and traceback, else the tail of papermill's log."""
        verdict = "ok" if self.ok else "FAILED"
        lines = [f"{self.name}: papermill {verdict} after {self.seconds:.1f} s"]
        if self.output.exists():
            nb = read(self.output)
            for i, cell in code_cells(nb):
                for out in cell.get("outputs", []):
                    if out.output_type == "error":
                        tb = _strip_ansi("\n".join(out.get("traceback", [])))
                        where = source_index(nb, i)
                        lines.append(f"cell {where} raised {out.ename}: {out.evalue}")
                        lines.append("  " + "\n  ".join(tb.splitlines()[-15:]))
        if self.log:
            lines.append("papermill said:\n" + "\n".join(self.log.splitlines()[-20:]))
        return "\n".join(lines)


PAPERMILL_ADDED = {"injected-parameters", "papermill-error-cell-tag"}


def source_index(nb, i: int) -> int:
    """Index in the committed notebook of cell ``i`` of papermill's executed copy."""
    added = sum(
        1 for c in nb.cells[:i] if PAPERMILL_ADDED.intersection(c.metadata.get("tags", []))
    )
    return i - added


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


FACTS_METADATA = "storylab"  # notebook metadata: {"storylab": {"facts": {name: expression}}}


def declared_facts(nb) -> dict[str, str]:
    """The facts a notebook declares in its metadata: ``{name: Python expression}``.

    The learner never sees them: JupyterLab does not show notebook metadata,
    and the cell that evaluates them exists only in the executed copy.
    """
    facts = nb.metadata.get(FACTS_METADATA, {}).get("facts", {})
    bad = [k for k, v in facts.items() if not (k.isidentifier() and isinstance(v, str))]
    if bad:
        raise ValueError(f"metadata.{FACTS_METADATA}.facts: {bad} must map names to expressions")
    return dict(facts)


def with_facts_cell(nb):
    """``nb`` with one last code cell that evaluates its declared facts and remembers them.

    Every expression runs in the kernel's namespace after the notebook's own
    last cell; one that fails stops the run with the fact's name.
    """
    facts = declared_facts(nb)
    if not facts:
        return nb
    source = (
        "from storylab.tutorial import remember as _sl_remember\n"
        f"_sl_declared = {facts!r}\n"
        "_sl_values = {}\n"
        "for _sl_name, _sl_expr in _sl_declared.items():\n"
        "    try:\n"
        "        _sl_values[_sl_name] = eval(_sl_expr)\n"
        "    except Exception as _sl_exc:\n"
        "        raise RuntimeError(\n"
        "            f'fact {_sl_name} = {_sl_expr} failed: {_sl_exc!r}') from None\n"
        "_sl_remember(**_sl_values)"
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["storylab-facts"]
    nb = nbformat.from_dict(nb)
    nb.cells.append(cell)
    return nb


def execute(
    source: Path,
    scratch: Path,
    parameters: dict,
    *,
    cell_timeout: int = 150,
    keep_in: Path | None = None,
) -> Run:
    """Run ``source`` with papermill inside a fresh copy of its folder under ``scratch``.

    The kernel's working directory and STORYLAB_HOME point into that copy;
    STORYLAB_FAST is removed so that ``fast`` comes from the injected
    parameters. The executed notebook is copied to ``keep_in`` when given.
    """
    name = source.stem
    workdir = scratch / name
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(
        source.parent, workdir, ignore=shutil.ignore_patterns(".storylab", ".ipynb_checkpoints")
    )
    copy = workdir / source.name
    nbformat.write(with_facts_cell(nbformat.read(copy, as_version=4)), copy)
    output = scratch / f"{name}.executed.ipynb"
    saved_env = dict(os.environ)
    os.environ.pop("STORYLAB_FAST", None)
    os.environ.update(
        STORYLAB_HOME=str(workdir / ".storylab"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYTHONUNBUFFERED="1",
    )
    start = time.monotonic()
    returncode, log = 0, ""
    try:
        import papermill

        papermill.execute_notebook(
            str(workdir / source.name),
            str(output),
            parameters=parameters,
            cwd=str(workdir),
            kernel_name="python3",
            execution_timeout=cell_timeout,
            start_timeout=90,
            progress_bar=False,
        )
    except Exception as exc:  # papermill raises for cell errors, timeouts, dead kernels
        returncode, log = 1, f"{type(exc).__name__}: {exc}"
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    run = Run(
        name=name,
        output=output,
        workdir=workdir,
        returncode=returncode,
        seconds=time.monotonic() - start,
        log=log,
    )
    if keep_in is not None and output.exists():
        keep_in.mkdir(parents=True, exist_ok=True)
        shutil.copy2(output, keep_in / f"{name}.ipynb")
    return run


@dataclass
class SeriesRunner:
    """Runs notebooks concurrently in a small pool of worker processes.

    Each worker imports papermill once and sets the kernel's environment in
    its own ``os.environ``, so runs never see each other's settings.

    ``result(name)`` submits ``name`` (and, on first use, everything listed in
    ``queue``) and waits for it, so early tests start checking while later
    notebooks still run.
    """

    notebooks: Path
    scratch: Path
    parameters: dict[str, dict]
    workers: int = 2
    keep_in: Path | None = None
    queue: list[str] = field(default_factory=list)
    _pool: ProcessPoolExecutor | None = None
    _futures: dict[str, Future] = field(default_factory=dict)

    def _submit(self, name: str) -> Future:
        if name not in self._futures:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            source = self.notebooks / f"{name}.ipynb"
            self._futures[name] = self._pool.submit(
                execute, source, self.scratch, self.parameters.get(name, {}), keep_in=self.keep_in
            )
        return self._futures[name]

    def result(self, name: str) -> Run:
        for queued in self.queue:
            self._submit(queued)
        return self._submit(name).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- executed notebooks


@dataclass(frozen=True)
class Expect:
    """What an executed notebook must hold.

    min_figures: PNG outputs (matplotlib figures), each a real PNG.
    min_bars: progress-bar widget models in the saved widget state.
    bad_bars: "forbidden" (every bar ends full and green), "allowed" or
        "required" (some bar ends warning/danger, e.g. when an image fails).
    unfinished_bars_ok: bars may stop short of max (a run interrupted on purpose).
    min_story_images: inline PNG images in the story's text/html output.
    story_at_end: the story HTML is among the last two outputs of the notebook.
    """

    min_figures: int = 1
    min_bars: int = 1
    bad_bars: str = "forbidden"
    unfinished_bars_ok: bool = False
    min_story_images: int = 1
    story_at_end: bool = True

    def __post_init__(self):
        allowed = ("forbidden", "allowed", "required")
        if self.bad_bars not in allowed:
            raise ValueError(f"bad_bars must be one of {allowed}, not {self.bad_bars!r}")


def _outputs(nb):
    for i, cell in code_cells(nb):
        for out in cell.get("outputs", []):
            yield i, out


def png_figures(nb) -> tuple[int, list[str]]:
    """Count image/png outputs that decode to PNG bytes; report those that do not."""
    count, bad = 0, []
    for i, out in _outputs(nb):
        data = out.get("data", {}).get("image/png")
        if data is None:
            continue
        raw = _b64(data)
        if raw is None or not raw.startswith(PNG_SIGNATURE):
            bad.append(f"cell {i}: an image/png output is not PNG data")
        else:
            count += 1
    return count, bad


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def progress_bars(nb) -> list[dict]:
    """Final state of every progress-bar model saved by nbclient."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    bars = []
    for model_id, model in state.items():
        if model.get("model_name") in PROGRESS_MODELS:
            s = model.get("state", {})
            bars.append(
                {
                    "id": model_id,
                    "value": s.get("value", 0),
                    "max": s.get("max", 100),
                    "bar_style": s.get("bar_style", ""),
                    "description": s.get("description", ""),
                }
            )
    return bars


def story_outputs(nb) -> list[tuple[int, int, int, list[str]]]:
    """Story-like outputs: (position among all outputs, cell, image count, problems)."""
    found = []
    for pos, (i, out) in enumerate(_outputs(nb)):
        html = out.get("data", {}).get("text/html")
        if html is None:
            continue
        html = "".join(html) if isinstance(html, list) else html
        images = _INLINE_PNG.findall(html)
        if not images:
            continue
        bad = [
            f"cell {i}: inline image {k} is not PNG data"
            for k, b64 in enumerate(images)
            if not (_b64(b64) or b"").startswith(PNG_SIGNATURE)
        ]
        found.append((pos, i, len(images), bad))
    return found


def executed_problems(nb, expect: Expect) -> list[str]:
    """Everything the executed notebook lacks with respect to ``expect``."""
    found = []
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    if not any("injected-parameters" in t for t in tags):
        found.append("papermill injected no parameters (no cell tagged 'parameters'?)")
    for i, cell in code_cells(nb):
        status = cell.metadata.get("papermill", {}).get("status")
        if status not in (None, "completed"):
            found.append(f"cell {source_index(nb, i)} papermill status {status!r}")
    for i, out in _outputs(nb):
        if out.output_type == "error":
            where = source_index(nb, i)
            found.append(f"cell {where} holds an error output: {out.ename}: {out.evalue}")

    figures, bad_png = png_figures(nb)
    found += bad_png
    if figures < expect.min_figures:
        found.append(f"expected at least {expect.min_figures} PNG figure(s), found {figures}")

    found += _bar_problems(nb, expect)

    stories = story_outputs(nb)
    n_images = max((n for _, _, n, _ in stories), default=0)
    for _, _, _, bad in stories:
        found += bad
    if n_images < expect.min_story_images:
        found.append(
            f"expected a text/html story output with at least {expect.min_story_images} "
            f'<img src="data:image/png;base64,..."> image(s), best has {n_images}'
        )
    elif expect.story_at_end and stories:
        # The closing sections (summary, exercises, solutions) come after the story;
        # their outputs, and the invisible facts, do not count.
        lesson = [
            pos for pos, (i, out) in enumerate(_outputs(nb))
            if not CLOSING_TAGS.intersection(nb.cells[i].metadata.get("tags", []))
            and FACTS_MIME not in out.get("data", {})
        ]
        last = max(pos for pos, _, _, _ in stories)
        if last not in lesson[-2:]:
            found.append(
                f"the story HTML is output {last + 1}, but {len(lesson)} lesson outputs come "
                "before the exercises; the lesson should end with the finished story"
            )
    return found


def _bar_problems(nb, expect: Expect) -> list[str]:
    found = []
    bars = progress_bars(nb)
    if len(bars) < expect.min_bars:
        found.append(
            f"expected at least {expect.min_bars} progress bar(s) in the saved widget state, "
            f"found {len(bars)}"
        )
    if expect.min_bars and not any(_views(nb)):
        found.append("no widget view was displayed in any output")
    bad_styles = {"warning", "danger"}
    for bar in bars:
        label = f"progress bar {bar['description'] or bar['id'][:8]!r}"
        full = bar["value"] >= bar["max"]
        style = bar["bar_style"]
        if style == "success" and not full:
            found.append(f"{label} is green but stopped at {bar['value']}/{bar['max']}")
        if not full and not expect.unfinished_bars_ok:
            found.append(f"{label} stopped at {bar['value']}/{bar['max']}")
        if style in bad_styles and expect.bad_bars == "forbidden":
            found.append(f"{label} ended {style!r} but no failure is expected here")
        if full and style not in ("success", *bad_styles):
            found.append(f"{label} is full but not coloured (bar_style {style!r})")
    if bars and not any(b["bar_style"] == "success" and b["value"] >= b["max"] for b in bars):
        found.append("no progress bar finished full and green")
    if expect.bad_bars == "required" and not any(b["bar_style"] in bad_styles for b in bars):
        found.append("a failure is expected, but no progress bar ended 'warning' or 'danger'")
    return found


def _views(nb):
    for _, out in _outputs(nb):
        if WIDGET_VIEW in out.get("data", {}):
            yield out
