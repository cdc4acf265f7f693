"""The one structure of an offline image prompt, written by the writer, read by the drawer.

A picture is described by a :class:`Scene`: who is in it (:class:`Figure`,
the hero and the others), where (a setting and a time of day), which things,
and how it is framed (a shot, where the hero stands, what the hero is doing).
The writer renders a scene into prompt text with :func:`render_prompt`; the
text stays readable for a real image model ("... The main character, Pip, is a
little orange kitten with a blue scarf, drawn the same on every page. Setting:
a meadow, by day. Things: apple tree, basket. ..."), and the offline drawer
reads it back with :func:`parse_prompt`, the only place where prompt text is
turned into a picture's contents.

The first sentence (the *action*) is written for a model; the drawer never
reads it when the labelled fields are there, so rewording the story cannot
change the pictures. A prompt without labels (written by a person, or by a
real model) is still drawn: the missing fields are guessed from its words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "COLOURS",
    "CREATURE_KINDS",
    "PEOPLE_KINDS",
    "POSES",
    "SETTINGS",
    "SHOTS",
    "THINGS",
    "TIMES",
    "Figure",
    "Scene",
    "kind_of",
    "parse_look",
    "parse_prompt",
    "render_look",
    "render_prompt",
]

COLOURS = ("orange", "grey", "white", "black", "red", "green", "purple", "blue", "brown",
           "golden", "yellow", "pink", "silver")  # fmt: skip
# Animals and creatures the drawer knows, and the people it draws as people.
CREATURE_KINDS = (
    "kitten", "cat", "fox", "dragon", "owl", "bear", "rabbit", "bunny", "mouse", "hedgehog",
    "duck", "robin", "puppy", "dog", "robot", "ghost", "monster", "dinosaur", "lion",
    "tiger", "wolf", "squirrel", "badger", "unicorn", "penguin", "frog", "pig", "bird",
    "elephant", "cow", "sheep", "goat", "monkey", "hippo", "panda", "koala", "horse", "pony",
    "zebra", "giraffe", "deer", "hamster", "rat", "crocodile", "lizard", "chicken", "hen",
    "parrot", "eagle", "goose", "swan",
)  # fmt: skip
PEOPLE_KINDS = (
    "girl", "boy", "child", "firefighter", "knight", "princess", "prince", "king", "queen",
    "astronaut", "pirate", "doctor", "nurse", "teacher", "chef", "baker", "farmer",
    "witch", "wizard", "grandma", "grandpa", "explorer", "scientist", "police officer",
    "builder", "gardener", "fairy", "giant",
)  # fmt: skip
SETTINGS = ("meadow", "wood", "pond", "hill", "garden", "town", "seaside", "mountains",
            "snow", "space", "library", "castle", "farm")  # fmt: skip
TIMES = ("day", "dawn", "dusk", "night")
SHOTS = ("wide", "medium", "close")
POSES = ("standing", "walking", "waving", "reaching", "sitting", "pointing", "sleeping",
         "climbing", "holding")  # fmt: skip
# Things the drawer can draw (singular); others are kept but not drawn.
THINGS = (
    "path", "brambles", "river", "pond", "tree", "oak", "wood", "forest", "house", "moon",
    "stars", "sun", "flowers", "meadow", "hill", "basket", "apple", "kite", "nest",
    "lantern", "ball", "reeds", "stones", "feather", "blackberries", "volcano", "cloud",
    "rain", "rainbow", "rocket", "planet", "train", "boat", "book", "hive", "bee",
    "sunflower", "seedling", "fish", "shell", "umbrella", "telescope", "fire engine",
    "castle", "ladder", "notebook", "waves", "leaves", "snowflakes", "tent", "map",
    "butterfly", "caterpillar", "toothbrush", "bed", "window", "chest", "board", "fence",
    "barn", "candle", "bridge",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Figure:
    """Someone in a picture, described the same way on every page.

    ``colour`` is the fur, feathers or scales of an animal and the clothes of a
    person; ``skin`` and ``hair`` are for people only.
    """

    name: str
    kind: str
    colour: str
    traits: tuple[str, ...] = ()  # "brave", "little": words for the model, not drawn
    accessory: str = ""  # scarf, hat, backpack, cap, crown
    accessory_colour: str = ""
    skin: str = ""
    hair: str = ""

    @property
    def is_person(self) -> bool:
        return self.kind in PEOPLE_KINDS


@dataclass(frozen=True, slots=True)
class Scene:
    """What one picture shows. Every field but ``action`` is read by the drawer."""

    action: str
    hero: Figure | None = None
    others: tuple[Figure, ...] = ()
    setting: str = "meadow"
    time: str = "day"
    things: tuple[str, ...] = ()
    shot: str = "medium"
    hero_at: str = "left"  # left, centre, right
    pose: str = "standing"
    label: str = ""  # a word written on a sign or a book in the picture
    style: str = ""  # the style's description, as the models read it
    guessed: tuple[str, ...] = field(default=(), compare=False)  # fields not in the text


def render_look(f: Figure) -> str:
    """``"a brave little orange kitten with a blue scarf"``; people: skin, hair, clothes."""
    traits = " ".join(f.traits)
    extra = f" and {_a(f.accessory_colour + ' ' + f.accessory)}" if f.accessory else ""
    if f.is_person:
        head = " ".join(p for p in (traits, f.kind) if p)
        return f"{_a(head)} with {f.skin} skin and {f.hair} hair, wearing {f.colour} clothes{extra}"
    body = " ".join(p for p in (traits, f.colour, f.kind) if p)
    if f.accessory:
        return f"{_a(body)} with {_a(f.accessory_colour + ' ' + f.accessory)}"
    return _a(body)


def parse_look(name: str, look: str) -> Figure:
    """The :class:`Figure` a look describes: the inverse of :func:`render_look`."""
    low = " ".join(look.lower().split())
    kind = kind_of(low) or ""
    skin = _group(r"with (\w+(?: \w+)?) skin", low)
    hair = _group(r"and (\w+(?: \w+)?) hair", low)
    if kind in PEOPLE_KINDS:
        colour = _group(r"wearing (\w+) clothes", low) or "blue"
        head = low.split(" with ", 1)[0]
        extra = _group(r"clothes and an? (\w+ \w+)$", low)
    else:
        head, _, rest = low.partition(" with ")
        colours = [w for w in head.split() if w in COLOURS]
        colour = colours[0] if colours else ""
        extra = _group(r"^an? (\w+ \w+)$", rest)
    words = head.split()
    if words and words[0] in ("a", "an"):
        words = words[1:]
    kind_words = kind.split()
    if words[-len(kind_words) :] == kind_words:
        words = words[: -len(kind_words)]
    traits = tuple(w for w in words if w != colour or kind in PEOPLE_KINDS)
    acc_colour, accessory = extra.split(" ", 1) if extra else ("", "")
    return Figure(name, kind or (words[-1] if words else ""), colour, traits, accessory,
                  acc_colour, skin, hair)  # fmt: skip


def render_prompt(scene: Scene) -> str:
    """The prompt text of ``scene``: an action sentence, then one labelled field each."""
    parts = [_sentence(scene.action)]
    if scene.hero is not None:
        h = scene.hero
        parts.append(
            f"The main character, {h.name}, is {render_look(h)}, drawn the same on every page."
        )
    if scene.others:
        parts.append(
            "Also in the picture: "
            + "; ".join(f"{o.name}, {render_look(o)}" for o in scene.others)
            + "."
        )
    parts.append(f"Setting: {_setting_words(scene.setting)}, {_time_words(scene.time)}.")
    if scene.things:
        parts.append("Things: " + ", ".join(scene.things) + ".")
    if scene.label:
        parts.append(f'Written in the picture: "{scene.label}".')
    who = scene.hero.name if scene.hero is not None else "the scene"
    where = "in the centre" if scene.hero_at == "centre" else f"on the {scene.hero_at}"
    parts.append(f"Framing: {_a(scene.shot)} shot, {who} {where}, {scene.pose}.")
    if scene.style:
        parts.append(_sentence(scene.style))
    return " ".join(parts)


def parse_prompt(text: str, *, styles: tuple[str, ...] = ()) -> Scene:
    """The :class:`Scene` a prompt describes: the inverse of :func:`render_prompt`.

    Labelled fields are read as written. A field that is missing (a prompt
    from a person or another model) is guessed from the prompt's words and
    named in ``Scene.guessed``; ``styles`` are style descriptions to cut out
    of the text first, so their words are not taken for things.
    """
    clean = " ".join(text.split())
    style = ""
    for description in styles:
        at = clean.lower().find(description.lower())
        if at != -1:
            style = clean[at : at + len(description)]
            clean = (clean[:at] + clean[at + len(description) :]).strip()
    hero = None
    m = re.search(
        r"The main character, ([^,]+), is (.+?)(?:, drawn the same on every page)?\.(?= |$)",
        clean,
        re.I,
    )  # fmt: skip
    if m:
        hero = parse_look(m.group(1).strip(), m.group(2))
        action = clean[: m.start()].strip()
    else:
        action = re.split(r"\b(?:Also in the picture|Setting|Things|Framing):", clean)[0].strip()
    action = action.rstrip(". ")
    others: tuple[Figure, ...] = ()
    if (o := _label(r"Also in the picture", clean)) is not None:
        items = [i.strip() for i in o.split(";") if i.strip()]
        others = tuple(parse_look(*i.split(", ", 1)) for i in items if ", " in i)
    guessed: list[str] = []
    words = _words(action if m else clean)
    # A prompt with a Setting field is structured: what it does not list is not
    # there. Only a prompt without one has its fields guessed from its words.
    structured = _label(r"Setting", clean) is not None
    setting, time = None, None
    if (s := _label(r"Setting", clean)) is not None:
        setting = next((x for x in SETTINGS if x in _words(s)), None)
        time = next((t for t in TIMES if t in _words(s)), None)
    if setting is None:
        guessed.append("setting")
        setting = _guess_setting(words)
    if time is None:
        guessed.append("time")
        time = _guess_time(words)
    if (t := _label(r"Things", clean)) is not None:
        things = tuple(x.strip() for x in t.split(",") if x.strip())
    elif structured:
        things = ()
    else:
        guessed.append("things")
        things = _guess_things(words)
    if not others and not structured:
        others = _guess_others(words, hero)
    label = _group(r'Written in the picture: "([^"]*)"', clean)
    shot, hero_at, pose = "medium", "left", "standing"
    if (f := _label(r"Framing", clean)) is not None:
        fw = _words(f)
        shot = next((x for x in SHOTS if x in fw), shot)
        hero_at = next((x for x in ("left", "centre", "right") if x in fw), hero_at)
        pose = next((x for x in POSES if x in fw), pose)
    else:
        guessed.append("framing")
    return Scene(action, hero, others, setting, time, things, shot, hero_at, pose, label, style,
                 tuple(guessed))  # fmt: skip


def kind_of(text: str) -> str | None:
    """The first kind of character (person or creature) named in ``text``, singular."""
    words = [_singular(w) for w in _words(text)]
    for i, w in enumerate(words):
        pair = " ".join(words[i : i + 2])
        if pair in PEOPLE_KINDS:
            return pair
        if w in PEOPLE_KINDS or w in CREATURE_KINDS:
            return w
    return None


# -- helpers -----------------------------------------------------------------------
def _a(phrase: str) -> str:
    phrase = phrase.strip()
    return f"an {phrase}" if phrase[:1].lower() in "aeiou" else f"a {phrase}"


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def _group(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else ""


def _label(name: str, text: str) -> str | None:
    m = re.search(rf"\b{name}: (.*?)\.(?= [A-Z]|$)", text)
    return m.group(1) if m else None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _singular(word: str) -> str:
    irregular = {"mice": "mouse", "wolves": "wolf", "children": "child", "leaves": "leaves",
                 "people": "person", "fairies": "fairy", "ponies": "pony", "stars": "stars",
                 "flowers": "flowers", "brambles": "brambles", "reeds": "reeds",
                 "stones": "stones", "waves": "waves", "snowflakes": "snowflakes",
                 "blackberries": "blackberries", "mountains": "mountains",
                 "princesses": "princess", "witches": "witch", "volcanoes": "volcano",
                 "knives": "knife", "dinosaurs": "dinosaur"}  # fmt: skip
    if word in irregular:
        return irregular[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


_SETTING_WORDS = {
    "meadow": "a meadow full of flowers",
    "wood": "a wood of tall trees",
    "pond": "the bank of a pond",
    "hill": "a green hill",
    "garden": "a garden",
    "town": "a little town",
    "seaside": "the seaside",
    "mountains": "the mountains",
    "snow": "a field of snow",
    "space": "outer space",
    "library": "a library",
    "castle": "a castle",
    "farm": "a farm",
}
_TIME_WORDS = {"day": "by day", "dawn": "at dawn", "dusk": "at dusk", "night": "at night"}


def _setting_words(setting: str) -> str:
    return _SETTING_WORDS.get(setting, setting)


def _time_words(time: str) -> str:
    return _TIME_WORDS.get(time, time)


# What the words of an unlabelled prompt suggest.
_SETTING_CUES = (
    ("space", {"space", "planet", "rocket", "astronaut"}),
    ("seaside", {"sea", "beach", "seaside", "ocean", "waves", "shell"}),
    ("mountains", {"volcano", "mountain", "mountains"}),
    ("snow", {"snow", "snowy", "snowflakes", "winter", "ice"}),
    ("library", {"library", "book", "classroom", "school"}),
    ("castle", {"castle", "palace"}),
    ("town", {"town", "street", "city", "village"}),
    ("farm", {"farm", "barn"}),
    ("garden", {"garden", "seedling", "sunflower", "vegetable"}),
    ("pond", {"pond", "lake"}),
    ("hill", {"hill", "hilltop"}),
    ("wood", {"wood", "forest", "woods"}),
)


def _guess_setting(words: list[str]) -> str:
    ws = set(words)
    return next((s for s, cues in _SETTING_CUES if ws & cues), "meadow")


def _guess_time(words: list[str]) -> str:
    ws = set(words)
    if ws & {"night", "moon", "stars", "asleep", "midnight"}:
        return "night"
    if ws & {"sunset", "dusk", "evening"}:
        return "dusk"
    if ws & {"sunrise", "dawn"}:
        return "dawn"
    return "day"


def _guess_things(words: list[str]) -> tuple[str, ...]:
    singular = [_singular(w) for w in words]
    out: list[str] = []
    for w, s in zip(words, singular, strict=True):
        for cand in (w, s):
            if cand in THINGS and cand not in out:
                out.append(cand)
                break
    for a, b in zip(words, words[1:], strict=False):  # two-word things
        if f"{a} {_singular(b)}" in THINGS and f"{a} {_singular(b)}" not in out:
            out.append(f"{a} {_singular(b)}")
    return tuple(out)


def _guess_others(words: list[str], hero: Figure | None) -> tuple[Figure, ...]:
    """Creatures named in an unlabelled prompt, with a colour word just before them if any."""
    found: list[Figure] = []
    seen_hero = False
    for i, w in enumerate(words):
        kind = _singular(w)
        if kind not in CREATURE_KINDS and kind not in PEOPLE_KINDS:
            continue
        if hero is not None and kind == hero.kind and not seen_hero:
            seen_hero = True  # "Pip the kitten": the hero, drawn already
            continue
        colour = words[i - 1] if i and words[i - 1] in COLOURS else ""
        if not any(f.kind == kind for f in found):
            found.append(Figure("", kind, colour))
    return tuple(found[:3])
