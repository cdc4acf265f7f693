"""Text backends: the safety check and the story writer.

One protocol, :class:`TextBackend`, with two calls: ``check_safety(topic)``
and ``write_story(topic, customization)``. The default,
:class:`SimulatedTextBackend`, needs no network and no model: a rule-based
checker scores the topic against word lists, and a seeded writer assembles a
short picture-book story from a fixed story arc. Both take a little simulated
time (model seconds times ``time_scale``), so stage timings look plausible.

The writer honours the customization the way a prompted model would: the
number of illustrations, the age range (shorter sentences for the youngest)
and the style (each image prompt carries the style's description). Every
piece of user text it puts into HTML is escaped.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from storylab.story.backends.images import check_time_scale
from storylab.story.html import escape_text
from storylab.story.models import (
    DEFAULT_AGE_RANGE,
    DEFAULT_ILLUSTRATION_COUNT,
    DEFAULT_STYLE,
    STYLE_DESCRIPTIONS,
    ContentSafetyResult,
    ImagePrompt,
    StoryOutput,
)

__all__ = [
    "SAFE_THRESHOLD",
    "SimulatedTextBackend",
    "TextBackend",
    "assess_topic",
    "write_offline_story",
]


@runtime_checkable
class TextBackend(Protocol):
    async def check_safety(self, topic: str) -> ContentSafetyResult: ...

    async def write_story(
        self, topic: str, customization: Mapping[str, Any] | None = None
    ) -> StoryOutput: ...


# -- safety ----------------------------------------------------------------------------
SAFE_THRESHOLD = 60

# category -> (penalty, always unsafe?, words). Words match whole, with an optional plural.
_RULES: dict[str, tuple[int, bool, tuple[str, ...]]] = {
    "graphic violence": (
        50,
        True,
        (
            "kill",
            "killing",
            "murder",
            "blood",
            "bloody",
            "gore",
            "stab",
            "massacre",
            "torture",
            "behead",
            "slaughter",
            "shoot",
            "shooting",
        ),
    ),
    "weapons": (30, False, ("gun", "rifle", "bomb", "grenade", "knife", "sword fight")),
    "sexual content": (100, True, ("sex", "sexy", "nude", "naked", "porn", "erotic")),
    "drugs and alcohol": (
        40,
        True,
        ("drug", "cocaine", "heroin", "beer", "vodka", "whiskey", "drunk", "cigarette", "smoking"),
    ),
    "self-harm": (100, True, ("suicide", "self-harm", "self harm", "kill himself", "kill herself")),
    "hate": (60, True, ("racist", "racism", "nazi", "slur", "hate crime")),
    "frightening themes": (
        20,
        False,
        (
            "horror",
            "terrifying",
            "nightmare",
            "demon",
            "zombie",
            "gruesome",
            "corpse",
            "death",
            "die",
            "dead",
        ),
    ),
    "mild peril": (5, False, ("monster", "ghost", "witch", "storm", "lost", "dragon", "scary")),
}
_PATTERNS = {
    cat: re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")(s|es)?\b")
    for cat, (_, _, words) in _RULES.items()
}
_GOOD = ("friend", "kind", "brave", "share", "help", "learn", "love", "curious", "together")


def assess_topic(topic: str) -> ContentSafetyResult:
    """Score a topic for a story for children aged 3 to 10 (rule-based, deterministic).

    The score starts at 100 and each category found costs its penalty; some
    categories make a topic unsafe whatever the score. A topic is safe with a
    score of at least :data:`SAFE_THRESHOLD` and no such category.
    """
    text = topic.lower()
    score = 100
    concerns: list[str] = []
    blocking = False
    for cat, (penalty, always, _) in _RULES.items():
        found = sorted({m.group(1) for m in _PATTERNS[cat].finditer(text)})
        if not found:
            continue
        score -= penalty
        blocking = blocking or always
        concerns.append(f"{cat}: {', '.join(found)}")
    score = max(0, score)
    is_safe = score >= SAFE_THRESHOLD and not blocking
    good = [w for w in _GOOD if w in text]
    if not concerns:
        reasoning = "No concerning themes found; the topic suits young readers."
    elif is_safe:
        reasoning = (
            "Only mild themes found ("
            + "; ".join(concerns)
            + "); fine for a gentle children's story."
        )
    else:
        reasoning = "Not suitable for children aged 3-10 because of " + "; ".join(concerns) + "."
    if good:
        reasoning += " Positive themes: " + ", ".join(good) + "."
    return ContentSafetyResult(
        is_safe=is_safe, safety_score=score, concerns=concerns, reasoning=reasoning
    )


# -- the writer ----------------------------------------------------------------------
_NAMES = ("Pip", "Juniper", "Milo", "Tansy", "Bram", "Wren", "Ollie", "Fern", "Nico", "Poppy")
_PLACES = (
    ("the Whispering Woods", "tall trees that hummed in the wind"),
    ("Pebble Bay", "a beach of round grey stones and bright shells"),
    ("the Cloud Meadow", "soft hills where the grass grew silver"),
    ("Lantern Town", "crooked streets lit by paper lanterns"),
    ("the Moss Mountains", "green slopes dotted with sleepy boulders"),
)
_GOALS = (
    ("lost star", "find the little lost star and bring it home"),
    ("missing melody", "find the missing song of the morning birds"),
    ("golden acorn", "find the golden acorn that keeps the forest warm"),
    ("hidden bridge", "find the hidden bridge across the river"),
    ("sleepy moon", "wake the sleepy moon before night fell"),
)
_HELPERS = ("a shy hedgehog", "an old tortoise", "a chatty sparrow", "a gentle bear", "a tiny fox")
_MORALS = (
    "Being brave does not mean never feeling scared; it means being kind while you are.",
    "A friend who helps you is the best treasure of all.",
    "When we work together, big problems become small ones.",
    "Asking for help is a brave thing to do.",
    "Patience and kindness open doors that strength cannot.",
)
# The arc of every story: (what happens, what the picture shows).
_ARC = (
    (
        "intro",
        "{hero_intro} lived near {place}, a land of {place_look}.",
        "{hero} standing happily in {place}",
    ),
    (
        "wish",
        "One morning {name} learned that someone had to {goal}.",
        "{hero} listening to the news with wide eyes",
    ),
    (
        "depart",
        "{name} packed a small bag and set off down the winding path.",
        "{hero} walking down a winding path with a small bag",
    ),
    (
        "meet",
        "On the way, {name} met {helper}, who wanted to come along.",
        "{hero} meeting {helper} beside the path",
    ),
    (
        "trouble",
        "Then the path vanished under a tangle of brambles, and {name} felt afraid.",
        "{hero} and {helper} in front of a tangle of brambles",
    ),
    (
        "help",
        "{helper_cap} showed {name} a secret way through, one careful step at a time.",
        "{helper} leading {hero} along a secret trail",
    ),
    (
        "discover",
        "At last they found the {goal_short}, glowing softly in the grass.",
        "{hero} discovering the {goal_short} glowing in the grass",
    ),
    (
        "return",
        "Together they carried it home, singing all the way.",
        "{hero} and {helper} carrying the {goal_short} home at sunset",
    ),
    (
        "celebrate",
        "Everyone in {place} cheered, and there was a feast of berries and cake.",
        "a happy feast in {place} with {hero} at the center",
    ),
    (
        "rest",
        "That night {name} fell asleep smiling, already dreaming of the next adventure.",
        "{hero} asleep and smiling under a starry sky",
    ),
)
_ELABORATION = (
    "The air smelled of rain and honey.",
    "Every step felt a little bigger than the one before.",
    "Somewhere far away, a bell rang three times.",
    "Leaves twirled down like tiny dancers.",
    "{name} took a deep breath and remembered to be patient.",
    "The sky turned the color of peaches.",
)


def _ages(age_range: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{1,2})\s*-\s*(\d{1,2})\s*", age_range or "")
    if not m:
        return 3, 10
    lo, hi = int(m.group(1)), int(m.group(2))
    return (lo, hi) if lo <= hi else (hi, lo)


def _pick_arc(n: int) -> list[tuple[str, str, str]]:
    """``n`` beats spread over the arc, always starting at the start and ending at the end."""
    if n == 1:
        return [_ARC[0]]
    last = len(_ARC) - 1
    idx = sorted({round(i * last / (n - 1)) for i in range(n)})
    # n <= 10 == len(_ARC), so the rounding above never collapses two beats.
    return [_ARC[i] for i in idx]


_CSS = """
body { font-family: Georgia, 'Times New Roman', serif; background: #fdf8f0; color: #2d2a26;
       margin: 0; line-height: 1.6; }
