"""Text backends: the safety check and the story writer.

One protocol, :class:`TextBackend`, with two calls: ``check_safety(topic)``
and ``write_story(topic, customization)``. The default,
:class:`SimulatedTextBackend`, needs no network and no model: a rule-based
checker scores the topic against word lists, and a seeded writer tells a
short picture-book story: the topic's theme (sharing, courage, friendship,
kindness, curiosity) picks the plot, the topic's subject ("a shy dragon") is
the hero, and every character and place is introduced before it is named
again. Both take a little simulated time (model seconds times
``time_scale``), so stage timings look plausible.

The writer honours the customization the way a prompted model would: the
number of illustrations, the age range (shorter sentences for the youngest)
and the style (each image prompt carries the style's description, and the
same description of the hero, so pictures can keep its look). Every piece of
user text it puts into HTML is escaped.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storylab.story.backends.base import TextBackend
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
    "THEMES",
    "SimulatedTextBackend",
    "StoryPlan",
    "TextBackend",
    "assess_topic",
    "plan_offline_story",
    "write_offline_story",
]


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
        is_safe=is_safe,
        safety_score=score,
        concerns=concerns,
        reasoning=reasoning,
        source="offline rules",
        reason="; ".join(concerns) if concerns else "no concerning themes found",
    )


# -- the writer ----------------------------------------------------------------------
# The offline writer tells one of a few small plots, chosen by the topic's
# theme. A plot is ten beats; every beat is always told (however many pages
# there are), so each character and place is introduced before it is named
# again. A page tells a run of consecutive beats and is illustrated by the
# first of them. Each beat is (sentence, detail for older readers, scene).
# Placeholders: {H} the hero's name, {HI} the hero introduced ("Pip, a brave
# little kitten with orange fur and a blue scarf"), {F} the friend's name,
# {FI} the friend introduced ("a red fox named Rusty"), {f} the friend's kind,
# {P} the place, {hs} the hero's kind, {coat} fur/feathers/scales, {limb}
# paw/wing/claw, {Hp} and {Fp} the characters as pictured.


@dataclass(frozen=True, slots=True)
class _Theme:
    name: str  # "sharing"
    words: tuple[str, ...]  # stems that show the theme in the text (tests read them)
    cues: tuple[str, ...]  # topic words that ask for this theme
    friends: tuple[str, ...]  # kinds the friend may be
    places: tuple[str, ...]
    titles: tuple[str, ...]
    morals: tuple[str, ...]
    beats: tuple[tuple[str, str, str], ...]


_SHARING = _Theme(
    "sharing",
    ("shar",),
    ("share", "shares", "sharing", "shared", "generous", "give", "gives", "giving"),
    ("fox", "rabbit", "bear", "mouse", "hedgehog"),
    ("Clover Meadow", "Buttercup Field", "Honeysuckle Meadow"),
    ("{H} and the Basket of Apples", "{H} Shares the Harvest"),
    (
        "Sharing turns a little into plenty, and a stranger into a friend.",
        "What we share grows bigger: sharing makes one basket enough for everyone.",
    ),
    (
        ("{HI} lived at the edge of {P}, a sunny meadow with an old apple tree in the middle.",
         "Every morning {H} counted the bees that hummed between the flowers.",
         "{Hp} standing in a sunny meadow full of flowers, an apple tree nearby"),
        ("One day the old apple tree dropped its apples, and {H} filled a whole basket.",
         "The apples were red and shiny and smelled of summer.",
         "{Hp} filling a basket with red apples under an apple tree in the meadow"),
        ("'These are all mine,' said {H}, hugging the basket tight.",
         "There were more apples than one small {hs} could ever eat.",
         "{Hp} hugging a basket full of red apples among the flowers"),
        ("Just then {FI} came slowly across the meadow.",
         "{F}'s tummy rumbled as loudly as thunder.",
         "{Hp} holding a basket of apples, meeting {Fp} on a path through the meadow"),
        ("'I have not found a single apple all day,' sighed {F}.",
         "The {f} looked at the basket, then looked politely away.",
         "{Fp} looking sadly at the empty grass while {Hp} holds a basket of apples"),
        ("{H} remembered how it feels to be hungry, and decided to share.",
         "'Here,' said {H}, holding out the basket. 'There are plenty for two.'",
         "{Hp} holding out a basket of red apples to {Fp} on the path"),
        ("They sat under the apple tree and shared the apples, one for {H} and one for {F}.",
         "Sharing made every bite taste sweeter.",
         "{Hp} and {Fp} sitting under an apple tree, sharing a basket of apples"),
        ("When the basket was empty, {F} led {H} to a bush heavy with blackberries.",
         "'You shared with me,' said {F}, 'so now I will share with you.'",
         "{Fp} showing {Hp} a bush full of blackberries at the edge of the meadow"),
        ("Soon the birds brought seeds and the bees brought honey, and all of {P} "
         "had a picnic.",
         "Everyone shared what they had, and nobody went home hungry.",
         "a picnic in a meadow full of flowers: {Hp} and {Fp} sharing apples, "
         "blackberries and honey, birds in the sky"),
        ("That night {H} fell asleep smiling, with the empty basket close by.",
         "A full heart, {H} decided, is better than a full basket.",
         "{Hp} asleep in the meadow beside an empty basket under the moon and stars"),
    ),
)

_COURAGE = _Theme(
    "courage",
    ("brave", "courage"),
    ("brave", "bravery", "courage", "courageous", "afraid", "scared", "fear", "fears", "bold",
     "dark"),
    ("rabbit", "mouse", "hedgehog", "duck", "fox"),
    ("Whistling Wood", "Tangleroot Forest", "Hollyhock Wood"),
    ("{H} and the Bramble Path", "{H} Is Brave in the Dark Wood"),
    (
        "Courage is not having no fear; it is doing the kind thing while you are afraid.",
        "Being brave means taking one small step, and then another, even when you are scared.",
    ),
    (
        ("{HI} lived in a little round house at the edge of {P}, where a narrow path wound in "
         "among the tall trees.",
         "{H} liked the wood best in the daytime, when sunlight fell between the leaves.",
         "{Hp} in front of a little round house at the edge of a wood of tall trees"),
        ("Deep in the wood, brambles grew thick across the path, and {H} was afraid of them.",
         "Even the wind seemed to whisper in there.",
         "{Hp} peeking at a dark tangle of brambles beside a path between tall trees"),
        ("One evening {FI} came running out of the trees, crying, because a kite had blown "
         "away over the brambles.",
         "'It was a present from my granny,' sobbed {F}.",
         "{Fp} crying at the edge of the wood while {Hp} listens, tall trees behind"),
        ("{H}'s knees shook, because the brambles were sharp and the path was dark.",
         "But {F} looked so sad that {H} took a deep breath.",
         "{Hp} trembling at the start of a dark path into the brambles, {Fp} beside"),
        ("'Being brave means going even when you are scared,' {H} whispered, and stepped "
         "onto the path.",
         "One step, then another, then another.",
         "{Hp} stepping onto a dark path between brambles and tall trees"),
        ("The brambles tugged at {H}'s {coat}, but {H} kept going, slow and careful.",
         "A night bird called, and {H} called back, which made the fear feel smaller.",
         "{Hp} pushing carefully through thorny brambles on a dark path under the moon"),
        ("Beyond the brambles, by a little river, {H} found the kite caught in a tree.",
         "Its long tail fluttered like a flag.",
         "{Hp} by a little river, reaching for a red kite caught in a tree"),
        ("{H} freed the kite and carried it all the way back along the path.",
         "The way back did not seem half as dark.",
         "{Hp} walking back along a path between brambles, holding a red kite"),
        ("{F} danced with joy. 'You were so brave!' cried the {f}.",
         "'I was scared,' said {H}, 'but I went anyway. I think that is what courage is.'",
         "{Fp} dancing with a red kite next to {Hp} at the edge of the wood"),
        ("From then on, whenever {H} felt afraid, {H} remembered the bramble path and smiled.",
         "The dark part of the wood never seemed quite so dark again.",
         "{Hp} smiling at the edge of the wood under the moon and stars, the bramble path "
         "behind"),
    ),
)

_FRIENDSHIP = _Theme(
    "friendship",
    ("friend",),
    ("friend", "friends", "friendship", "shy", "lonely", "alone", "together", "hello"),
    ("duck", "rabbit", "mouse", "fox", "bear"),
    ("Willow Pond", "Lily Pond", "Reedy Water"),
    ("{H} Says Hello", "{H} and the Red Ball"),
    (
        "A friend is found by being brave enough to say hello; friendship grows from small "
        "kind steps.",
        "Friendship begins with one small hello, and being shy is no reason to be alone.",
    ),
    (
        ("{HI} lived beside {P}, a quiet pond ringed with willow trees and tall reeds.",
         "The water was so still that the clouds could see themselves in it.",
         "{Hp} sitting alone beside a quiet pond with willow trees"),
        ("{H} was so shy that {H} hid behind the reeds whenever anyone came by.",
         "Hiding felt safe, but it was lonely without a friend.",
         "{Hp} hiding shyly behind tall reeds at the edge of the pond"),
        ("One morning {FI} sat down on the far bank and began to sing.",
         "It was a cheerful song about the sun and the frogs.",
         "{Fp} singing on the far bank of the pond while {Hp} peeks from the reeds"),
        ("{H} wanted to say hello, but the word stayed stuck inside.",
         "{H}'s cheeks went warm, and {H} looked down at the water.",
         "{Hp} looking shyly across the pond at {Fp}"),
        ("Then {F}'s red ball rolled into the pond and floated away from the bank.",
         "'Oh no,' said {F}. 'I cannot reach it.'",
         "a red ball floating on the pond, {Fp} worried on the bank, {Hp} in the reeds"),
        ("{H} knew a path of stepping stones across the pond, and forgot to be shy.",
         "Hop, hop, hop went {H} across the stones.",
         "{Hp} hopping along a path of stepping stones across the pond toward a red ball"),
        ("{H} brought the ball back and said, very softly, 'Hello. I am {H}.'",
         "'Hello, {H},' said {F} with a smile. 'Will you be my friend?'",
         "{Hp} giving a red ball back to {Fp} beside the pond"),
        ("The two new friends played until the sun was low over the willows.",
         "They rolled the ball, counted frogs and told each other secrets.",
         "{Hp} and {Fp} playing with a red ball beside the pond at sunset"),
        ("The next day {H} did not hide behind the reeds at all.",
         "Having a friend, {H} found, made being shy feel much less lonely.",
         "{Hp} and {Fp} walking together along a path by the pond"),
        ("Every morning after that, two friends sang beside {P} instead of one.",
         "The willow trees swayed as if they were listening.",
         "{Hp} and {Fp} singing together beside the pond under a bright sun"),
    ),
)

_KINDNESS = _Theme(
    "kindness",
    ("kind",),
    ("kind", "kindness", "help", "helps", "helping", "helpful", "care", "caring", "gentle"),
    ("robin",),
    ("Oakwood Hollow", "Acorn Dell", "Mossy Hollow"),
    ("{H} and the Fallen Nest", "{H} Helps a Little Robin"),
    (
        "Kindness costs nothing, yet it is the best gift there is.",
        "Be kind whenever you can: one kind act can make a whole day good.",
    ),
    (
        ("{HI} lived in {P}, under an old oak tree taller than all the rest.",
         "Its branches were full of nests and its roots were full of burrows.",
         "{Hp} beneath a huge old oak tree in a green hollow"),
        ("One windy day a gust shook the oak, and a nest with {FI} inside tumbled to the "
         "ground.",
         "The little bird cheeped in fright.",
         "a small nest with {Fp} on the grass below a tall oak tree, leaves blowing"),
        ("Kindly and gently, {H} picked up the nest.",
         "'Don't worry,' said {H}. 'I will help you home.'",
         "{Hp} gently holding a nest with {Fp} in it under the oak tree"),
        ("But the branch where the nest belonged was very high.",
         "{H} looked up and up, until {H}'s neck felt stiff.",
         "{Hp} holding the nest and looking up at a high branch of the oak tree"),
        ("{H} piled up stones and logs, and began to climb.",
         "It was slow, wobbly work, but kindness is worth a little wobble.",
         "{Hp} climbing a pile of logs and stones beside the oak tree, holding the nest"),
        ("At last {H} set the nest safely back on its branch.",
         "{F} cheeped a little thank-you song.",
         "{Hp} placing the nest with {Fp} on a high branch of the oak tree"),
        ("Just then {F}'s mother flew home with a beakful of worms.",
         "When she saw her baby safe, she fluffed her feathers with joy.",
         "a mother robin flying to the nest in the oak tree where {Fp} waits"),
        ("'Thank you for being so kind,' sang the mother robin.",
         "'Anyone would help,' said {H}, a little shyly, 'when someone needs it.'",
         "the mother robin and {Fp} in the nest thanking {Hp} below the oak tree"),
        ("All spring {F} grew bigger and stronger, and {H} came to visit every day.",
         "Soon {F} was flying loops around the oak.",
         "{Fp} flying around the oak tree while {Hp} watches and waves"),
        ("One morning {F} left a bright red feather at the foot of the oak, where {H} lived.",
         "{H} kept it always, to remember how good it feels to be kind.",
         "{Hp} holding a red feather under the oak tree, {Fp} on a branch above"),
    ),
)

_CURIOSITY = _Theme(
    "curiosity",
    ("curio", "wonder"),
    ("curious", "curiosity", "wonder", "wonders", "star", "stars", "count", "counts",
     "counting", "question", "questions", "explore", "explores", "moon", "why"),
    ("owl", "mouse", "hedgehog", "rabbit", "bear"),
    ("Lantern Hill", "Starlight Hill", "Thistle Top"),
    ("{H} Counts the Stars", "{H} and the Thousand Stars"),
    (
        "Curiosity opens the world one question at a time, so never stop wondering.",
        "Stay curious: every question is a little lantern that shows you the next step.",
    ),
    (
        ("{HI} lived at the foot of {P}, the highest hill for miles.",
         "From the top you could see a winding river, dark woods and the whole wide sky.",
         "{Hp} at the foot of a tall green hill, a river and trees far away"),
        ("Every night {H} looked up at the stars and wondered how many there were.",
         "'One, two, three...' counted {H}, but always fell asleep before the end.",
         "{Hp} looking up at a sky full of stars and a crescent moon"),
        ("One evening, curious as ever, {H} set off to the top of the hill to count them "
         "properly.",
         "{H} packed a lantern, a notebook and a pencil.",
         "{Hp} climbing a winding path up a hill at dusk, carrying a lantern"),
        ("At the top sat {FI}, who was gazing at the sky too.",
         "'I have been counting stars for years and years,' said {F}.",
         "{Hp} meeting {Fp} on top of a hill under the stars"),
        ("'How many are there?' asked {H}.",
         "'More than anyone can count,' said {F}, 'but every one is worth a look.'",
         "{Hp} and {Fp} sitting on the hilltop pointing at the stars"),
        ("{F} showed {H} how some stars make pictures: a bear, a swan and a great big spoon.",
         "{H} traced each picture in the air with one {limb}.",
         "{Hp} and {Fp} tracing pictures between the stars, the moon above the hill"),
        ("All night long {H} asked questions, and every answer made {H} wonder something new.",
         "Why do stars twinkle? Where does the moon go in the daytime?",
         "{Hp} asking questions beside {Fp}, a glowing lantern and a sky full of stars"),
        ("When the sky turned pink, {H} had counted one thousand and one stars.",
         "It was not all of them, but it was a wonderful start.",
         "{Hp} on the hilltop at sunrise holding a notebook full of numbers"),
        ("{H} walked home down the hill with a head full of wonder.",
         "Curiosity, {H} thought, is like a lantern: it always shows the next step.",
         "{Hp} walking down a hill path at sunrise, a lantern in hand"),
        ("And on every clear night after that, {H} and {F} met on {P} to count stars "
         "together.",
         "There were always more to count, which was exactly how {H} liked it.",
         "{Hp} and {Fp} on top of a hill counting stars together under the moon"),
    ),
)

THEMES: dict[str, _Theme] = {
    t.name: t for t in (_SHARING, _KINDNESS, _FRIENDSHIP, _COURAGE, _CURIOSITY)
}  # in this order a tie between two themes is decided

# Kinds of character: (colours of the body, what covers it, what it points with).
_KINDS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "kitten": (("orange", "grey", "white", "black"), "fur", "paw"),
    "cat": (("orange", "grey", "white", "black"), "fur", "paw"),
    "fox": (("red", "orange"), "fur", "paw"),
    "dragon": (("green", "purple", "blue"), "scales", "claw"),
    "owl": (("brown", "grey", "white"), "feathers", "wing"),
    "bear": (("brown", "golden", "black"), "fur", "paw"),
    "rabbit": (("white", "grey", "brown"), "fur", "paw"),
    "bunny": (("white", "grey", "brown"), "fur", "paw"),
    "mouse": (("grey", "brown"), "fur", "paw"),
    "hedgehog": (("brown",), "prickles", "paw"),
    "duck": (("yellow", "white"), "feathers", "wing"),
    "robin": (("red",), "feathers", "wing"),
    "puppy": (("brown", "golden", "white"), "fur", "paw"),
    "dog": (("brown", "golden", "white"), "fur", "paw"),
}
_HERO_KINDS = ("kitten", "fox", "dragon", "owl", "bear", "rabbit", "mouse", "hedgehog")
COLOURS = ("orange", "grey", "white", "black", "red", "green", "purple", "blue", "brown",
           "golden", "yellow", "pink")  # fmt: skip
_ACCESSORIES = ("scarf", "hat", "backpack")
_ACCESSORY_COLOURS = ("blue", "yellow", "green", "red", "purple")
_TRAITS = ("brave", "shy", "curious", "kind", "clever", "sleepy", "lonely", "gentle", "tiny",
           "young", "grumpy", "happy", "playful", "quiet", "little", "small", "bold",
           "friendly", "cheerful", "careful")  # fmt: skip
_HERO_NAMES = ("Pip", "Juniper", "Milo", "Tansy", "Wren", "Ollie", "Hazel", "Nico", "Mabel",
               "Teddy")  # fmt: skip
_FRIEND_NAMES = ("Rusty", "Dot", "Bea", "Tuck", "Lulu", "Otto", "Sol", "Nell", "Barney", "Iris")
# Where the topic's subject ends: "a brave kitten | who learns to share".
_CLAUSE = re.compile(r"\b(who|that|which|and|with|in|on|at|from|learns?|finds?|goes)\b")


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[:1].lower() in "aeiou" else f"a {phrase}"


@dataclass(frozen=True, slots=True)
class StoryPlan:
    """Who and what an offline story is about, decided before a word is written."""

    theme: str
    hero: str  # the hero's name
    hero_kind: str  # "kitten"
    hero_look: str  # "a brave little orange kitten with a blue scarf": the same on every page
    friend: str
    friend_kind: str
    friend_look: str  # "a red fox"
    place: str
    title: str
    moral: str


def _topic_words(topic: str) -> tuple[list[str], list[str]]:
    """The words naming the topic's subject, and the rest: ("a shy dragon", "who sings")."""
    words = re.findall(r"[a-z]+", topic.lower())
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
        for i, w in enumerate(words):
            if _CLAUSE.fullmatch(w):
                return words[:i], words[i:]
        return words, []
    # No article ("owl", "brave kitten learns to share"): a known kind is the subject.
    for i, w in enumerate(words):
        if w in _KINDS:
            return words[: i + 1], words[i + 1 :]
    return [], words


