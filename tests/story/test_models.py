"""Validation of story requests (spec 5.6, items 59-60) and deterministic names."""

from __future__ import annotations

import hashlib

import pytest

from storylab.story.models import (
    ContentSafetyResult,
    StoryCustomization,
    StoryOutput,
    StoryValidationError,
    normalized_customization,
    pipeline_name,
    slugify,
    validate_story_request,
)

STYLE_MSG = (
    "Invalid style. Must be one of: watercolor, digital-art, colored-pencil, "
    "storybook-classic, anime, paper-cutout"
)
QUALITY_MSG = "Invalid image_quality. Must be one of: low, medium, high"
RATIO_MSG = "Invalid aspect_ratio. Must be one of: 1:1, 3:2, 2:3, 4:3, 16:9"
COUNT_MSG = "illustration_count must be between 1 and 10"


@pytest.mark.parametrize(
    ("topic", "customization", "field", "message"),
    [
        ("", None, "topic", "Topic is required"),
        ("   \n\t", None, "topic", "Topic is required"),
        (None, None, "topic", "Topic is required"),
        ("x" * 501, None, "topic", "Topic must be 500 characters or fewer"),
        # Measured untrimmed: 499 letters plus spaces is too long.
        (" " + "x" * 499 + " ", None, "topic", "Topic must be 500 characters or fewer"),
        ("kitten", {"style": "pastel"}, "style", STYLE_MSG),
        ("kitten", {"image_quality": "ultra"}, "image_quality", QUALITY_MSG),
        ("kitten", {"aspect_ratio": "5:4"}, "aspect_ratio", RATIO_MSG),
        ("kitten", {"illustration_count": 0}, "illustration_count", COUNT_MSG),
        ("kitten", {"illustration_count": 11}, "illustration_count", COUNT_MSG),
        ("kitten", {"illustration_count": None}, "illustration_count", COUNT_MSG),
        ("kitten", {"illustration_count": 2.5}, "illustration_count", COUNT_MSG),
        ("kitten", {"illustration_count": True}, "illustration_count", COUNT_MSG),
        ("kitten", {"illustration_count": "3"}, "illustration_count", COUNT_MSG),
        # Order: style is checked before quality, ratio and count.
        (
            "kitten",
            {"illustration_count": 99, "aspect_ratio": "9:9", "style": "nope"},
            "style",
            STYLE_MSG,
        ),
        ("kitten", {"illustration_count": 99, "aspect_ratio": "9:9"}, "aspect_ratio", RATIO_MSG),
    ],
)
def test_bad_requests_get_the_exact_message(topic, customization, field, message):
    with pytest.raises(StoryValidationError) as info:
        validate_story_request(topic, customization)
    assert str(info.value) == message
    assert info.value.field == field


def test_topic_is_checked_before_customization():
    with pytest.raises(StoryValidationError, match="^Topic is required$"):
        validate_story_request(" ", {"style": "nope"})


@pytest.mark.parametrize(
    "customization",
    [
        None,
        {},
        {"style": "", "image_quality": "", "aspect_ratio": ""},
        {"illustration_count": 1},
        {"illustration_count": 10},
        {"age_range": "anything at all", "reference_image_base64": "zzz"},
        StoryCustomization(style="anime", illustration_count=3),
    ],
)
def test_good_requests_pass(customization):
    validate_story_request("x" * 500, customization)


def test_slug_of_the_tutorial_topic():
    assert slugify("A Brave Kitten's Adventure!") == "a-brave-kitten-s-adventure-"
    assert len(slugify("word " * 40)) == 40


def test_pipeline_name_format_and_hash():
    c = {"style": "anime", "illustration_count": 3}
    digest = hashlib.sha256(b'{"style":"anime","illustration_count":3}').hexdigest()[:8]
    assert pipeline_name("  A Brave Kitten  ", c) == f"story-pipeline-a-brave-kitten-{digest}"
    assert pipeline_name("A brave kitten") == "story-pipeline-a-brave-kitten-0"
    # An empty customization is still a customization (it hashes "{}").
    empty = hashlib.sha256(b"{}").hexdigest()[:8]
    assert pipeline_name("A brave kitten", {}) == f"story-pipeline-a-brave-kitten-{empty}"


def test_pipeline_name_is_deterministic_and_depends_on_customization():
    a = pipeline_name("kitten", {"style": "anime"})
    assert a == pipeline_name("kitten", {"style": "anime"})
    assert a == pipeline_name("kitten", StoryCustomization(style="anime"))
    assert a != pipeline_name("kitten", {"style": "watercolor"})
    assert a != pipeline_name("kitten")


def test_safety_score_is_validated():
    with pytest.raises(ValueError, match="safety_score"):
        ContentSafetyResult(is_safe=True, safety_score=101)
    with pytest.raises(ValueError, match="safety_score"):
        ContentSafetyResult(is_safe=True, safety_score=-1)


def test_story_output_round_trips_through_json():
    story = StoryOutput.from_json(
        {
            "title": "T",
            "html_content": "<p>{{IMAGE_1}}</p>",
            "image_prompts": [{"placeholder": "{{IMAGE_1}}", "prompt": "p"}],
            "moral": "m",
            "age_range": "3-8",
        }
    )
    assert story.image_prompts[0].alt_text == "Story illustration"
    assert StoryOutput.from_json(story.to_json()) == story


def test_a_customization_that_restates_the_defaults_is_no_customization():
    defaults = {"style": "watercolor", "image_quality": "medium", "age_range": " 3 - 10",
                "illustration_count": 5, "aspect_ratio": "3:2"}  # fmt: skip
    assert normalized_customization(defaults) is None
    assert normalized_customization(None) is None
    assert pipeline_name("owl", normalized_customization(defaults)) == pipeline_name("owl")
    # Only the defaults go; what differs stays, in the order given.
    chosen = {"illustration_count": 4, "style": "watercolor", "age_range": "5 - 7"}
    assert normalized_customization(chosen) == {"illustration_count": 4, "age_range": "5-7"}
    assert pipeline_name("owl", normalized_customization(chosen)) != pipeline_name("owl")
    # pipeline_name itself still hashes what it is given (the documented names).
    assert pipeline_name("owl", {"illustration_count": 5}) != pipeline_name("owl")
    # A value that is not a valid count is kept, so that validation refuses it.
    assert normalized_customization({"illustration_count": True}) == {"illustration_count": True}
