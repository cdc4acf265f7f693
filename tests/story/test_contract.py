"""storylab's HTTP clients against a server as strict as the real API (contract_server.py).

Every request storylab sends, for every image model family, aspect ratio
and quality, must be one the contract server accepts; and the server itself
must refuse what the real API refuses (else these tests could not fail).
"""

from __future__ import annotations

import json

import httpx
import pytest
from contract_server import ContractServer

from storylab.cli import main
from storylab.entities import EntityGraph
from storylab.story.backends.base import ImageRequest
from storylab.story.backends.http_images import (
    FAMILIES,
    HttpImageBackend,
    ImageRequestRejected,
    family_of,
)
from storylab.story.backends.images import ASPECT_RATIOS, QUALITY_LONG_SIDE
from storylab.story.backends.openai_text import ChatTextBackend

KEY = "sk-contract"
MODELS = ("gpt-image-1", "gpt-image-1-mini", "dall-e-3", "dall-e-2")


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("STORYLAB_IMAGES_API_KEY", KEY)
    monkeypatch.setenv("STORYLAB_TEXT_API_KEY", KEY)


# -- the judge can refuse ----------------------------------------------------------------
def _post(server: ContractServer, path: str, body: dict) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}"}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=10)


def test_the_contract_server_refuses_what_the_api_refuses():
    with ContractServer() as server:
        gpt = {"model": "gpt-image-1", "prompt": "an owl", "size": "1024x1024"}
        assert _post(server, "/v1/images/generations", gpt).status_code == 200
        # What the old client sent: response_format to a GPT image model...
        refused = _post(server, "/v1/images/generations", {**gpt, "response_format": "b64_json"})
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == "Unknown parameter: 'response_format'."
        # ...a DALL-E 3 size for 16:9, and 1024x768 for 4:3 (no model's size).
        for size in ("1792x1024", "1024x768"):
            assert _post(server, "/v1/images/generations", {**gpt, "size": size}).status_code == 400
        dalle3 = {"model": "dall-e-3", "prompt": "an owl", "quality": "medium"}
        assert _post(server, "/v1/images/generations", dalle3).status_code == 400
        loose = {"type": "object", "properties": {"a": {"type": "string"}}}
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": loose}}
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for extra in ({"response_format": fmt}, {"temprature": 1}):
            assert _post(server, "/v1/chat/completions", {**chat, **extra}).status_code == 400
        assert _post(server, "/v1/moderations", {"input": "x", "lang": "en"}).status_code == 400
    assert len(server.refused) == 7


# -- images: every family, every aspect, every quality -------------------------------------
async def test_every_image_request_is_one_the_api_accepts(keyed):
    with ContractServer() as server:
        for model in MODELS:
            backend = HttpImageBackend(server.url, model=model, max_attempts=1)
            family = family_of(model)
            for ratio in ASPECT_RATIOS:
                for quality in QUALITY_LONG_SIDE:
                    req = ImageRequest("a small fox in a meadow", "{{IMAGE_1}}", quality, ratio)
                    image = await backend.generate(req)
                    assert image.size in family.sizes and image.model == model
                    assert f"{image.width}x{image.height}" == image.size  # the PNG sent back
            await backend.aclose()
    assert server.refused == []
    bodies = [body for _, body in server.requests]
    assert len(bodies) == len(MODELS) * len(ASPECT_RATIOS) * len(QUALITY_LONG_SIDE)
    assert not any("response_format" in b for b in bodies if b["model"].startswith("gpt-image"))