def _pick_theme(subject: list[str], rest: list[str], rng: random.Random) -> _Theme:
    scores = dict.fromkeys(THEMES, 0)
    # A theme named in what the subject does ("who learns to share") outweighs
    # one in how it is described ("a brave kitten").
    for weight, words in ((1, subject), (2, rest)):
        for w in words:
            for name, theme in THEMES.items():
                if w in theme.cues:
                    scores[name] += weight
    best = max(scores.values())
    if best == 0:
        return THEMES[rng.choice(sorted(THEMES))]
    return THEMES[next(name for name, score in scores.items() if score == best)]


def plan_offline_story(topic: str, *, seed: int = 0) -> StoryPlan:
    """The cast, place, theme, title and moral of the offline story about ``topic``."""
    clean = " ".join(topic.split())
    rng = random.Random(hashlib.sha256(f"{seed}|{clean.lower()}".encode()).digest())
    subject, rest = _topic_words(clean)
    theme = _pick_theme(subject, rest, rng)
    # The hero is the topic's subject when it names one ("a shy dragon"), else an animal.
    kind = subject[-1] if subject and len(subject[-1]) <= 14 else rng.choice(_HERO_KINDS)
    described = subject[:-1] if subject else []
    traits = [w for w in described if w in _TRAITS and w not in ("little", "small")]
    colours, _, _ = _KINDS.get(kind, (_ACCESSORY_COLOURS, "coat", "hand"))
    named = [w for w in described if w in COLOURS]
    colour = named[0] if named else rng.choice(colours)
    accessory_colour = rng.choice([c for c in _ACCESSORY_COLOURS if c != colour])
    accessory = rng.choice(_ACCESSORIES)
    size = "tiny" if "tiny" in traits else "little"
    trait = " ".join(t for t in traits if t != "tiny")
    body = f"{colour} {kind}" if kind in _KINDS else f"{kind} in a {colour} coat"
    look = _article(" ".join(p for p in (trait, size, body) if p))
    look += f" with {_article(accessory_colour + ' ' + accessory)}"
    friend_kind = rng.choice([k for k in theme.friends if k != kind] or ["mouse"])
    friend_colour = rng.choice(_KINDS[friend_kind][0])
    friend_look = _article(f"{friend_colour} {friend_kind}")
    if theme is _KINDNESS:
        friend_look = _article(f"baby {friend_kind}")
    hero = rng.choice(_HERO_NAMES)
    friend = rng.choice(_FRIEND_NAMES)
    return StoryPlan(
        theme=theme.name,
        hero=hero,
        hero_kind=kind,
        hero_look=look,
        friend=friend,
        friend_kind=friend_kind,
        friend_look=friend_look,
        place=rng.choice(theme.places),
        title=rng.choice(theme.titles).format(H=hero),
        moral=rng.choice(theme.morals),
    )


