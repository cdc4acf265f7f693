"""Image backends: one small protocol, a simulated generator behind it.

The pipeline only ever calls ``await backend.generate(ImageRequest(...))`` and
gets a :class:`GeneratedImage` (bytes, format, size) back, the way an httpx
client only talks to a transport. Two backends implement it:

* :class:`SimulatedImageBackend` (the default) draws a real PNG for each
  prompt with Pillow (a scene of the things the prompt names, with the main
  character drawn from its description) and takes about as long as a hosted
  model would, in
  *model seconds* multiplied by ``time_scale``. It can be told to fail or to
  slow down chosen images, so failure isolation and stragglers can be shown.
* :class:`~storylab.story.backends.http_images.HttpImageBackend` talks to an
  OpenAI-compatible images endpoint over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from storylab.story.backends.base import (
    GeneratedImage,
    ImageBackend,
    ImageBackendError,
    ImageRequest,
)
from storylab.story.models import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_IMAGE_QUALITY,
    STYLE_DESCRIPTIONS,
)

__all__ = [
    "ASPECT_RATIOS",
    "QUALITY_LONG_SIDE",
    "GeneratedImage",
    "ImageBackend",
    "ImageBackendError",
    "ImageRequest",
    "SimulatedImageBackend",
    "SimulatedImageFailure",
    "check_time_scale",
    "decode_image",
    "image_size",
    "normalize_aspect_ratio",
    "normalize_quality",
    "style_of_prompt",
]

# Pixels of the longer side per quality level, and width:height per ratio.
QUALITY_LONG_SIDE: dict[str, int] = {"low": 320, "medium": 640, "high": 1024}
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "4:3": (4, 3),
    "16:9": (16, 9),
}


class SimulatedImageFailure(ImageBackendError):
    """A failure injected on purpose into the simulated generator."""


def normalize_quality(quality: str | None) -> str:
    return quality if quality in QUALITY_LONG_SIDE else DEFAULT_IMAGE_QUALITY.value


def normalize_aspect_ratio(ratio: str | None) -> str:
    return ratio if ratio in ASPECT_RATIOS else DEFAULT_ASPECT_RATIO.value


def image_size(quality: str | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Width and height in pixels: the long side from quality, the shape from the ratio."""
    long_side = QUALITY_LONG_SIDE[normalize_quality(quality)]
    w, h = ASPECT_RATIOS[normalize_aspect_ratio(aspect_ratio)]
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side


def style_of_prompt(prompt: str) -> str:
    """Which illustration style a prompt asks for (by its style fragment or name)."""
    low = prompt.lower()
    for style, description in STYLE_DESCRIPTIONS.items():
        if description.lower() in low:
            return style
    for style in STYLE_DESCRIPTIONS:
        if style in low or style.replace("-", " ") in low:
            return style
    return "watercolor"


def check_time_scale(time_scale: object) -> float:
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float):
        raise ValueError(f"time_scale must be a number > 0, got {time_scale!r}")
    if not time_scale > 0:
        raise ValueError(f"time_scale must be a number > 0, got {time_scale!r}")
    return float(time_scale)


