"""The offline backends: real PNGs, simulated latency, faults, writer and safety."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from storylab.story.backends import (
    SimulatedImageBackend,
    SimulatedImageFailure,
    SimulatedTextBackend,
    make_image_backend,
)
from storylab.story.backends.images import ImageRequest, image_size, style_of_prompt
from storylab.story.backends.text import assess_topic, write_offline_story
from storylab.story.models import STYLE_DESCRIPTIONS


@pytest.mark.parametrize(
    ("quality", "ratio", "size"),
    [
        ("low", "1:1", (320, 320)),
        ("medium", "3:2", (640, 427)),
        ("high", "16:9", (1024, 576)),
        ("high", "2:3", (683, 1024)),
        ("bogus", "bogus", (640, 427)),  # unknown values fall back to medium and 3:2
    ],
)
def test_image_size_follows_quality_and_ratio(quality, ratio, size):
    assert image_size(quality, ratio) == size


async def test_simulated_backend_returns_a_real_png_of_that_size():
    backend = SimulatedImageBackend(time_scale=0.001)
    prompt = "A kitten on a hill. " + STYLE_DESCRIPTIONS["paper-cutout"]
    out = await backend.generate(ImageRequest(prompt, "{{IMAGE_1}}", "low", "4:3"))
    img = Image.open(io.BytesIO(out.data))
    assert img.format == "PNG" and img.size == (320, 240) == (out.width, out.height)
    assert style_of_prompt(prompt) == "paper-cutout"
    # Different prompts draw different pictures; the same prompt draws the same one.
    again = await backend.generate(ImageRequest(prompt, "{{IMAGE_1}}", "low", "4:3"))
    other = await backend.generate(ImageRequest("A dragon by the sea", "{{IMAGE_1}}", "low", "4:3"))
    assert again.data == out.data and other.data != out.data


def test_latency_is_seeded_jittered_and_about_ten_model_seconds():
    a = SimulatedImageBackend(seed=1)
    b = SimulatedImageBackend(seed=1)
    reqs = [ImageRequest(f"scene {i}", f"{{{{IMAGE_{i}}}}}") for i in range(1, 30)]
    secs = [a.model_seconds(r) for r in reqs]
    assert secs == [b.model_seconds(r) for r in reqs]
    assert all(8.0 <= s <= 12.0 for s in secs) and len(set(secs)) > 20
    assert secs != [SimulatedImageBackend(seed=2).model_seconds(r) for r in reqs]


async def test_time_scale_turns_model_seconds_into_real_seconds():
    backend = SimulatedImageBackend(time_scale=0.005, jitter=0.0)
    start = time.perf_counter()
    await backend.generate(ImageRequest("x", "{{IMAGE_1}}", "low"))
    # 10 model seconds at 0.005 is 50 ms; asyncio.sleep never returns early.
    assert time.perf_counter() - start >= 0.05


async def test_fault_injection_by_placeholder_probability_and_slowness():
    backend = SimulatedImageBackend(time_scale=0.001, fail=["IMAGE_2"], slow=["{{IMAGE_3}}"])
    with pytest.raises(SimulatedImageFailure, match=r"\{\{IMAGE_2\}\}"):
        await backend.generate(ImageRequest("x", "{{IMAGE_2}}", "low"))
    r1 = ImageRequest("x", "{{IMAGE_1}}")
    r3 = ImageRequest("x", "{{IMAGE_3}}")
    assert backend.model_seconds(r3) > 2 * backend.model_seconds(r1)
    always = SimulatedImageBackend(time_scale=0.001, fail_probability=1.0)
    with pytest.raises(SimulatedImageFailure):
        await always.generate(r1)
    never = SimulatedImageBackend(time_scale=0.001, fail_probability=0.0)
    assert (await never.generate(ImageRequest("x", "{{IMAGE_1}}", "low"))).format == "png"


async def test_peak_in_flight_is_counted():
    backend = SimulatedImageBackend(time_scale=0.002)
    reqs = [ImageRequest("x", f"{{{{IMAGE_{i}}}}}", "low") for i in range(4)]
    await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert backend.peak_in_flight == 4 and backend.in_flight == 0


@pytest.mark.parametrize("bad", [0, -1, 0.0, "fast", None, True])
def test_time_scale_must_be_positive(bad):
    with pytest.raises(ValueError, match="time_scale must be a number > 0"):
        SimulatedImageBackend(time_scale=bad)
    with pytest.raises(ValueError, match="time_scale must be a number > 0"):
        SimulatedTextBackend(time_scale=bad)


def test_unknown_backend_name_is_refused_with_the_choices():
    with pytest.raises(
        ValueError, match="Unknown image backend 'dalle'. Must be one of: simulated, http"
    ):
        make_image_backend("dalle")
    assert type(make_image_backend("http")).__name__ == "HttpImageBackend"


# -- text -----------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 3, 5, 10])
def test_writer_makes_one_prompt_per_placeholder(count):
    story = write_offline_story("a brave kitten", {"illustration_count": count})
    placeholders = [p.placeholder for p in story.image_prompts]
    assert placeholders == [f"{{{{IMAGE_{i}}}}}" for i in range(1, count + 1)]
    for ph in placeholders:
        assert story.html_content.count(ph) == 1
    assert story.title and story.moral and story.age_range == "3-10"


def test_writer_defaults_to_five_and_honours_style_and_age_range():
    story = write_offline_story("a brave kitten")
    assert len(story.image_prompts) == 5
    assert all(STYLE_DESCRIPTIONS["watercolor"] in p.prompt for p in story.image_prompts)
    anime = write_offline_story("a brave kitten", {"style": "anime"})
    assert all(STYLE_DESCRIPTIONS["anime"] in p.prompt for p in anime.image_prompts)
    young = write_offline_story("a brave kitten", {"age_range": "2-4"})
    old = write_offline_story("a brave kitten", {"age_range": "9-12"})
    assert young.age_range == "2-4" and old.age_range == "9-12"
    assert young.html_content.count("<p>") < old.html_content.count("<p>")


def test_writer_is_deterministic_per_seed():
    assert write_offline_story("owl", seed=3) == write_offline_story("owl", seed=3)
    assert write_offline_story("owl", seed=3) != write_offline_story("owl", seed=4)


def test_writer_escapes_the_topic():
    story = write_offline_story('<script>alert("x")</script> & friends')
    assert "<script" not in story.html_content
    assert "&lt;script&gt;" in story.html_content


@pytest.mark.parametrize(
    ("topic", "safe"),
    [
        ("a brave kitten who makes friends", True),
        ("a friendly ghost who is lonely", True),
        ("a bloody murder in the woods", False),
        ("kids drinking beer", False),
        ("a sexy story", False),
    ],
)
def test_safety_check_scores_and_explains(topic, safe):
    result = assess_topic(topic)
    assert result.is_safe is safe
    assert 0 <= result.safety_score <= 100 and result.reasoning
    if safe:
        assert result.safety_score >= 60
    else:
        assert result.concerns and result.safety_score < 100


async def test_text_backend_counts_calls():
    backend = SimulatedTextBackend(time_scale=0.001)
    assert (await backend.check_safety("a kitten")).is_safe
    story = await backend.write_story("a kitten", {"illustration_count": 2})
    assert len(story.image_prompts) == 2
    assert backend.calls == {"safety": 1, "writer": 1}


def test_a_single_placeholder_string_means_that_placeholder():
    from storylab.story.backends import SimulatedImageBackend

    backend = SimulatedImageBackend(fail="IMAGE_12", slow="IMAGE_3")
    assert backend.fail == {"{{IMAGE_12}}"}
    assert set(backend.slow) == {"{{IMAGE_3}}"}
