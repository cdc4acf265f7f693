"""The offline backends: real PNGs, simulated latency, faults, writer and safety."""

from __future__ import annotations

import asyncio
import html
import io
import re
import time

import pytest
from PIL import Image

from storylab.story.backends import (
    SimulatedImageBackend,
    SimulatedImageFailure,
    SimulatedTextBackend,
    make_image_backend,
)
from storylab.story.backends.images import (
    COLOUR_RGB,
    CREATURES,
    THINGS,
    ImageRequest,
    draw_illustration,
    image_size,
    style_of_prompt,
)
from storylab.story.backends.text import (
    THEMES,
    assess_topic,
    plan_offline_story,
    write_offline_story,
)
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
    # The youngest get the plot alone; older readers get the details too.
    assert len(_sentences(young)) < len(_sentences(old))


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


# -- the offline story reads as a story ---------------------------------------------
def _pages(story) -> list[str]:
    """The text of each page of the story (title page included, moral page left out)."""
    body = story.html_content.split("<body>", 1)[1]
    sections = re.findall(r"<section[^>]*>(.*?)</section>", body, re.S)
    texts = []
    for section in sections[:-1]:
        paragraphs = re.findall(r"<p>(.*?)</p>", section, re.S)
        texts.append(" ".join(html.unescape(p) for p in paragraphs))
    return texts


def _sentences(story) -> list[str]:
    text = " ".join(_pages(story))
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z'])", text) if s.strip()]


TOPICS = {
    "sharing": "sharing",
    "courage": "courage",
    "a shy dragon": "friendship",
    "a brave kitten": "courage",
    "a brave kitten who learns to share": "sharing",
    "an owl who counts stars": "curiosity",
    "a gentle bear who helps": "kindness",
}
AGES = ["2-4", "3-10", "8-12"]


@pytest.mark.parametrize("topic", TOPICS)
def test_the_topic_s_theme_is_in_the_plot_and_the_moral(topic):
    plan = plan_offline_story(topic)
    assert plan.theme == TOPICS[topic]
    stems = THEMES[plan.theme].words
    for age in AGES:
        story = write_offline_story(topic, {"age_range": age})
        plot = " ".join(_pages(story)).lower()
        assert sum(plot.count(stem) for stem in stems) >= 2, (age, plot)
        assert any(stem in story.moral.lower() for stem in stems), story.moral


def test_the_theme_check_above_can_fail():
    # Another topic's story does not carry this theme's words (so the check means something).
    story = write_offline_story("an owl who counts stars", {"age_range": "2-4"})
    plot = " ".join(_pages(story)).lower()
    assert "shar" not in plot and "shar" not in story.moral.lower()


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("count", [1, 3, 5, 10])
def test_no_sentence_repeats_and_the_whole_plot_is_told(topic, count):
    for age in AGES:
        story = write_offline_story(topic, {"illustration_count": count, "age_range": age})
        sentences = _sentences(story)
        assert len(sentences) == len(set(sentences)), sentences
        first = write_offline_story(topic, {"illustration_count": 1, "age_range": age})
        assert sentences == _sentences(first)  # the number of pages changes no word


def _introduction_problems(sentences: list[str], plan) -> list[str]:
    """Who or what is referred to before the story introduced it."""
    problems = []
    text = " ".join(sentences)

    def first(word: str) -> str:
        return next((s for s in sentences if re.search(rf"\b{re.escape(word)}\b", s)), "")

    if f"{plan.hero}, {plan.hero_look}," not in first(plan.hero):
        problems.append(f"{plan.hero} is named before being introduced")
    if f"{plan.friend_look} named {plan.friend}" not in first(plan.friend):
        problems.append(f"{plan.friend} is named before being introduced")
    if not re.search(rf"{re.escape(plan.place)}, (a|an|the|under|where) ", first(plan.place)):
        problems.append(f"{plan.place} is not described where it first appears")
    at = text.find(f"the {plan.friend_kind}")
    if at != -1 and at < text.find(f"named {plan.friend}"):
        problems.append(f"'the {plan.friend_kind}' before the {plan.friend_kind} came in")
    # A thing first appears as "a ..." (or someone's), never as "the ..." out of nowhere.
    for thing in ("path", "brambles", "apple tree", "basket", "reeds", "kite", "nest",
                  "lantern", "river", "ball", "pond", "oak"):  # fmt: skip
        m = re.search(rf"\b{thing}\b", text)
        if m and text[max(0, m.start() - 4) : m.start()].lower() == "the ":
            problems.append(f"'the {thing}' out of nowhere")
    return problems