def test_the_aspect_ratio_goes_to_the_nearest_size_of_the_family():
    gpt, d3, d2 = FAMILIES["gpt-image"], FAMILIES["dall-e-3"], FAMILIES["dall-e-2"]
    assert [gpt.nearest_size(r, "medium") for r in ("1:1", "3:2", "2:3", "4:3", "16:9")] == [
        "1024x1024",
        "1536x1024",
        "1024x1536",
        "1536x1024",
        "1536x1024",
    ]
    assert d3.nearest_size("16:9", "high") == "1792x1024"
    # By shape (the log of width/height), 4:3 is a little nearer 7:4 than square.
    assert d3.nearest_size("4:3", "low") == "1792x1024"
    assert d3.nearest_size("2:3", "low") == "1024x1792"
    # DALL-E 2 is square only; the quality picks among its sizes.
    assert [d2.nearest_size("3:2", q) for q in ("low", "medium", "high")] == [
        "256x256",
        "512x512",
        "1024x1024",
    ]


async def test_a_base_url_with_or_without_v1_reaches_the_same_endpoint(keyed):
    with ContractServer() as server:
        for url in (server.url, server.url + "/", server.url + "/v1", server.url + "/v1/"):
            backend = HttpImageBackend(url, max_attempts=1)
            await backend.generate(ImageRequest("an owl", "{{IMAGE_1}}"))
            await backend.aclose()
    assert [path for path, _ in server.requests] == ["/v1/images/generations"] * 4


async def test_openai_environment_variables_are_the_fallbacks(monkeypatch):
    with ContractServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        backend = HttpImageBackend(max_attempts=1)
        await backend.generate(ImageRequest("an owl", "{{IMAGE_1}}"))
        # storylab's own variable wins over OpenAI's.
        monkeypatch.setenv("STORYLAB_IMAGES_API_KEY", "sk-wrong")
        with pytest.raises(ImageRequestRejected, match="HTTP 401"):
            await backend.generate(ImageRequest("an owl", "{{IMAGE_1}}"))
        await backend.aclose()
    assert "sk-wrong" not in str(server.refused)


async def test_the_model_pool_picks_the_model_when_it_names_one(keyed):
    with ContractServer() as server:
        backend = HttpImageBackend(server.url, model="gpt-image-1", max_attempts=1)
        pooled = await backend.generate(
            ImageRequest("an owl", "{{IMAGE_1}}", model_pool="dall-e-2")
        )
        default = await backend.generate(ImageRequest("an owl", "{{IMAGE_2}}"))
        await backend.aclose()
    assert (pooled.model, pooled.size) == ("dall-e-2", "512x512")
    assert default.model == "gpt-image-1"
    assert [body["model"] for _, body in server.requests] == ["dall-e-2", "gpt-image-1"]


async def test_an_impossible_request_is_refused_before_any_call(keyed):
    with ContractServer() as server:
        # A size fine for gpt-image-1, asked of DALL-E 3 through the entity's pool.
        backend = HttpImageBackend(server.url, sizes={"16:9": "1536x1024"})
        with pytest.raises(ImageRequestRejected) as info:
            await backend.generate(
                ImageRequest("an owl", "{{IMAGE_1}}", "high", "16:9", model_pool="dall-e-3")
            )
        with pytest.raises(ImageRequestRejected, match="aspect_ratio '5:4' .* allowed: 1:1, 3:2"):
            await backend.generate(ImageRequest("an owl", "{{IMAGE_1}}", "high", "5:4"))
        with pytest.raises(ImageRequestRejected, match="quality 'ultra' .* allowed: low, medium"):
            await backend.generate(ImageRequest("an owl", "{{IMAGE_1}}", "ultra", "1:1"))
        await backend.aclose()
    message = str(info.value)
    assert "sizes" in message and "1536x1024" in message
    assert "allowed: 1024x1024, 1792x1024, 1024x1792" in message
    assert server.requests == []  # nothing was sent
    with pytest.raises(ImageRequestRejected, match="gpt-image-1.5 does not accept size 1792x1024"):
        HttpImageBackend("http://127.0.0.1:1", sizes={"16:9": "1792x1024"})


