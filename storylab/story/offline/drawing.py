"""The offline illustrator: a picture-book scene drawn with Pillow from a structured prompt.

:func:`draw_illustration` reads the prompt with
:func:`~storylab.story.offline.prompt.parse_prompt` (the same structure the
offline writer rendered) and draws the :class:`~storylab.story.offline.prompt.Scene`:

* the **setting** and the **time of day** make the backdrop (a town's houses,
  the mountains, the seaside, a library's shelves, a night sky...);
* the **things** are drawn each in its own part of the picture;
* the **framing** decides the composition: a wide shot shows small figures in a
  big landscape, a close shot a big hero cut off at the knees; the hero stands
  left, in the centre or right, and the others across;
* the **hero** is drawn from its description (a kitten with a blue scarf, a
  girl with black hair in red clothes), never from the page's words, so it
  looks the same on every page; people are drawn as people (head, hair,
  clothes, arms and legs, and the hat of their trade).

The action sentence is not read when the labelled fields are there, and the
picture's random details are seeded by the scene, not by the text, so
rewording a story's sentences changes no pixel. The style changes the sky,
the ground and the finish, never the hero. Pillow is imported only here,
inside the functions that draw.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from dataclasses import dataclass

from storylab.story.models import STYLE_DESCRIPTIONS
from storylab.story.offline.prompt import (
    CREATURE_KINDS,
    Figure,
    Scene,
    parse_prompt,
)
from storylab.story.offline.prompt import THINGS as _PROMPT_THINGS

__all__ = ["COLOUR_RGB", "CREATURES", "THINGS", "draw_illustration", "draw_scene"]

# (sky top, sky bottom, ground) per style, and an effect.
_STYLE_LOOK: dict[
    str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int], str]
] = {
    "watercolor": ((150, 195, 230), (235, 230, 215), (150, 195, 120), "blur"),
    "digital-art": ((60, 150, 240), (170, 220, 250), (90, 185, 80), "outline"),
    "colored-pencil": ((170, 190, 200), (225, 215, 190), (140, 160, 95), "strokes"),
    "storybook-classic": ((160, 175, 180), (225, 215, 185), (135, 150, 100), "ink"),
    "anime": ((170, 200, 250), (250, 220, 235), (160, 215, 150), "sparkle"),
    "paper-cutout": ((90, 170, 220), (200, 230, 240), (110, 180, 90), "shadow"),
}
_NIGHT = ((20, 30, 70), (60, 70, 120), (45, 75, 60))
_DUSK = ((250, 170, 120), (255, 220, 170))
_DAWN = ((240, 180, 200), (255, 230, 190))

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "orange": (236, 140, 50),
    "grey": (150, 150, 158),
    "gray": (150, 150, 158),
    "white": (246, 244, 238),
    "black": (48, 46, 54),
    "red": (205, 55, 45),
    "green": (70, 165, 75),
    "purple": (140, 85, 185),
    "blue": (65, 115, 215),
    "brown": (140, 92, 55),
    "golden": (222, 172, 60),
    "yellow": (246, 208, 55),
    "pink": (240, 150, 185),
    "silver": (196, 200, 210),
}
_SKIN_RGB = {
    "light": (250, 218, 190),
    "tan": (226, 178, 135),
    "brown": (165, 110, 72),
    "dark brown": (108, 70, 46),
}
_HAIR_RGB = {
    "black": (38, 32, 34),
    "brown": (105, 66, 38),
    "red": (190, 82, 40),
    "golden": (232, 188, 88),
    "grey": (168, 168, 172),
    "white": (238, 238, 240),
}
# What a kind of creature looks like when the prompt gives no colour.
_KIND_COLOUR = {
    "fox": "orange",
    "kitten": "orange",
    "cat": "grey",
    "dragon": "green",
    "owl": "brown",
    "bear": "brown",
    "rabbit": "grey",
    "bunny": "white",
    "mouse": "grey",
    "hedgehog": "brown",
    "duck": "yellow",
    "robin": "brown",
    "robot": "grey",
    "puppy": "golden",
    "dog": "brown",
    "ghost": "white",
    "monster": "purple",
    "dinosaur": "green",
    "lion": "golden",
    "tiger": "orange",
    "wolf": "grey",
    "squirrel": "red",
    "badger": "grey",
    "unicorn": "white",
    "penguin": "black",
    "frog": "green",
    "pig": "pink",
    "bird": "blue",
    "elephant": "grey",
    "cow": "white",
    "sheep": "white",
    "goat": "white",
    "monkey": "brown",
    "hippo": "grey",
    "panda": "white",
    "koala": "grey",
    "horse": "brown",
    "pony": "golden",
    "zebra": "white",
    "giraffe": "golden",
    "deer": "brown",
    "hamster": "golden",
    "rat": "grey",
    "crocodile": "green",
    "lizard": "green",
    "chicken": "white",
    "hen": "brown",
    "parrot": "green",
    "eagle": "brown",
    "goose": "white",
    "swan": "white",
}
# Creatures drawn with another's shape (and a mark of their own).
_DRAWN_AS = {
    "lion": "cat",
    "tiger": "cat",
    "wolf": "fox",
    "squirrel": "fox",
    "badger": "bear",
    "pig": "bear",
    "frog": "mouse",
    "penguin": "owl",
    "bird": "robin",
    "elephant": "bear",
    "cow": "bear",
    "sheep": "bear",
    "goat": "bear",
    "monkey": "bear",
    "hippo": "bear",
    "panda": "bear",
    "koala": "bear",
    "hamster": "mouse",
    "rat": "mouse",
    "crocodile": "dragon",
    "lizard": "dragon",
    "chicken": "robin",
    "hen": "robin",
    "parrot": "robin",
    "eagle": "owl",
    "goose": "duck",
    "swan": "duck",
}
# Four-legged grazers drawn like a pony (only a unicorn has a horn).
_HOOFED = ("unicorn", "horse", "pony", "zebra", "giraffe", "deer")
CREATURES = CREATURE_KINDS
THINGS = _PROMPT_THINGS

_PATH = (222, 196, 140)
_WATER = (95, 160, 215)
_BRAMBLE = (38, 82, 44)
_BERRY = (70, 30, 80)
_TRUNK = (112, 76, 44)
_LEAVES = (62, 135, 66)
_APPLE = (214, 40, 40)
_WICKER = (176, 126, 66)
_SAND = (236, 214, 160)
_SNOW = (240, 244, 250)
_ROCK = (120, 96, 80)
_LAVA = (240, 96, 30)
_INK = (40, 35, 35)


@dataclass(frozen=True, slots=True)
class _Creature:
    kind: str  # one of CREATURES, or "" for someone of no known kind
    colour: tuple[int, int, int]
    accessory: str | None = None  # scarf, hat, backpack
    accessory_colour: tuple[int, int, int] = (65, 115, 215)


def _rgb(name: str, default: str) -> tuple[int, int, int]:
    return COLOUR_RGB.get(name) or COLOUR_RGB[default]


def _creature(f: Figure) -> _Creature:
    colour = _rgb(f.colour, _KIND_COLOUR.get(f.kind, "blue"))
    accessory = f.accessory or None
    return _Creature(f.kind, colour, accessory, _rgb(f.accessory_colour, "blue"))


def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """Darker (f < 1) or lighter (f > 1) by a factor, toward black or white."""
    if f <= 1:
        return tuple(int(v * f) for v in c)  # type: ignore[return-value]
    return tuple(int(v + (255 - v) * (f - 1)) for v in c)  # type: ignore[return-value]


def _mix(a, b, t: float):
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _oval(draw, cx, cy, rx, ry=None, **style) -> None:
    """An ellipse centred on (``cx``, ``cy``), radii ``rx`` and ``ry`` (a circle without ``ry``)."""
    ry = rx if ry is None else ry
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], **style)


def _oval_span(draw, cx, rx, top, bottom, **style) -> None:
    """An ellipse centred on the column ``cx``, ``rx`` either side, from ``top`` to ``bottom``."""
    draw.ellipse([cx - rx, top, cx + rx, bottom], **style)


def _dome(draw, cx, rx, top, bottom, **style) -> None:
    """The upper half of the ellipse of :func:`_oval_span`: a cap, a helmet, a head of hair."""
    draw.chord([cx - rx, top, cx + rx, bottom], 180, 360, **style)


def _peak(draw, cx, half, base_y, tip, **style) -> None:
    """A triangle on the row ``base_y``, ``half`` either side of ``cx``, its point at ``tip``."""
    draw.polygon([(cx - half, base_y), tip, (cx + half, base_y)], **style)


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def draw_illustration(prompt: str, style: str, width: int, height: int, seed: int = 0) -> bytes:
    """A picture of what ``prompt`` describes, in ``style``, as PNG bytes (deterministic)."""
    scene = parse_prompt(prompt, styles=tuple(STYLE_DESCRIPTIONS.values()))
    if scene.guessed:
        # A prompt with fields missing was guessed from its words: let its
        # words choose the details too, so two such prompts differ.
        seed_text = f"{seed}|{prompt}"
    else:
        seed_text = f"{seed}|{_scene_key(scene)}"
    return draw_scene(scene, style, width, height, seed_text)


def _scene_key(scene: Scene) -> str:
    """Everything the picture depends on: not the action sentence, not the style text."""
    return repr(
        (
            scene.hero,
            scene.others,
            scene.setting,
            scene.time,
            scene.things,
            scene.shot,
            scene.hero_at,
            scene.pose,
            scene.label,
        )
    )


# Composition per shot: horizon, hero height and foot line (fractions), the
# others' height relative to the hero's.
_SHOTS = {
    "wide": (0.50, 0.15, 0.86, 0.75),
    "medium": (0.56, 0.22, 0.92, 0.73),
    "close": (0.62, 0.46, 1.06, 0.62),
}
_HERO_X = {"left": 0.33, "centre": 0.5, "right": 0.67}


def draw_scene(scene: Scene, style: str, width: int, height: int, seed: str | int = 0) -> bytes:
    """The PNG of ``scene`` in ``style`` (a key of the style table), ``width`` x ``height``."""
    from PIL import Image, ImageDraw, ImageFilter  # Pillow is needed only here

    rng = random.Random(hashlib.sha256(f"{seed}|{style}".encode()).digest())
    sky_top, sky_bottom, ground, effect = _STYLE_LOOK.get(style, _STYLE_LOOK["watercolor"])
    parts = {w for t in scene.things for w in t.split()}
    things = set(scene.things) | parts | {_singular(w) for w in parts}
    setting, time = scene.setting, scene.time
    W, H = width, height
    unit = min(W, H)
    horizon_f, hero_f, base_f, other_f = _SHOTS.get(scene.shot, _SHOTS["medium"])
    horizon = int(H * horizon_f)
    if time == "night":
        sky_top, sky_bottom = _NIGHT[0], _NIGHT[1]
        ground = _mix(ground, _NIGHT[2], 0.7)
    elif time == "dusk":
        sky_top, sky_bottom = _DUSK
        ground = _shade(ground, 0.85)
    elif time == "dawn":
        sky_top, sky_bottom = _DAWN
    if setting == "seaside":
        ground = _SAND if time != "night" else _mix(_SAND, _NIGHT[2], 0.6)
    elif setting == "snow":
        ground = _SNOW if time != "night" else (170, 180, 205)
        if time == "day":
            sky_top, sky_bottom = (185, 205, 225), (232, 236, 242)
    elif setting == "space":
        sky_top, sky_bottom = (8, 10, 30), (30, 26, 70)
        ground = (150, 150, 162)
    elif setting == "mountains":
        ground = _mix(ground, (150, 140, 110), 0.35)
    img = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(img)
    outline = _INK if effect in ("outline", "ink") else None
    line = outline or _INK
    if setting == "library":
        _indoors(draw, W, H, horizon, unit, rng, outline, time)
    else:
        for row in range(horizon):
            t = row / max(1, horizon - 1)
            draw.line([(0, row), (W, row)], fill=_mix(sky_top, sky_bottom, t))
        _sky(draw, scene, things, W, H, horizon, unit, rng, outline, sky_top)
        _backdrop(draw, setting, things, W, H, horizon, unit, rng, outline, ground)
        draw.rectangle([0, horizon, W, H], fill=ground)
        if setting not in ("space", "seaside", "snow"):
            far = _shade(ground, 1.15)
            draw.ellipse([-W * 0.2, horizon - H * 0.06, W * 0.6, horizon + H * 0.1], fill=far)
            draw.ellipse([W * 0.4, horizon - H * 0.04, W * 1.2, horizon + H * 0.1], fill=far)
        _foreground(draw, setting, things, W, H, horizon, unit, rng, outline, ground)
    words = set(things) | {setting}
    if setting == "meadow" and not scene.guessed:
        words.add("flowers")
    if scene.pose == "holding" and "nest" in words:
        words.discard("nest")  # in the hero's arms, drawn with the hero
    _draw_things(draw, words, W, H, horizon, unit, rng, outline)
    _draw_new_things(draw, things, scene, W, H, horizon, unit, rng, outline)
    # The figures: the others across from the hero, the hero in front.
    hx = W * _HERO_X.get(scene.hero_at, 0.33)
    s = unit * hero_f
    base = H * base_f
    side = -1 if scene.hero_at == "right" else 1
    others = list(scene.others)
    for thing in ("dinosaur",):  # a subject drawn as a creature
        if thing in things and not any(o.kind == thing for o in others):
            others.append(Figure("", thing, ""))
    for i, other in enumerate(others[:3]):
        small = other.kind in ("robin", "bird", "mouse") and not other.is_person
        size = s * other_f * (0.75 if small else 1.0)
        if scene.hero is None and scene.guessed:
            ox = W * (0.7 + 0.14 * i)
            size, obase = unit * (0.12 if small else 0.16), H * 0.9
        else:
            start = 0.8 if scene.hero_at == "centre" else hx / W + side * 0.34
            ox = W * (start + side * 0.15 * i)
            obase = base - H * 0.02
        if other.kind == "dinosaur" and not other.name:
            size *= 1.6
        _draw_figure(draw, other, ox, obase, size, line, "standing", -side)
    hero = scene.hero
    if hero is None and not others:
        hero = Figure("", "", rng.choice(sorted(COLOUR_RGB)))
    if hero is not None:
        if scene.pose == "sitting":  # someone sitting is low: keep them in the picture
            base = min(base, H * 0.97)
        _draw_figure(draw, hero, hx, base, s, line, scene.pose, side)
        _held_things(draw, things, scene, hx, base, s, unit, W, H, outline)
    if scene.pose == "sleeping" and hero is not None:
        for i, z in enumerate((0.05, 0.035, 0.025)):
            x, y = hx + s * (0.35 + 0.12 * i), base - s * (1.15 + 0.12 * i)
            draw.line(
                [(x, y), (x + unit * z, y), (x, y + unit * z), (x + unit * z, y + unit * z)],
                fill=(250, 250, 255),
                width=max(1, unit // 160),
            )
    if effect == "shadow":
        img = _cutout_shadow(img)
        draw = ImageDraw.Draw(img)
    if effect == "strokes":
        for _ in range(W // 3):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            c = _shade(img.getpixel((int(x) % W, int(y) % H)), 0.9)  # type: ignore[arg-type]
            draw.line([(x, y), (x + unit * 0.02, y - unit * 0.012)], fill=c, width=1)
    elif effect == "sparkle":
        for _ in range(14):
            x, y = rng.uniform(0, W), rng.uniform(0, horizon)
            draw.polygon(_star(x, y, unit * 0.02, unit * 0.006), fill=(255, 255, 255))
    elif effect == "blur":
        img = img.filter(ImageFilter.GaussianBlur(radius=max(1, unit // 200)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _sky(draw, scene: Scene, things, W, H, horizon, unit, rng, outline, sky_top) -> None:
    night = scene.time == "night" or scene.setting == "space"
    if "sun" in things or (
        scene.time in ("day", "dawn") and "moon" not in things and scene.setting != "space"
    ):
        r = unit * 0.08
        sx, sy = (W * 0.16, H * 0.17) if scene.hero_at == "right" else (W * 0.84, H * 0.17)
        if scene.time == "dawn":
            sy = horizon - r * 0.3
        _oval(draw, sx, sy, r, fill=(255, 206, 70))
    if night or "stars" in things or "star" in things:
        for _ in range(30 if night else 12):
            x, y = rng.uniform(0, W), rng.uniform(0, horizon * 0.9)
            r = unit * rng.uniform(0.004, 0.009)
            draw.polygon(_star(x, y, r * 2.2, r * 0.8), fill=(255, 248, 200))
    if ("moon" in things or scene.time == "night") and scene.setting != "space":
        r = unit * (0.11 if scene.setting == "hill" and "telescope" in things else 0.075)
        mx, my = W * 0.78, H * 0.16
        _oval(draw, mx, my, r, fill=(246, 240, 200))
        if "crescent" in scene.action.lower() and scene.guessed:
            draw.ellipse([mx - r * 0.5, my - r * 1.1, mx + r * 1.5, my + r * 0.9], fill=sky_top)
    if "bird" in things:
        for i in range(3):
            x, y, b = W * (0.25 + 0.1 * i), H * (0.14 + 0.05 * (i % 2)), unit * 0.025
            draw.line(
                [(x - b, y - b * 0.5), (x, y), (x + b, y - b * 0.5)],
                fill=(50, 45, 60),
                width=max(2, unit // 200),
            )
    if "kite" in things:
        kx, ky, k = (W * 0.4 if scene.hero_at == "right" else W * 0.6), H * 0.22, unit * 0.06
        draw.polygon(
            [(kx, ky - k), (kx + k * 0.7, ky), (kx, ky + k * 1.2), (kx - k * 0.7, ky)],
            fill=COLOUR_RGB["red"],
            outline=outline,
        )
        draw.line(
            [(kx, ky + k * 1.2), (kx - k, ky + k * 2.5), (kx - k * 0.2, ky + k * 3.5)],
            fill=(90, 60, 40),
            width=2,
        )
    if "cloud" in things or "rain" in things:
        grey = scene.time != "night" and "rain" in things
        for cx, cy, r in ((0.3, 0.16, 0.09), (0.55, 0.12, 0.11), (0.8, 0.2, 0.08)):
            c = (170, 175, 185) if grey else (250, 250, 252)
            for dx in (-1.0, 0.0, 1.0):
                x, y, rr = W * cx + dx * unit * r, H * cy + abs(dx) * unit * r * 0.25, unit * r
                _oval(draw, x, y, rr, rr * 0.7, fill=c)
        if "rain" in things:
            for _ in range(70):
                x, y = rng.uniform(0, W), rng.uniform(H * 0.2, H * 0.95)
                d = unit * 0.03
                draw.line(
                    [(x, y), (x - d * 0.3, y + d)], fill=(90, 130, 200), width=max(1, unit // 240)
                )
    if "rainbow" in things:
        cx, cy, r = W * 0.5, horizon + H * 0.05, W * 0.42
        band = unit * 0.025
        for i, c in enumerate(
            (
                (228, 60, 50),
                (244, 150, 40),
                (246, 214, 60),
                (80, 175, 80),
                (70, 120, 220),
                (130, 80, 190),
            )
        ):
            rr = r - i * band
            draw.arc([cx - rr, cy - rr, cx + rr, cy + rr], 180, 360, fill=c, width=int(band) + 1)
    if "snowflake" in things or "snowflakes" in things or scene.setting == "snow":
        for _ in range(40):
            x, y = rng.uniform(0, W), rng.uniform(0, H * 0.95)
            r = unit * rng.uniform(0.006, 0.012)
            _oval(draw, x, y, r, fill=(255, 255, 255))
    if scene.setting == "space" or "planet" in things:
        px, py, r = W * (0.2 if scene.hero_at != "left" else 0.8), H * 0.2, unit * 0.09
        _oval(draw, px, py, r, fill=(230, 150, 90), outline=outline)
        _oval(draw, px, py, r * 1.7, r * 0.35, outline=(240, 220, 170), width=max(2, unit // 120))
        qx, qy, q = W * 0.62, H * 0.1, unit * 0.04
        _oval(draw, qx, qy, q, fill=(110, 170, 235))


def _backdrop(draw, setting, things, W, H, horizon, unit, rng, outline, ground) -> None:
    """What stands on the horizon: mountains, a town, a castle, the sea, a barn."""
    if setting == "mountains" or "volcano" in things:
        for x, h, c in (
            (0.12, 0.3, (120, 130, 150)),
            (0.88, 0.34, (110, 120, 142)),
            (0.7, 0.22, (135, 145, 165)),
        ):
            draw.polygon(
                [(W * (x - 0.22), horizon), (W * x, horizon - H * h), (W * (x + 0.22), horizon)],
                fill=c,
            )
            draw.polygon(
                [
                    (W * (x - 0.05), horizon - H * (h - 0.07)),
                    (W * x, horizon - H * h),
                    (W * (x + 0.05), horizon - H * (h - 0.07)),
                ],
                fill=(245, 245, 250),
            )
    if "volcano" in things:
        top, half = horizon - H * 0.42, W * 0.1
        cx = W * 0.5
        draw.polygon(
            [
                (cx - W * 0.36, horizon + H * 0.02),
                (cx - half, top),
                (cx + half, top),
                (cx + W * 0.36, horizon + H * 0.02),
            ],
            fill=_ROCK,
            outline=outline,
        )
        draw.polygon(
            [
                (cx - half, top),
                (cx + half, top),
                (cx + half * 0.5, top + H * 0.1),
                (cx + half * 0.1, top + H * 0.2),
                (cx - half * 0.4, top + H * 0.08),
            ],
            fill=_LAVA,
        )
        for i in range(4):  # smoke
            r = unit * (0.05 + 0.02 * i)
            sx, sy = cx + (i % 2 - 0.5) * r, top - unit * 0.06 - i * unit * 0.07
            _oval(draw, sx, sy, r, r * 0.7, fill=(200, 200, 205))
        for _ in range(5):  # glowing drops
            x, y, r = cx + rng.uniform(-1, 1) * half, top - rng.uniform(0, 0.1) * H, unit * 0.012
            _oval(draw, x, y, r, fill=(255, 170, 40))
    if setting == "town":
        roofs = ((172, 62, 50), (70, 90, 150), (90, 130, 80), (150, 80, 120))
        walls = ((232, 204, 160), (240, 226, 200), (215, 190, 170), (225, 215, 180))
        for i, x in enumerate((0.0, 0.24, 0.52, 0.78)):
            w, h = W * 0.2, H * rng.uniform(0.16, 0.24)
            x0, y1 = W * x + W * 0.01, horizon + H * 0.03
            draw.rectangle([x0, y1 - h, x0 + w, y1], fill=walls[i], outline=outline)
            draw.polygon(
                [(x0 - w * 0.06, y1 - h), (x0 + w / 2, y1 - h - H * 0.1), (x0 + w * 1.06, y1 - h)],
                fill=roofs[i],
                outline=outline,
            )
            for wx in (0.2, 0.6):
                lit = (250, 220, 120) if rng.random() < 0.7 else (120, 160, 200)
                draw.rectangle(
                    [x0 + w * wx, y1 - h * 0.75, x0 + w * (wx + 0.2), y1 - h * 0.45],
                    fill=lit,
                    outline=outline or (90, 70, 60),
                )
    if setting == "castle" or "castle" in things:
        x0, x1, top = W * 0.55, W * 0.9, horizon - H * 0.22
        c = (190, 185, 175)
        draw.rectangle([x0, top, x1, horizon + H * 0.02], fill=c, outline=outline)
        for tx in (x0 - W * 0.03, x1 - W * 0.05):
            draw.rectangle(
                [tx, top - H * 0.1, tx + W * 0.08, horizon + H * 0.02], fill=c, outline=outline
            )
            draw.polygon(
                [
                    (tx - W * 0.01, top - H * 0.1),
                    (tx + W * 0.04, top - H * 0.2),
                    (tx + W * 0.09, top - H * 0.1),
                ],
                fill=(70, 90, 160),
            )
        draw.rounded_rectangle(
            [
                (x0 + x1) / 2 - W * 0.03,
                horizon - H * 0.1,
                (x0 + x1) / 2 + W * 0.03,
                horizon + H * 0.02,
            ],
            radius=W * 0.03,
            fill=(100, 70, 45),
        )
    if setting == "farm" or "barn" in things:
        x0, y1, w = W * 0.62, horizon + H * 0.04, W * 0.26
        draw.rectangle([x0, y1 - w * 0.55, x0 + w, y1], fill=(180, 50, 40), outline=outline)
        draw.polygon(
            [
                (x0 - w * 0.05, y1 - w * 0.55),
                (x0 + w / 2, y1 - w * 0.85),
                (x0 + w * 1.05, y1 - w * 0.55),
            ],
            fill=(120, 40, 35),
            outline=outline,
        )
        draw.rectangle([x0 + w * 0.35, y1 - w * 0.35, x0 + w * 0.65, y1], fill=(245, 240, 230))
    if setting == "seaside":
        draw.rectangle([0, horizon - H * 0.12, W, horizon], fill=_WATER)
        for i in range(int(W / (unit * 0.08)) + 1):
            x = i * unit * 0.08
            draw.arc(
                [x, horizon - H * 0.1, x + unit * 0.08, horizon - H * 0.06],
                180,
                360,
                fill=(235, 245, 255),
                width=max(1, unit // 200),
            )


def _foreground(draw, setting, things, W, H, horizon, unit, rng, outline, ground) -> None:
    """Marks on the ground that say where we are."""
    if setting == "seaside":
        draw.polygon(
            [(0, horizon), (W, horizon), (W, horizon + H * 0.08), (0, horizon + H * 0.12)],
            fill=_WATER,
        )
        for i in range(int(W / (unit * 0.1)) + 1):
            x = i * unit * 0.1
            y = horizon + H * (0.12 - 0.04 * i * unit * 0.1 / W)
            draw.arc(
                [x, y - H * 0.03, x + unit * 0.1, y + H * 0.01],
                0,
                180,
                fill=(245, 250, 255),
                width=max(2, unit // 150),
            )
    elif setting == "space":
        for _ in range(7):
            x, y = rng.uniform(0, W), rng.uniform(horizon + H * 0.05, H * 0.95)
            r = unit * rng.uniform(0.02, 0.05)
            _oval(draw, x, y, r, r * 0.4, fill=(120, 120, 132))
    elif setting == "snow":
        for _ in range(6):
            x, y = rng.uniform(0, W), rng.uniform(horizon + H * 0.05, H * 0.95)
            r = unit * rng.uniform(0.05, 0.1)
            _oval(draw, x, y, r, r * 0.25, fill=(225, 232, 245))
    elif setting == "town":
        draw.rectangle([0, horizon + H * 0.05, W, horizon + H * 0.12], fill=(170, 168, 165))
    elif setting in ("garden", "farm"):
        y = horizon + H * 0.07
        draw.line([(0, y), (W, y)], fill=(245, 240, 230), width=max(2, unit // 120))
        for i in range(int(W / (unit * 0.06)) + 1):
            x = i * unit * 0.06
            draw.rectangle(
                [x, y - H * 0.06, x + unit * 0.02, y + H * 0.02],
                fill=(245, 240, 230),
                outline=outline,
            )


def _indoors(draw, W, H, floor, unit, rng, outline, time) -> None:
    """A library: a warm wall of bookshelves, a window, a wooden floor."""
    wall = (236, 214, 180) if time != "night" else (150, 130, 120)
    draw.rectangle([0, 0, W, floor], fill=wall)
    draw.rectangle([0, floor, W, H], fill=(170, 120, 80))
    for i in range(int(W / (unit * 0.15)) + 1):
        x = i * unit * 0.15
        draw.line([(x, floor), (x - unit * 0.1, H)], fill=(150, 104, 68), width=1)
    # A window with the sky or the night in it.
    wx0, wy0, ww = W * 0.42, H * 0.08, W * 0.16
    glass = (150, 200, 240) if time in ("day", "dawn") else (30, 40, 90)
    draw.rectangle(
        [wx0, wy0, wx0 + ww, wy0 + ww * 0.9],
        fill=glass,
        outline=(120, 80, 50),
        width=max(2, unit // 80),
    )
    draw.line([(wx0 + ww / 2, wy0), (wx0 + ww / 2, wy0 + ww * 0.9)], fill=(120, 80, 50), width=2)
    # Shelves full of books, left and right of the window.
    spines = ((190, 60, 50), (60, 100, 170), (70, 140, 80), (220, 170, 60), (130, 80, 150))
    for x0, x1 in ((W * 0.02, W * 0.38), (W * 0.62, W * 0.98)):
        draw.rectangle([x0, H * 0.06, x1, floor], fill=(125, 85, 50), outline=outline)
        shelf_h = (floor - H * 0.06) / 4
        for shelf in range(4):
            y1 = H * 0.06 + shelf_h * (shelf + 1) - shelf_h * 0.05
            y0 = y1 - shelf_h * 0.8
            x = x0 + 4
            while x < x1 - 8:
                bw = unit * rng.uniform(0.012, 0.025)
                top = y0 + rng.uniform(0, shelf_h * 0.2)
                draw.rectangle([x, top, x + bw, y1], fill=rng.choice(spines))
                x += bw + 1
            draw.line([(x0, y1 + 1), (x1, y1 + 1)], fill=(95, 62, 36), width=3)


def _draw_new_things(draw, things, scene: Scene, W, H, horizon, unit, rng, outline) -> None:
    """The things of the subject stories, each in its own place."""
    line = outline or _INK
    far = W * (0.18 if scene.hero_at == "right" else 0.82)  # across from the hero
    if "rocket" in things:
        rx, base, h = far, horizon + H * 0.05, H * 0.42
        draw.polygon(
            [
                (rx - h * 0.12, base),
                (rx - h * 0.12, base - h * 0.7),
                (rx, base - h),
                (rx + h * 0.12, base - h * 0.7),
                (rx + h * 0.12, base),
            ],
            fill=(235, 235, 240),
            outline=line,
        )
        for side in (-1, 1):
            draw.polygon(
                [
                    (rx + side * h * 0.12, base - h * 0.25),
                    (rx + side * h * 0.25, base),
                    (rx + side * h * 0.12, base),
                ],
                fill=(210, 60, 50),
                outline=line,
            )
        r = h * 0.06
        _oval(draw, rx, base - h * 0.62, r, fill=(110, 170, 235), outline=line)
        _peak(draw, rx, h * 0.08, base, (rx, base + h * 0.15), fill=(255, 170, 40))
    if "train" in things:
        y1 = horizon + H * 0.1
        draw.line([(0, y1 + 3), (W, y1 + 3)], fill=(90, 80, 75), width=max(2, unit // 100))
        x0 = W * (0.5 if scene.hero_at != "right" else 0.05)
        cw, ch = W * 0.13, H * 0.1
        for i, c in enumerate(((40, 110, 70), (200, 70, 50), (60, 100, 180))):
            x = x0 + i * (cw + 4)
            draw.rounded_rectangle([x, y1 - ch, x + cw, y1], radius=4, fill=c, outline=line)
            draw.rectangle(
                [x + cw * 0.2, y1 - ch * 0.8, x + cw * 0.8, y1 - ch * 0.45], fill=(230, 240, 250)
            )
            for wx in (0.25, 0.75):
                r = ch * 0.15
                _oval(draw, x + cw * wx, y1, r, fill=(40, 40, 45))
        draw.rectangle([x0 + cw * 0.1, y1 - ch * 1.5, x0 + cw * 0.3, y1 - ch], fill=(40, 40, 45))
    if "bridge" in things:
        y = horizon + H * 0.02
        draw.arc(
            [W * 0.1, y - H * 0.1, W * 0.45, y + H * 0.1],
            180,
            360,
            fill=(150, 110, 80),
            width=max(3, unit // 60),
        )
    if "boat" in things:
        bx, by, b = (
            W * (0.75 if scene.hero_at != "right" else 0.25),
            horizon - H * 0.05,
            unit * 0.08,
        )
        draw.polygon(
            [
                (bx - b, by),
                (bx + b, by),
                (bx + b * 0.7, by + b * 0.4),
                (bx - b * 0.7, by + b * 0.4),
            ],
            fill=(170, 90, 50),
            outline=line,
        )
        draw.line([(bx, by), (bx, by - b * 1.4)], fill=(90, 60, 40), width=2)
        draw.polygon(
            [(bx, by - b * 1.4), (bx + b * 0.8, by - b * 0.2), (bx, by - b * 0.2)],
            fill=(250, 250, 245),
            outline=line,
        )
    if "fish" in things:
        for i in range(3):
            fx, fy, f = W * (0.15 + 0.25 * i), horizon + H * 0.06, unit * 0.03
            c = ((240, 140, 40), (90, 170, 220), (240, 200, 60))[i]
            _oval(draw, fx, fy, f, f * 0.5, fill=c, outline=line)
            draw.polygon(
                [(fx + f, fy), (fx + f * 1.6, fy - f * 0.5), (fx + f * 1.6, fy + f * 0.5)], fill=c
            )
    if "shell" in things:
        for sx in (0.1, 0.9, 0.55):
            x, y, r = W * sx, H * 0.93, unit * 0.03
            draw.pieslice(
                [x - r, y - r, x + r, y + r], 180, 360, fill=(250, 200, 190), outline=line
            )
    if "hive" in things:
        x, base, r = far, horizon + H * 0.12, unit * 0.12
        draw.rectangle([x - r * 0.1, base - r * 0.2, x + r * 0.1, base + H * 0.05], fill=_TRUNK)
        for i in range(4):
            rr = r * (1 - 0.18 * i)
            y = base - r * 0.4 - i * r * 0.38
            _oval(draw, x, y, rr, r * 0.25, fill=(230, 180, 60), outline=(170, 120, 40))
        _oval_span(draw, x, r * 0.15, base - r * 0.55, base - r * 0.3, fill=(60, 40, 20))
    if "bee" in things:
        for _ in range(6):
            x, y, b = rng.uniform(0.1, 0.9) * W, rng.uniform(0.15, 0.5) * H, unit * 0.018
            _oval(draw, x, y, b, b * 0.7, fill=(246, 208, 55), outline=line)
            draw.line([(x, y - b * 0.7), (x, y + b * 0.7)], fill=(30, 25, 25), width=2)
            draw.ellipse([x - b * 0.6, y - b * 1.6, x + b * 0.2, y - b * 0.5], fill=(230, 240, 250))
    if "sunflower" in things:
        for i, sx in enumerate((0.08, 0.9, 0.78)):
            x, base = W * sx, H * 0.95
            top = horizon - H * (0.18 - 0.05 * i)
            draw.line([(x, base), (x, top)], fill=(70, 140, 60), width=max(3, unit // 70))
            r = unit * 0.05
            for a in range(12):
                ang = a * math.pi / 6
                px, py = x + math.cos(ang) * r * 1.2, top + math.sin(ang) * r * 1.2
                _oval(draw, px, py, r * 0.45, fill=(250, 200, 40))
            _oval(draw, x, top, r * 0.8, fill=(110, 70, 30))
    if "seedling" in things:
        for sx in (0.42, 0.55, 0.68, 0.81):
            x, y = W * sx, horizon + H * 0.2
            _oval(draw, x, y, unit * 0.04, unit * 0.012, fill=(110, 75, 45))
            draw.line([(x, y), (x, y - unit * 0.05)], fill=(70, 150, 60), width=max(2, unit // 150))
            for side in (-1, 1):
                _oval_span(
                    draw,
                    x + side * unit * 0.025,
                    unit * 0.018,
                    y - unit * 0.065,
                    y - unit * 0.04,
                    fill=(90, 180, 70),
                )
    if "leaves" in things or "leaf" in things:
        for _ in range(28):
            x, y = rng.uniform(0, W), rng.uniform(0.1, 0.98) * H
            r = unit * rng.uniform(0.01, 0.018)
            c = rng.choice(((220, 120, 40), (200, 60, 40), (235, 185, 60), (170, 90, 40)))
            _oval(draw, x, y, r * 1.4, r * 0.7, fill=c)
    if "butterfly" in things:
        for i in range(3):
            x, y, b = W * (0.3 + 0.2 * i), H * (0.25 + 0.08 * (i % 2)), unit * 0.03
            c = ((240, 150, 60), (120, 160, 240), (230, 100, 170))[i]
            for side in (-1, 1):
                draw.ellipse(_box(x + side * b * 0.1, y - b, x + side * b * 1.1, y), fill=c)
                wing = _box(x + side * b * 0.1, y - b * 0.1, x + side * b * 0.8, y + b * 0.6)
                draw.ellipse(wing, fill=c)
            draw.line([(x, y - b), (x, y + b * 0.6)], fill=(40, 30, 30), width=2)
    if "caterpillar" in things:
        x0, y = W * 0.55, H * 0.95
        for i in range(6):
            r = unit * 0.022
            x = x0 + i * r * 1.5
            _oval_span(
                draw,
                x,
                r,
                y - r - (i % 2) * r * 0.4,
                y + r - (i % 2) * r * 0.4,
                fill=(120, 190, 60),
                outline=line,
            )
    if "telescope" in things:
        x, base, t = far, H * 0.92, unit * 0.18
        for dx in (-0.3, 0.0, 0.3):
            draw.line([(x, base - t * 0.6), (x + dx * t, base)], fill=(90, 70, 50), width=3)
        draw.polygon(
            [
                (x - t * 0.5, base - t * 0.5),
                (x + t * 0.45, base - t * 1.05),
                (x + t * 0.52, base - t * 0.92),
                (x - t * 0.45, base - t * 0.38),
            ],
            fill=(70, 90, 150),
            outline=line,
        )
    if "tent" in things:
        x, base, t = far, horizon + H * 0.12, unit * 0.16
        _peak(draw, x, t, base, (x, base - t), fill=(230, 120, 50), outline=line)
    if "ladder" in things:
        x, base, t = W * 0.5, H * 0.95, H * 0.5
        for dx in (-0.04, 0.04):
            draw.line(
                [(x + dx * W, base), (x + dx * W + W * 0.03, base - t)],
                fill=(150, 110, 70),
                width=3,
            )
        for i in range(1, 7):
            y = base - t * i / 7
            draw.line(
                [(x - W * 0.04 + W * 0.03 * i / 7, y), (x + W * 0.04 + W * 0.03 * i / 7, y)],
                fill=(150, 110, 70),
                width=2,
            )
    if "fire engine" in things:
        x0, y1 = W * (0.55 if scene.hero_at != "right" else 0.05), horizon + H * 0.16
        w, h = W * 0.36, H * 0.14
        draw.rectangle([x0, y1 - h, x0 + w, y1], fill=(210, 40, 35), outline=line)
        draw.rectangle(
            [x0 + w * 0.7, y1 - h * 1.35, x0 + w, y1 - h * 0.4], fill=(210, 40, 35), outline=line
        )
        draw.rectangle(
            [x0 + w * 0.76, y1 - h * 1.25, x0 + w * 0.95, y1 - h * 0.8], fill=(200, 230, 250)
        )
        draw.line(
            [(x0, y1 - h * 1.1), (x0 + w * 0.65, y1 - h * 1.1)], fill=(220, 220, 225), width=3
        )
        for wx in (0.18, 0.8):
            r = h * 0.28
            _oval(draw, x0 + w * wx, y1, r, fill=(40, 40, 45))
    if "board" in things or "book" in things and scene.label:
        # A board with the subject's name, in the middle of the back wall.
        bx0, by0, bx1, by1 = W * 0.3, H * 0.42, W * 0.7, horizon - H * 0.02
        if scene.setting == "library":
            draw.rectangle(
                [bx0, by0, bx1, by1],
                fill=(40, 70, 55),
                outline=(120, 80, 50),
                width=max(2, unit // 80),
            )
            if scene.label:
                _write(
                    draw,
                    scene.label,
                    (bx0 + bx1) / 2,
                    (by0 + by1) / 2,
                    bx1 - bx0,
                    by1 - by0,
                    (245, 245, 235),
                )
    if "book" in things and scene.setting == "library":
        # A big open book on a table.
        tx, ty, tw = W * 0.5, horizon + H * 0.14, W * 0.24
        draw.rectangle([tx - tw, ty, tx + tw, ty + H * 0.04], fill=(140, 95, 60), outline=line)
        for side in (-1, 1):
            draw.polygon(
                [
                    (tx, ty - H * 0.01),
                    (tx + side * tw * 0.6, ty - H * 0.04),
                    (tx + side * tw * 0.62, ty),
                    (tx, ty + H * 0.01),
                ],
                fill=(250, 248, 240),
                outline=line,
            )


def _write(draw, text: str, cx, cy, w, h, fill) -> None:
    """``text`` centred in a box, as large as fits (Pillow's own font)."""
    size = max(8, int(h * 0.4))
    font = _font(size)
    while size > 8:
        box = draw.textbbox((0, 0), text, font=font)
        if box[2] - box[0] <= w * 0.9:
            break
        size -= 2
        font = _font(size)
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(
        (cx - (box[2] - box[0]) / 2, cy - (box[3] - box[1]) / 2 - box[1]),
        text,
        font=font,
        fill=fill,
    )


def _font(size: int):
    """Pillow's built-in font at ``size`` (before Pillow 10.1 it has one size only)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _held_things(draw, things, scene: Scene, hx, base, s, unit, W, H, outline) -> None:
    """What the hero carries or stands beside: a basket, a lantern, a notebook, an umbrella."""
    side = -1 if scene.hero_at == "right" else 1
    if "basket" in things:
        _basket(draw, hx + side * W * 0.14, base - s * 0.09, s * 0.32, "apple" in things, outline)
    if "lantern" in things:
        lx, ly, r = hx - side * s * 0.6, base - s * 0.82, s * 0.16
        _oval(draw, lx, ly, r * 2, fill=(255, 236, 150))
        draw.rectangle(
            [lx - r * 0.6, ly - r, lx + r * 0.6, ly + r], fill=(250, 200, 60), outline=(90, 60, 30)
        )
    if "feather" in things:
        fx, fy, f = hx - side * s * 0.6, base - s * 0.6, s * 0.23
        _oval(draw, fx, fy, f * 0.3, f, fill=COLOUR_RGB["red"])
        draw.line([(fx, fy - f), (fx, fy + f * 1.3)], fill=(90, 40, 30), width=2)
    if "notebook" in things and scene.pose in ("holding", "sitting", "standing"):
        nx, ny, n = hx + side * s * 0.42, base - s * 0.55, s * 0.16
        draw.rectangle(
            [nx - n, ny - n * 1.2, nx + n, ny + n * 1.2],
            fill=(250, 248, 235),
            outline=outline or (60, 60, 80),
        )
        for i in range(1, 4):
            y = ny - n * 1.2 + i * n * 0.6
            draw.line([(nx - n * 0.7, y), (nx + n * 0.7, y)], fill=(120, 140, 200), width=1)
    if "nest" in things and scene.pose == "holding":
        nx, ny, n = hx + side * s * 0.3, base - s * 0.55, s * 0.28
        _oval_span(
            draw, nx, n, ny - n * 0.4, ny + n * 0.5, fill=(120, 84, 50), outline=(80, 55, 30)
        )
        for i in range(4):
            y = ny - n * 0.1 + i * n * 0.12
            draw.line([(nx - n, y), (nx + n, y - n * 0.1)], fill=(90, 62, 38), width=1)
    if "umbrella" in things:
        ux, uy, u = hx + side * s * 0.15, base - s * 1.35, s * 0.55
        draw.pieslice(
            [ux - u, uy - u * 0.6, ux + u, uy + u * 0.6],
            180,
            360,
            fill=(220, 60, 90),
            outline=outline,
        )
        draw.line([(ux, uy), (ux, uy + s * 0.6)], fill=(60, 50, 50), width=max(2, int(s * 0.03)))


def _draw_figure(
    draw, f: Figure, cx: float, base: float, s: float, line, pose: str, facing: int
) -> None:
    """Anyone in a picture, standing with their feet at (``cx``, ``base``), about ``s`` tall."""
    if f.is_person:
        # A person is as tall as an animal's body and head together (s is a body's size).
        tall = s * (2.0 if f.kind == "giant" else 1.5)
        _draw_person(draw, f, cx, base, tall, line, pose, facing)
    elif f.kind == "ghost":
        _draw_ghost(draw, _creature(f), cx, base, s, line, pose)
    elif f.kind == "monster":
        _draw_monster(draw, _creature(f), cx, base, s, line)
    elif f.kind == "dinosaur":
        _draw_dinosaur(draw, _creature(f), cx, base, s, line, facing)
    elif f.kind in _HOOFED:
        _draw_hoofed(draw, _creature(f), cx, base, s, line, facing)
    else:
        c = _creature(f)
        drawn = _Creature(_DRAWN_AS.get(f.kind, f.kind), c.colour, c.accessory, c.accessory_colour)
        if f.kind == "lion":  # a mane behind the head
            mx, my, r = cx, base - s * 1.13, s * 0.5
            _oval(draw, mx, my, r, fill=(170, 100, 40), outline=line)
        _draw_creature(draw, drawn, cx, base, s, line)
        if f.kind == "tiger":
            for i in range(4):
                x = cx - s * 0.25 + i * s * 0.16
                draw.line(
                    [(x, base - s * 0.85), (x + s * 0.05, base - s * 0.55)],
                    fill=(40, 30, 30),
                    width=max(2, int(s * 0.04)),
                )
        _marks(draw, f.kind, c, cx, base, s, line)
        if f.kind == "pig":
            hx, hy, hr = cx, base - s * 0.95 - s * 0.176, s * 0.32
            _oval_span(
                draw,
                hx,
                hr * 0.3,
                hy + hr * 0.1,
                hy + hr * 0.45,
                fill=_shade(c.colour, 0.85),
                outline=line,
            )


_GOWNS = ("princess", "queen", "witch", "fairy", "grandma")
_LONG_HAIR = ("girl", "princess", "queen", "witch", "fairy", "grandma", "nurse")
_OLD = ("grandma", "grandpa", "king", "queen", "wizard")


def _draw_person(draw, f: Figure, cx, base, s, line, pose: str, facing: int) -> None:
    """A person: head, hair, clothes, arms and legs, and the hat of their trade."""
    skin = _SKIN_RGB.get(f.skin, _SKIN_RGB["tan"])
    hair = _HAIR_RGB.get(f.hair, _HAIR_RGB["brown"])
    cloth = _rgb(f.colour, "blue")
    dark = _shade(cloth, 0.7)
    child = f.kind in ("girl", "boy", "child") or "little" in f.traits
    w = max(1, int(s * 0.012))
    r = s * (0.15 if child else 0.12)
    top = base - s + (s * 0.22 if pose == "sitting" else 0)
    hx, hy = cx, top + r * 1.05
    ty = hy + r * 0.95  # shoulders
    hip = base - s * (0.2 if pose == "sitting" else 0.38)
    sw = s * 0.15
    gown = f.kind in _GOWNS or (f.kind == "girl" and len(f.name) % 2 == 0)
    long_hair = f.kind in _LONG_HAIR
    # Behind the body: a backpack, wings, long hair.
    if f.accessory == "backpack":
        box = _box(cx - facing * sw * 1.6, ty + s * 0.02, cx - facing * sw * 0.7, hip - s * 0.04)
        col = _rgb(f.accessory_colour, "red")
        draw.rounded_rectangle(box, radius=s * 0.04, fill=col, outline=line)
    if f.kind == "fairy":
        for side in (-1, 1):
            box = _box(cx + side * sw * 0.5, ty - s * 0.08, cx + side * sw * 2.6, hip)
            draw.ellipse(box, fill=(220, 235, 250), outline=line)
    if long_hair and f.kind != "grandma":
        draw.rounded_rectangle(
            [hx - r * 1.15, hy - r * 0.9, hx + r * 1.15, hy + r * 1.9], radius=r * 0.8, fill=hair
        )
    # Legs and shoes.
    leg = s * 0.075
    if pose == "sitting":
        # Sitting on the ground, knees up: a thigh forward, a shin down, a shoe.
        legs_col = skin if gown else dark
        for dx in (0.0, leg * 0.9):
            knee = cx + facing * (s * 0.2 + dx)
            draw.rounded_rectangle(
                _box(cx, hip - leg, knee + facing * leg * 0.4, hip),
                radius=leg * 0.4,
                fill=legs_col,
                outline=line,
            )
            draw.rectangle(
                _box(knee - leg / 2, hip - leg / 2, knee + leg / 2, base - s * 0.03),
                fill=legs_col,
                outline=line,
            )
            draw.ellipse(
                _box(knee - leg * 0.6, base - s * 0.06, knee + facing * leg * 1.3, base + s * 0.01),
                fill=(60, 45, 40),
            )
    else:
        spread = s * (0.09 if pose == "walking" else 0.0)
        legs_col = skin if gown else dark
        for side in (-1, 1):
            x = cx + side * s * 0.065
            x2 = x + side * spread
            draw.polygon(
                [
                    (x - leg / 2, hip),
                    (x + leg / 2, hip),
                    (x2 + leg / 2, base - s * 0.03),
                    (x2 - leg / 2, base - s * 0.03),
                ],
                fill=legs_col,
                outline=line,
            )
            draw.ellipse(
                [
                    x2 - leg * 0.9 + side * leg * 0.3,
                    base - s * 0.06,
                    x2 + leg * 0.9 + side * leg * 0.3,
                    base + s * 0.01,
                ],
                fill=(60, 45, 40),
            )
    # The body: a gown to the knees or a jacket to the hips.
    if gown:
        bottom = base - s * (0.14 if pose != "sitting" else 0.05)
        draw.polygon(
            [
                (cx - sw * 0.85, ty),
                (cx + sw * 0.85, ty),
                (cx + s * 0.26, bottom),
                (cx - s * 0.26, bottom),
            ],
            fill=cloth,
            outline=line,
        )
    else:
        draw.rounded_rectangle(
            [cx - sw, ty, cx + sw, hip + s * 0.02], radius=s * 0.05, fill=cloth, outline=line
        )
        draw.line(
            [(cx - sw, hip - s * 0.01), (cx + sw, hip - s * 0.01)],
            fill=dark,
            width=max(1, int(s * 0.02)),
        )
    if f.kind == "firefighter":
        for y in (ty + s * 0.14, hip - s * 0.05):
            draw.line(
                [(cx - sw, y), (cx + sw, y)], fill=(250, 235, 90), width=max(2, int(s * 0.025))
            )
    if f.kind in ("doctor", "scientist", "chef", "baker"):
        draw.line([(cx, ty), (cx, hip)], fill=_shade(cloth, 0.8), width=max(1, int(s * 0.015)))
    if f.kind == "knight":
        draw.polygon(
            [(cx - sw * 0.6, ty + s * 0.03), (cx + sw * 0.6, ty + s * 0.03), (cx, hip)],
            fill=(200, 50, 50),
        )
    # Arms, by pose, ending in hands.
    arm = max(2, int(s * 0.06))
    shoulders = {-1: (cx - sw * 0.9, ty + s * 0.04), 1: (cx + sw * 0.9, ty + s * 0.04)}
    hands = {-1: (cx - s * 0.22, hip + s * 0.01), 1: (cx + s * 0.22, hip + s * 0.01)}
    if pose == "waving":
        hands[facing] = (cx + facing * s * 0.3, hy - r * 0.8)
    elif pose == "reaching":
        hands[facing] = (cx + facing * s * 0.34, ty - s * 0.14)
        hands[-facing] = (cx + facing * s * 0.14, ty - s * 0.2)
    elif pose == "pointing":
        hands[facing] = (cx + facing * s * 0.42, ty + s * 0.02)
    elif pose in ("holding", "sitting"):
        hands = {
            -1: (cx - s * 0.02 + facing * s * 0.16, ty + s * 0.2),
            1: (cx + s * 0.02 + facing * s * 0.2, ty + s * 0.18),
        }
    elif pose == "climbing":
        hands = {-1: (cx - s * 0.16, hy - r * 1.5), 1: (cx + s * 0.16, hy - r * 1.4)}
    for side in (-1, 1):
        (x0, y0), (x1, y1) = shoulders[side], hands[side]
        draw.line([(x0, y0), (x1, y1)], fill=_shade(cloth, 0.9), width=arm)
        hr = s * 0.038
        _oval(draw, x1, y1, hr, fill=skin, outline=line)
    if f.accessory == "scarf":
        col = _rgb(f.accessory_colour, "red")
        draw.rounded_rectangle(
            [hx - r * 0.85, ty - r * 0.15, hx + r * 0.85, ty + r * 0.3],
            radius=r * 0.15,
            fill=col,
            outline=line,
        )
        draw.rectangle([hx + r * 0.25, ty, hx + r * 0.6, ty + r * 1.2], fill=col, outline=line)
    # The head and the face.
    draw.rectangle([hx - r * 0.3, hy + r * 0.7, hx + r * 0.3, ty + r * 0.1], fill=skin)
    if f.kind == "knight":
        _oval_span(
            draw,
            hx,
            r * 1.08,
            hy - r * 1.1,
            hy + r * 1.05,
            fill=COLOUR_RGB["silver"],
            outline=line,
            width=w,
        )
        draw.rounded_rectangle(
            [hx - r * 0.7, hy - r * 0.45, hx + r * 0.7, hy + r * 0.75], radius=r * 0.3, fill=skin
        )
        draw.polygon(
            [
                (hx, hy - r * 1.1),
                (hx - facing * r * 0.9, hy - r * 1.9),
                (hx - facing * r * 0.3, hy - r * 1.0),
            ],
            fill=(210, 50, 50),
        )
    else:
        _oval(draw, hx, hy, r, fill=skin, outline=line, width=w)
    er = r * 0.12
    for side in (-1, 1):
        ex, ey = hx + side * r * 0.36, hy - r * 0.02
        if pose == "sleeping":
            draw.arc(
                [ex - er * 1.4, ey - er, ex + er * 1.4, ey + er],
                0,
                180,
                fill=(40, 30, 30),
                width=max(1, int(r * 0.08)),
            )
        else:
            _oval(draw, ex, ey, er, er * 1.25, fill=(35, 28, 30))
        cr = r * 0.15
        draw.ellipse(
            [
                ex - cr + side * r * 0.12,
                ey + r * 0.28 - cr * 0.6,
                ex + cr + side * r * 0.12,
                ey + r * 0.28 + cr * 0.6,
            ],
            fill=(240, 150, 150),
        )
    draw.arc(
        [hx - r * 0.35, hy + r * 0.15, hx + r * 0.35, hy + r * 0.6],
        20,
        160,
        fill=(120, 50, 50),
        width=max(1, int(r * 0.09)),
    )
    if f.kind in ("grandma", "grandpa"):
        for side in (-1, 1):
            ex, ey, gr = hx + side * r * 0.36, hy - r * 0.02, r * 0.24
            _oval(draw, ex, ey, gr, outline=(60, 50, 50), width=max(1, int(r * 0.07)))
    # Hair on top, then the hat of the trade.
    if f.kind == "grandpa":
        for side in (-1, 1):
            _oval_span(draw, hx + side * r * 0.95, r * 0.25, hy - r * 0.5, hy + r * 0.2, fill=hair)
    elif f.kind == "grandma":
        _dome(draw, hx, r * 1.05, hy - r * 1.1, hy + r * 0.5, fill=hair)
        _oval_span(draw, hx, r * 0.45, hy - r * 1.65, hy - r * 0.8, fill=hair)
    elif f.kind != "knight":
        _dome(draw, hx, r * 1.06, hy - r * 1.12, hy + r * 0.45, fill=hair)
    _headgear(draw, f, hx, hy, r, line, facing)
    if f.kind == "astronaut":
        gr = r * 1.5
        _oval(draw, hx, hy, gr, outline=(170, 210, 240), width=max(2, int(r * 0.12)))
        draw.arc(
            [hx - gr * 0.8, hy - gr * 0.8, hx + gr * 0.4, hy + gr * 0.4],
            200,
            250,
            fill=(255, 255, 255),
            width=max(2, int(r * 0.12)),
        )


def _box(x0, y0, x1, y1) -> list[float]:
    """A box Pillow accepts whichever way round its corners were computed (a figure facing
    left mirrors its coordinates)."""
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _headgear(draw, f: Figure, hx, hy, r, line, facing: int) -> None:
    kind = f.kind
    if kind == "firefighter":
        red = (205, 40, 35)
        _dome(draw, hx, r * 1.15, hy - r * 1.35, hy + r * 0.5, fill=red, outline=line)
        draw.rounded_rectangle(
            [hx - r * 1.45, hy - r * 0.5, hx + r * 1.45, hy - r * 0.3],
            radius=r * 0.1,
            fill=red,
            outline=line,
        )
        _oval_span(draw, hx, r * 0.22, hy - r * 1.0, hy - r * 0.6, fill=(250, 210, 60))
    elif kind in ("princess", "queen", "king", "prince"):
        h = r * (0.9 if kind in ("king", "queen") else 0.6)
        y = hy - r * 0.85
        pts = [
            (hx - r * 0.7, y),
            (hx - r * 0.7, y - h),
            (hx - r * 0.35, y - h * 0.5),
            (hx, y - h),
            (hx + r * 0.35, y - h * 0.5),
            (hx + r * 0.7, y - h),
            (hx + r * 0.7, y),
        ]
        draw.polygon(pts, fill=(240, 196, 60), outline=line or (180, 130, 30))
    elif kind in ("witch", "wizard"):
        col = (60, 45, 80) if kind == "witch" else (70, 70, 170)
        _oval_span(draw, hx, r * 1.6, hy - r * 0.95, hy - r * 0.55, fill=col)
        _peak(
            draw,
            hx,
            r * 0.8,
            hy - r * 0.8,
            (hx + facing * r * 0.5, hy - r * 3.0),
            fill=col,
            outline=line,
        )
    elif kind == "pirate":
        col = (40, 36, 40)
        draw.polygon(
            [
                (hx - r * 1.4, hy - r * 0.6),
                (hx, hy - r * 1.9),
                (hx + r * 1.4, hy - r * 0.6),
                (hx, hy - r * 0.95),
            ],
            fill=col,
            outline=line,
        )
        _oval_span(draw, hx, r * 0.18, hy - r * 1.4, hy - r * 1.05, fill=(240, 240, 240))
    elif kind in ("chef", "baker"):
        draw.rectangle(
            [hx - r * 0.75, hy - r * 1.6, hx + r * 0.75, hy - r * 0.7],
            fill=(250, 250, 250),
            outline=line or (180, 180, 180),
        )
        for dx in (-0.5, 0.0, 0.5):
            _oval_span(
                draw, hx + dx * r, r * 0.45, hy - r * 2.05, hy - r * 1.3, fill=(250, 250, 250)
            )
    elif kind in ("police officer", "nurse") or f.accessory == "cap":
        col = (
            (40, 60, 120)
            if kind == "police officer"
            else ((250, 250, 250) if kind == "nurse" else _rgb(f.accessory_colour, "blue"))
        )
        _dome(draw, hx, r * 1.02, hy - r * 1.15, hy + r * 0.2, fill=col, outline=line)
        draw.rounded_rectangle(
            _box(hx, hy - r * 0.55, hx + facing * r * 1.5, hy - r * 0.4),
            radius=r * 0.08,
            fill=_shade(col, 0.8),
        )
    elif kind in ("explorer", "farmer", "gardener", "builder"):
        col = {"explorer": (200, 180, 120), "builder": (250, 200, 40)}.get(kind, (230, 200, 110))
        brim = 1.1 if kind == "builder" else 1.6
        _dome(draw, hx, r * 1.0, hy - r * 1.35, hy + r * 0.1, fill=col, outline=line)
        _oval_span(draw, hx, r * brim, hy - r * 0.75, hy - r * 0.45, fill=col, outline=line)


def _draw_ghost(draw, c: _Creature, cx, base, s, line, pose: str) -> None:
    """A friendly ghost: a floating sheet with a round top, a wavy hem and a smile."""
    body = (250, 250, 255)
    top, bottom = base - s * 1.25, base - s * 0.2
    half = s * 0.36
    # It floats: no feet, and the hem well above the ground.
    draw.pieslice([cx - half, top, cx + half, top + half * 2], 180, 360, fill=body, outline=line)
    draw.rectangle([cx - half, top + half, cx + half, bottom], fill=body)
    draw.line([(cx - half, top + half), (cx - half, bottom)], fill=line, width=1)
    draw.line([(cx + half, top + half), (cx + half, bottom)], fill=line, width=1)
    for i in range(4):
        x0 = cx - half + i * half / 2
        draw.pieslice(
            [x0, bottom - half * 0.25, x0 + half / 2, bottom + half * 0.25],
            0,
            180,
            fill=body,
            outline=line,
        )
    for side in (-1, 1):  # little arms
        _oval_span(
            draw,
            cx + side * half,
            s * 0.08,
            top + half * 1.3,
            top + half * 1.7,
            fill=body,
            outline=line,
        )
        ex, ey, er = cx + side * s * 0.12, top + half * 0.9, s * 0.05
        if pose == "sleeping":
            draw.arc([ex - er, ey - er, ex + er, ey + er], 0, 180, fill=(30, 30, 40), width=2)
        else:
            _oval(draw, ex, ey, er, er * 1.4, fill=(30, 30, 40))
        draw.ellipse(
            [ex - er + side * s * 0.04, ey + er * 1.6, ex + er + side * s * 0.04, ey + er * 2.4],
            fill=(245, 170, 180),
        )
    draw.arc(
        [cx - s * 0.06, top + half * 1.1, cx + s * 0.06, top + half * 1.35],
        0,
        180,
        fill=(60, 40, 50),
        width=2,
    )
    _accessory(draw, c, cx, top + half * 0.95, half * 0.95, top + half * 1.6, line)


def _draw_monster(draw, c: _Creature, cx, base, s, line) -> None:
    """A friendly monster: a round furry body, two horns, one big eye and a toothy grin."""
    body, dark = c.colour, _shade(c.colour, 0.7)
    r = s * 0.48
    cy = base - r - s * 0.08
    for side in (-1, 1):
        _oval_span(
            draw, cx + side * r * 0.45, s * 0.1, base - s * 0.12, base, fill=dark, outline=line
        )
        draw.polygon(
            [
                (cx + side * r * 0.4, cy - r * 0.8),
                (cx + side * r * 0.75, cy - r * 1.45),
                (cx + side * r * 0.7, cy - r * 0.6),
            ],
            fill=(245, 235, 200),
            outline=line,
        )
    pts = []
    for i in range(36):
        a = i * math.pi / 18
        rr = r * (1.0 if i % 2 else 0.9)
        pts.append((cx + math.cos(a) * rr, cy + math.sin(a) * rr))
    draw.polygon(pts, fill=body, outline=line)
    er = r * 0.32
    _oval(draw, cx, cy - r * 0.55, er, fill=(255, 255, 255), outline=line)
    _oval(draw, cx, cy - r * 0.55, er * 0.45, fill=(30, 25, 30))
    draw.chord([cx - r * 0.5, cy - r * 0.1, cx + r * 0.5, cy + r * 0.55], 0, 180, fill=(90, 30, 50))
    for i in range(3):
        x = cx - r * 0.3 + i * r * 0.3
        draw.polygon(
            [(x - r * 0.08, cy + r * 0.15), (x + r * 0.08, cy + r * 0.15), (x, cy + r * 0.3)],
            fill=(255, 255, 255),
        )
    _accessory(draw, c, cx, cy - r * 0.55, r * 0.75, cy + r * 0.3, line)


def _draw_dinosaur(draw, c: _Creature, cx, base, s, line, facing: int) -> None:
    """A gentle long-necked dinosaur with spots."""
    body, dark, light = c.colour, _shade(c.colour, 0.7), _shade(c.colour, 1.4)
    bw, bh = s * 0.55, s * 0.32
    by = base - s * 0.22 - bh
    for dx in (-0.35, -0.15, 0.15, 0.35):
        x = cx + dx * bw * 1.6
        draw.rectangle([x - s * 0.06, by + bh, x + s * 0.06, base], fill=dark, outline=line)
    draw.polygon(
        [
            (cx - facing * bw * 0.8, by + bh * 0.6),
            (cx - facing * bw * 1.9, base - s * 0.1),
            (cx - facing * bw * 0.7, by + bh * 1.4),
        ],
        fill=body,
        outline=line,
    )
    nx = cx + facing * bw * 0.6
    draw.polygon(
        [
            (nx - s * 0.1, by + bh * 0.3),
            (nx + facing * s * 0.35, by - s * 0.5),
            (nx + facing * s * 0.5, by - s * 0.45),
            (nx + s * 0.15, by + bh * 0.6),
        ],
        fill=body,
        outline=line,
    )
    _oval_span(draw, cx, bw, by, by + bh * 2, fill=body, outline=line)
    hx, hy, hr = nx + facing * s * 0.45, by - s * 0.55, s * 0.13
    _oval(draw, hx, hy, hr * 1.3, hr, fill=body, outline=line)
    _oval_span(
        draw, hx + facing * hr * 0.2, hr * 0.2, hy - hr * 0.5, hy - hr * 0.1, fill=(30, 25, 30)
    )
    draw.arc(
        [hx - hr * 0.6, hy - hr * 0.1, hx + hr * 0.9, hy + hr * 0.6],
        10,
        120,
        fill=(60, 30, 30),
        width=2,
    )
    for dx, dy in ((-0.4, 0.5), (0.1, 0.35), (0.45, 0.8), (-0.1, 1.2)):
        r = s * 0.05
        x, y = cx + dx * bw, by + dy * bh
        _oval(draw, x, y, r, fill=light)


def _draw_hoofed(draw, c: _Creature, cx, base, s, line, facing: int) -> None:
    """A pony, a horse, a zebra, a deer, a giraffe (a long neck) or a unicorn (a horn)."""
    kind = c.kind
    body, dark = c.colour, _shade(c.colour, 0.8)
    bw, bh = s * 0.42, s * 0.24
    by = base - s * 0.38 - bh
    if kind == "giraffe":  # the body stays, the neck and head go up
        by -= s * 0.1
    for dx in (-0.7, -0.4, 0.4, 0.7):
        x = cx + dx * bw
        draw.rectangle([x - s * 0.04, by + bh, x + s * 0.04, base], fill=dark, outline=line)
    _oval_span(draw, cx, bw, by, by + bh * 2, fill=body, outline=line)
    tail = {"unicorn": (240, 140, 190), "zebra": (40, 36, 40)}.get(kind, _shade(body, 0.55))
    if kind == "zebra":
        for i in range(5):
            x = cx - bw * 0.7 + i * bw * 0.35
            draw.line(
                [(x, by + bh * 0.1), (x + s * 0.04, by + bh * 1.8)],
                fill=(40, 36, 40),
                width=max(2, int(s * 0.04)),
            )
    if kind == "giraffe":
        for dx, dy in ((-0.5, 0.6), (0.1, 0.4), (0.5, 1.0), (-0.1, 1.3)):
            r = s * 0.05
            x, y = cx + dx * bw, by + dy * bh
            _oval(draw, x, y, r, fill=(150, 95, 45))
    _oval_span(draw, cx - facing * bw * 1.25, s * 0.08, by + bh * 0.2, by + bh * 1.8, fill=tail)
    nx = cx + facing * bw * 0.7
    up = s * (0.75 if kind == "giraffe" else 0.3)
    draw.polygon(
        [
            (nx - s * 0.08, by + bh * 0.5),
            (nx + facing * s * 0.08, by - up),
            (nx + facing * s * 0.22, by - up + s * 0.02),
            (nx + s * 0.1, by + bh),
        ],
        fill=body,
        outline=line,
    )
    hx, hy, hr = nx + facing * s * 0.2, by - up - s * 0.02, s * 0.11
    _oval(draw, hx, hy, hr * 1.4, hr, fill=body, outline=line)
    if kind == "deer":
        for side in (-1, 1):
            x = hx + side * hr * 0.4
            draw.line(
                [(x, hy - hr * 0.7), (x + side * hr * 0.5, hy - hr * 2.0)],
                fill=(120, 80, 40),
                width=max(2, int(s * 0.025)),
            )
            draw.line(
                [(x + side * hr * 0.25, hy - hr * 1.4), (x + side * hr * 0.9, hy - hr * 1.6)],
                fill=(120, 80, 40),
                width=max(2, int(s * 0.025)),
            )
    if kind == "unicorn":
        _peak(
            draw,
            hx,
            hr * 0.3,
            hy - hr * 0.8,
            (hx + facing * hr * 0.3, hy - hr * 3.0),
            fill=(240, 196, 60),
            outline=line,
        )
        for i in range(4):
            draw.ellipse(
                [
                    nx - facing * s * 0.05 - s * 0.06 + i * facing * s * 0.03,
                    by - s * 0.28 + i * s * 0.1,
                    nx - facing * s * 0.05 + s * 0.06 + i * facing * s * 0.03,
                    by - s * 0.16 + i * s * 0.1,
                ],
                fill=tail,
            )
    _oval_span(
        draw, hx + facing * hr * 0.3, hr * 0.18, hy - hr * 0.4, hy - hr * 0.05, fill=(30, 25, 30)
    )


def _marks(draw, kind: str, c: _Creature, cx, base, s, line) -> None:
    """What tells a creature drawn with another's shape apart: a trunk, spots, a beak."""
    by0 = base - s * 0.95
    hr = s * 0.32
    hx, hy = cx, by0 - hr * 0.55
    if kind == "elephant":
        draw.line(
            [(hx, hy + hr * 0.2), (hx + hr * 0.1, hy + hr * 1.3), (hx + hr * 0.5, hy + hr * 1.5)],
            fill=c.colour,
            width=max(3, int(hr * 0.35)),
        )
        for side in (-1, 1):
            ex = hx + side * hr * 1.0
            _oval_span(
                draw,
                ex,
                hr * 0.5,
                hy - hr * 0.6,
                hy + hr * 0.5,
                fill=_shade(c.colour, 0.85),
                outline=line,
            )
    elif kind == "cow":
        for dx, dy in ((-0.2, 0.4), (0.15, 0.65), (-0.05, 0.85)):
            r = s * 0.08
            x, y = cx + dx * s, by0 + dy * s
            _oval(draw, x, y, r, fill=(45, 40, 45))
    elif kind == "panda":
        for side in (-1, 1):
            ex, ey = hx + side * hr * 0.38, hy - hr * 0.1
            _oval(draw, ex, ey, hr * 0.28, hr * 0.3, fill=(40, 36, 40))
            _oval(draw, ex, ey, hr * 0.1, fill=(250, 250, 250))
    elif kind == "sheep":
        for i in range(7):
            a = i * math.pi / 3.5
            x, y = hx + math.cos(a) * hr * 0.9, hy - hr * 0.6 + math.sin(a) * hr * 0.3
            r = hr * 0.3
            _oval(draw, x, y, r, fill=(250, 250, 245), outline=line)


def _star(x: float, y: float, outer: float, inner: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        r = outer if i % 2 == 0 else inner
        a = math.pi / 2 + i * math.pi / 5
        points.append((x + r * math.cos(a), y - r * math.sin(a)))
    return points


def _cutout_shadow(img):
    """Paper-cutout: every shape seems to lift off the page (an offset shadow)."""
    from PIL import Image, ImageChops

    # Shifted down and right on white paper: what leaves at the bottom edge
    # must not come back in at the top (as a wrapping offset would do).
    shifted = Image.new("RGB", img.size, (255, 255, 255))
    shifted.paste(img, (4, 4))
    return Image.blend(img, ImageChops.multiply(img, shifted), 0.25)


def _tree(draw, x: float, base: float, h: float, apples: bool, rng, outline) -> None:
    draw.rectangle([x - h * 0.06, base - h * 0.55, x + h * 0.06, base], fill=_TRUNK)
    r = h * 0.32
    for dx, dy in ((0, -0.75), (-0.2, -0.6), (0.2, -0.6)):
        cx, cy = x + dx * h, base + dy * h
        _oval(draw, cx, cy, r, fill=_LEAVES, outline=outline)
    if apples:
        for _ in range(6):
            ax, ay = x + rng.uniform(-0.35, 0.35) * h, base + rng.uniform(-0.9, -0.5) * h
            a = h * 0.035
            _oval(draw, ax, ay, a, fill=_APPLE)


def _basket(draw, x: float, base: float, s: float, apples: bool, outline) -> None:
    if apples:
        for dx in (-0.5, 0, 0.5):
            _oval_span(draw, x + dx * s, s * 0.35, base - s * 1.25, base - s * 0.55, fill=_APPLE)
    draw.arc(
        [x - s * 0.9, base - s * 1.8, x + s * 0.9, base - s * 0.3],
        180,
        360,
        fill=_shade(_WICKER, 0.7),
        width=max(2, int(s * 0.12)),
    )
    draw.polygon(
        [
            (x - s, base - s * 0.9),
            (x + s, base - s * 0.9),
            (x + s * 0.7, base),
            (x - s * 0.7, base),
        ],
        fill=_WICKER,
        outline=outline or _shade(_WICKER, 0.6),
    )
    for i in range(1, 4):
        y = base - s * 0.9 + i * s * 0.22
        draw.line([(x - s * 0.9, y), (x + s * 0.9, y)], fill=_shade(_WICKER, 0.75), width=1)


def _draw_things(draw, words: set[str], W, H, horizon, unit, rng, outline) -> None:
    """The named things, back to front, each in its own part of the picture."""
    if "house" in words:
        x0, y1, w = W * 0.06, horizon + H * 0.06, W * 0.16
        draw.rectangle([x0, y1 - w * 0.7, x0 + w, y1], fill=(232, 204, 160), outline=outline)
        draw.polygon(
            [
                (x0 - w * 0.1, y1 - w * 0.7),
                (x0 + w * 0.5, y1 - w * 1.2),
                (x0 + w * 1.1, y1 - w * 0.7),
            ],
            fill=(172, 62, 50),
            outline=outline,
        )
        draw.rectangle([x0 + w * 0.4, y1 - w * 0.35, x0 + w * 0.6, y1], fill=(110, 70, 40))
    trees = bool(words & {"tree", "oak", "wood", "forest", "willow"})
    if trees:
        many = bool(words & {"wood", "forest", "tall"})
        spots: tuple[float, ...] = (0.08, 0.92, 0.22, 0.78) if many else (0.9,)
        if "house" in words:  # leave the house in view
            spots = tuple(x for x in spots if x > 0.3) + ((0.4,) if many else ())
        for x in spots:
            h = H * (0.45 if "oak" in words or "huge" in words else 0.34) * rng.uniform(0.9, 1.1)
            _tree(draw, W * x, horizon + H * 0.08, h, "apple" in words, rng, outline)
    if "river" in words:
        top, bottom = horizon + H * 0.05, horizon + H * 0.13
        wave = [(x, top + math.sin(x / W * 9) * H * 0.012) for x in range(0, W + 8, 8)]
        wave += [(x, bottom + math.sin(x / W * 9 + 1) * H * 0.012) for x in range(W, -8, -8)]
        draw.polygon(wave, fill=_WATER)
    if "pond" in words:
        draw.ellipse(
            [W * 0.3, horizon + H * 0.04, W * 0.92, horizon + H * 0.2],
            fill=_WATER,
            outline=_shade(_WATER, 0.8),
        )
        if "stone" in words:
            for i in range(4):
                x = W * (0.42 + i * 0.12)
                y = horizon + H * (0.17 - i * 0.03)
                _oval(draw, x, y, unit * 0.035, unit * 0.015, fill=(160, 160, 165))
        if "reed" in words:
            for i in range(12):
                x = W * (0.22 + i * 0.013) if i < 6 else W * (0.8 + (i - 6) * 0.013)
                x += W * 0.08
                y = horizon + H * 0.16
                draw.line(
                    [(x, y), (x + rng.uniform(-4, 4), y - H * 0.16)],
                    fill=(120, 140, 60),
                    width=max(2, unit // 160),
                )
        if "ball" in words:
            bx, by, r = W * 0.62, horizon + H * 0.12, unit * 0.03
            _oval(draw, bx, by, r, fill=COLOUR_RGB["red"], outline=outline)
    elif "ball" in words:
        bx, by, r = W * 0.55, H * 0.93, unit * 0.03
        _oval(draw, bx, by, r, fill=COLOUR_RGB["red"], outline=outline)
    if "path" in words:
        # From the bottom middle of the picture, winding up to the horizon.
        left = [
            (W * (0.40 + 0.06 * math.sin(t * 3)) + W * 0.1 * t, H - (H - horizon) * t)
            for t in (i / 10 for i in range(11))
        ]
        right = [
            (x + W * 0.22 * (1 - t) + W * 0.02, y)
            for (x, y), t in zip(left, (i / 10 for i in range(11)), strict=True)
        ]
        draw.polygon(left + right[::-1], fill=_PATH)
    if "bramble" in words or "blackberry" in words:
        # A thorny tangle in the right middle ground, with dark berries.
        cx, cy, rx, ry = W * 0.78, horizon + H * 0.12, W * 0.2, H * 0.12
        _oval(draw, cx, cy, rx, ry, fill=_shade(_BRAMBLE, 1.1))
        for _ in range(26):
            x, y = cx + rng.uniform(-rx, rx) * 0.9, cy + rng.uniform(-ry, ry) * 0.8
            r = unit * rng.uniform(0.03, 0.07)
            draw.arc(
                [x - r, y - r, x + r, y + r],
                rng.uniform(0, 360),
                rng.uniform(0, 360) + 200,
                fill=_BRAMBLE,
                width=max(2, unit // 110),
            )
            draw.polygon(
                [(x + r, y), (x + r + unit * 0.012, y - unit * 0.006), (x + r, y - unit * 0.012)],
                fill=_BRAMBLE,
            )
        for _ in range(10):
            x, y = cx + rng.uniform(-rx, rx) * 0.8, cy + rng.uniform(-ry, ry) * 0.7
            r = unit * 0.012
            _oval(draw, x, y, r, fill=_BERRY)
    if words & {"flower", "meadow", "daisy"}:
        for _ in range(22):
            x, y = rng.uniform(0, W), rng.uniform(horizon + H * 0.04, H * 0.98)
            r = unit * rng.uniform(0.008, 0.014)
            petal = rng.choice(((250, 250, 250), (246, 208, 55), (240, 150, 185), (180, 140, 230)))
            for dx, dy in ((-r, 0), (r, 0), (0, -r), (0, r)):
                _oval(draw, x + dx, y + dy, r, fill=petal)
            _oval(draw, x, y, r * 0.6, fill=(250, 190, 40))
    if "nest" in words:
        up = trees and not words & {"grass", "ground", "below", "fallen"}  # in the tree
        nx, ny = (W * 0.86, horizon - H * 0.12) if up else (W * 0.52, H * 0.9)
        s = unit * 0.06
        _oval_span(
            draw, nx, s, ny - s * 0.4, ny + s * 0.5, fill=(120, 84, 50), outline=(80, 55, 30)
        )
        for i in range(5):
            draw.line(
                [(nx - s, ny - s * 0.1 + i * 2), (nx + s, ny + s * 0.05 - i * 2)],
                fill=(90, 62, 38),
                width=1,
            )


def _draw_creature(draw, c: _Creature, cx: float, base: float, s: float, line) -> None:
    """A creature standing at (``cx``, ``base``), ``s`` tall-ish, in its colour."""
    body, dark, light = c.colour, _shade(c.colour, 0.7), _shade(c.colour, 1.45)
    kind = c.kind
    w = 2 if s > 30 else 1
    bird = kind in ("owl", "duck", "robin", "bird")
    bx0, by0, bx1, by1 = cx - s * 0.42, base - s * 0.95, cx + s * 0.42, base
    hr = s * (0.0 if kind == "owl" else 0.32)
    hx, hy = cx, by0 - hr * 0.55
    if c.accessory == "backpack":
        draw.rounded_rectangle(
            [cx - s * 0.62, by0 + s * 0.15, cx - s * 0.25, by0 + s * 0.7],
            radius=s * 0.08,
            fill=c.accessory_colour,
            outline=line,
        )
    # Tails, behind the body.
    if kind in ("kitten", "cat"):
        draw.arc(
            [cx + s * 0.2, base - s * 0.9, cx + s * 0.9, base - s * 0.1],
            200,
            40,
            fill=body,
            width=max(3, int(s * 0.1)),
        )
    elif kind == "fox":
        draw.ellipse(
            [cx + s * 0.25, base - s * 0.55, cx + s * 0.95, base - s * 0.1], fill=body, outline=line
        )
        draw.ellipse(
            [cx + s * 0.75, base - s * 0.45, cx + s * 0.98, base - s * 0.2], fill=(250, 250, 245)
        )
    elif kind == "dragon":
        draw.polygon(
            [
                (cx + s * 0.3, base - s * 0.3),
                (cx + s * 1.0, base - s * 0.05),
                (cx + s * 0.3, base - s * 0.05),
            ],
            fill=body,
            outline=line,
        )
        for side in (-1, 1):  # little wings
            draw.polygon(
                [
                    (cx + side * s * 0.3, by0 + s * 0.25),
                    (cx + side * s * 0.85, by0 - s * 0.15),
                    (cx + side * s * 0.55, by0 + s * 0.5),
                ],
                fill=light,
                outline=line,
            )
    elif kind == "mouse":
        draw.arc(
            [cx + s * 0.2, base - s * 0.5, cx + s * 1.0, base + s * 0.1],
            270,
            60,
            fill=_shade(body, 0.8),
            width=max(2, int(s * 0.04)),
        )
    elif kind in ("rabbit", "bunny"):
        draw.ellipse(
            [cx + s * 0.3, base - s * 0.4, cx + s * 0.55, base - s * 0.15], fill=(250, 250, 250)
        )
    if kind == "hedgehog":  # a crown of prickles behind the body and head
        oy = by0 + s * 0.45
        points = []
        for i in range(23):
            a = math.pi * (-0.1 + 1.2 * i / 22)
            r = s * (0.78 if i % 2 else 0.5)
            points.append((cx + math.cos(a) * r, oy - math.sin(a) * r))
        draw.polygon(points, fill=dark, outline=line)
    # The body.
    if kind == "owl":
        by0 = base - s * 1.15
        draw.ellipse([bx0, by0, bx1, by1], fill=body, outline=line, width=w)
        _oval_span(draw, cx, s * 0.25, by0 + s * 0.5, by1 - s * 0.05, fill=light)
        for side in (-1, 1):
            _oval_span(
                draw, cx + side * s * 0.3, s * 0.12, by0 + s * 0.35, by1 - s * 0.15, fill=dark
            )
            draw.polygon(
                [
                    (cx + side * s * 0.12, by0 + s * 0.08),
                    (cx + side * s * 0.34, by0 - s * 0.12),
                    (cx + side * s * 0.32, by0 + s * 0.15),
                ],
                fill=dark,
            )
            ex, ey, er = cx + side * s * 0.15, by0 + s * 0.28, s * 0.13
            _oval(draw, ex, ey, er, fill=(255, 255, 255), outline=dark)
            _oval(draw, ex, ey, er * 0.45, fill=(30, 25, 30))
        draw.polygon(
            [(cx - s * 0.05, by0 + s * 0.4), (cx + s * 0.05, by0 + s * 0.4), (cx, by0 + s * 0.5)],
            fill=(240, 170, 40),
        )
        _accessory(draw, c, cx, by0 + s * 0.05, s * 0.42, by0 + s * 0.6, line)
        return
    if kind == "robot":
        draw.rounded_rectangle(
            [bx0, by0, bx1, by1], radius=s * 0.1, fill=body, outline=line, width=w
        )
        draw.rectangle([cx - s * 0.2, by0 + s * 0.25, cx + s * 0.2, by0 + s * 0.5], fill=light)
    else:
        draw.ellipse([bx0, by0, bx1, by1], fill=body, outline=line, width=w)
    if kind == "robin":
        draw.ellipse(
            [cx - s * 0.28, by0 + s * 0.2, cx + s * 0.2, by1 - s * 0.2], fill=COLOUR_RGB["red"]
        )
    elif kind in ("bear", "dragon", "fox", "puppy", "dog", "kitten", "cat"):
        _oval_span(draw, cx, s * 0.24, by0 + s * 0.3, by1 - s * 0.05, fill=light)
    # Ears, then the head over them.
    if kind in ("kitten", "cat", "fox"):
        for side in (-1, 1):
            x = hx + side * hr * 0.55
            _peak(
                draw,
                x,
                hr * 0.38,
                hy - hr * 0.55,
                (x + side * hr * 0.1, hy - hr * 1.45),
                fill=body,
                outline=line,
            )
    elif kind in ("rabbit", "bunny"):
        for side in (-1, 1):
            x = hx + side * hr * 0.4
            _oval_span(draw, x, hr * 0.22, hy - hr * 2.1, hy - hr * 0.5, fill=body, outline=line)
            _oval_span(draw, x, hr * 0.1, hy - hr * 1.9, hy - hr * 0.7, fill=(240, 170, 190))
    elif kind in ("bear", "mouse"):
        er = hr * (0.55 if kind == "mouse" else 0.35)
        for side in (-1, 1):
            x, y = hx + side * hr * 0.75, hy - hr * 0.75
            _oval(draw, x, y, er, fill=body, outline=line)
            _oval(draw, x, y, er * 0.5, fill=(240, 170, 190) if kind == "mouse" else dark)
    elif kind == "dragon":
        for i in range(4):  # spikes along the head and back
            x = hx - hr * 0.6 + i * hr * 0.4
            _peak(draw, x, hr * 0.15, hy - hr * 0.8, (x, hy - hr * 1.3), fill=dark)
    if kind == "robot":
        draw.line([(hx, hy - hr), (hx, hy - hr * 1.6)], fill=line, width=max(2, w))
        ar = hr * 0.15
        _oval(draw, hx, hy - hr * 1.6, ar, fill=(230, 60, 50))
        draw.rounded_rectangle(
            [hx - hr, hy - hr * 0.85, hx + hr, hy + hr * 0.85],
            radius=hr * 0.2,
            fill=body,
            outline=line,
            width=w,
        )
    else:
        _oval(draw, hx, hy, hr, fill=body, outline=line, width=w)
    if kind in ("puppy", "dog"):
        for side in (-1, 1):
            x = hx + side * hr * 0.95
            _oval_span(draw, x, hr * 0.25, hy - hr * 0.6, hy + hr * 0.5, fill=dark)
    if kind == "fox":
        _peak(draw, hx, hr * 0.6, hy + hr * 0.1, (hx, hy + hr * 0.95), fill=(250, 250, 245))
    if kind in ("bear", "dragon", "puppy", "dog"):
        _oval_span(draw, hx, hr * 0.4, hy + hr * 0.05, hy + hr * 0.6, fill=light)
    # A face: eyes and a nose or a beak.
    for side in (-1, 1):
        ex, ey, er = hx + side * hr * 0.38, hy - hr * 0.1, hr * 0.17
        _oval(draw, ex, ey, er, fill=(255, 255, 255))
        _oval_span(draw, ex, er * 0.55, ey - er * 0.4, ey + er * 0.7, fill=(25, 22, 30))
    if bird:
        draw.polygon(
            [(hx - hr * 0.2, hy + hr * 0.15), (hx + hr * 0.2, hy + hr * 0.15), (hx, hy + hr * 0.5)],
            fill=(240, 160, 40),
        )
    else:
        nr = hr * 0.1
        _oval(draw, hx, hy + hr * 0.25, nr, fill=(60, 35, 40))
    if kind in ("kitten", "cat"):
        for side in (-1, 1):
            for dy in (-0.05, 0.08):
                draw.line(
                    [
                        (hx + side * hr * 0.25, hy + hr * 0.3),
                        (hx + side * hr * 0.95, hy + hr * (0.3 + dy * 3)),
                    ],
                    fill=_shade(line, 1.3),
                    width=1,
                )
    _accessory(draw, c, hx, hy, hr, by0 + hr * 0.3, line)  # the scarf under the chin


def _accessory(draw, c: _Creature, hx, hy, hr, neck, line) -> None:
    colour = c.accessory_colour
    if c.accessory == "scarf":
        draw.rounded_rectangle(
            [hx - hr * 0.95, neck - hr * 0.2, hx + hr * 0.95, neck + hr * 0.25],
            radius=hr * 0.15,
            fill=colour,
            outline=line,
        )
        draw.polygon(
            [
                (hx + hr * 0.3, neck),
                (hx + hr * 0.75, neck),
                (hx + hr * 0.85, neck + hr * 1.0),
                (hx + hr * 0.45, neck + hr * 1.0),
            ],
            fill=colour,
            outline=line,
        )
    elif c.accessory == "hat":  # a woolly hat with a bobble
        _dome(draw, hx, hr * 0.9, hy - hr * 1.25, hy - hr * 0.05, fill=colour, outline=line)
        draw.rectangle(
            [hx - hr * 0.95, hy - hr * 0.75, hx + hr * 0.95, hy - hr * 0.5],
            fill=_shade(colour, 0.8),
            outline=line,
        )
        br = hr * 0.2
        _oval(draw, hx, hy - hr * 1.25, br, fill=(250, 250, 250))
