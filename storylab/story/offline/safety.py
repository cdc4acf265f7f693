"""The offline safety check: may this topic become a story for children aged 3 to 10?

A word list alone fails both ways: it lets "a zombie who eats children"
through because no single word in it is forbidden, and it refuses "a friendly
ghost who is afraid of the dark" because "ghost" and "afraid" sound scary.
So the check reads a topic in three steps:

1. **Words to lemmas.** Every word is reduced to a dictionary form the rules
   know ("killers", "killed", "killing" -> ``kill``; "ate" -> ``eat``;
   "children" -> ``child``), so the rules are written once per idea, not once
   per inflection.
2. **Harm, said outright or by a combination.** Some lemmas are harmful on
   their own (``kill``, ``suicide``, ``cocaine``, ``naked``); others only in a
   phrase ("knife fight", "eat child", "smoke cigarette"), and a phrase can
   also make a word harmless ("shooting star", "tug of war", "water gun",
   "naked mole rat", "blood cells"), which is checked first.
3. **Scary is not harmful.** Ghosts, monsters, witches and dragons are
   ordinary picture-book characters. They are refused only when the topic aims
   them at people ("a ghost who scares children", "a monster that eats
   kids"); a few creatures of horror (zombies, demons, vampires) need a kind
   word ("friendly", "shy", "afraid", "makes friends") to pass, and a kind word
   never excuses outright harm.

Every refusal names its category ("violence", "weapons", "sexual content",
"self-harm", "drugs and alcohol", "horror aimed at children", "hate") and the
words that triggered it, so a teacher can see why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storylab.story.models import ContentSafetyResult

__all__ = ["CATEGORIES", "SAFE_THRESHOLD", "SafetyFinding", "assess_topic", "lemmas"]

SAFE_THRESHOLD = 60

CATEGORIES = (
    "violence",
    "weapons",
    "sexual content",
    "self-harm",
    "drugs and alcohol",
    "horror aimed at children",
    "hate",
)

# -- step 1: lemmas ----------------------------------------------------------------
# Irregular forms the suffix rules below cannot undo.
_IRREGULAR = {
    "ate": "eat", "eaten": "eat", "children": "child", "kids": "kid", "people": "person",
    "men": "man", "women": "woman", "knives": "knife", "died": "die", "dying": "die",
    "dies": "die", "bled": "bleed", "shot": "shoot", "fought": "fight", "slew": "slay",
    "slain": "slay", "hung": "hang", "stole": "steal", "stolen": "steal", "bit": "bite",
    "bitten": "bite", "took": "take", "taken": "take", "drank": "drink", "drunk": "drunk",
    "drunken": "drunk", "beaten": "beat", "babies": "baby", "bodies": "body",
    "zombies": "zombie", "selves": "self", "themselves": "oneself", "himself": "oneself",
    "herself": "oneself", "myself": "oneself", "yourself": "oneself", "itself": "oneself",
    "ourselves": "oneself", "sexy": "sex", "sexual": "sex", "sexually": "sex",
    "bloody": "blood", "gory": "gore", "killer": "kill", "killers": "kill",
    "murderer": "murder", "murderers": "murder", "murderous": "murder", "shooter": "shoot",
    "shooters": "shoot", "smoker": "smoke", "smokers": "smoke", "suicidal": "suicide",
    "violent": "violence", "violently": "violence", "nudity": "naked", "nude": "naked",
    "nudes": "naked", "pornography": "porn", "pornographic": "porn", "porno": "porn",
    "terrifying": "terrify", "terrified": "terrify", "horrifying": "horror",
    "horrific": "horror", "scared": "scared", "scary": "scary", "frightened": "scared",
    "afraid": "scared", "racist": "racism", "racists": "racism", "weapons": "weapon",
    "drugged": "drug", "druggie": "drug", "alcoholic": "alcohol", "wars": "war",
    "warrior": "warrior", "warriors": "warrior", "stabbing": "stab", "stabbed": "stab",
    "hitting": "hit", "teeth": "tooth", "feet": "foot", "mice": "mouse", "wolves": "wolf",
    "elves": "elf", "dwarves": "dwarf", "leaves": "leaf", "lives": "life", "wives": "wife",
    "thieves": "thief", "vampires": "vampire", "kidnapped": "kidnap", "kidnapping": "kidnap",
    "kidnapper": "kidnap", "kidnappers": "kidnap", "bullies": "bully", "bullied": "bully",
    "bullying": "bully", "cigarettes": "cigarette", "overdosed": "overdose",
}  # fmt: skip
_LEET = str.maketrans("013457@$", "oieastas")
_SUFFIXES = ("ings", "ing", "ers", "er", "ed", "es", "s", "y")


def _candidates(word: str) -> list[str]:
    """Possible dictionary forms of ``word``, the word itself first."""
    out = [word]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            out += [stem, stem + "e"]
            if len(stem) >= 4 and stem[-1] == stem[-2]:  # stabb -> stab
                out.append(stem[:-1])
            if suffix in ("es", "ed") and stem.endswith("i"):  # bullies -> bully
                out.append(stem[:-1] + "y")
    return out


def lemmas(topic: str) -> list[str]:
    """The topic's words in the dictionary forms the rules are written in."""
    text = topic.lower().replace("\u2019", "'")
    # Letters written as digits or signs inside a word ("k1ll", "s3xy", "dr@gs"); a
    # number on its own ("3 bears") is left alone.
    text = re.sub(r"[a-z0-9@$]*[a-z][a-z0-9@$]*", lambda m: m.group(0).translate(_LEET), text)
    out = []
    for word in re.findall(r"[a-z]+(?:['-][a-z]+)*", text):
        # A possessive keeps its mark: "children's toys" is about toys, not children.
        word, possessive = (word[:-2], "'s") if word.endswith("'s") else (word, "")
        if word in _IRREGULAR:
            out.append(_IRREGULAR[word] + possessive)
            continue
        known = next((c for c in _candidates(word) if c in _KNOWN), None)
        out.append((known or word) + possessive)
    return out


