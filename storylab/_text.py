"""Text that is safe to show on a terminal (no imports beyond the standard library)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = ["printable"]

# A terminal escape sequence: CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or
# ESC \), or ESC and one more character.
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)?", re.S)


def printable(text: Any, limit: int | None = None) -> str:
    """``text`` safe to print on a terminal: escape sequences and control
    characters removed, runs of white space made one space, and, with
    ``limit``, cut to that many characters with an ellipsis."""
    text = _ESCAPE.sub("", str(text))
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text
