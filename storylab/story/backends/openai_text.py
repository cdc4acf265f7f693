"""A real writer: any OpenAI-compatible chat-completions service.

:class:`ChatTextBackend` writes the story with ``POST /v1/chat/completions``
and checks a topic's safety with :class:`ModerationClient`. The same code
talks to OpenAI, Ollama (``http://localhost:11434/v1``), llama.cpp's server,
vLLM, LM Studio and storylab's own ``serve-images``, so it asks for as little
as it can and copes with what it gets:

* **structured output, in three steps down**: first a JSON schema
  (``response_format: {type: json_schema}``); a server that refuses it
  (``400``/``422``) is asked again with ``{type: json_object}``, and then with
  no ``response_format`` at all, the answer being read tolerantly (a code fence
  or prose around the JSON is skipped). The step that worked is remembered,
  so the next story does not pay for the refusals again;
* **validation with a message that names the field**: the answer becomes a
  :class:`~storylab.story.models.StoryOutput` only if it has a title, HTML
  and one image prompt per illustration asked for, each with its placeholder
  in the text; otherwise :class:`~storylab.story.backends.base.StoryOutputInvalid`
  says what was wrong (``image_prompts[2].prompt is missing``). An answer cut
  off by the model's token limit, or longer than ``max_story_chars``, is an
  error too, never half a page;
* **clean HTML**: the story's HTML goes through storylab's sanitizer
  (:func:`storylab.story.html.clean_story_html`) before it is stored, so a
  script, a style or a link never reaches the graph, and a placeholder that a
  model put inside an attribute takes no picture away from the text;
* **prompts that honour the request**: the age range sets the reading
  level, the style's description starts every image prompt, the number of
  illustrations is the number of prompts asked for, and every image prompt
  must describe the hero the same way, so the pictures stay consistent.

The safety check (:class:`ModerationClient`): storylab's offline rules first
(a topic they refuse is refused without a call); then the service's
``/v1/moderations`` where it has one, or, where it answers ``404``/``405``
(Ollama, llama.cpp), a classification by the chat model. The verdict records
its ``source`` and its ``reason``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from storylab.story.backends.base import (
    ModerationBackendError,
    StoryOutputInvalid,
    TextBackendError,
)
from storylab.story.backends.http import (
    DeadlineExceeded,
    ErrorKinds,
    HttpService,
    RequestRejected,
    ResponseInvalid,
    ServiceUnavailable,
    Wording,
    first_env,
)
from storylab.story.html import clean_story_html
from storylab.story.models import (
    DEFAULT_AGE_RANGE,
    DEFAULT_ILLUSTRATION_COUNT,
    DEFAULT_STYLE,
    STYLE_DESCRIPTIONS,
    ContentSafetyResult,
    ImagePrompt,
    StoryOutput,
)

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "DEFAULT_TEXT_URL",
    "MODERATION_MODES",
    "OUTPUT_MODES",
    "STORY_SCHEMA",
    "ChatTextBackend",
    "ModerationClient",
    "TextDeadlineExceeded",
    "TextRequestRejected",
    "TextResponseInvalid",
    "TextServiceUnavailable",
    "parse_story",
    "story_messages",
]

DEFAULT_TEXT_URL = "http://127.0.0.1:8765"
DEFAULT_TEXT_MODEL = "gpt-5.4-mini"
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
CHAT_PATH = "/v1/chat/completions"
MODERATIONS_PATH = "/v1/moderations"
# The three ways of asking for JSON, strongest first.
OUTPUT_MODES = ("json_schema", "json_object", "text")
MODERATION_MODES = ("auto", "endpoint", "chat")
# A picture book of ten pages is a few thousand characters of HTML.
DEFAULT_MAX_STORY_CHARS = 60_000
_PLACEHOLDER = re.compile(r"\{\{\s*IMAGE_(\d+)\s*\}\}|^IMAGE_(\d+)$")


class TextServiceUnavailable(TextBackendError, ServiceUnavailable):
    """The text service gave no usable answer after every retry."""


class TextRequestRejected(TextBackendError, RequestRejected):
    """The text service refused the request (a 4xx other than 429)."""


class TextDeadlineExceeded(TextServiceUnavailable, DeadlineExceeded):
    """The call's deadline ended before the text service answered."""