# -- step 2: harm ------------------------------------------------------------------
# Lemmas that are harmful on their own, per category.
_ALWAYS: dict[str, tuple[str, ...]] = {
    "violence": (
        "kill", "murder", "blood", "bleed", "gore", "stab", "massacre", "torture", "behead",
        "slaughter", "shoot", "strangle", "kidnap", "hostage", "terrorist", "terrorism",
        "genocide", "slay", "war", "assault", "abuse", "violence", "decapitate", "maim",
        "mutilate", "execute", "execution", "lynch", "arson", "cannibal", "cannibalism",
        "bloodshed", "homicide", "manslaughter", "warfare",
    ),
    "weapons": (
        "gun", "rifle", "pistol", "shotgun", "revolver", "firearm", "grenade", "bomb",
        "missile", "bazooka", "ammunition", "ammo", "bullet", "sniper", "machine-gun",
        "dynamite", "landmine", "handgun", "weapon", "gunfire", "gunshot",
    ),
    "sexual content": (
        "sex", "naked", "porn", "erotic", "stripper", "striptease", "orgy", "lingerie",
        "seduce", "rape", "rapist", "molest", "grope", "prostitute", "prostitution",
        "brothel", "horny", "boob", "kinky", "fetish", "nudist", "intercourse", "genital",
        "genitals", "topless", "sexting",
    ),
    "self-harm": (
        "suicide", "self-harm", "overdose", "self-injury", "anorexia",
    ),
    "drugs and alcohol": (
        "drug", "cocaine", "heroin", "meth", "methamphetamine", "marijuana", "cannabis",
        "lsd", "opium", "opioid", "narcotic", "beer", "wine", "vodka", "whiskey", "whisky",
        "rum", "tequila", "alcohol", "booze", "drunk", "liquor", "hangover", "cigarette",
        "cigar", "tobacco", "vape", "vaping",
    ),
    "horror aimed at children": (
        "horror", "gruesome", "terrify", "slasher", "corpse", "dismember", "disembowel",
        "possessed", "satanic", "occult",
    ),
    "hate": ("racism", "nazi", "slur", "kkk", "bigot", "supremacist", "antisemitic"),
}  # fmt: skip

