"""The story pipeline's vocabulary: choices, results, validation and names.

A request for a story is a topic plus an optional *customization* (style,
image quality, aspect ratio, age range, number of illustrations). Before any
entity exists the request is checked here, in a fixed order, with messages a
user can act on; then it is turned into a *deterministic* pipeline name, so
asking for the same story twice finds the same entity (and resumes it, or
returns its stored result) instead of starting over.

Everything that crosses an entity boundary is plain JSON in the graph store,
so each result type has ``to_json()`` and ``from_json()``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from storylab.errors import StorylabError

__all__ = [
    "DEFAULT_AGE_RANGE",
    "DEFAULT_ASPECT_RATIO",
    "DEFAULT_ILLUSTRATION_COUNT",
    "DEFAULT_IMAGE_QUALITY",
    "DEFAULT_MODEL_POOL",
    "DEFAULT_STYLE",
    "STYLE_DESCRIPTIONS",
    "AspectRatioOption",
    "ContentSafetyResult",
    "GeneratedImageResult",
    "IllustrationStyle",
    "ImagePrompt",
    "ImageQualityLevel",
    "PipelineResult",
    "Stage",
    "StoryCustomization",
    "StoryOutput",
    "StoryValidationError",
    "customization_json",
    "normalized_customization",
    "pipeline_name",
    "slugify",
    "validate_story_request",
]


class IllustrationStyle(StrEnum):
    WATERCOLOR = "watercolor"
    DIGITAL_ART = "digital-art"
    COLORED_PENCIL = "colored-pencil"
    STORYBOOK_CLASSIC = "storybook-classic"
    ANIME = "anime"
    PAPER_CUTOUT = "paper-cutout"


class ImageQualityLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class AspectRatioOption(StrEnum):
    SQUARE = "1:1"
    LANDSCAPE = "3:2"
    PORTRAIT = "2:3"
    STANDARD = "4:3"
    WIDE = "16:9"


class Stage(StrEnum):
    """Values of ``stage`` in a pipeline's entity data, in the order they occur."""

    SAFETY_CHECK = "safety_check"
    REJECTED = "rejected"
    SAFETY_PASSED = "safety_passed"
    WRITING = "writing"
    WRITING_COMPLETE = "writing_complete"
    GENERATING_REFERENCE = "generating_reference"
    GENERATING_IMAGES = "generating_images"
    ASSEMBLING = "assembling"
    CREATING_PDF = "creating_pdf"
    STORING_RESULTS = "storing_results"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"


DEFAULT_STYLE = IllustrationStyle.WATERCOLOR
DEFAULT_IMAGE_QUALITY = ImageQualityLevel.MEDIUM
DEFAULT_ASPECT_RATIO = AspectRatioOption.LANDSCAPE
DEFAULT_AGE_RANGE = "3-10"
DEFAULT_ILLUSTRATION_COUNT = 5
DEFAULT_MODEL_POOL = "fb-image-gen"

# One prompt fragment per style: what a picture book in that style looks like.
STYLE_DESCRIPTIONS: dict[str, str] = {
    "watercolor": (
        "A picture-book illustration painted in loose watercolor: pale washes that bleed "
        "into each other, warm light, soft edges and a gentle, dreamlike calm"
    ),
    "digital-art": (
        "A picture-book illustration in bright digital painting: crisp outlines, saturated "
        "colors, smooth gradients and a cheerful, energetic feel"
    ),
    "colored-pencil": (
        "A picture-book illustration drawn with colored pencils: visible strokes and paper "
        "grain, earthy browns and greens, and a cozy handmade mood"
    ),
    "storybook-classic": (
        "A picture-book illustration in the old-fashioned storybook manner: fine ink "
        "linework over muted washes, detailed backgrounds and a timeless, gentle tone"
    ),
    "anime": (
        "A picture-book illustration in a cute anime manner: big expressive eyes, pastel "
        "palette, clean cel shading and a sweet, playful mood"
    ),
    "paper-cutout": (
        "A picture-book illustration made of layered cut paper: flat bold shapes, soft "
        "drop shadows between layers, simple forms and a crafty, lively feel"
    ),
}

