"""What a checker says: right or not yet, and why, in words and a glyph (never colour alone)."""

from __future__ import annotations

import html as _html
import re as _re
from dataclasses import dataclass

# Okabe-Ito blue and vermillion: told apart by colour-blind readers, and the
# glyph and the word carry the meaning anyway.
_RIGHT, _NOT_YET = "#0072B2", "#D55E00"

# Messages mark code the Markdown way, `like this`: readable as plain text, and
# turned into <code> in the HTML form (a verdict is HTML, not Markdown).
_CODE_SPAN = _re.compile(r"`([^`]+)`")


def _message_html(message: str) -> str:
    return _CODE_SPAN.sub(r"<code>\1</code>", _html.escape(message))


@dataclass(frozen=True)
class Verdict:
    """What a ``check_...`` function says about an answer: right or not yet, and why."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{'✔ right' if self.ok else '✘ not yet'}: {self.message}"

    def _repr_html_(self) -> str:
        colour, word = (_RIGHT, "✔ right") if self.ok else (_NOT_YET, "✘ not yet")
        return (f"<div class='storylab-verdict' data-ok='{str(self.ok).lower()}'>"
                f"<b style='color:{colour}'>{word}</b>: {_message_html(self.message)}</div>")


def missing(answer: object) -> Verdict | None:
    """The verdict for an answer left at its placeholder, else None."""
    if answer is None or answer is ...:
        return Verdict(False, "fill in your answer in the cell above, then run this cell again")
    return None


def returned_not_raised(name: str, error: dict | None) -> Verdict | None:
    """The verdict for a node that ended Failed only because its value, an exception
    handed back with ``Return`` instead of raised, could not be stored; else None."""
    error = error or {}
    if error.get("type") == "TypeError" and "JSON serializable" in str(error.get("message")):
        return Verdict(False, f"{name} ended Failed, but not by an error of its own: it handed "
                              "back an exception as its value, and it failed only because "
                              f"that value could not be stored ({error.get('message')!r}); "
                              "raise the exception, do not return it")
    return None