# Phrases (over lemmas) that make a word above harmless; they are blanked out first.
_HARMLESS = (
    r"shoot(ing)? star", r"shoot hoop", r"shoot a goal", r"bamboo shoot", r"photo shoot",
    r"shoot for the (moon|star)", r"tug of war", r"(pillow|snowball|water|food|bubble) war",
    r"star war", r"(water|glue|bubble|nerf|squirt|foam) (gun|pistol|blaster)",
    r"(bath|seed|glitter) bomb", r"naked mole rat", r"naked eye",
    r"blood (cell|vessel|donor|donation|bank|type|orange|moon)", r"(heart|body) pump blood",
    r"(ginger|root|fairy|butter) beer", r"(drug|chemist) ?store", r"crack (open|a joke|the code)",
    r"(an|the|egg|shell|ice) crack", r"joint (of|in|pain)", r"(knee|elbow|hip|finger) joint",
    r"kill time", r"make-up", r"(wine|ruby)-red", r"wine-coloured", r"bullet (train|journal)",
    r"(green|new|young|bamboo) shoot", r"shoot up", r"blood (flow|circulate|travel|move)",
    r"vampire bat", r"tasmanian devil",
    r"(about|remember|during|after|before) the war", r"a crack", r"hurt(?: [a-z'-]+){0,3} feeling",
)  # fmt: skip