@pytest.mark.parametrize("topic", TOPICS)
def test_everyone_and_everything_is_introduced_before_it_is_referred_to(topic):
    plan = plan_offline_story(topic)
    for age in AGES:
        sentences = _sentences(write_offline_story(topic, {"age_range": age}))
        assert _introduction_problems(sentences, plan) == [], sentences


def test_the_introduction_check_can_fail():
    plan = plan_offline_story("a brave kitten")
    told = _sentences(write_offline_story("a brave kitten", {"age_range": "8-12"}))
    # The same story with the friend's arrival, and then the first page, left out.
    no_friend = [s for s in told if f"named {plan.friend}" not in s]
    assert f"{plan.friend} is named before being introduced" in _introduction_problems(
        no_friend, plan
    )
    problems = _introduction_problems(told[1:], plan)
    assert f"{plan.hero} is named before being introduced" in problems
    assert "'the path' out of nowhere" in problems


@pytest.mark.parametrize("topic", TOPICS)
def test_each_prompt_names_what_its_page_shows_and_the_hero_s_fixed_look(topic):
    story = write_offline_story(topic, {"illustration_count": 5})
    plan = plan_offline_story(topic)
    clause = f"The main character, {plan.hero}, is {plan.hero_look}, drawn the same on every page"
    for prompt, page in zip(story.image_prompts, _pages(story), strict=True):
        assert clause in prompt.prompt
        scene = prompt.prompt.split(clause)[0].lower()
        named = {w for w in re.findall(r"[a-z]+", scene) if w.rstrip("s") in THINGS + CREATURES
                 or w in THINGS}  # fmt: skip
        assert len(named) >= 2, scene  # concrete, drawable things
        # The picture shows who the page talks about.
        for who in (plan.hero, plan.friend):
            if who in page.split(".")[0]:
                assert who.lower() in scene, (who, scene)


def test_a_topic_that_names_no_creature_still_gets_a_drawable_hero():
    plan = plan_offline_story("sharing")
    assert plan.hero_kind in CREATURES
    assert plan_offline_story("a purple dragon").hero_look.startswith("a little purple dragon")
    assert plan_offline_story("owl").hero_kind == "owl"
    assert plan_offline_story("sharing", seed=0) == plan_offline_story("sharing", seed=0)


# -- the simulated pictures draw what the prompt names ---------------------------------
def _png(prompt: str, style: str = "digital-art", size=(320, 214)):
    data = draw_illustration(prompt, style, *size)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(data)).convert("RGB")


def _pixels(img) -> list[tuple[int, int, int]]:
    data = img.tobytes()
    return list(zip(data[0::3], data[1::3], data[2::3], strict=True))


def _share(img, colour, box=None, tol: int = 12) -> float:
    """The share of the pixels in ``box`` (fractions of the picture) close to ``colour``."""
    w, h = img.size
    if box:
        img = img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    pixels = _pixels(img)
    close = sum(1 for p in pixels if max(abs(a - b) for a, b in zip(p, colour, strict=True)) <= tol)
    return close / len(pixels)


