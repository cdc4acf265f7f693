"""Image backends: one small protocol, a simulated generator behind it.

The pipeline only ever calls ``await backend.generate(ImageRequest(...))`` and
gets a :class:`GeneratedImage` (bytes, format, size) back, the way an httpx
client only talks to a transport. Two backends implement it:

* :class:`SimulatedImageBackend` (the default) draws a real PNG for each
  prompt with Pillow (the scene the prompt describes, see
  :mod:`storylab.story.offline.drawing`) and takes about as long as a hosted
  model would, in *model seconds* multiplied by ``time_scale``. It can be told to fail or to
  slow down chosen images, so failure isolation and stragglers can be shown.
* :class:`~storylab.story.backends.http_images.HttpImageBackend` talks to an
  OpenAI-compatible images endpoint over HTTP.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import Iterable, Mapping

from storylab._checks import check_positive_number
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
from storylab.story.offline.drawing import COLOUR_RGB, CREATURES, THINGS, draw_illustration

__all__ = [
    "ASPECT_RATIOS",
    "COLOUR_RGB",
    "CREATURES",
    "THINGS",
    "draw_illustration",
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
    """Real seconds per model second: a finite number > 0."""
    return check_positive_number("time_scale", time_scale)


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


# -- drawing: the offline illustrator lives in storylab.story.offline.drawing -------------


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
