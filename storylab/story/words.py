"""What a reader sees of the story pipeline's entities: words, not stored names.

The graph keeps its stored names (``image-{{IMAGE_1}}``, ``safety-check``,
``story-pipeline-...``) so that reruns find what they made; the command line
shows ``picture 1``, ``safety check`` and the story's topic instead. Nothing
here imports more than the standard library, so the command line stays quick.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from storylab._text import printable

__all__ = [
    "PICTURE_TYPE",
    "describe",
    "PIPELINE_TYPE",
    "entity_label",
    "page_file_name",
    "plural",
    "printable",
    "story_summary",
]

PIPELINE_TYPE = "StoryPipelineEntity"
PICTURE_TYPE = "ImageGenerationEntity"

_PICTURE_NAME = re.compile(r"image-\{\{IMAGE_(\d+)\}\}")
_STEP_WORDS = {
    "ContentSafetyCheckEntity": "safety check",
    "StoryWriterEntity": "story writer",
}


def plural(n: int, word: str) -> str:
    """``1 picture``, ``2 pictures``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def entity_label(entity_type: str | None, name: str | None, data: Any = None) -> str | None:
    """The reader's word for a story entity, or ``None`` for one this module
    does not know (the caller then shows its stored name)."""
    if entity_type == PIPELINE_TYPE:
        topic = data.get("topic") if isinstance(data, dict) else None
        about = f" “{printable(topic, 60)}”" if topic else ""
        return f"story{about} ({name})"
    m = _PICTURE_NAME.fullmatch(name or "")
    if m and entity_type == PICTURE_TYPE:
        return f"picture {m.group(1)}"
    return _STEP_WORDS.get(entity_type or "")


def story_summary(root: Any, children: Sequence[Any]) -> dict[str, Any] | None:
    """How a stored story ended, in words: ``{"topic", "state", "done",
    "failed", "reused"}``, or ``None`` if ``root`` is no story pipeline.

    ``root`` and ``children`` are node records (``type``, ``status``,
    ``data``, ``output``, ``started_at``, ``finished_at``). ``done`` counts the
    pictures drawn by the story's latest run, ``reused`` those it kept from an
    earlier run, ``failed`` those that failed. ``state`` says ``rejected`` for a
    topic the safety check refused and ``completed with errors`` for a story
    with failed pictures, though both are stored as ``Completed``.
    """
    if root.type != PIPELINE_TYPE:
        return None
    data = root.data if isinstance(root.data, dict) else {}
    output = root.output if isinstance(root.output, dict) else {}
    pictures = [c for c in children if c.type == PICTURE_TYPE]
    started = root.started_at
    reused = [
        c
        for c in pictures
        if c.status == "Completed"
        and started is not None
        and c.finished_at is not None
        and c.finished_at < started
    ]
    done = sum(1 for c in pictures if c.status == "Completed") - len(reused)
    failed = sum(1 for c in pictures if c.status == "Failed")
    stage = output.get("stage") or data.get("stage")
    if root.status == "Completed":
        if stage == "rejected":
            state = "rejected"
        elif stage == "completed_with_errors" or failed:
            state = "completed with errors"
        else:
            state = "completed"
    elif root.status == "InProgress":
        state = "running"
    else:
        state = root.status.lower()
    return {
        "topic": printable(data.get("topic", "")),
        "state": state,
        "done": done,
        "failed": failed,
        "reused": len(reused),
    }


_LINE_WORDS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # The panel already shortens a picture to ``image-2`` (as the charts do); both read the same.
    (re.compile(r"\bimage-(?:\{\{IMAGE_)?(\d+)(?:\}\})?"), lambda m: f"picture {m.group(1)}"),
    (re.compile(r"failure for \{\{IMAGE_(\d+)\}\}"), lambda m: f"failure for picture {m.group(1)}"),
    (re.compile(r"\bsafety-check\b"), "safety check"),
    (re.compile(r"\bstory-writer\b"), "story writer"),
    (re.compile(r" FAILED(?=: |$)", re.M), " failed"),
    (re.compile(r"\bGenerating 1 images\b"), "Drawing 1 picture"),
    (re.compile(r"\bGenerating (\d+) images\b"), r"Drawing \1 pictures"),
    (re.compile(r"\bGenerated (\d+)/(\d+) images\b"), r"\1 of \2 pictures ready"),
    (re.compile(r"\bcompleted_with_errors\b"), "completed with errors"),
    (re.compile(r"\b1 images\b"), "1 picture"),
    (re.compile(r"\b(\d+) images\b"), r"\1 pictures"),
    (re.compile(r"\bAssembling HTML with images\b"), "Putting the page together"),
)


def user_line(text: str) -> str:
    """A progress line in the reader's words: ``picture 2 failed`` rather than
    ``image-{{IMAGE_2}} FAILED``, ``1 picture`` rather than ``1 images``."""
    for pattern, repl in _LINE_WORDS:
        text = pattern.sub(repl, text)
    return text


def describe(node: Any) -> str | None:
    """A node record's label for a reader (``None`` for one that is no story's)."""
    return entity_label(node.type, node.name, node.data)


def page_file_name(pipeline_name: str, topic: str) -> str:
    """The page's file name (without ``.html``): the pipeline's name, whose
    slug keeps only ASCII letters and digits, unless the topic has other
    letters; then they are kept (``story-pipeline-猫の冒険-0``), lower-cased,
    with runs of anything else made one ``-``. Deterministic, and as unique
    as the pipeline name (its suffix is kept)."""
    topic = unicodedata.normalize("NFC", str(topic).strip())
    if topic.isascii():
        return pipeline_name
    ascii_slug = re.sub(r"[^a-z0-9]+", "-", topic.lower())[:40]
    prefix = f"story-pipeline-{ascii_slug}"
    if not pipeline_name.startswith(prefix):
        return pipeline_name
    slug = re.sub(r"[\W_]+", "-", topic.casefold()).strip("-")[:40].strip("-") or "story"
    return f"story-pipeline-{slug}{pipeline_name[len(prefix) :]}"