class TextResponseInvalid(TextServiceUnavailable, ResponseInvalid):
    """The text service answered, but the answer could not be read at all."""


_ERRORS = ErrorKinds(
    unavailable=TextServiceUnavailable,
    deadline=TextDeadlineExceeded,
    invalid=TextResponseInvalid,
    rejected=TextRequestRejected,
)

# -- what is asked for -----------------------------------------------------------------
STORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "hero", "html_content", "image_prompts", "moral", "age_range"],
    "properties": {
        "title": {"type": "string"},
        "hero": {
            "type": "string",
            "description": "The main character's name and look: kind, colours, clothing.",
        },
        "html_content": {"type": "string"},
        "image_prompts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["placeholder", "prompt", "alt_text"],
                "properties": {
                    "placeholder": {"type": "string"},
                    "prompt": {"type": "string"},
                    "alt_text": {"type": "string"},
                },
            },
        },
        "moral": {"type": "string"},
        "age_range": {"type": "string"},
    },
}

_VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["is_safe", "safety_score", "concerns", "reason"],
    "properties": {
        "is_safe": {"type": "boolean"},
        "safety_score": {"type": "number"},
        "concerns": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"},
    },
}


def _reading_level(age_range: str) -> str:
    try:
        lo, hi = (int(part) for part in age_range.split("-"))
    except ValueError:
        lo, hi = 3, 10
    if hi <= 5:
        return "very short sentences of a few words, simple everyday words, gentle repetition"
    if lo >= 8:
        return "full sentences with some description and dialogue, a little new vocabulary"
    return "short clear sentences, familiar words, one or two new words explained by the story"


def story_messages(topic: str, customization: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The chat messages that ask for the story ``customization`` describes."""
    cust = dict(customization or {})
    style = cust.get("style") or DEFAULT_STYLE.value
    style_text = STYLE_DESCRIPTIONS.get(style, STYLE_DESCRIPTIONS[DEFAULT_STYLE.value])
    count = int(cust.get("illustration_count") or DEFAULT_ILLUSTRATION_COUNT)
    age_range = cust.get("age_range") or DEFAULT_AGE_RANGE
    slots = ", ".join(f"{{{{IMAGE_{i}}}}}" for i in range(1, count + 1))
    system = (
        "You write illustrated picture-book stories for children. Stories are kind, "
        "never frightening or violent, and end with a gentle moral. You answer with one "
        "JSON object and nothing else."
    )
    user = f"""Write a picture-book story about: {topic}

Readers are aged {age_range}: use {_reading_level(age_range)}.
The story has exactly {count} illustration{"s" if count != 1 else ""}.

Answer with a JSON object with these keys:
- "title": the story's title.
- "hero": the main character in one phrase: name, what kind of creature or person, \
colours and clothing (for example "Mila, a small grey mouse with a yellow scarf").
- "html_content": the story as an HTML body fragment: one <section class="page"> per \
illustration (the first also has class "title-page" and the <h1> title), paragraphs in <p>. \
Put each placeholder {slots} exactly once, as the only text of its own \
<div class="illustration"></div>, in order, never inside an attribute. No <script>, no \
<style>, no links, no images of your own.
- "image_prompts": exactly {count} objects, one per placeholder in order, each with \
"placeholder" (the placeholder, braces included), "prompt" and "alt_text" (one short \
sentence for a reader who cannot see the picture).
- "moral": the moral in one sentence.
- "age_range": "{age_range}".

Every image prompt starts with this style: "{style_text}". Then it describes the whole \
scene of its page, and it always describes the hero in the same words as "hero", so \
that every picture shows the same character."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _safety_messages(topic: str, age_range: str = DEFAULT_AGE_RANGE) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": "You decide whether a topic suits a picture-book story for young "
            "children. You answer with one JSON object and nothing else.",
        },
        {
            "role": "user",
            "content": f"Topic: {topic}\n\nIs this topic suitable for a gentle story for "
            f"children aged {age_range}? Refuse violence, weapons used against anyone, "
            "sexual content, self-harm, drugs and alcohol, hate, and horror aimed at "
            "children; kind uses of scary-sounding words (a friendly ghost, a dragon who "
            'makes friends) are fine. Answer {"is_safe": true or false, "safety_score": '
            '0 to 100 (100 is perfectly suitable), "concerns": ["..."], "reason": "one '
            'sentence"}.',
        },
    ]