_STYLES = tuple(s.value for s in IllustrationStyle)
_QUALITIES = tuple(q.value for q in ImageQualityLevel)
_RATIOS = tuple(r.value for r in AspectRatioOption)
MAX_TOPIC_LENGTH = 500
MIN_ILLUSTRATIONS, MAX_ILLUSTRATIONS = 1, 10


class StoryValidationError(StorylabError, ValueError):
    """A story request was refused; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- customization ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoryCustomization:
    """Optional knobs of a story request. ``None`` means "not given".

    ``to_json()`` drops the fields left at ``None`` so that the JSON (and the
    pipeline name hashed from it) only reflects what the caller chose.
    """

    style: str | None = None
    image_quality: str | None = None
    age_range: str | None = None
    illustration_count: int | None = None
    aspect_ratio: str | None = None
    reference_image_base64: str | None = None

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> StoryCustomization:
        data = data or {}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def customization_json(customization: Any) -> dict[str, Any] | None:
    """A customization as the JSON object stored in entity data (or ``None``)."""
    if customization is None:
        return None
    if isinstance(customization, StoryCustomization):
        return customization.to_json()
    if isinstance(customization, Mapping):
        return dict(customization)
    raise StoryValidationError(
        "customization",
        "customization must be a mapping or StoryCustomization, "
        f"got {type(customization).__name__}",
    )


def validate_story_request(topic: Any, customization: Any = None) -> dict[str, Any] | None:
    """Check a request in the documented order; return the customization as JSON.

    Raises :class:`StoryValidationError` with the first problem found. Empty
    strings for style, quality and ratio pass (they mean "use the default");
    ``age_range`` and ``reference_image_base64`` are not checked. An
    ``illustration_count`` that is present must be an integer from 1 to 10
    (``None``, floats and booleans are refused, as JSON ``null`` would be).
    """
    if not isinstance(topic, str) or not topic.strip():
        raise StoryValidationError("topic", "Topic is required")
    # Measured on the untrimmed topic, in code points.
    if len(topic) > MAX_TOPIC_LENGTH:
        raise StoryValidationError("topic", "Topic must be 500 characters or fewer")
    cust = customization_json(customization)
    if cust:
        style = cust.get("style")
        if style and style not in _STYLES:
            raise StoryValidationError(
                "style", "Invalid style. Must be one of: " + ", ".join(_STYLES)
            )
        quality = cust.get("image_quality")
        if quality and quality not in _QUALITIES:
            raise StoryValidationError(
                "image_quality", "Invalid image_quality. Must be one of: " + ", ".join(_QUALITIES)
            )
        ratio = cust.get("aspect_ratio")
        if ratio and ratio not in _RATIOS:
            raise StoryValidationError(
                "aspect_ratio", "Invalid aspect_ratio. Must be one of: " + ", ".join(_RATIOS)
            )
        if "illustration_count" in cust:
            count = cust["illustration_count"]
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not MIN_ILLUSTRATIONS <= count <= MAX_ILLUSTRATIONS
            ):
                raise StoryValidationError(
                    "illustration_count", "illustration_count must be between 1 and 10"
                )
    return cust


_DEFAULTS: dict[str, Any] = {
    "style": DEFAULT_STYLE.value,
    "image_quality": DEFAULT_IMAGE_QUALITY.value,
    "age_range": DEFAULT_AGE_RANGE,
    "illustration_count": DEFAULT_ILLUSTRATION_COUNT,
    "aspect_ratio": DEFAULT_ASPECT_RATIO.value,
}


def normalized_customization(customization: Any) -> dict[str, Any] | None:
    """The customization without the values that only restate a default.

    ``{"illustration_count": 5}`` asks for the same story as no customization
    at all; passed through this first, both get the same pipeline name (and
    so the second request finds the first one's entity). Empty strings and
    ``None`` mean "the default" too; an age range is written ``lo-hi``.
    :func:`pipeline_name` itself hashes what it is given, unchanged.
    """
    cust = customization_json(customization)
    if cust is None:
        return None
    out: dict[str, Any] = {}
    for key, value in cust.items():
        if key == "age_range" and isinstance(value, str):
            value = re.sub(r"\s+", "", value)
        if value is None or value == "" or (key in _DEFAULTS and value == _DEFAULTS[key]):
            continue
        out[key] = value
    return out or None


def slugify(topic: str) -> str:
    """Lower-case, runs of anything but ``a-z0-9`` become ``-``, first 40 characters."""
    return re.sub(r"[^a-z0-9]+", "-", topic.strip().lower())[:40]


def pipeline_name(topic: str, customization: Any = None) -> str:
    """``story-pipeline-<slug>-<hash>``: the same request always gets the same name.

    The hash is the first 8 hex digits of the SHA-256 of the customization's
    compact JSON (keys in the order given), or ``0`` without a customization.
    An empty customization ``{}`` is a customization: it hashes ``"{}"``.
    """
    cust = customization_json(customization)
    if cust is not None:
        text = json.dumps(cust, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    else:
        digest = "0"
    return f"story-pipeline-{slugify(topic)}-{digest}"


# -- results -----------------------------------------------------------------------
class _Json:
    """``to_json``/``from_json`` for the frozen dataclasses below."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class ContentSafetyResult(_Json):
    """The safety check's verdict on a topic; ``safety_score`` is 0 (unsafe) to 100.

    ``source`` says who decided (``"offline rules"``, ``"moderation endpoint"``,
    ``"chat classification"``) and ``reason`` why, in one line a teacher can
    read; ``reasoning`` may say more.
    """

    is_safe: bool
    safety_score: float
    concerns: list[str] = field(default_factory=list)
    reasoning: str = ""
    source: str = ""
    reason: str = ""

    @property
    def verdict(self) -> str:
        """``"safe"`` or ``"unsafe"``."""
        return "safe" if self.is_safe else "unsafe"

    def __post_init__(self) -> None:
        score = self.safety_score
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 100:
            raise ValueError(f"safety_score must be a number from 0 to 100, got {score!r}")


@dataclass(frozen=True, slots=True)
class ImagePrompt(_Json):
    placeholder: str
    prompt: str
    alt_text: str = "Story illustration"


@dataclass(frozen=True, slots=True)
class StoryOutput(_Json):
    """What the writer returns: HTML with ``{{IMAGE_N}}`` placeholders and one prompt each."""

    title: str
    html_content: str
    image_prompts: list[ImagePrompt]
    moral: str
    age_range: str
    needs_reference_image: bool = False
    reference_image_description: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoryOutput:
        prompts = [
            p if isinstance(p, ImagePrompt) else ImagePrompt.from_json(p)
            for p in data.get("image_prompts") or []
        ]
        return cls(
            title=data.get("title", ""),
            html_content=data.get("html_content", ""),
            image_prompts=prompts,
            moral=data.get("moral", ""),
            age_range=data.get("age_range", ""),
            needs_reference_image=bool(data.get("needs_reference_image", False)),
            reference_image_description=data.get("reference_image_description"),
        )


@dataclass(frozen=True, slots=True)
class GeneratedImageResult(_Json):
    """One finished image. The bytes live in the blob store under ``object_key``;
    ``base64`` is only filled in when the HTML is assembled."""

    placeholder: str
    content_type: str
    alt_text: str
    object_key: str | None = None
    base64: str | None = None
    width: int | None = None
    height: int | None = None
    model_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PipelineResult(_Json):
    """What a pipeline returns. ``failed_images`` is ``None`` when nothing failed."""

    stage: str
    title: str | None = None
    moral: str | None = None
    age_range: str | None = None
    image_count: int | None = None
    failed_images: int | None = None
    html_key: str | None = None
    safety_result: dict[str, Any] | None = None