def _ages(age_range: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{1,2})\s*-\s*(\d{1,2})\s*", age_range or "")
    if not m:
        return 3, 10
    lo, hi = int(m.group(1)), int(m.group(2))
    return (lo, hi) if lo <= hi else (hi, lo)


def _pages(n: int, beats: int) -> list[range]:
    """``beats`` consecutive beats split into ``n`` pages as evenly as possible."""
    bounds = [round(i * beats / n) for i in range(n + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def write_offline_story(
    topic: str, customization: Mapping[str, Any] | None = None, *, seed: int = 0
) -> StoryOutput:
    """A short illustrated story about ``topic``, the same every time for the same input.

    The story follows the plot of the topic's theme (see :func:`plan_offline_story`);
    every image prompt names what its page shows and describes the hero the
    same way, so that a model can keep the hero's look from page to page.
    """
    cust = dict(customization or {})
    style = cust.get("style") or DEFAULT_STYLE.value
    style_text = STYLE_DESCRIPTIONS.get(style, STYLE_DESCRIPTIONS[DEFAULT_STYLE.value])
    count = cust.get("illustration_count")
    count = DEFAULT_ILLUSTRATION_COUNT if count is None else int(count)
    age_range = cust.get("age_range") or DEFAULT_AGE_RANGE
    lo, hi = _ages(age_range)
    plan = plan_offline_story(topic, seed=seed)
    theme = THEMES[plan.theme]
    _, coat, limb = _KINDS.get(plan.hero_kind, ((), "coat", "hand"))
    fill = {
        "H": plan.hero,
        "HI": f"{plan.hero}, {plan.hero_look},",
        "F": plan.friend,
        "FI": f"{plan.friend_look} named {plan.friend}",
        "f": plan.friend_kind,
        "hs": plan.hero_kind,
        "P": plan.place,
        "coat": coat,
        "limb": limb,
        "Hp": plan.hero,
        "Fp": f"{plan.friend} the {plan.friend_look.split(' ', 1)[1]}",
    }
    # The youngest readers get the plot alone; older ones the details too.
    details = 0 if hi <= 5 else (2 if lo >= 8 else 1)
    hero_clause = (
        f"The main character, {plan.hero}, is {plan.hero_look}, drawn the same on every page"
    )
    topic_text = " ".join(topic.split())
    prompts: list[ImagePrompt] = []
    pages: list[str] = []
    for i, beat_range in enumerate(_pages(count, len(theme.beats)), start=1):
        placeholder = f"{{{{IMAGE_{i}}}}}"
        paragraphs = []
        for b in beat_range:
            sentence, detail, _ = theme.beats[b]
            text = sentence.format(**fill)
            if details == 2 or (details == 1 and b % 2 == 1):
                text += " " + detail.format(**fill)
            paragraphs.append(text)
        scene = theme.beats[beat_range.start][2].format(**fill)
        prompts.append(
            ImagePrompt(
                placeholder=placeholder,
                prompt=f"{scene[:1].upper() + scene[1:]}. {hero_clause}. {style_text}.",
                alt_text=f"Illustration {i}: {scene}",
            )
        )
        body = "".join(f"<p>{escape_text(t)}</p>" for t in paragraphs)
        if i == 1:
            pages.append(
                '<section class="page title-page">'
                f"<h1>{escape_text(plan.title)}</h1>"
                f'<p class="subtitle">A story about {escape_text(topic_text)} '
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
        f"<p>{escape_text(plan.moral)}</p></section>"
    )
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # No stylesheet of its own: the page is styled by storylab's (html.PAGE_CSS),
        # and the sanitizer drops any that a writer sends.
        f"<title>{escape_text(plan.title)}</title>\n</head>\n<body>\n"
        + "\n".join(pages)
        + "\n</body>\n</html>\n"
    )
    return StoryOutput(
        title=plan.title,
        html_content=html,
        image_prompts=prompts,
        moral=plan.moral,
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

    async def aclose(self) -> None:
        """Nothing to close: the offline writer holds no connection."""