# -- reading the answer ----------------------------------------------------------------
def _json_in(text: str) -> Any:
    """The JSON object in a model's text: as it is, inside a code fence, or amid prose
    (a reasoning model's ``<think>...</think>`` block before it is skipped)."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S | re.I).strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        try:
            return json.loads(fence.group(1))
        except ValueError:
            pass
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        raise StoryOutputInvalid("the writer's answer holds no JSON object")
    if end < start:
        raise StoryOutputInvalid(
            "the writer's answer is not valid JSON (its object never closes: cut off?)"
        )
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise StoryOutputInvalid(
            f"the writer's answer is not valid JSON ({exc.msg} at character {exc.pos + start})"
        ) from None


def _text_field(data: Mapping[str, Any], name: str, where: str = "") -> str:
    value = data.get(name)
    if value is None:
        raise StoryOutputInvalid(f"the writer's answer: {where}{name} is missing")
    if not isinstance(value, str):
        raise StoryOutputInvalid(
            f"the writer's answer: {where}{name} must be text, got {type(value).__name__}"
        )
    if not value.strip():
        raise StoryOutputInvalid(f"the writer's answer: {where}{name} is empty")
    return value.strip()


def _placeholder(value: str, where: str) -> str:
    m = _PLACEHOLDER.search(value.strip())
    if not m:
        raise StoryOutputInvalid(
            f"the writer's answer: {where}placeholder {value!r} is not of the form {{{{IMAGE_N}}}}"
        )
    return f"{{{{IMAGE_{int(m.group(1) or m.group(2))}}}}}"


def parse_story(
    answer: Any,
    customization: Mapping[str, Any] | None = None,
    *,
    max_chars: int = DEFAULT_MAX_STORY_CHARS,
) -> StoryOutput:
    """The writer's JSON (a dict, or text holding one) as a checked, clean :class:`StoryOutput`.

    Raises :class:`StoryOutputInvalid` naming the first thing wrong.
    """
    data = _json_in(answer) if isinstance(answer, str) else answer
    if not isinstance(data, Mapping):
        raise StoryOutputInvalid(
            f"the writer's answer must be a JSON object, got {type(data).__name__}"
        )
    cust = dict(customization or {})
    count = int(cust.get("illustration_count") or DEFAULT_ILLUSTRATION_COUNT)
    age_range = cust.get("age_range") or DEFAULT_AGE_RANGE
    title = _text_field(data, "title")
    html = _text_field(data, "html_content")
    if len(html) > max_chars:
        raise StoryOutputInvalid(
            f"the writer's answer: html_content is {len(html):,} characters, more than the "
            f"limit of {max_chars:,}"
        )
    raw_prompts = data.get("image_prompts")
    if not isinstance(raw_prompts, list):
        raise StoryOutputInvalid(
            "the writer's answer: image_prompts is missing or not a list "
            f"(expected {count} prompts)"
        )
    if len(raw_prompts) < count:
        raise StoryOutputInvalid(
            f"the writer's answer: image_prompts has {len(raw_prompts)} prompts; the story "
            f"asks for {count} illustrations"
        )
    hero = data.get("hero")
    hero = " ".join(hero.split()) if isinstance(hero, str) else ""
    prompts: list[ImagePrompt] = []
    for i, item in enumerate(raw_prompts[:count], start=1):
        where = f"image_prompts[{i}]."
        if not isinstance(item, Mapping):
            raise StoryOutputInvalid(f"the writer's answer: image_prompts[{i}] is not an object")
        placeholder = _placeholder(_text_field(item, "placeholder", where), where)
        if any(p.placeholder == placeholder for p in prompts):
            raise StoryOutputInvalid(
                f"the writer's answer: {where}placeholder {placeholder} is used twice"
            )
        alt = item.get("alt_text")
        prompt = _text_field(item, "prompt", where)
        if hero and hero.lower() not in prompt.lower():
            # The model forgot the hero here: without it this picture would show
            # someone else, so the description every other page has is added.
            prompt = f"{prompt.rstrip('. ')}. The main character is {hero}."
        prompts.append(
            ImagePrompt(
                placeholder=placeholder,
                prompt=prompt,
                alt_text=alt.strip() if isinstance(alt, str) and alt.strip() else title,
            )
        )
    # Prompts past the count asked for are dropped, and their placeholders with them.
    for extra in raw_prompts[count:]:
        if isinstance(extra, Mapping) and isinstance(extra.get("placeholder"), str):
            html = html.replace(extra["placeholder"].strip(), "")
    # A placeholder written without braces or with spaces is the same placeholder.
    html = re.sub(r"\{\{\s*IMAGE_(\d+)\s*\}\}", lambda m: f"{{{{IMAGE_{int(m.group(1))}}}}}", html)
    declared = [p.placeholder for p in prompts]
    html = clean_story_html(html, declared)
    # A picture whose placeholder is nowhere in the text still gets a place: at the end.
    html = html.strip()
    missing = [p for p in declared if p not in html]
    if missing:
        html += "".join(f'<div class="illustration">{p}</div>' for p in missing)
    moral = data.get("moral")
    return StoryOutput(
        title=" ".join(title.split()),
        html_content=html,
        image_prompts=prompts,
        moral=moral.strip() if isinstance(moral, str) else "",
        age_range=age_range,
        reference_image_description=hero or None,
    )


def _message_content(body: bytes, where: str) -> tuple[str, str | None]:
    """The first choice's text and finish reason from a chat-completions answer."""
    try:
        answer = json.loads(body)
        choice = answer["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TextResponseInvalid(
            f"{where} sent an answer that is not a chat completion ({type(exc).__name__})"
        ) from None
    if not isinstance(content, str):
        refusal = (choice.get("message") or {}).get("refusal")
        if refusal:
            raise StoryOutputInvalid(f"the model refused: {refusal}")
        raise TextResponseInvalid(f"{where} sent a chat completion without text content")
    return content, choice.get("finish_reason")


