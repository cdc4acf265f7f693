"""A strict OpenAI-compatible server on 127.0.0.1: it refuses what the real API refuses.

Built from the published API reference (images, chat completions,
moderations), it checks every request the way the hosted service does and
answers ``400`` with the service's kind of message for anything the real
API would not take: an unknown parameter (``response_format`` sent to a GPT
image model), a size the model family does not have, a quality word it does
not know, ``n > 1`` for DALL-E 3, a ``json_schema`` that strict mode would
not accept. What it accepts it answers in the API's shape, with real PNGs
of the size asked for, so a client that passes here would pass there.

Switches for the servers storylab must also cope with:

* ``json_schema=False``: a chat server without structured outputs (it
  refuses ``response_format`` of type ``json_schema`` with 400);
* ``moderations=False``: no ``/v1/moderations`` (404, as Ollama answers);
* ``chat_answers``: a function ``(messages, body) -> str | dict`` whose result is
  the assistant's content (a dict: the whole choice, e.g. ``finish_reason``),
  for feeding a writer malformed or hostile answers.

``requests`` keeps every request (path, body); ``refused`` every 4xx sent,
as ``(path, status, message)``. Real sockets, a thread per connection, so it
serves an in-process async test and a ``storylab run`` alike.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# -- the images API, per model family --------------------------------------------------
_GPT_IMAGE = {
    "params": {
        "prompt", "model", "n", "size", "quality", "background", "moderation",
        "output_format", "output_compression", "partial_images", "stream", "user",
        "safety_identifier",
    },
    "size": {"auto", "1024x1024", "1536x1024", "1024x1536"},
    "quality": {"auto", "low", "medium", "high"},
    "n": range(1, 11),
}  # fmt: skip
_DALLE3 = {
    "params": {"prompt", "model", "n", "size", "quality", "response_format", "style", "user"},
    "size": {"1024x1024", "1792x1024", "1024x1792"},
    "quality": {"standard", "hd"},
    "n": range(1, 2),
}
_DALLE2 = {
    "params": {"prompt", "model", "n", "size", "quality", "response_format", "user"},
    "size": {"256x256", "512x512", "1024x1024"},
    "quality": {"standard"},
    "n": range(1, 11),
}
IMAGE_MODELS = {
    "gpt-image-1": _GPT_IMAGE,
    "gpt-image-1-mini": _GPT_IMAGE,
    "gpt-image-1.5": _GPT_IMAGE,
    "dall-e-3": _DALLE3,
    "dall-e-2": _DALLE2,
}
_CHAT_PARAMS = {
    "model", "messages", "response_format", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "seed", "stream", "stream_options", "user",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "tools", "tool_choice", "parallel_tool_calls", "metadata", "store",
    "reasoning_effort", "modalities", "prediction", "service_tier", "safety_identifier",
}  # fmt: skip
_MODERATION_PARAMS = {"input", "model"}
MODERATION_MODELS = {"omni-moderation-latest", "omni-moderation-2024-09-26",
                     "text-moderation-latest", "text-moderation-stable"}  # fmt: skip
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_FLAG_WORDS = ("kill", "blood", "gun", "murder", "war", "drug")


class Refusal(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or ("invalid_value" if status == 400 else "not_found")


def _unknown(body: dict, allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise Refusal(400, f"Unknown parameter: '{key}'.", key, "unknown_parameter")


@functools.lru_cache(maxsize=16)
def _png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 170, 220)).save(out, "PNG")
    return out.getvalue()


def check_strict_schema(schema: Any, path: str = "schema") -> None:
    """Strict structured outputs: every object lists all its properties as required
    and forbids additional ones (the reference's rule for ``strict: true``)."""
    if not isinstance(schema, dict):
        raise Refusal(400, f"Invalid schema: {path} must be an object.", "response_format")
    if schema.get("type") == "object":
        props = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            raise Refusal(
                400,
                f"Invalid schema for response_format: In context={path}, "
                "'additionalProperties' is required to be supplied and to be false.",
                "response_format",
            )
        if set(schema.get("required") or []) != set(props):
            raise Refusal(
                400,
                f"Invalid schema for response_format: In context={path}, 'required' is "
                "required to be supplied and to be an array including every key in properties.",
                "response_format",
            )
        for name, sub in props.items():
            check_strict_schema(sub, f"{path}.{name}")
    if schema.get("type") == "array":
        check_strict_schema(schema.get("items"), f"{path}[]")


class ContractServer:
    def __init__(
        self,
        *,
        api_key: str = "sk-contract",
        json_schema: bool = True,
        moderations: bool = True,
        chat_answers: Callable[[list, dict], Any] | None = None,
    ) -> None:
        self.api_key = api_key
        self.json_schema = json_schema
        self.moderations = moderations
        self.chat_answers = chat_answers
        self.requests: list[tuple[str, dict]] = []
        self.refused: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ContractServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                status, answer = server.handle(self.path, self.headers, raw)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- dispatch --------------------------------------------------------------------
    def handle(self, path: str, headers: Any, raw: bytes) -> tuple[int, dict]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        with self._lock:
            self.requests.append((path, body if isinstance(body, dict) else {}))
        try:
            if headers.get("authorization") != f"Bearer {self.api_key}":
                raise Refusal(401, "Incorrect API key provided.", code="invalid_api_key")
            if not isinstance(body, dict):
                raise Refusal(400, "We could not parse the JSON body of your request.")
            if path == "/v1/images/generations":
                return 200, self._image(body)
            if path == "/v1/chat/completions":
                return 200, self._chat(body)
            if path == "/v1/moderations" and self.moderations:
                return 200, self._moderate(body)
            raise Refusal(404, f"Invalid URL (POST {path})", code="unknown_url")
        except Refusal as exc:
            with self._lock:
                self.refused.append((path, exc.status, exc.message))
            kind = "invalid_request_error"
            return exc.status, {
                "error": {"message": exc.message, "type": kind, "param": exc.param,
                          "code": exc.code}
            }  # fmt: skip

    def _image(self, body: dict) -> dict:
        model = body.get("model")
        if not isinstance(model, str):
            raise Refusal(400, "Missing required parameter: 'model'.", "model")
        family = IMAGE_MODELS.get(model)
        if family is None:
            raise Refusal(404, f"The model '{model}' does not exist.", "model", "model_not_found")
        _unknown(body, family["params"])
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise Refusal(400, "Missing required parameter: 'prompt'.", "prompt")
        size = body.get("size", "1024x1024")
        if size not in family["size"]:
            allowed = ", ".join(f"'{s}'" for s in sorted(family["size"]))
            raise Refusal(
                400,
                f"Invalid value: '{size}'. Supported values are: {allowed}.",
                "size",
            )
        if "quality" in body and body["quality"] not in family["quality"]:
            allowed = ", ".join(f"'{q}'" for q in sorted(family["quality"]))
            raise Refusal(
                400, f"Invalid value: '{body['quality']}'. Supported values are: {allowed}.",
                "quality",
            )  # fmt: skip
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n not in family["n"]:
            raise Refusal(400, f"Invalid value for 'n': {n!r}.", "n")
        if body.get("response_format", "b64_json") not in ("url", "b64_json"):
            raise Refusal(400, "Invalid value for 'response_format'.", "response_format")
        w, h = (int(x) for x in ("1024x1024" if size == "auto" else size).split("x"))
        b64 = base64.b64encode(_png(w, h)).decode("ascii")
        if family is not _GPT_IMAGE and body.get("response_format", "url") == "url":
            item = {"url": "https://images.example.invalid/picture.png"}
        else:
            item = {"b64_json": b64}
        return {"created": 1, "data": [item]}

    def _chat(self, body: dict) -> dict:
        _unknown(body, _CHAT_PARAMS)
        if not isinstance(body.get("model"), str):
            raise Refusal(400, "Missing required parameter: 'model'.", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Refusal(400, "Missing required parameter: 'messages'.", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise Refusal(400, f"Invalid value for 'messages[{i}].role'.", f"messages[{i}]")
            _unknown(m, {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})
        fmt = body.get("response_format")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind not in ("text", "json_object", "json_schema"):
                raise Refusal(400, "Invalid value for 'response_format.type'.", "response_format")
            if kind == "json_schema":
                if not self.json_schema:
                    raise Refusal(
                        400,
                        "response_format of type 'json_schema' is not supported with this model",
                        "response_format",
                    )
                spec = fmt.get("json_schema")
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    raise Refusal(
                        400, "Missing required parameter: 'response_format.json_schema.name'.",
                        "response_format",
                    )  # fmt: skip
                _unknown(spec, {"name", "description", "schema", "strict"})
                if spec.get("strict"):
                    check_strict_schema(spec.get("schema"))
        content: Any
        if self.chat_answers is not None:
            content = self.chat_answers(messages, body)
        else:
            content = _default_answer(messages, body)
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if isinstance(content, dict):
            choice.update(content)
        else:
            choice["message"] = {"role": "assistant", "content": content, "refusal": None}
        return {
            "id": "chatcmpl-contract",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _moderate(self, body: dict) -> dict:
        _unknown(body, _MODERATION_PARAMS)
        if "model" in body and body["model"] not in MODERATION_MODELS:
            raise Refusal(404, f"The model '{body['model']}' does not exist.", "model")
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if not isinstance(inputs, list) or not inputs:
            raise Refusal(400, "Missing required parameter: 'input'.", "input")
        results = []
        for text in inputs:
            hit = any(word in str(text).lower() for word in _FLAG_WORDS)
            results.append(
                {
                    "flagged": hit,
                    "categories": {"violence": hit, "sexual": False, "self-harm": False},
                    "category_scores": {"violence": 0.9 if hit else 0.01, "sexual": 0.0},
                }
            )
        return {"id": "modr-contract", "model": "omni-moderation-latest", "results": results}


def _default_answer(messages: list, body: dict) -> str:
    """What a capable model answers: the offline writer's story, or a verdict."""
    from storylab.story.backends.server import story_request
    from storylab.story.backends.text import assess_topic, write_offline_story

    asked = str(messages[-1].get("content") or "")
    if asked.startswith("Topic:"):
        verdict = assess_topic(asked.splitlines()[0][len("Topic:") :].strip())
        return json.dumps(
            {"is_safe": verdict.is_safe, "safety_score": verdict.safety_score,
             "concerns": verdict.concerns, "reason": verdict.reasoning}
        )  # fmt: skip
    topic, cust = story_request(asked)
    story = write_offline_story(topic, cust)
    return json.dumps(
        {
            "title": story.title,
            "hero": "",
            "html_content": story.html_content,
            "image_prompts": [p.to_json() for p in story.image_prompts],
            "moral": story.moral,
            "age_range": story.age_range,
        }
    )