# Phrases harmful although none of their words is: (category, pattern over lemmas).
# "_" is one word at most, so "eat a child" and "eat the little child" both match.
_PEOPLE = (
    r"(child|kid|baby|boy|girl|person|student|pupil|human|man|woman|toddler|villager"
    r"|everyone|family|parent|mum|mom|dad|teacher|friend|classmate|brother|sister|them|us"
    r"|you|me|people|grandma|grandpa|granny|grandmother|grandfather|swimmer|camper|hiker"
    r"|sailor|farmer|neighbour|neighbor|visitor|tourist|traveller|traveler|stranger"
    r"|someone|somebody|anyone|anybody|nurse|doctor|prince|princess|king|queen|knight"
    r"|soldier|passenger|pupil|twin|cousin|son|daughter|wife|husband|player|hunter|owner"
    r"|explorer|builder|baker|worker|rider|driver|diver|surfer|climber|fisherman|shopper"
    r"|runner|walker|guard|officer|police|firefighter|crowd|audience|victim|each other"
    r"|one another)(?!'s)"
)
# Between a verb and the people it is done to: at most four words and no
# boundary ("eats the little children", "eats goats and little boys"), so "hunts
# for his family" or "eats cookies with her friends" is not done to people.
_GAP = (
    r"(?: (?!(?:who|that|which|where|for|with|to|at|about|from|but|then|because|while|when"
    r"|like|as|of|by|in|into|onto|after|before|behind|near)\b)[a-z'-]+){0,4}"
)
_PHRASES: tuple[tuple[str, str], ...] = (
    ("violence", rf"\b(eat|devour|gobble|munch|chomp|swallow|feast on|chop|hurt|harm|hit|kick|"
                 rf"punch|slap|whip|attack|maul|rip|savage|drown|burn|poison|hang|choke|strangle|"
                 rf"torment|crush|squash|stomp|trample){_GAP} {_PEOPLE}\b"),
    ("violence", r"\b(beat|punch|kick|hit)(?: [a-z'-]+){0,2} up\b"),
    ("violence", r"\b(throw|hurl)(?: [a-z'-]+){0,2} (rock|stone|brick)s? at\b"),
    ("violence", r"\b(destroy|burn|raze|flatten)(?: [a-z'-]+){0,2} (village|town|city|school|"
                 r"home|house)\b"),
    ("self-harm", r"\bend it all\b"),
    ("self-harm", r"\bjump off(?: [a-z'-]+){0,2} (bridge|cliff|roof|building)\b"),
    ("hate", r"\bhate(?: [a-z'-]+){0,2} (immigrant|refugee|foreigner|jew|muslim|christian|"
             r"gay|black person|white person|asian|migrant)s?\b"),
    ("weapons", r"\b(knife|sword|axe|dagger|spear|fist|street|gang|bar) fight"),
    ("violence", r"\bfight to the death\b"),
    ("weapons", r"\b(fight|attack|threaten|hurt|cut|wound)\b(?: [a-z'-]+){0,4} "
                r"(knife|sword|axe|dagger|blade|spear|weapon)\b"),
    ("weapons", r"\b(knife|sword|axe|dagger|blade)\b(?: [a-z'-]+){0,4} (fight|attack|stab|"
                r"threaten|hurt|wound)\b"),
    ("violence", r"\b(beat|punch|kick|hit) (up|him|her|them|someone)\b"),
    ("violence", r"\b(set fire to|burn down|blow up)\b"),
    ("violence", r"\bdead bod(y|ie)\b"),
    ("self-harm", r"\b(kill|hurt|cut|harm|hang|starve|shoot|drown) oneself\b"),
    ("self-harm", r"\b(end|take) (his|her|their|my|your|one's|its) (own )?life\b"),
    ("self-harm", r"\b(want|wish|try|tries|going) to die\b"),
    ("self-harm", r"\bself (harm|injury)\b"),
    ("drugs and alcohol", r"\bsmoke\b(?: [a-z'-]+){0,2} (weed|pot|joint|pipe|"
                          r"cigarette|cigar|crack)\b"),
    ("drugs and alcohol", r"\bget(ting)? (high|drunk|stoned|wasted)\b"),
    ("drugs and alcohol", r"\b(drink|sip|gulp)(?: [a-z'-]+){0,2} (beer|wine|vodka|whiskey|"
                          r"rum|alcohol|booze|liquor|cocktail|champagne|gin)\b"),
    ("sexual content", r"\bstrip (club|poker|tease|show)\b"),
    ("sexual content", r"\b(make out|have sex|sleep together|take off (his|her|their) clothes"
                       r"|without (any )?clothes)\b"),
    ("hate", r"\bhate (crime|speech|group)\b"),
    ("hate", r"\bwhite (power|supremacy)\b"),
)  # fmt: skip

# Words that start with a harmful word are harmful compounds, but for these.
_COMPOUND = {"gun": "weapons", "bomb": "weapons", "blood": "violence", "kill": "violence",
             "murder": "violence", "porn": "sexual content", "sex": "sexual content"}
_COMPOUND_OK = {"bloodhound", "bloodhounds", "bombastic", "killjoy", "gunnar", "gunther",
                "sextet", "sexton", "sextant"}  # fmt: skip

# A child smoking is refused; a volcano, a chimney or a dragon smoking is not.
_SMOKE_OK = {"volcano", "chimney", "dragon", "fire", "train", "campfire", "kettle",
             "engine", "bonfire", "candle", "toast", "factory", "steam"}  # fmt: skip

# -- step 3: scary creatures -------------------------------------------------------
# Picture-book characters that sound scary but are fine unless aimed at people.
_SCARY = ("ghost", "monster", "witch", "dragon", "skeleton", "troll", "ogre", "giant",
          "wolf", "spider", "shark", "bat", "goblin", "pirate", "mummy", "wizard", "spook",
          "creature", "beast", "dinosaur", "alien", "clown", "shadow", "bogeyman",
          "boogeyman", "werewolf", "vampire", "zombie", "demon", "devil", "ghoul")  # fmt: skip
# Creatures of horror: refused unless the topic says they are kind.
_HORROR_CREATURES = {"zombie", "demon", "devil", "ghoul", "vampire", "werewolf", "bogeyman",
                     "boogeyman"}  # fmt: skip
