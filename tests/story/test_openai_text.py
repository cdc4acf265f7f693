"""The chat-completions writer against answers a real model might give.

Each story runs the whole pipeline on a real graph, with the writer talking
to the strict contract server over loopback and the server answering what
the test scripts: a clean page or a clear error stored on the writer.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from contract_server import ContractServer
from pagecheck import loading_parts, read_page

from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.backends.base import ModerationBackendError, StoryOutputInvalid
from storylab.story.backends.openai_text import ChatTextBackend, parse_story
from storylab.story.backends.server import ImageServer
from storylab.story.entities import create_story, story_html
from storylab.story.settings import StorySettings, use_settings

KEY = "sk-contract"
ONE = {"placeholder": "{{IMAGE_1}}", "prompt": "Pip on a hill"}
CUST = {"illustration_count": 2}


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("STORYLAB_TEXT_API_KEY", KEY)


def _story(html: str, **changes) -> dict:
    story = {
        "title": "Pip and the Moon",
        "hero": "Pip, a small orange kitten with a blue scarf",
        "html_content": html,
        "image_prompts": [
            {"placeholder": "{{IMAGE_1}}", "prompt": "Pip on a hill", "alt_text": "Pip on a hill"},
            {"placeholder": "{{IMAGE_2}}", "prompt": "Pip asleep", "alt_text": "Pip asleep"},
        ],
        "moral": "Rest is good.",
        "age_range": "3-10",
    }
    story.update(changes)
    return story


GOOD_HTML = (
    '<section class="page title-page"><h1>Pip and the Moon</h1>'
    '<div class="illustration">{{IMAGE_1}}</div><p>Pip looked up.</p></section>'
    '<section class="page"><div class="illustration">{{IMAGE_2}}</div><p>Pip slept.</p></section>'
)


async def _run_story(graph, answer, **server_options):
    """Run one story whose writer gets ``answer`` (text, or a whole choice as a dict)."""
    with ContractServer(chat_answers=lambda messages, body: answer, **server_options) as server:
        text = ChatTextBackend(server.url + "/v1", max_attempts=1, moderation="endpoint")
        settings = StorySettings(images=SimulatedImageBackend(time_scale=0.001), text=text)
        with use_settings(settings):
            pipeline = create_story(graph, "a kitten who watches the moon", CUST)
            run = pipeline.start()
            error = None
            try:
                async for _ in run:
                    pass
            except Exception as exc:  # the pipeline fails with the writer's error
                error = exc
        await text.aclose()
    writer = next(c for c in graph.children(pipeline.id) if c.name == "story-writer")
    return pipeline, writer, error, server


def _page(graph, pipeline) -> str:
    node = graph.get_node(pipeline.id)
    html = story_html(graph, node.output)
    assert html is not None
    return html


async def test_a_well_formed_story_becomes_a_clean_page(graph):
    pipeline, writer, error, server = await _run_story(graph, json.dumps(_story(GOOD_HTML)))
    assert error is None and server.refused == []
    dom = read_page(_page(graph, pipeline))
    assert [t for t, _ in dom.elements].count("img") == 2
    assert "Pip looked up." in dom.text


async def test_malformed_json_is_a_clear_stored_error(graph):
    broken = json.dumps(_story(GOOD_HTML))[:-40]
    pipeline, writer, error, _ = await _run_story(graph, broken)
    assert writer.status == "Failed" and writer.error["type"] == "StoryOutputInvalid"
    assert "not valid JSON" in writer.error["message"]
    assert graph.get_node(pipeline.id).status == "Failed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"title": None}, "title is missing"),
        ({"html_content": "   "}, "html_content is empty"),
        ({"image_prompts": None}, "image_prompts is missing or not a list (expected 2 prompts)"),
        (
            {"image_prompts": [{"placeholder": "{{IMAGE_1}}", "prompt": "x", "alt_text": "x"}]},
            "image_prompts has 1 prompts; the story asks for 2 illustrations",
        ),
        (
            {"image_prompts": [ONE, {"placeholder": 2}]},
            "image_prompts[2].placeholder must be text, got int",
        ),
        (
            {"image_prompts": [ONE, {"placeholder": "Z"}]},
            "image_prompts[2].placeholder 'Z' is not of the form {{IMAGE_N}}",
        ),
        (
            {"image_prompts": [ONE, {"placeholder": "{{IMAGE_2}}"}]},
            "image_prompts[2].prompt is missing",
        ),
    ],
)
async def test_a_missing_or_wrong_field_is_named_in_the_stored_error(graph, change, message):
    answer = {k: v for k, v in _story(GOOD_HTML, **change).items() if v is not None}
    _, writer, _, _ = await _run_story(graph, json.dumps(answer))
    assert writer.status == "Failed" and writer.error["type"] == "StoryOutputInvalid"
    assert message in writer.error["message"], writer.error["message"]


async def test_a_script_tag_never_reaches_the_graph_or_the_page(graph):
    html = GOOD_HTML.replace(
        "<p>Pip looked up.</p>",
        '<p onclick="steal()">Pip looked up.</p><script>fetch("https://x.invalid")</script>'
        '<style>p { background: url(https://x.invalid) }</style><a href="https://x.invalid">a</a>',
    )
    pipeline, writer, error, _ = await _run_story(graph, json.dumps(_story(html)))
    assert error is None
    stored = writer.output["html_content"]
    for bad in ("<script", "onclick", "<style", "href", "x.invalid"):
        assert bad not in stored
    assert loading_parts(stored) == []  # nothing that could run or fetch
    page = _page(graph, pipeline)
    assert "x.invalid" not in page and "steal" not in page and page.count("<img ") == 2


async def test_a_placeholder_inside_an_attribute_leaves_the_picture_in_its_slot(graph):
    html = GOOD_HTML.replace("<h1>", '<h1 title="{{IMAGE_1}}">')
    pipeline, writer, error, _ = await _run_story(graph, json.dumps(_story(html)))
    assert error is None
    page = _page(graph, pipeline)
    dom = read_page(page)
    assert '">' not in dom.text and "Pip and the Moon" in dom.text
    assert page.count("<img ") == 2
    # The first picture is in its own slot, after the title, not in the heading.
    assert page.index("<img ") > page.index("</h1>")


async def test_an_over_long_answer_is_refused_not_stored(graph):
    long_html = GOOD_HTML + "<p>" + "and then " * 10_000 + "</p>"
    _, writer, _, _ = await _run_story(graph, json.dumps(_story(long_html)))
    assert writer.status == "Failed"
    assert "html_content is 90," in writer.error["message"]
    assert "more than the limit of 60,000" in writer.error["message"]


async def test_an_answer_cut_off_by_the_token_limit_is_refused(graph):
    choice = {
        "message": {"role": "assistant", "content": json.dumps(_story(GOOD_HTML))[:200]},
        "finish_reason": "length",
    }
    _, writer, _, _ = await _run_story(graph, choice)
    assert (
        writer.status == "Failed"
        and "cut off at the model's token limit" in (writer.error["message"])
    )


async def test_a_server_without_json_schema_and_prose_around_the_json(graph):
    answer = "Here is your story!\n```json\n" + json.dumps(_story(GOOD_HTML)) + "\n```\nEnjoy."
    pipeline, writer, error, server = await _run_story(graph, answer, json_schema=False)
    assert error is None and writer.status == "Completed"
    assert [s for _, s, _ in server.refused] == [400]  # json_schema, once
    assert _page(graph, pipeline).count("<img ") == 2


def test_extra_prompts_are_dropped_and_missing_placeholders_get_a_place():
    extra = {"placeholder": "{{IMAGE_3}}", "prompt": "more", "alt_text": "more"}
    html = GOOD_HTML.replace("{{IMAGE_2}}", "") + "<p>{{IMAGE_3}}</p>"
    story = parse_story(_story(html, image_prompts=_story("")["image_prompts"] + [extra]), CUST)
    assert [p.placeholder for p in story.image_prompts] == ["{{IMAGE_1}}", "{{IMAGE_2}}"]
    assert "{{IMAGE_3}}" not in story.html_content
    assert story.html_content.endswith('<div class="illustration">{{IMAGE_2}}</div>')
    with pytest.raises(StoryOutputInvalid, match="holds no JSON object"):
        parse_story("I cannot write that story.", CUST)


# -- the safety check through the chat model -------------------------------------------
async def test_the_chat_models_verdict_is_stored_with_its_source_and_reason(graph):
    verdict = {
        "is_safe": False,
        "safety_score": 20,
        "concerns": ["fear"],
        "reason": "a story built on fear of the dark would frighten young readers",
    }
    with ContractServer(moderations=False, chat_answers=lambda m, b: json.dumps(verdict)) as server:
        text = ChatTextBackend(server.url, max_attempts=1)
        settings = StorySettings(images=SimulatedImageBackend(time_scale=0.001), text=text)
        with use_settings(settings):
            pipeline = create_story(graph, "a night with no lights at all")
            run = pipeline.start()
            async for _ in run:
                pass
            result = run.result
        await text.aclose()
    assert result["stage"] == "rejected"
    check = next(c for c in graph.children(pipeline.id) if c.name == "safety-check")
    assert check.data["verdict"] == "unsafe"
    assert check.data["verdict_source"] == "chat classification"
    assert check.data["verdict_reason"] == verdict["reason"]
    assert result["safety_result"]["source"] == "chat classification"


async def test_an_unreadable_verdict_is_a_clear_error_not_a_pass(graph):
    with ContractServer(moderations=False, chat_answers=lambda m, b: '{"safe": "yes"}') as server:
        text = ChatTextBackend(server.url, max_attempts=1)
        with pytest.raises(ModerationBackendError, match="is_safe is missing or not true/false"):
            await text.check_safety("a bunny who bakes bread")
        await text.aclose()


async def test_the_offline_rules_refuse_before_any_call():
    with ContractServer() as server:
        text = ChatTextBackend(server.url, max_attempts=1)
        verdict = await text.check_safety("a bloody murder")
        await text.aclose()
    assert (verdict.is_safe, verdict.source) == (False, "offline rules")
    assert server.requests == []


# -- the shared HTTP layer for text: 429 and Retry-After ---------------------------------
async def test_the_writer_retries_a_busy_server_and_honours_retry_after():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0.005)

    async with ImageServer(
        text=SimulatedTextBackend(time_scale=0.002), max_concurrent=1, retry_after=3
    ) as server:
        text = ChatTextBackend(server.url, max_attempts=50, sleep=sleep)
        stories = await asyncio.gather(
            *(text.write_story(f"a fox number {i}", CUST) for i in range(3))
        )
        stats = server.statistics()
        await text.aclose()
    assert all(len(s.image_prompts) == 2 for s in stories)
    assert stats.rejected > 0 and text.retries == stats.rejected
    assert stats.peak_in_flight == 1 and waits and set(waits) == {3.0}


def test_every_image_prompt_carries_the_heros_description():
    hero = "Pip, a small orange kitten with a blue scarf"
    prompts = [
        {"placeholder": "{{IMAGE_1}}", "prompt": f"{hero} on a hill at dusk", "alt_text": "a"},
        {"placeholder": "{{IMAGE_2}}", "prompt": "A kitten asleep under the moon."},
    ]
    story = parse_story(_story(GOOD_HTML, hero=hero, image_prompts=prompts), CUST)
    first, second = (p.prompt for p in story.image_prompts)
    assert first == f"{hero} on a hill at dusk"  # already there: left as written
    assert second == f"A kitten asleep under the moon. The main character is {hero}."
    assert story.reference_image_description == hero


def test_a_reasoning_block_before_the_json_is_skipped():
    answer = "<think>The user wants {a story}.</think>\n" + json.dumps(_story(GOOD_HTML))
    assert parse_story(answer, CUST).title == "Pip and the Moon"