# -- the backends ----------------------------------------------------------------------
class ChatTextBackend:
    """The story writer and safety check of an OpenAI-compatible service (see the module doc).

    ``base_url`` defaults to ``$STORYLAB_TEXT_URL``, then ``$OPENAI_BASE_URL``,
    then a local ``storylab serve-images``; with or without ``/v1``. The key is
    read at call time from ``api_key_env``, then ``$OPENAI_API_KEY``.
    ``output_mode`` is the first way of asking for JSON tried (one of
    :data:`OUTPUT_MODES`); ``moderation`` says how topics are checked (one of
    :data:`MODERATION_MODES`). ``max_tokens`` bounds the model's answer,
    ``max_story_chars`` the story's HTML. The other options (``timeout``,
    ``connect_timeout``, ``attempt_timeout``, ``call_timeout``, ``max_attempts``,
    ``backoff``, ``max_backoff``, ``max_retry_after``, ``transport``, ``sleep``)
    are the shared HTTP layer's
    (:class:`~storylab.story.backends.http.HttpService`); ``call_timeout``
    bounds one call, every attempt and wait included. ``calls`` counts
    requests by kind (``chat``, ``moderation``), for the cost of a story.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str = DEFAULT_TEXT_MODEL,
        api_key_env: str = "STORYLAB_TEXT_API_KEY",
        output_mode: str = "json_schema",
        moderation: str = "auto",
        moderation_model: str | None = DEFAULT_MODERATION_MODEL,
        temperature: float | None = None,
        max_tokens: int | None = None,
        max_story_chars: int = DEFAULT_MAX_STORY_CHARS,
        max_response_bytes: int = 4 * 1024 * 1024,
        **http: Any,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a model's name, got {model!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(
                f"output_mode must be one of: {', '.join(OUTPUT_MODES)}; got {output_mode!r}"
            )
        if moderation not in MODERATION_MODES:
            raise ValueError(
                f"moderation must be one of: {', '.join(MODERATION_MODES)}; got {moderation!r}"
            )
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise ValueError(f"max_tokens must be an integer > 0 or None, got {max_tokens!r}")
        if isinstance(max_story_chars, bool) or not isinstance(max_story_chars, int):
            raise ValueError(f"max_story_chars must be an integer > 0, got {max_story_chars!r}")
        if max_story_chars < 1:
            raise ValueError(f"max_story_chars must be an integer > 0, got {max_story_chars!r}")
        url = base_url or first_env("STORYLAB_TEXT_URL", "OPENAI_BASE_URL") or DEFAULT_TEXT_URL
        self._http = HttpService(
            url,
            key_envs=(api_key_env, "OPENAI_API_KEY"),
            wording=Wording("text service", "answer", "call"),
            errors=_ERRORS,
            max_response_bytes=max_response_bytes,
            **http,
        )
        self.model = model.strip()
        self.api_key_env = api_key_env
        self.output_mode = output_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_story_chars = max_story_chars
        self.calls: Counter[str] = Counter()
        self.moderation = ModerationClient(self, mode=moderation, model=moderation_model)

    def __repr__(self) -> str:
        return f"ChatTextBackend({self.base_url!r}, model={self.model!r})"

    base_url = property(lambda self: self._http.base_url, doc="The URL as it may be shown.")
    attempts = property(lambda self: self._http.attempts, doc="Every HTTP attempt made.")
    retries = property(lambda self: self._http.retries, doc="Attempts that were retries.")

    @property
    def endpoint(self) -> str:
        return self._http.endpoint(CHAT_PATH)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- one chat call, with the structured-output steps ----------------------------
    def _body(self, messages: list[dict[str, str]], mode: str, schema: dict, name: str):
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        # Sent only when chosen: some models take neither (reasoning models refuse
        # max_tokens and any temperature but 1), and every server has a default.
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "strict": True, "schema": schema},
            }
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def chat_json(
        self, messages: list[dict[str, str]], *, schema: dict, name: str, what: str
    ) -> tuple[str, str]:
        """``(text of the answer, output mode used)``, stepping down the output modes
        while the server refuses them (400/422)."""
        where = f"text service at {self.base_url}"
        modes = OUTPUT_MODES[OUTPUT_MODES.index(self.output_mode) :]
        for i, mode in enumerate(modes):
            self.calls["chat"] += 1
            try:
                body = await self._http.post_json(
                    CHAT_PATH, self._body(messages, mode, schema, name), what=what
                )
            except TextRequestRejected as exc:
                if exc.status in (400, 422) and i + 1 < len(modes):
                    continue  # this server does not take that response_format: one step down
                raise
            # What worked is what the next call starts with.
            self.output_mode = mode
            content, finish = _message_content(body, where)
            if finish == "length":
                raise StoryOutputInvalid(
                    f"the writer's answer for {what} was cut off at the model's token limit "
                    f"(finish_reason 'length'; max_tokens {self.max_tokens or 'not set'}); "
                    "nothing was kept"
                )
            return content, mode
        raise AssertionError("unreachable: the last mode re-raises")  # pragma: no cover

    async def write_story(
        self, topic: str, customization: Mapping[str, Any] | None = None
    ) -> StoryOutput:
        self.calls["writer"] += 1
        content, _ = await self.chat_json(
            story_messages(topic, customization),
            schema=STORY_SCHEMA,
            name="picture_book_story",
            what="the story",
        )
        return parse_story(content, customization, max_chars=self.max_story_chars)

    async def check_safety(self, topic: str) -> ContentSafetyResult:
        self.calls["safety"] += 1
        return await self.moderation.check_safety(topic)

    async def classify(self, topic: str) -> ContentSafetyResult:
        """The chat model's own verdict on ``topic`` (source ``chat classification``)."""
        content, _ = await self.chat_json(
            _safety_messages(topic), schema=_VERDICT_SCHEMA, name="topic_verdict", what="the topic"
        )
        try:
            data = _json_in(content)
        except StoryOutputInvalid as exc:
            raise ModerationBackendError(f"the safety classification: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("is_safe"), bool):
            raise ModerationBackendError(
                "the safety classification: is_safe is missing or not true/false"
            )
        score = data.get("safety_score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 100:
            score = 100.0 if data["is_safe"] else 0.0
        concerns = [str(c) for c in data.get("concerns") or [] if str(c).strip()]
        reason = str(data.get("reason") or "").strip() or (
            "; ".join(concerns) if concerns else "no reason given"
        )
        return ContentSafetyResult(
            is_safe=data["is_safe"],
            safety_score=float(score),
            concerns=concerns,
            reasoning=reason,
            source="chat classification",
            reason=reason,
        )


class ModerationClient:
    """The safety check of a :class:`ChatTextBackend`'s service (see the module doc).

    ``mode="auto"`` uses ``/v1/moderations`` and falls back to the chat
    model where the service has no such endpoint (and remembers it);
    ``"endpoint"`` uses only the endpoint, ``"chat"`` only the chat model.
    """

    def __init__(self, text: ChatTextBackend, *, mode: str = "auto", model: str | None) -> None:
        self.text = text
        self.mode = mode
        self.model = model
        self.has_endpoint: bool | None = None if mode == "auto" else mode == "endpoint"

    async def aclose(self) -> None:
        await self.text.aclose()

    async def check_safety(self, topic: str) -> ContentSafetyResult:
        # The offline rules are the floor: what they refuse is refused without a call.
        from storylab.story.backends.text import assess_topic

        offline = assess_topic(topic)
        if not offline.is_safe:
            return offline
        try:
            if self.has_endpoint is not False:
                try:
                    return await self._endpoint(topic)
                except RequestRejected as exc:
                    # 404/405/501: no such endpoint; 400/422: not with that model
                    # (a proxy that knows no moderation model). Either way: the chat model.
                    if self.mode != "auto" or exc.status not in (400, 404, 405, 422, 501):
                        raise
                    self.has_endpoint = False
            return await self.text.classify(topic)
        except (ServiceUnavailable, RequestRejected) as exc:
            raise ModerationBackendError(f"the safety check could not run: {exc}") from exc

    async def _endpoint(self, topic: str) -> ContentSafetyResult:
        self.text.calls["moderation"] += 1
        payload: dict[str, Any] = {"input": topic}
        if self.model:
            payload["model"] = self.model
        http = self.text._http
        body = await http.post_json(MODERATIONS_PATH, payload, what="the topic")
        self.has_endpoint = True
        try:
            result = json.loads(body)["results"][0]
            flagged = result["flagged"]
            categories = result.get("categories") or {}
            scores = result.get("category_scores") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModerationBackendError(
                f"moderation service at {http.base_url} sent an unreadable answer "
                f"({type(exc).__name__})"
            ) from None
        if not isinstance(flagged, bool):
            raise ModerationBackendError(
                f"moderation service at {http.base_url}: flagged must be true or false"
            )
        hits = sorted(name for name, on in categories.items() if on is True)
        worst = max((s for s in scores.values() if isinstance(s, int | float)), default=0.0)
        score = round(max(0.0, min(100.0, 100.0 * (1.0 - float(worst)))), 1)
        if flagged:
            reason = "flagged for " + (", ".join(hits) if hits else "unsafe content")
        else:
            reason = "not flagged in any category"
        return ContentSafetyResult(
            is_safe=not flagged,
            safety_score=min(score, 40.0) if flagged else max(score, 60.0),
            concerns=hits,
            reasoning=reason,
            source="moderation endpoint",
            reason=reason,
        )