# What a scary creature must not do to people.
_MENACE = (
    "eat", "devour", "kill", "hunt", "chase", "attack", "bite", "kidnap", "snatch", "steal",
    "grab", "drag", "scare", "terrify", "frighten", "torment", "haunt", "possess", "curse",
    "trap", "hurt", "lure", "stalk", "swallow", "capture", "cook", "infect",
)  # fmt: skip
_KIND_WORDS = {
    "friendly", "kind", "nice", "gentle", "shy", "lonely", "scared", "little", "baby",
    "silly", "helpful", "friend", "friendship", "learn", "help", "lost", "sad", "sleepy",
    "cuddly", "happy", "funny", "love", "share", "dance", "sing", "giggle", "polite",
    "vegetarian", "tiny", "clumsy", "cute", "good", "hug", "smile", "bake", "play",
    "nervous", "timid", "brave", "curious", "wonder", "sorry", "apologise", "apologize",
    # pretend play: a zombie costume is a child dressing up
    "costume", "pretend", "party", "dress-up", "mask", "halloween", "toy", "puppet",
}  # fmt: skip
# Mild words: noted in the reasoning, never a refusal on their own.
_MILD = {
    "sad themes": ("die", "dead", "death", "funeral", "grave", "cry", "sick", "grief"),
    "mild peril": ("storm", "lost", "danger", "dark", "nightmare", "fire", "flood",
                   "scary", "spooky", "fight", "sword", "knife", "battle", "haunted",
                   "bully", "angry", "thief", "steal") + _SCARY,
}  # fmt: skip
_GOOD = ("friend", "kind", "brave", "share", "help", "learn", "love", "curious", "together")

_KNOWN = (
    {w for words in _ALWAYS.values() for w in words}
    | {w for words in _MILD.values() for w in words}
    | set(_MENACE)
    | _KIND_WORDS
    | set(_GOOD)
    | set(_IRREGULAR.values())
    # every word a phrase rule names ("s" and "b" are regex escapes, not words)
    | {w for _, p in _PHRASES for w in re.findall(r"(?<![\\?])[a-z]{2,}", p)}
    | {w for p in _HARMLESS for w in re.findall(r"(?<![\\?])[a-z]{2,}", p)}
    | set(re.findall(r"[a-z]{2,}", _PEOPLE))
    | {"eat", "fight", "smoke", "drink", "hunt", "cut", "hurt", "harm", "hang", "punch",
       "attack", "child", "kid", "person", "boy", "girl", "student", "human", "family",
       "star", "hoop", "shoot", "cell", "vessel", "donor", "bomb", "crack", "joint",
       "poison", "drown", "burn", "starve", "threaten", "wound", "clothe", "weed", "make",
       "baby", "toddler", "villager", "pupil", "woman", "man", "mum", "mom", "dad", "parent",
       "teacher", "classmate", "brother", "sister", "flow", "feeling", "strip",
       "want", "wish", "try", "going", "crush", "squash", "stomp", "trample", "destroy",
       "immigrant", "refugee", "migrant", "foreigner", "hate", "throw", "rock", "stone"}
)  # fmt: skip
_PENALTY = {"violence": 80, "weapons": 70, "sexual content": 100, "self-harm": 100,
            "drugs and alcohol": 70, "horror aimed at children": 70, "hate": 90}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SafetyFinding:
    """One reason the topic is refused, or a mild note: a category and its words."""

    category: str
    words: tuple[str, ...]
    blocking: bool

    def describe(self) -> str:
        return f"{self.category}: {', '.join(self.words)}"


def _harmless_blanked(text: str) -> str:
    for pattern in _HARMLESS:
        text = re.sub(rf"\b{pattern}\b", lambda m: "_" * len(m.group(0)), text)
    return text