def decode_image(data: bytes, *, max_pixels: int = 40_000_000) -> tuple[str, int, int]:
    """Format (``"png"`` or ``"jpeg"``), width and height of a *whole* picture.

    Reading the header is not enough: half a PNG has a perfect header. Every
    pixel is decoded, PNG chunk checksums are verified and a JPEG must end
    with its end-of-image marker (Pillow's ``LOAD_TRUNCATED_IMAGES`` switch, if
    some other code turned it on, would let a cut-off file load). A picture
    of more than ``max_pixels`` is refused before it is decoded. Raises
    ``ValueError`` saying what is wrong.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = (img.format or "").lower(), img.size
    except UnidentifiedImageError:
        raise ValueError(f"not a PNG or JPEG image (it starts with {data[:8]!r})") from None
    except Exception as exc:  # a broken header
        raise ValueError(f"unreadable image: {exc}") from None
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"a {fmt.upper() or 'unknown'} image; only PNG and JPEG are accepted")
    if width * height > max_pixels:
        raise ValueError(f"{width}x{height} pixels is more than the limit of {max_pixels:,} pixels")
    if fmt == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ValueError(f"truncated JPEG ({len(data):,} bytes, no end-of-image marker)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # PNG: every chunk's CRC, up to IEND
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # every pixel
    except Exception as exc:  # any decoder failure: not a whole picture
        size = f"{len(data):,} bytes"
        raise ValueError(f"truncated or corrupt {fmt.upper()} ({size}): {exc}") from None
    return fmt, width, height


# -- drawing -----------------------------------------------------------------------
# A simulated illustration is a small scene drawn from the words of the
# prompt: the things it names (a fox, brambles, a path, the moon...) each have
# a simple Pillow drawing, and the main character is drawn from its
# description ("The main character, Pip, is a little orange kitten with a
# blue scarf"), not from the page, so the hero looks the same on every page.
# The style changes the sky, the ground and the finish, never the hero.

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
}
CREATURES = tuple(_KIND_COLOUR)
# Things a prompt may name, each drawn by _draw_things (plurals match too).
THINGS = (
    "path",
    "brambles",
    "river",
    "pond",
    "tree",
    "oak",
    "wood",
    "forest",
    "house",
    "moon",
    "stars",
    "sun",
    "flowers",
    "meadow",
    "hill",
    "basket",
    "apple",
    "kite",
    "nest",
    "lantern",
    "ball",
    "reeds",
    "stones",
    "feather",
    "blackberries",
)

_PATH = (222, 196, 140)
_WATER = (95, 160, 215)
_BRAMBLE = (38, 82, 44)
_BERRY = (70, 30, 80)
_TRUNK = (112, 76, 44)
_LEAVES = (62, 135, 66)
_APPLE = (214, 40, 40)
_WICKER = (176, 126, 66)
_HERO_RE = re.compile(r"main character, ([^,]+), is (an? [^,.]+)", re.I)


@dataclass(frozen=True, slots=True)
class _Creature:
    kind: str  # one of CREATURES, or "" for someone of no known kind
    colour: tuple[int, int, int]
    accessory: str | None = None  # scarf, hat, backpack
    accessory_colour: tuple[int, int, int] = (65, 115, 215)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _creature_from(description: str) -> _Creature:
    """The creature a phrase describes: "a little orange kitten with a blue scarf"."""
    words = _words(description)
    kinds = [w for w in (_singular(w) for w in words) if w in _KIND_COLOUR]
    kind = kinds[0] if kinds else ""
    before, _, after = description.lower().partition(" with ")
    colours = [w for w in _words(before) if w in COLOUR_RGB]
    colour = colours[0] if colours else _KIND_COLOUR.get(kind, "blue")
    accessory, accessory_colour = None, COLOUR_RGB["blue"]
    for w in _words(after):
        if w in COLOUR_RGB:
            accessory_colour = COLOUR_RGB[w]
        if w in ("scarf", "hat", "backpack"):
            accessory = w
            break
    return _Creature(kind, COLOUR_RGB[colour], accessory, accessory_colour)


def _scene_of(prompt: str) -> tuple[str, _Creature | None, str | None]:
    """The scene words (without the hero clause and the style), the hero and its name."""
    low = prompt.lower()
    for description in STYLE_DESCRIPTIONS.values():
        low = low.replace(description.lower(), " ")
    m = _HERO_RE.search(low)
    if m is None:
        return low, None, None
    return low[: m.start()], _creature_from(m.group(2)), m.group(1).strip()


def _others(scene: str, hero: _Creature | None, hero_name: str | None) -> list[_Creature]:
    """The other creatures a scene names, with a colour word just before them if any."""
    words = _words(scene)
    found: list[_Creature] = []
    seen_hero = False
    for i, w in enumerate(words):
        kind = _singular(w)
        if kind not in _KIND_COLOUR:
            continue
        if hero is not None and kind == hero.kind and not seen_hero:
            seen_hero = True  # "Pip the kitten": that is the hero, already drawn
            continue
        colour = words[i - 1] if i and words[i - 1] in COLOUR_RGB else _KIND_COLOUR[kind]
        if not any(c.kind == kind for c in found):
            found.append(_Creature(kind, COLOUR_RGB[colour]))
    return found[:3]


def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """Darker (f < 1) or lighter (f > 1) by a factor, toward black or white."""
    if f <= 1:
        return tuple(int(v * f) for v in c)  # type: ignore[return-value]
    return tuple(int(v + (255 - v) * (f - 1)) for v in c)  # type: ignore[return-value]


def _mix(a, b, t: float):
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def draw_illustration(prompt: str, style: str, width: int, height: int, seed: int = 0) -> bytes:
    """A picture of what ``prompt`` names, in ``style``, as PNG bytes (deterministic)."""
    from PIL import Image, ImageDraw, ImageFilter  # Pillow is needed only here

    digest = hashlib.sha256(f"{seed}|{style}|{prompt}".encode()).digest()
    rng = random.Random(digest)
    sky_top, sky_bottom, ground, effect = _STYLE_LOOK.get(style, _STYLE_LOOK["watercolor"])
    scene, hero, hero_name = _scene_of(prompt)
    words = {_singular(w) for w in _words(scene)}
    night = bool(words & {"night", "moon", "star", "asleep"})
    dusk = bool(words & {"sunset", "sunrise", "dusk"})
    if night:
        sky_top, sky_bottom, ground = _NIGHT
    elif dusk:
        sky_top, sky_bottom = _DUSK
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    W, H = width, height
    unit = min(W, H)
    horizon = int(H * 0.56)
    for row in range(horizon):
        draw.line([(0, row), (W, row)], fill=_mix(sky_top, sky_bottom, row / max(1, horizon - 1)))
    outline = (35, 30, 30) if effect in ("outline", "ink") else None
    # The sky.
    if "sun" in words or ("moon" not in words and not night):
        r = unit * 0.08
        sx, sy = W * 0.84, H * 0.17
        draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=(255, 206, 70))
    if night or "star" in words:
        for _ in range(30):
            x, y = rng.uniform(0, W), rng.uniform(0, horizon * 0.9)
            r = unit * rng.uniform(0.004, 0.009)
            draw.polygon(_star(x, y, r * 2.2, r * 0.8), fill=(255, 248, 200))
    if "moon" in words or night:
        r = unit * 0.075
        mx, my = W * 0.78, H * 0.16
        draw.ellipse([mx - r, my - r, mx + r, my + r], fill=(246, 240, 200))
        if "crescent" in words:
            draw.ellipse([mx - r * 0.5, my - r * 1.1, mx + r * 1.5, my + r * 0.9], fill=sky_top)
    if "bird" in words:  # birds in general fly across the sky
        for i in range(3):
            x, y, b = W * (0.25 + 0.1 * i), H * (0.14 + 0.05 * (i % 2)), unit * 0.025
            draw.line(
                [(x - b, y - b * 0.5), (x, y), (x + b, y - b * 0.5)],
                fill=(50, 45, 60),
                width=max(2, unit // 200),
            )
    if "kite" in words:
        kx, ky, k = W * 0.6, H * 0.22, unit * 0.06
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
    # The land.
    if "hill" in words or "hilltop" in words:
        hill = _shade(ground, 0.9)
        draw.ellipse([W * 0.05, horizon - H * 0.25, W * 0.95, horizon + H * 0.6], fill=hill)
    draw.rectangle([0, horizon, W, H], fill=ground)
    far = _shade(ground, 1.15)
    draw.ellipse([-W * 0.2, horizon - H * 0.06, W * 0.6, horizon + H * 0.1], fill=far)
    draw.ellipse([W * 0.4, horizon - H * 0.04, W * 1.2, horizon + H * 0.1], fill=far)
    _draw_things(draw, words, W, H, horizon, unit, rng, outline)
    # The characters: the others on the right, the hero left of centre.
    others = _others(scene, hero, hero_name)
    for i, other in enumerate(others):
        size = unit * (0.12 if other.kind in ("robin", "bird", "mouse") else 0.16)
        _draw_creature(draw, other, W * (0.7 + 0.14 * i), H * 0.9, size, outline or (40, 35, 35))
    if hero is None and not others:
        hero = _Creature("", COLOUR_RGB[rng.choice(sorted(COLOUR_RGB))])
    if hero is not None:
        _draw_creature(draw, hero, W * 0.33, H * 0.92, unit * 0.22, outline or (40, 35, 35))
        if "basket" in words:
            _basket(draw, W * 0.47, H * 0.9, unit * 0.07, "apple" in words, outline)
        if "lantern" in words:
            lx, ly, r = W * 0.2, H * 0.74, unit * 0.035
            draw.ellipse([lx - r * 2, ly - r * 2, lx + r * 2, ly + r * 2], fill=(255, 236, 150))
            draw.rectangle(
                [lx - r * 0.6, ly - r, lx + r * 0.6, ly + r],
                fill=(250, 200, 60),
                outline=(90, 60, 30),
            )
        if "feather" in words:
            fx, fy, f = W * 0.2, H * 0.78, unit * 0.05
            draw.ellipse([fx - f * 0.3, fy - f, fx + f * 0.3, fy + f], fill=COLOUR_RGB["red"])
            draw.line([(fx, fy - f), (fx, fy + f * 1.3)], fill=(90, 40, 30), width=2)
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

    shifted = ImageChops.offset(img, 4, 4)
    return Image.blend(img, ImageChops.multiply(img, shifted), 0.25)


def _tree(draw, x: float, base: float, h: float, apples: bool, rng, outline) -> None:
    draw.rectangle([x - h * 0.06, base - h * 0.55, x + h * 0.06, base], fill=_TRUNK)
    r = h * 0.32
    for dx, dy in ((0, -0.75), (-0.2, -0.6), (0.2, -0.6)):
        cx, cy = x + dx * h, base + dy * h
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_LEAVES, outline=outline)
    if apples:
        for _ in range(6):
            ax, ay = x + rng.uniform(-0.35, 0.35) * h, base + rng.uniform(-0.9, -0.5) * h
            a = h * 0.035
            draw.ellipse([ax - a, ay - a, ax + a, ay + a], fill=_APPLE)


def _basket(draw, x: float, base: float, s: float, apples: bool, outline) -> None:
    if apples:
        for dx in (-0.5, 0, 0.5):
            draw.ellipse(
                [x + dx * s - s * 0.35, base - s * 1.25, x + dx * s + s * 0.35, base - s * 0.55],
                fill=_APPLE,
            )
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
                draw.ellipse(
                    [x - unit * 0.035, y - unit * 0.015, x + unit * 0.035, y + unit * 0.015],
                    fill=(160, 160, 165),
                )
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
            draw.ellipse([bx - r, by - r, bx + r, by + r], fill=COLOUR_RGB["red"], outline=outline)
    elif "ball" in words:
        bx, by, r = W * 0.55, H * 0.93, unit * 0.03
        draw.ellipse([bx - r, by - r, bx + r, by + r], fill=COLOUR_RGB["red"], outline=outline)
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
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_shade(_BRAMBLE, 1.1))
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
            draw.ellipse([x - r, y - r, x + r, y + r], fill=_BERRY)
    if words & {"flower", "meadow", "daisy"}:
        for _ in range(22):
            x, y = rng.uniform(0, W), rng.uniform(horizon + H * 0.04, H * 0.98)
            r = unit * rng.uniform(0.008, 0.014)
            petal = rng.choice(((250, 250, 250), (246, 208, 55), (240, 150, 185), (180, 140, 230)))
            for dx, dy in ((-r, 0), (r, 0), (0, -r), (0, r)):
                draw.ellipse([x + dx - r, y + dy - r, x + dx + r, y + dy + r], fill=petal)
            draw.ellipse([x - r * 0.6, y - r * 0.6, x + r * 0.6, y + r * 0.6], fill=(250, 190, 40))
    if "nest" in words:
        up = trees and not words & {"grass", "ground", "below", "fallen"}  # in the tree
        nx, ny = (W * 0.86, horizon - H * 0.12) if up else (W * 0.52, H * 0.9)
        s = unit * 0.06
        draw.ellipse(
            [nx - s, ny - s * 0.4, nx + s, ny + s * 0.5], fill=(120, 84, 50), outline=(80, 55, 30)
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
        draw.ellipse([cx - s * 0.25, by0 + s * 0.5, cx + s * 0.25, by1 - s * 0.05], fill=light)
        for side in (-1, 1):
            draw.ellipse(
                [
                    cx + side * s * 0.3 - s * 0.12,
                    by0 + s * 0.35,
                    cx + side * s * 0.3 + s * 0.12,
                    by1 - s * 0.15,
                ],
                fill=dark,
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
            draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(255, 255, 255), outline=dark)
            draw.ellipse(
                [ex - er * 0.45, ey - er * 0.45, ex + er * 0.45, ey + er * 0.45], fill=(30, 25, 30)
            )
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
        draw.ellipse([cx - s * 0.24, by0 + s * 0.3, cx + s * 0.24, by1 - s * 0.05], fill=light)
    # Ears, then the head over them.
    if kind in ("kitten", "cat", "fox"):
        for side in (-1, 1):
            x = hx + side * hr * 0.55
            draw.polygon(
                [
                    (x - hr * 0.38, hy - hr * 0.55),
                    (x + side * hr * 0.1, hy - hr * 1.45),
                    (x + hr * 0.38, hy - hr * 0.55),
                ],
                fill=body,
                outline=line,
            )
    elif kind in ("rabbit", "bunny"):
        for side in (-1, 1):
            x = hx + side * hr * 0.4
            draw.ellipse(
                [x - hr * 0.22, hy - hr * 2.1, x + hr * 0.22, hy - hr * 0.5],
                fill=body,
                outline=line,
            )
            draw.ellipse(
                [x - hr * 0.1, hy - hr * 1.9, x + hr * 0.1, hy - hr * 0.7], fill=(240, 170, 190)
            )
    elif kind in ("bear", "mouse"):
        er = hr * (0.55 if kind == "mouse" else 0.35)
        for side in (-1, 1):
            x, y = hx + side * hr * 0.75, hy - hr * 0.75
            draw.ellipse([x - er, y - er, x + er, y + er], fill=body, outline=line)
            draw.ellipse(
                [x - er * 0.5, y - er * 0.5, x + er * 0.5, y + er * 0.5],
                fill=(240, 170, 190) if kind == "mouse" else dark,
            )
    elif kind == "dragon":
        for i in range(4):  # spikes along the head and back
            x = hx - hr * 0.6 + i * hr * 0.4
            draw.polygon(
                [
                    (x - hr * 0.15, hy - hr * 0.8),
                    (x, hy - hr * 1.3),
                    (x + hr * 0.15, hy - hr * 0.8),
                ],
                fill=dark,
            )
    if kind == "robot":
        draw.line([(hx, hy - hr), (hx, hy - hr * 1.6)], fill=line, width=max(2, w))
        ar = hr * 0.15
        draw.ellipse([hx - ar, hy - hr * 1.6 - ar, hx + ar, hy - hr * 1.6 + ar], fill=(230, 60, 50))
        draw.rounded_rectangle(
            [hx - hr, hy - hr * 0.85, hx + hr, hy + hr * 0.85],
            radius=hr * 0.2,
            fill=body,
            outline=line,
            width=w,
        )
    else:
        draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=body, outline=line, width=w)
    if kind in ("puppy", "dog"):
        for side in (-1, 1):
            x = hx + side * hr * 0.95
            draw.ellipse([x - hr * 0.25, hy - hr * 0.6, x + hr * 0.25, hy + hr * 0.5], fill=dark)
    if kind == "fox":
        draw.polygon(
            [(hx - hr * 0.6, hy + hr * 0.1), (hx, hy + hr * 0.95), (hx + hr * 0.6, hy + hr * 0.1)],
            fill=(250, 250, 245),
        )
    if kind in ("bear", "dragon", "puppy", "dog"):
        draw.ellipse([hx - hr * 0.4, hy + hr * 0.05, hx + hr * 0.4, hy + hr * 0.6], fill=light)
    # A face: eyes and a nose or a beak.
    for side in (-1, 1):
        ex, ey, er = hx + side * hr * 0.38, hy - hr * 0.1, hr * 0.17
        draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(255, 255, 255))
        draw.ellipse(
            [ex - er * 0.55, ey - er * 0.4, ex + er * 0.55, ey + er * 0.7], fill=(25, 22, 30)
        )
    if bird:
        draw.polygon(
            [(hx - hr * 0.2, hy + hr * 0.15), (hx + hr * 0.2, hy + hr * 0.15), (hx, hy + hr * 0.5)],
            fill=(240, 160, 40),
        )
    else:
        nr = hr * 0.1
        draw.ellipse(
            [hx - nr, hy + hr * 0.25 - nr, hx + nr, hy + hr * 0.25 + nr], fill=(60, 35, 40)
        )
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
    _accessory(draw, c, hx, hy, hr, by0, line)


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
    elif c.accessory == "hat":
        draw.rectangle(
            [hx - hr * 0.95, hy - hr * 0.95, hx + hr * 0.95, hy - hr * 0.75],
            fill=colour,
            outline=line,
        )
        draw.polygon(
            [
                (hx - hr * 0.6, hy - hr * 0.85),
                (hx + hr * 0.1, hy - hr * 2.0),
                (hx + hr * 0.6, hy - hr * 0.85),
            ],
            fill=colour,
            outline=line,
        )


class SimulatedImageBackend:
    """An image model that runs on this machine: real PNGs, simulated latency.

    Each request takes ``mean_seconds`` model seconds give or take ``jitter``
    (a fraction, drawn from ``seed`` and the request, so runs repeat), times
    ``time_scale`` in real seconds. Fault injection:

    * ``fail``: placeholders (``"{{IMAGE_3}}"`` or just ``"IMAGE_3"``) that always fail;
    * ``fail_probability``: every attempt fails with this probability;
    * ``slow``: placeholders that take ``slow_factor`` times longer (or a mapping
      placeholder -> factor).

    ``calls`` counts requests per placeholder and ``peak_in_flight`` the most
    requests served at once, for tests and notebooks.
    """

    def __init__(
        self,
        *,
        time_scale: float = 0.05,
        mean_seconds: float = 10.0,
        jitter: float = 0.2,
        seed: int = 0,
        fail: Iterable[str] = (),
        fail_probability: float = 0.0,
        slow: Iterable[str] | Mapping[str, float] = (),
        slow_factor: float = 3.0,
    ) -> None:
        self.time_scale = check_time_scale(time_scale)
        if mean_seconds < 0:
            raise ValueError(f"mean_seconds must be >= 0, got {mean_seconds!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if not 0 <= fail_probability <= 1:
            raise ValueError(f"fail_probability must be in [0, 1], got {fail_probability!r}")
        self.mean_seconds = mean_seconds
        self.jitter = jitter
        self.seed = seed
        # One placeholder given as a plain string means that one, not its letters.
        if isinstance(fail, str):
            fail = [fail]
        if isinstance(slow, str):
            slow = [slow]
        self.fail = {_placeholder(p) for p in fail}
        self.fail_probability = fail_probability
        if isinstance(slow, Mapping):
            self.slow = {_placeholder(p): float(f) for p, f in slow.items()}
        else:
            self.slow = {_placeholder(p): float(slow_factor) for p in slow}
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0

    def __repr__(self) -> str:
        return (
            f"SimulatedImageBackend(time_scale={self.time_scale}, "
            f"mean_seconds={self.mean_seconds}, seed={self.seed})"
        )

    def model_seconds(self, request: ImageRequest, attempt: int = 1) -> float:
        """How long this request takes, in model seconds (deterministic)."""
        rng = random.Random(f"{self.seed}|{request.placeholder}|{request.prompt}|{attempt}")
        seconds = self.mean_seconds * (1 + self.jitter * rng.uniform(-1, 1))
        return seconds * self.slow.get(_placeholder(request.placeholder), 1.0)

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        key = _placeholder(request.placeholder)
        self.calls[key] += 1
        attempt = self.calls[key]
        seconds = self.model_seconds(request, attempt)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            rng = random.Random(f"fail|{self.seed}|{key}|{request.prompt}|{attempt}")
            doomed = key in self.fail or rng.random() < self.fail_probability
            if doomed:
                # A failing model call still costs time before it gives up.
                await asyncio.sleep(seconds * self.time_scale / 2)
                raise SimulatedImageFailure(
                    f"simulated image failure for {request.placeholder or 'image'}"
                )
            await asyncio.sleep(seconds * self.time_scale)
            width, height = image_size(request.quality, request.aspect_ratio)
            style = style_of_prompt(request.prompt)
            data = await asyncio.to_thread(
                draw_illustration, request.prompt, style, width, height, self.seed
            )
            return GeneratedImage(data, "png", width, height, round(seconds, 3))
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        """Nothing to close: the simulated model holds no connection."""


def _placeholder(p: str) -> str:
    """``IMAGE_3``, ``{{IMAGE_3}}`` and ``3`` all name the same placeholder."""
    p = p.strip()
    if p.isdigit():
        return f"{{{{IMAGE_{p}}}}}"
    if not p.startswith("{{"):
        return f"{{{{{p}}}}}"
    return p
