"""The official ``openai`` client as the judge of storylab's local server.

If the client OpenAI ships can call ``storylab serve-images`` for images,
chat completions and moderations and read what it expects from the
answers, then so can any program written against the real API.
"""

from __future__ import annotations

import base64
import json

import pytest

from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.backends.images import decode_image
from storylab.story.backends.server import ImageServer

openai = pytest.importorskip("openai")


def _client(server: ImageServer, key: str = "sk-local"):
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def _server(**options) -> ImageServer:
    return ImageServer(
        SimulatedImageBackend(time_scale=0.001),
        text=SimulatedTextBackend(time_scale=0.001),
        **options,
    )


async def test_the_openai_client_gets_pictures():
    async with _server() as server:
        client = _client(server)
        answer = await client.images.generate(
            model="gpt-image-1", prompt="a red fox in the snow", size="1024x1536", quality="low"
        )
        await client.close()
    fmt, width, height = decode_image(base64.b64decode(answer.data[0].b64_json))
    assert fmt == "png" and width < height  # 2:3, drawn at low quality


async def test_the_openai_client_gets_a_story_as_structured_output():
    from storylab.story.backends.openai_text import STORY_SCHEMA, parse_story, story_messages

    cust = {"illustration_count": 3, "age_range": "3-5", "style": "paper-cutout"}
    async with _server() as server:
        client = _client(server)
        completion = await client.chat.completions.create(
            model="any-model",
            messages=story_messages("a bear who learns to share honey", cust),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "story", "strict": True, "schema": STORY_SCHEMA},
            },
        )
        await client.close()
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    data = json.loads(choice.message.content)
    assert set(STORY_SCHEMA["required"]) <= set(data)
    story = parse_story(data, cust)
    assert len(story.image_prompts) == 3 and story.age_range == "3-5"
    assert all("cut paper" in p.prompt for p in story.image_prompts)  # the style was read


async def test_the_openai_client_gets_moderation_results():
    async with _server() as server:
        client = _client(server)
        answer = await client.moderations.create(
            model="omni-moderation-latest",
            input=["a kitten who plays with yarn", "a bloody murder with a knife"],
        )
        await client.close()
    calm, harmful = answer.results
    assert calm.flagged is False and harmful.flagged is True
    assert harmful.categories.violence is True or harmful.categories.violence_graphic is True
    assert calm.category_scores.violence == 0.0


async def test_the_openai_client_sees_the_servers_errors_as_the_apis():
    async with _server(max_concurrent=1, api_key="sk-right") as server:
        wrong = _client(server, key="sk-wrong")
        with pytest.raises(openai.AuthenticationError):
            await wrong.moderations.create(input="a kitten")
        await wrong.close()
        client = _client(server, key="sk-right")
        with pytest.raises(openai.BadRequestError, match="messages must be a non-empty list"):
            await client.chat.completions.create(model="m", messages=[])
        await client.close()
