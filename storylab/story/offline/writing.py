"""The offline writer: from a topic to a cast, a plot and a page with image prompts.

Reading a topic decides everything before a word is written (:class:`StoryPlan`):

* a topic that names a character ("a shy dragon", "a brave firefighter",
  "a knight who makes friends with a dragon") makes it the hero, and a second
  character named the friend;
* a topic that names a subject ("how volcanoes work", "why the moon changes
  shape", "trains") gets a story about that subject: a child finds out about
  it with a grown-up, and the pictures show it;
* a topic that names only a theme ("sharing") gets an animal hero.

The plot is the theme's (see :mod:`~storylab.story.offline.themes`); each
page is illustrated by the first beat it tells, and its prompt is a
:class:`~storylab.story.offline.prompt.Scene` rendered to text, so the drawer
reads the same structure back.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storylab.story.html import escape_text
from storylab.story.models import (
    DEFAULT_AGE_RANGE,
    DEFAULT_ILLUSTRATION_COUNT,
    DEFAULT_STYLE,
    STYLE_DESCRIPTIONS,
    ImagePrompt,
    StoryOutput,
)
from storylab.story.offline.prompt import (
    COLOURS,
    CREATURE_KINDS,
    PEOPLE_KINDS,
    Figure,
    Scene,
    render_look,
    render_prompt,
)
from storylab.story.offline.themes import SUBJECTS, THEMES, Subject, Theme

__all__ = ["StoryPlan", "plan_offline_story", "write_offline_story"]

# Kinds of animal and creature: (colours of the body, what covers it, what it points with).
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
    "robot": (("grey", "silver", "blue"), "metal", "hand"),
    "ghost": (("white",), "sheet", "hand"),
    "monster": (("green", "purple", "blue", "orange"), "fur", "paw"),
    "dinosaur": (("green", "blue", "orange"), "scales", "claw"),
    "lion": (("golden",), "fur", "paw"),
    "tiger": (("orange",), "fur", "paw"),
    "wolf": (("grey",), "fur", "paw"),
    "squirrel": (("red", "brown"), "fur", "paw"),
    "badger": (("grey",), "fur", "paw"),
    "unicorn": (("white", "pink"), "coat", "hoof"),
    "penguin": (("black",), "feathers", "wing"),
    "frog": (("green",), "skin", "foot"),
    "pig": (("pink",), "skin", "trotter"),
    "bird": (("blue", "yellow"), "feathers", "wing"),
    "elephant": (("grey",), "skin", "trunk"),
    "cow": (("white", "brown"), "coat", "hoof"),
    "sheep": (("white",), "wool", "hoof"),
    "goat": (("white", "brown"), "coat", "hoof"),
    "monkey": (("brown",), "fur", "hand"),
    "hippo": (("grey", "purple"), "skin", "foot"),
    "panda": (("white",), "fur", "paw"),
    "koala": (("grey",), "fur", "paw"),
    "horse": (("brown", "white", "black"), "coat", "hoof"),
    "pony": (("brown", "white", "golden"), "coat", "hoof"),
    "zebra": (("white",), "coat", "hoof"),
    "giraffe": (("golden",), "coat", "hoof"),
    "deer": (("brown",), "coat", "hoof"),
    "hamster": (("golden", "brown"), "fur", "paw"),
    "rat": (("grey", "brown"), "fur", "paw"),
    "crocodile": (("green",), "scales", "claw"),
    "lizard": (("green", "orange"), "scales", "claw"),
    "chicken": (("white", "brown"), "feathers", "wing"),
    "hen": (("brown", "white"), "feathers", "wing"),
    "parrot": (("green", "red", "blue"), "feathers", "wing"),
    "eagle": (("brown",), "feathers", "wing"),
    "goose": (("white", "grey"), "feathers", "wing"),
    "swan": (("white",), "feathers", "wing"),
}
# What people wear when their role decides it.
_ROLE_CLOTHES = {
    "firefighter": ("yellow", "red"), "knight": ("silver",), "astronaut": ("white",),
    "princess": ("pink", "purple"), "prince": ("blue", "red"), "king": ("red", "purple"),
    "queen": ("purple", "blue"), "pirate": ("red", "black"), "witch": ("purple", "black"),
    "wizard": ("blue", "purple"), "doctor": ("white",), "nurse": ("blue",),
    "chef": ("white",), "baker": ("white",), "police officer": ("blue",),
    "explorer": ("green", "brown"), "farmer": ("blue", "green"), "scientist": ("white",),
}  # fmt: skip
_SKINS = ("light", "tan", "brown", "dark brown")
_HAIR = ("black", "brown", "red", "golden")
_HERO_KINDS = ("kitten", "fox", "dragon", "owl", "bear", "rabbit", "mouse", "hedgehog")
_CHILDREN = ("girl", "boy")
_ACCESSORIES = ("scarf", "hat", "backpack")
_PERSON_ACCESSORIES = ("backpack", "scarf", "cap")
_ACCESSORY_COLOURS = ("blue", "yellow", "green", "red", "purple")
_TRAITS = ("brave", "shy", "curious", "kind", "clever", "sleepy", "lonely", "gentle", "tiny",
           "young", "grumpy", "happy", "playful", "quiet", "little", "small", "bold",
           "friendly", "cheerful", "careful")  # fmt: skip
_GIRL_NAMES = ("Juniper", "Tansy", "Wren", "Hazel", "Mabel", "Ada", "Ivy", "Nora")
_BOY_NAMES = ("Milo", "Ollie", "Nico", "Teddy", "Pip", "Sami", "Arlo", "Felix")
_HERO_NAMES = ("Pip", "Juniper", "Milo", "Tansy", "Wren", "Ollie", "Hazel", "Nico", "Mabel",
               "Teddy")  # fmt: skip
_FRIEND_NAMES = ("Rusty", "Dot", "Bea", "Tuck", "Lulu", "Otto", "Sol", "Nell", "Barney", "Iris")
_GROWN_UPS = {"grandma": ("Grandma Rose", "Grandma June"),
              "grandpa": ("Grandpa Joe", "Grandpa Sid"),
              "teacher": ("Miss Amara", "Mr Patel")}  # fmt: skip
# Words that open a question or a lesson: the rest of the topic is its subject.
_ASKING = {"how", "why", "what", "where", "when", "who", "which", "does", "do", "is", "are",
           "can", "about", "all", "learn", "learning", "facts", "story", "the", "a", "an",
           "of", "to"}  # fmt: skip
_STOP = {"work", "works", "working", "happen", "happens", "come", "comes", "make", "makes",
         "made", "grow", "grows", "change", "changes", "fly", "flies", "move", "moves", "live",
         "lived", "lives", "form", "formed", "fall", "falls", "and", "in", "on", "at", "for",
         "with", "from", "who", "that", "which", "is", "are", "do", "does", "get", "gets",
         "go", "goes", "shape", "to"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoryPlan:
    """Who and what an offline story is about, decided before a word is written."""

    theme: str
    hero: str  # the hero's name
    hero_kind: str  # "kitten", "girl", "firefighter"
    hero_look: str  # as every image prompt describes the hero
    friend: str
    friend_kind: str
    friend_look: str  # "a red fox"
    place: str
    title: str
    moral: str
    subject: str = ""  # what a subject story is about: "volcanoes"
    hero_intro: str = ""  # how the story introduces the hero (shorter for people)
    hero_figure: Figure | None = None
    friend_figure: Figure | None = None
    mirrored: bool = False  # every picture framed the other way round


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[:1].lower() in "aeiou" else f"a {phrase}"


def _singular(word: str) -> str:
    special = {"mice": "mouse", "wolves": "wolf", "children": "child", "princesses": "princess",
               "witches": "witch", "fairies": "fairy", "bunnies": "bunny",
               "puppies": "puppy", "ponies": "pony"}  # fmt: skip
    if word in special:
        return special[word]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def _characters(words: list[str]) -> list[tuple[int, str]]:
    """Where the topic names a person or creature, and which kind (singular)."""
    found = []
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        pair = " ".join(_singular(x) for x in words[i : i + 2])
        if pair in PEOPLE_KINDS:
            found.append((i, pair))
            skip = True
            continue
        s = _singular(w)
        if s in ("kid", "child"):
            s = "child"
        if s in PEOPLE_KINDS or s in CREATURE_KINDS or s in _KINDS:
            found.append((i, s))
    return found


def _subject_of(words: list[str]) -> Subject | None:
    return next((s for s in SUBJECTS if any(w in s.cues for w in words)), None)


def _generic_subject(words: list[str]) -> str:
    """The noun phrase a topic asks about: "how bicycles work" -> "bicycles"."""
    rest = list(words)
    while rest and rest[0] in _ASKING:
        rest = rest[1:]
    phrase: list[str] = []
    for w in rest:
        if w in _STOP:
            break
        phrase.append(w)
    phrase = phrase[:3]
    if not phrase:
        return ""
    text = " ".join(phrase)
    return text if phrase[-1].endswith("s") else f"the {text}"


def _pick_theme(subject: list[str], rest: list[str], rng: random.Random) -> Theme:
    scores = dict.fromkeys(THEMES, 0)
    # A theme named in what the subject does ("who learns to share") outweighs
    # one in how it is described ("a brave kitten"); the discovery plot is
    # chosen by the subject of a topic, not by its words.
    for weight, words in ((1, subject), (2, rest)):
        for w in words:
            for name, theme in THEMES.items():
                if name != "discovery" and w in theme.cues:
                    scores[name] += weight
    best = max(scores.values())
    if best == 0:
        return THEMES[rng.choice(sorted(n for n in THEMES if n != "discovery"))]
    return THEMES[next(name for name, score in scores.items() if score == best)]


def _figure(kind: str, described: list[str], rng: random.Random, name: str) -> Figure:
    """The look of a character of ``kind``, with the traits and colour the topic gave it."""
    traits = [w for w in described if w in _TRAITS and w not in ("little", "small", "tiny")]
    named = [w for w in described if w in COLOURS]
    size = "tiny" if "tiny" in described else "little"
    if kind in PEOPLE_KINDS:
        clothes = _ROLE_CLOTHES.get(kind, _ACCESSORY_COLOURS)
        colour = named[0] if named else rng.choice(clothes)
        old = kind in ("grandma", "grandpa", "king", "queen", "wizard")
        hair = rng.choice(("grey", "white") if old else _HAIR)
        skin = rng.choice(_SKINS)
        accessory = accessory_colour = ""
        if kind in ("girl", "boy", "child"):
            accessory = rng.choice(_PERSON_ACCESSORIES)
            accessory_colour = rng.choice([c for c in _ACCESSORY_COLOURS if c != colour])
        lead = tuple(traits) + ((size,) if kind in ("girl", "boy", "child") else ())
        return Figure(name, kind, colour, lead, accessory, accessory_colour, skin, hair)
    colours = _KINDS.get(kind, (_ACCESSORY_COLOURS, "", ""))[0]
    colour = named[0] if named else rng.choice(colours)
    accessory_colour = rng.choice([c for c in _ACCESSORY_COLOURS if c != colour])
    accessory = rng.choice(_ACCESSORIES)
    return Figure(name, kind, colour, (*traits, size), accessory, accessory_colour)


def _intro(f: Figure) -> str:
    """How the story first describes a character (the prompt gives the whole look)."""
    if not f.is_person:
        return render_look(f)
    head = " ".join((*f.traits, f.kind))
    extra = f" and {_article(f.accessory_colour + ' ' + f.accessory)}" if f.accessory else ""
    return f"{_article(head)} with {f.hair} hair{extra}"


def plan_offline_story(topic: str, *, seed: int = 0) -> StoryPlan:
    """The cast, place, theme, title and moral of the offline story about ``topic``."""
    clean = " ".join(topic.split())
    rng = random.Random(hashlib.sha256(f"{seed}|{clean.lower()}".encode()).digest())
    words = re.findall(r"[a-z]+", clean.lower())
    cast = _characters(words)
    if not cast:
        # "a crab who sings": whoever a topic says "who" of is a character, known or not.
        at = words.index("who") if "who" in words else -1
        if at > 0 and words[at - 1] not in _ASKING:
            cast = [(at - 1, _singular(words[at - 1]))]
    # "how volcanoes work", "all about bees": a question or a lesson, not a tale about a
    # character (but "a story about a cat" is about the cat).
    lesson = ("about", "all about", "facts about", "learn about", "learning about")
    asking = bool(words) and (
        words[0] in ("how", "why", "what", "where", "when")
        or any(" ".join(words).startswith(start + " ") for start in lesson)
    )  # fmt: skip
    subject = _subject_of(words)
    themed = any(w in t.cues for t in THEMES.values() if t.name != "discovery" for w in words)
    subject_story = (asking and (subject or not cast)) or (
        not cast and (subject is not None or not themed) and bool(_generic_subject(words))
    )
    if subject_story:
        return _plan_subject(clean, words, subject, rng)
    if cast:
        at, kind = cast[0]
        start = 1 if words and words[0] in ("a", "an", "the") else 0
        described, rest = words[start:at], words[at + 1 :]
    else:
        kind, described, rest = rng.choice(_HERO_KINDS), [], words
    theme = _pick_theme(described + [kind], rest, rng)
    if kind in ("girl", "boy", "child"):
        kind = rng.choice(_CHILDREN) if kind == "child" else kind
        name = rng.choice(_GIRL_NAMES if kind == "girl" else _BOY_NAMES)
    else:
        name = rng.choice(_HERO_NAMES)
    hero = _figure(kind, described, rng, name)
    # The friend is the second character the topic names, else one of the theme's.
    named = [k for _, k in cast[1:] if k != kind]
    friend_kind = (
        named[0] if named else rng.choice([k for k in theme.friends if k != kind] or ["mouse"])
    )
    friend_name = rng.choice(_FRIEND_NAMES)
    if friend_kind in PEOPLE_KINDS:
        friend = _figure(friend_kind, [], rng, friend_name)
        friend_look = _intro(friend)
    else:
        colour = rng.choice(_KINDS.get(friend_kind, (("brown",), "", ""))[0])
        baby = theme.name == "kindness" and not named
        friend = Figure(friend_name, friend_kind, "" if baby else colour, ("baby",) if baby else ())
        friend_look = render_look(friend)
    return StoryPlan(
        theme=theme.name,
        hero=name,
        hero_kind=kind,
        hero_look=render_look(hero),
        friend=friend_name,
        friend_kind=friend_kind,
        friend_look=friend_look,
        place=rng.choice(theme.places),
        title=rng.choice(theme.titles).format(H=name),
        moral=rng.choice(theme.morals),
        hero_intro=_intro(hero),
        hero_figure=hero,
        friend_figure=friend,
        mirrored=rng.random() < 0.5,
    )


def _plan_subject(
    topic: str, words: list[str], subject: Subject | None, rng: random.Random
) -> StoryPlan:
    theme = THEMES["discovery"]
    name_of = subject.name if subject else _generic_subject(words) or "the world around us"
    kind = rng.choice(_CHILDREN)
    name = rng.choice(_GIRL_NAMES if kind == "girl" else _BOY_NAMES)
    hero = _figure(kind, ["curious"], rng, name)
    friend_kind = rng.choice(theme.friends)
    friend_name = rng.choice(_GROWN_UPS[friend_kind])
    friend = _figure(friend_kind, ["kind"], rng, friend_name)
    title_words = _title(name_of)
    return StoryPlan(
        theme=theme.name,
        hero=name,
        hero_kind=kind,
        hero_look=render_look(hero),
        friend=friend_name,
        friend_kind=friend_kind,
        friend_look=_intro(friend),
        place=rng.choice(theme.places),
        title=rng.choice(theme.titles).format(H=name, St=title_words),
        moral=rng.choice(theme.morals),
        subject=name_of,
        hero_intro=_intro(hero),
        hero_figure=hero,
        friend_figure=friend,
        mirrored=rng.random() < 0.5,
    )


# What a story about a subject the writer knows nothing of can still say truly.
_GENERIC = Subject(
    "",
    (),
    "library",
    "the town library, where there is a book about everything",
    ("book", "board"),
    ("The best way to learn about anything is to look at it very closely.",
     "the more you look, the more little details you notice, and each one is a clue.",
     "Books, pictures and people who know a lot can all help you learn more.",
     "'And when you know a little, you can always ask the next question.'"),
)  # fmt: skip


def _title(subject: str) -> str:
    """A subject as a title says it: "the moon" -> "the Moon", "bees" -> "Bees"."""
    if subject.startswith("the "):
        return "the " + subject[4:].title()
    return subject.title()


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


# Things drawn only in their own setting (the sea's).
_NEEDS_ITS_PLACE = {"fish", "shell", "boat", "waves", "hive", "seedling"}


def _scene(plan: StoryPlan, theme: Theme, beat: int, action: str, subject: Subject | None,
           style_text: str) -> Scene:  # fmt: skip
    """The structured picture of one beat, from its frame."""
    things_spec, who, time, framing, *where = (p.strip() for p in theme.frames[beat].split("|"))
    shot, at, pose = framing.split()
    setting = where[0] if where else theme.setting
    things = [t.strip() for t in things_spec.split(",") if t.strip()]
    label = ""
    if subject is not None and ("$" in things or setting == "$"):
        own = subject.things
        if setting != "$":  # away from the subject's place: no fish on the road
            own = tuple(t for t in own if t not in _NEEDS_ITS_PLACE)
        things = [x for t in things for x in (own if t == "$" else (t,))]
        if setting == "$":
            setting = subject.setting
            time = subject.time if subject.time != "day" else time
        if subject is _GENERIC:
            label = plan.subject
    others = (plan.friend_figure,) if "F" in who and plan.friend_figure else ()
    if who.startswith("F"):  # the friend stands where the frame says, the hero across
        at = {"left": "right", "right": "left"}.get(at, "left")
    if plan.mirrored:  # two stories with one plot are not framed alike
        at = {"left": "right", "right": "left"}.get(at, at)
    return Scene(action, plan.hero_figure, others, setting, time, tuple(dict.fromkeys(things)),
                 shot, at, pose, label, style_text)  # fmt: skip


def write_offline_story(
    topic: str, customization: Mapping[str, Any] | None = None, *, seed: int = 0
) -> StoryOutput:
    """A short illustrated story about ``topic``, the same every time for the same input.

    The story follows the plot of the topic's theme (see :func:`plan_offline_story`);
    every image prompt is a rendered :class:`~storylab.story.offline.prompt.Scene`
    that describes the hero the same way, so a model can keep the hero's look.
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
    subject = None
    if plan.theme == "discovery":
        subject = next((s for s in SUBJECTS if s.name == plan.subject), _GENERIC)
    _, coat, limb = _KINDS.get(plan.hero_kind, ((), "coat", "hand"))
    friend_kind = plan.friend_kind
    fill = {
        "H": plan.hero,
        "HI": f"{plan.hero}, {plan.hero_intro or plan.hero_look},",
        "F": plan.friend,
        "FI": (f"{plan.friend}, who knew a great many things,"
               if plan.theme == "discovery" else f"{plan.friend_look} named {plan.friend}"),
        "f": friend_kind,
        "hs": plan.hero_kind,
        "P": plan.place,
        "coat": coat,
        "limb": limb,
        "Hp": plan.hero,
        "Fp": plan.friend if plan.theme == "discovery" else f"{plan.friend} the {friend_kind}",
        "S": plan.subject,
        "St": _title(plan.subject),
        "SP": subject.place if subject else "",
    }  # fmt: skip
    if subject is not None:
        fill.update({f"X{i}": fact for i, fact in enumerate(subject.facts, start=1)})
    # The youngest readers get the plot alone; older ones the details too.
    details = 0 if hi <= 5 else (2 if lo >= 8 else 1)
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
        first = beat_range.start
        action = theme.beats[first][2].format(**fill)
        scene = _scene(plan, theme, first, action, subject, style_text)
        prompts.append(
            ImagePrompt(
                placeholder=placeholder,
                prompt=render_prompt(scene),
                alt_text=f"Illustration {i}: {action}",
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