.page { max-width: 760px; margin: 0 auto; padding: 40px 32px; page-break-after: always; }
.title-page { text-align: center; }
h1 { font-size: 2.4em; margin-bottom: 0.2em; }
.subtitle { color: #6b5e50; font-style: italic; }
.illustration { text-align: center; margin: 24px 0; }
.moral-page { text-align: center; font-size: 1.2em; }
""".strip()


def write_offline_story(
    topic: str, customization: Mapping[str, Any] | None = None, *, seed: int = 0
) -> StoryOutput:
    """A short illustrated story about ``topic``, the same every time for the same input."""
    cust = dict(customization or {})
    style = cust.get("style") or DEFAULT_STYLE.value
    style_text = STYLE_DESCRIPTIONS.get(style, STYLE_DESCRIPTIONS[DEFAULT_STYLE.value])
    count = cust.get("illustration_count")
    count = DEFAULT_ILLUSTRATION_COUNT if count is None else int(count)
    age_range = cust.get("age_range") or DEFAULT_AGE_RANGE
    lo, hi = _ages(age_range)
    hero_phrase = " ".join(topic.split())
    digest = hashlib.sha256(f"{seed}|{hero_phrase.lower()}".encode()).digest()
    rng = random.Random(digest)
    name = rng.choice(_NAMES)
    place, place_look = rng.choice(_PLACES)
    goal_short, goal = rng.choice(_GOALS)
    helper = rng.choice(_HELPERS)
    moral = rng.choice(_MORALS)
    hero = f"{name}, {hero_phrase}" if hero_phrase else name
    fill = {
        "hero": hero,
        "hero_intro": f"{hero}," if hero_phrase else name,
        "name": name,
        "place": place,
        "place_look": place_look,
        "goal": goal,
        "goal_short": goal_short,
        "helper": helper,
        "helper_cap": helper[:1].upper() + helper[1:],
    }
    title = f"{name} and the {goal_short.title()}"
    # The youngest readers get one sentence per page, older ones up to three.
    extra = 0 if hi <= 5 else (2 if lo >= 8 else 1)

    beats = _pick_arc(count)
    prompts: list[ImagePrompt] = []
    pages: list[str] = []
    for i, (_key, sentence, picture) in enumerate(beats, start=1):
        placeholder = f"{{{{IMAGE_{i}}}}}"
        text = [sentence.format(**fill)]
        text += [rng.choice(_ELABORATION).format(**fill) for _ in range(extra)]
        scene = picture.format(**fill)
        prompts.append(
            ImagePrompt(
                placeholder=placeholder,
                prompt=f"{scene[:1].upper() + scene[1:]}. {style_text}.",
                alt_text=f"Illustration {i}: {scene}",
            )
        )
        body = "".join(f"<p>{escape_text(t)}</p>" for t in text)
        if i == 1:
            pages.append(
                '<section class="page title-page">'
                f"<h1>{escape_text(title)}</h1>"
                f'<p class="subtitle">A story about {escape_text(hero_phrase)} '
                f"for readers aged {escape_text(age_range)}</p>"
                f'<div class="illustration">{placeholder}</div>{body}</section>'
            )
        else:
            pages.append(
                f'<section class="page"><div class="illustration">{placeholder}</div>'
                f"{body}</section>"
            )
    pages.append(
        '<section class="page moral-page"><h2>The moral of the story</h2>'
        f"<p>{escape_text(moral)}</p></section>"
    )
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape_text(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(pages)
        + "\n</body>\n</html>\n"
    )
    return StoryOutput(
        title=title,
        html_content=html,
        image_prompts=prompts,
        moral=moral,
        age_range=age_range,
        needs_reference_image=False,
        reference_image_description=None,
    )


class SimulatedTextBackend:
    """Offline safety check and story writer with simulated model latency.

    ``safety_seconds`` and ``writer_seconds`` are model seconds, multiplied
    by ``time_scale``. ``calls`` counts ``"safety"`` and ``"writer"`` calls.
    """

    def __init__(
        self,
        *,
        time_scale: float = 0.05,
        seed: int = 0,
        safety_seconds: float = 1.0,
        writer_seconds: float = 4.0,
    ) -> None:
        self.time_scale = check_time_scale(time_scale)
        self.seed = seed
        self.safety_seconds = safety_seconds
        self.writer_seconds = writer_seconds
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"SimulatedTextBackend(time_scale={self.time_scale}, seed={self.seed})"

    async def check_safety(self, topic: str) -> ContentSafetyResult:
        self.calls["safety"] += 1
        await asyncio.sleep(self.safety_seconds * self.time_scale)
        return assess_topic(topic)

    async def write_story(
        self, topic: str, customization: Mapping[str, Any] | None = None
    ) -> StoryOutput:
        self.calls["writer"] += 1
        await asyncio.sleep(self.writer_seconds * self.time_scale)
        return write_offline_story(topic, customization, seed=self.seed)