# -- text: the writer and the safety check -------------------------------------------------
async def test_the_writer_and_the_safety_check_send_only_what_the_api_accepts(keyed):
    with ContractServer() as server:
        text = ChatTextBackend(server.url, model="gpt-4o-mini", max_attempts=1)
        cust = {"illustration_count": 4, "age_range": "4-6", "style": "anime"}
        story = await text.write_story("a kind fox who shares berries", cust)
        safe = await text.check_safety("a knight who makes friends with a dragon")
        flagged = await text.check_safety("a warrior who guards two kingdoms")
        await text.aclose()
    assert server.refused == []
    assert len(story.image_prompts) == 4 and story.age_range == "4-6"
    placeholders = [p.placeholder for p in story.image_prompts]
    assert placeholders == [f"{{{{IMAGE_{i}}}}}" for i in range(1, 5)]
    assert text.output_mode == "json_schema"
    assert (safe.is_safe, safe.source) == (True, "moderation endpoint")
    assert (flagged.is_safe, flagged.source) == (False, "moderation endpoint")
    assert flagged.reason == "flagged for violence"
    chat_body = next(body for path, body in server.requests if path == "/v1/chat/completions")
    asked = chat_body["messages"][-1]["content"]
    assert "aged 4-6" in asked and "exactly 4 illustrations" in asked
    assert "cute anime manner" in asked and "describes the hero in the same words" in asked


async def test_a_server_without_json_schema_gets_json_object_and_is_remembered(keyed):
    with ContractServer(json_schema=False) as server:
        text = ChatTextBackend(server.url, max_attempts=1)
        first = await text.write_story("an owl who learns to fly", {"illustration_count": 2})
        second = await text.write_story("a hedgehog who shares", {"illustration_count": 2})
        await text.aclose()
    formats = [
        (body.get("response_format") or {}).get("type")
        for path, body in server.requests
        if path == "/v1/chat/completions"
    ]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert server.refused == [
        (
            "/v1/chat/completions",
            400,
            "response_format of type 'json_schema' is not supported with this model",
        )
    ]
    assert len(first.image_prompts) == len(second.image_prompts) == 2


async def test_no_moderations_endpoint_falls_back_to_the_chat_model(keyed):
    with ContractServer(moderations=False) as server:
        text = ChatTextBackend(server.url, max_attempts=1)
        first = await text.check_safety("a friendly ghost who is afraid of the dark")
        second = await text.check_safety("a bunny who loves carrots")
        await text.aclose()
    assert (first.is_safe, first.source) == (True, "chat classification")
    assert second.source == "chat classification"
    paths = [path for path, _ in server.requests]
    # The missing endpoint is asked once, then remembered.
    assert paths == ["/v1/moderations", "/v1/chat/completions", "/v1/chat/completions"]


# -- the whole run -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-3", "dall-e-2"])
def test_storylab_run_end_to_end_against_the_contract_server(tmp_path, keyed, capsys, model):
    with ContractServer() as server:
        code = main(
            [
                "run", "a brave kitten who learns to share", "--images", "3", "--aspect", "16:9",
                "--backend", "http", "--images-url", server.url + "/v1", "--images-model", model,
                "--text-backend", "http", "--text-url", server.url + "/v1",
                "--text-model", "gpt-4o-mini",
                "--graph", str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "out"),
            ]
        )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert server.refused == []
    assert "verdict: safe by moderation endpoint" in out
    (page,) = (tmp_path / "out").glob("*.html")
    assert page.read_text().count("<img ") == 3
    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        (root,) = graph.roots()
        images = [c for c in graph.children(root.id) if c.name.startswith("image-")]
    sizes = {c.data["size"] for c in images}
    assert sizes == {{"gpt-image-1": "1536x1024", "dall-e-3": "1792x1024"}.get(model, "512x512")}
    assert {c.data["model"] for c in images} == {model} == {c.data["model_pool"] for c in images}
    assert all(c.data["requested_size"] == "640x360 (16:9, medium)" for c in images)
    sent = [json.dumps(body) for path, body in server.requests if "images" in path]
    assert len(sent) == 3