def findings(topic: str) -> list[SafetyFinding]:
    """Every category the topic touches, blocking ones first."""
    seq = lemmas(topic)
    text = _harmless_blanked(" ".join(seq))
    words = set(text.split())
    found: dict[str, set[str]] = {}

    def add(category: str, what: str) -> None:
        found.setdefault(category, set()).add(what)

    for category, bad in _ALWAYS.items():
        for w in bad:
            if w in words:
                add(category, w)
    for w in words:  # compounds: "gunfight", "gunmen", "bloodbath"
        stem = next((p for p in _COMPOUND if w.startswith(p) and w != p), None)
        if stem and w not in _COMPOUND_OK:
            add(_COMPOUND[stem], w)
    for category, pattern in _PHRASES:
        for m in re.finditer(pattern, text):
            add(category, m.group(0))
    if words & {"smoke", "smoking"} and not words & _SMOKE_OK:
        add("drugs and alcohol", "smoking")
    kind = bool(words & _KIND_WORDS) or bool(re.search(r"\bmake friend", text))
    creatures = [w for w in seq if w in _SCARY]
    menace = "|".join(re.escape(m) for m in _MENACE)
    for creature in dict.fromkeys(creatures):
        aimed = re.search(rf"\b{creature}\b.*?\b({menace})\b{_GAP} {_PEOPLE}\b", text)
        if aimed:
            add("horror aimed at children", aimed.group(0))
        elif creature in _HORROR_CREATURES and not kind:
            add("horror aimed at children", creature)
    # A menacing act on people is horror even with no creature named ("something
    # that hunts children"); a kind word does not excuse it.
    menacing = r"\b(hunt|kidnap|snatch|stalk|haunt|terrify|lure|torment)"
    if hunted := re.search(rf"{menacing}{_GAP} {_PEOPLE}\b", text):
        add("horror aimed at children", hunted.group(0))
    out = [SafetyFinding(c, tuple(sorted(found[c])), True) for c in CATEGORIES if c in found]
    for note, mild in _MILD.items():
        named = " ".join(w for f in out for w in f.words).split()
        hits = sorted({w for w in mild if w in words} - set(named))
        if hits:
            out.append(SafetyFinding(note, tuple(hits), False))
    return out


def assess_topic(topic: str) -> ContentSafetyResult:
    """The offline verdict on ``topic`` for a story for children aged 3 to 10.

    Deterministic and rule-based (see the module docstring). The score starts
    at 100; each refusal category costs its penalty and each mild note 5. A
    topic is safe when no category refuses it (its score is then at least
    :data:`SAFE_THRESHOLD`).
    """
    found = findings(topic)
    blocking = [f for f in found if f.blocking]
    mild = [f for f in found if not f.blocking]
    score = 100 - sum(_PENALTY[f.category] for f in blocking) - 5 * len(mild)
    score = max(0, min(score, SAFE_THRESHOLD - 1) if blocking else max(score, SAFE_THRESHOLD))
    good = [w for w in _GOOD if w in set(lemmas(topic))]
    if blocking:
        reasoning = (
            "Refused: a story for young children must not be about "
            + "; ".join(f"{f.category} ({', '.join(repr(w) for w in f.words)})" for f in blocking)
            + "."
        )
    elif mild:
        reasoning = (
            "Safe: only mild themes ("
            + "; ".join(f.describe() for f in mild)
            + "), fine in a gentle children's story."
        )
    else:
        reasoning = "Safe: no concerning themes found; the topic suits young readers."
    if good and not blocking:
        reasoning += " Positive themes: " + ", ".join(good) + "."
    return ContentSafetyResult(
        is_safe=not blocking,
        safety_score=score,
        concerns=[f.describe() for f in blocking + mild],
        reasoning=reasoning,
        source="offline rules",
        reason=_reason(blocking, mild),
    )


def _reason(blocking: list[SafetyFinding], mild: list[SafetyFinding]) -> str:
    """One line for a teacher: each category found and its words, refusals first."""
    return "; ".join(f.describe() for f in blocking + mild) or "no concerning themes found"
