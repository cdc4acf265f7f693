"""Names a learner can read: ``story A`` rather than ``story:3f9c…-a-curious-fox``.

Capacity sources and task groups carry machine names (``story:<pipeline
name>``). Every chart, the replay and every text summary of this layer show
them through :func:`source_labels`: a ``story:…`` source becomes ``story A``,
``story B``… in the order the trace first met them (the order of the
tutorial's table), other names are kept, and a ``names`` mapping given by the
caller (``storylab.tutorial.story_labels(run)``, say) wins over both.
:func:`short_label` is the one-letter form the capacity gauge uses;
:func:`task_label` drops a picture's placeholder braces and
:func:`stage_label` turns a pipeline's stage key into a word or two.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

__all__ = ["short_label", "source_labels", "stage_label", "task_label"]

_STORY = re.compile(r"^story[:\-_]", re.IGNORECASE)
_LETTERED = re.compile(r"^story ([A-Z]{1,2})\b")
# The process-wide source of a non-default limit is named after it (``global-4``,
# ``global-4-fifo``); a reader needs only "global", the limit is on the chart.
_GLOBAL = re.compile(r"^global-\d+(-(fifo|fair))?$")


def plain_source(name: str) -> str:
    """``global`` for ``global-4`` or ``global-4-fifo``; any other name unchanged."""
    return "global" if _GLOBAL.match(name) else name


def _letters(i: int) -> str:
    upper = string.ascii_uppercase
    return upper[i] if i < 26 else upper[i // 26 - 1] + upper[i % 26]


def source_labels(trace: Any, names: Mapping[str, str] | None = None) -> dict[str, str]:
    """A readable label for every capacity source and task group of ``trace``.

    ``names`` (``{machine name: label}``) overrides the default for the
    names it has. The default keeps a name unless it looks like
    ``story:<anything>``, which becomes ``story A``, ``story B``... in the
    order of first appearance.
    """
    if names is not None and not isinstance(names, Mapping):
        raise TypeError(f"names must be a mapping {{name: label}}, got {type(names).__name__}")
    seen: list[str] = []
    for e in trace.events:
        for name in (*e.path, e.group):
            if name and name not in seen:
                seen.append(name)
    out: dict[str, str] = {}
    n_story = 0
    for name in seen:
        if _STORY.match(name):
            out[name] = f"story {_letters(n_story)}"
            n_story += 1
        else:
            out[name] = plain_source(name)
    for name, label in (names or {}).items():
        out[str(name)] = str(label)
    return out


def short_label(label: str, index: int) -> str:
    """The gauge's short form: ``A`` for ``story A (a fox)``, else a short name or a letter."""
    m = _LETTERED.match(label)
    if m:
        return m.group(1)
    return label if len(label) <= 3 else _letters(index)


_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z]+_(\d+)\s*\}\}")


def task_label(label: str) -> str:
    """A task's label as a chart shows it: ``image-{{IMAGE_2}}`` reads ``image-2``.

    The pipeline names each picture after its placeholder in the story text;
    the braces say nothing to a reader of a chart.
    """
    return _PLACEHOLDER.sub(r"\1", label)


def stage_label(stage: str) -> str:
    """A pipeline's stage key in plain words: ``generating_images`` reads ``images``.

    The panel counts the children of a stage (``images: 3/5 done``), so the
    verb in front says nothing a reader needs; underscores become spaces.
    """
    words = " ".join(str(stage).replace("_", " ").replace("-", " ").split())
    if words.startswith("generating ") and len(words) > len("generating "):
        words = words[len("generating "):]
    return words