def test_the_hero_keeps_its_colours_on_every_page_of_a_story():
    from storylab.story.offline.prompt import parse_prompt

    story = write_offline_story("a shy dragon", {"style": "digital-art", "illustration_count": 6})
    plan = plan_offline_story("a shy dragon")
    body = COLOUR_RGB[plan.hero_look.split(" dragon")[0].split()[-1]]
    accessory = COLOUR_RGB[plan.hero_look.split(" with a ")[1].split()[0]]
    for p in story.image_prompts:
        # The hero stands where the page's framing puts it (left, centre or right).
        x = {"left": 0.33, "centre": 0.5, "right": 0.67}[parse_prompt(p.prompt).hero_at]
        hero_box = (x - 0.17, 0.3, x + 0.17, 1.0)
        img = _png(p.prompt)
        assert _share(img, body, hero_box) > 0.015, p.prompt
        assert _share(img, accessory, hero_box) > 0.001, p.prompt
    # The check can fail: another hero's colour is not there.
    other = write_offline_story("a brave kitten", {"style": "digital-art"}).image_prompts[0]
    kitten = plan_offline_story("a brave kitten").hero_look
    assert body != COLOUR_RGB[kitten.split(" kitten")[0].split()[-1]]
    assert _share(_png(other.prompt), body, (0.0, 0.3, 1.0, 1.0)) < 0.005


def test_a_path_is_drawn_where_a_path_goes_and_only_when_named():
    path = (222, 196, 140)
    with_path = _png("A fox on a path between tall trees")
    without = _png("A fox between tall trees")
    bottom_middle = (0.5, 0.85, 0.7, 1.0)
    assert _share(with_path, path, bottom_middle) > 0.5
    assert _share(without, path, bottom_middle) == 0


def test_a_fox_and_brambles_and_a_path_are_all_in_the_picture():
    img = _png("A red fox by a tangle of brambles beside a path")
    assert _share(img, COLOUR_RGB["red"], (0.55, 0.6, 1.0, 1.0)) > 0.02  # the fox, on the right
    assert _share(img, (38, 82, 44), (0.55, 0.5, 1.0, 0.8)) > 0.03  # the brambles
    assert _share(img, (222, 196, 140), (0.4, 0.85, 0.7, 1.0)) > 0.3  # the path
    bare = _png("A quiet meadow")
    assert _share(bare, COLOUR_RGB["red"], (0.55, 0.6, 1.0, 1.0)) < 0.005
    assert _share(bare, (38, 82, 44), (0.55, 0.5, 1.0, 0.8)) < 0.005


@pytest.mark.parametrize(
    ("word", "colour", "box"),
    [
        ("moon", (246, 240, 200), (0.7, 0.05, 0.88, 0.3)),
        ("river", (95, 160, 215), (0.0, 0.62, 1.0, 0.7)),
        ("house", (232, 204, 160), (0.05, 0.4, 0.25, 0.6)),
        ("basket", (176, 126, 66), (0.4, 0.75, 0.55, 0.95)),
    ],
)
def test_named_things_are_drawn(word, colour, box):
    hero = "The main character, Pip, is a little grey kitten with a blue scarf"
    assert _share(_png(f"Pip near a {word}. {hero}."), colour, box, tol=6) > 0.02
    assert _share(_png(f"Pip in a field. {hero}."), colour, box, tol=6) < 0.005


def test_the_same_prompt_draws_the_same_bytes_and_night_is_dark():
    prompt = "An owl under the moon and stars"
    assert draw_illustration(prompt, "watercolor", 160, 120) == draw_illustration(
        prompt, "watercolor", 160, 120
    )
    night = _png("A mouse asleep under the moon")
    day = _png("A mouse in the sun")
    sky = (0.0, 0.0, 1.0, 0.4)

    def brightness(img):
        crop = img.crop((0, 0, img.size[0], int(img.size[1] * sky[3])))
        return sum(crop.tobytes()) / (3 * crop.size[0] * crop.size[1])

    assert brightness(night) < 80 < 150 < brightness(day)


@pytest.mark.parametrize("style", sorted(STYLE_DESCRIPTIONS))
def test_every_style_draws_a_full_story(style):
    story = write_offline_story("a brave kitten who learns to share", {"style": style})
    for p in story.image_prompts:
        assert style_of_prompt(p.prompt) == style
        img = _png(p.prompt, style)
        assert img.size == (320, 214) and len(set(_pixels(img))) > 20
