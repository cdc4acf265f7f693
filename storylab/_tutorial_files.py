"""The tutorial notebooks a learner copies out (`storylab notebooks [DEST]`).

The notebooks ship inside the package (``storylab/notebooks/``, filled at
build time from the repository's ``notebooks/``); an editable install or a
source checkout reads ``notebooks/`` next to the package instead.

A copy is never silently overwritten once the learner has changed it. DEST
keeps a small record (``.storylab-tutorial.json``) of the hash of each file
as it was copied; a later ``storylab notebooks DEST``

- copies what is missing,
- leaves alone a file that already equals the shipped one,
- updates a file the learner never touched (it still has the recorded hash),
- and refuses, before writing anything, if any file was edited (its hash is
  neither the recorded one nor the shipped one), unless ``--force`` is given.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from storylab.errors import StorylabError

RECORD = ".storylab-tutorial.json"
DEFAULT_DEST = "storylab-tutorial"


class TutorialFilesError(StorylabError, RuntimeError):
    """The shipped notebooks cannot be found, or DEST cannot be used."""


def shipped_dir() -> Path:
    """The folder holding the tutorial notebooks this storylab ships."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "notebooks", here.parent / "notebooks"):
        if any(candidate.glob("*.ipynb")):
            return candidate
    raise TutorialFilesError(
        f"no tutorial notebooks found in {here / 'notebooks'} (an installed wheel) "
        f"or {here.parent / 'notebooks'} (a source checkout); reinstall storylab"
    )


def shipped_files() -> dict[str, Path]:
    """name -> path of every file of the tutorial, in order."""
    return {p.name: p for p in sorted(shipped_dir().glob("*.ipynb"))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CopyPlan:
    """What copying the tutorial into ``dest`` would do, file by file."""

    dest: Path
    copy: list[str] = field(default_factory=list)  # missing in dest
    update: list[str] = field(default_factory=list)  # untouched copy of an older version
    same: list[str] = field(default_factory=list)  # already equal to the shipped file
    edited: list[str] = field(default_factory=list)  # changed by the learner


def _read_record(dest: Path) -> dict[str, str]:
    try:
        data = json.loads((dest / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def plan(dest: Path) -> CopyPlan:
    if dest.exists() and not dest.is_dir():
        raise TutorialFilesError(f"DEST {dest} exists and is not a folder")
    record = _read_record(dest)
    result = CopyPlan(dest)
    for name, source in shipped_files().items():
        target = dest / name
        if not target.exists():
            result.copy.append(name)
            continue
        have = digest(target)
        if have == digest(source):
            result.same.append(name)
        elif record.get(name) == have:
            result.update.append(name)
        else:
            result.edited.append(name)
    return result


def copy_tutorial(dest: Path, *, force: bool = False) -> CopyPlan:
    """Copy the shipped notebooks into ``dest`` (created if needed).

    Raises :class:`TutorialFilesError`, having written nothing, if a copy in
    ``dest`` was edited and ``force`` is false.
    """
    todo = plan(dest)
    if todo.edited and not force:
        names = ", ".join(todo.edited)
        raise TutorialFilesError(
            f"{dest} holds edited copies that would be overwritten: {names}; "
            "nothing was copied (choose another DEST, or pass --force to replace them)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    files = shipped_files()
    record = _read_record(dest)
    for name in todo.copy + todo.update + (todo.edited if force else []):
        shutil.copyfile(files[name], dest / name)
    for name, source in files.items():
        record[name] = digest(source)
    (dest / RECORD).write_text(
        json.dumps({"files": record}, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return todo
