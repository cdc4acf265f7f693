"""One HTTP layer for every remote backend: images, text and moderation.

A backend that talks to a service on another machine needs the same care
whatever it asks for, so that care lives here once and the backends only
build a JSON body and read the answer:

* **timeouts** on connecting and on each read, and two *deadlines*: one
  per attempt (a server that trickles its answer a byte at a time never
  trips a per-read timeout) and one per call, every attempt and wait
  included. Each ends with an error naming the deadline;
* **limits on what comes back**: an answer larger than
  ``max_response_bytes`` is refused while it streams in (or at once, from
  its ``Content-Length``); an error answer is read only far enough to quote;
* **retries with backoff** on connection failures, timeouts, ``429`` and
  ``5xx`` answers. A ``Retry-After`` header (seconds or an HTTP date) is
  honoured (up to ``max_retry_after``); otherwise the wait doubles from
  ``backoff`` up to ``max_backoff``, with jitter so that many clients do not
  retry in step. Every retry (and only a retry) leaves a mark in the trace,
  on the lane of the task that made the call;
* **secrets from the environment only**: the API key is read from the
  backend's own variable, then from its fallbacks (``OPENAI_API_KEY``), at
  call time, and goes into a header, never into entity data, progress or
  traces. Credentials in the URL (``http://user:pass@host``) are sent as a
  ``Basic`` header and shown as ``http://***@host``; every message built from
  the server's words hides the key and the password
  (:mod:`storylab.story.redaction`), even when a server echoes them back.
* **one URL convention**: a base URL may end in ``/v1`` or not
  (``http://localhost:11434/v1`` and ``https://api.openai.com`` both work);
  the paths asked for always start with ``/v1/``.

Errors (each backend subclasses them under its own :class:`BackendError`
branch, so ``except ImageBackendError`` still catches an image's)::

    ServiceUnavailable      no usable answer after every attempt
    ├── DeadlineExceeded    ... the call's deadline ended it
    └── ResponseInvalid     ... an answer came, too large or unreadable
    RequestRejected         a 4xx other than 429: retrying would not help
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from storylab._checks import check_positive_int, check_seconds
from storylab.scheduling import mark
from storylab.story.backends.base import BackendError
from storylab.story.redaction import Redactor, redact_url, split_credentials

log = logging.getLogger("storylab.story")

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "RETRY_STATUS",
    "DeadlineExceeded",
    "ErrorKinds",
    "HttpService",
    "RequestRejected",
    "ResponseInvalid",
    "ServiceUnavailable",
    "Wording",
    "api_root",
    "check_seconds",
    "first_env",
    "parse_retry_after",
]

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# A hosted model takes up to a minute or two for a large picture or a long story.
DEFAULT_ATTEMPT_TIMEOUT = 180.0
# A 1536x1024 PNG is a few MiB, a third more in base64: 32 MiB leaves room
# for the largest sizes and still stops a runaway answer early.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Error answers are read only this far: enough for any message.
_MAX_ERROR_BODY = 64 * 1024


class ServiceUnavailable(BackendError):
    """The service gave no usable answer after every attempt."""


class DeadlineExceeded(ServiceUnavailable):
    """The call's deadline (all attempts and waits) ended before an answer came back."""


class ResponseInvalid(ServiceUnavailable):
    """The service answered, but not with something usable (too large, unreadable)."""


class RequestRejected(BackendError):
    """The service refused the request itself (a 4xx other than 429).

    ``status`` is the HTTP status and ``detail`` the service's own message
    (redacted), so a caller can tell "this server has no such endpoint"
    (404/405) or "this parameter is not supported" (400) and fall back.
    """

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ErrorKinds:
    """The exception classes one backend raises for each way a call can fail."""

    unavailable: type[ServiceUnavailable] = ServiceUnavailable
    deadline: type[DeadlineExceeded] = DeadlineExceeded
    invalid: type[ResponseInvalid] = ResponseInvalid
    rejected: type[RequestRejected] = RequestRejected


@dataclass(frozen=True, slots=True)
class Wording:
    """How messages name the service and what it makes: "image service", "picture", "image"."""

    service: str = "service"
    product: str = "answer"
    unit: str = "call"


class _TooLarge(Exception):
    def __init__(self, size: int | None) -> None:
        self.size = size  # the announced Content-Length, or None when cut off while reading


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def api_root(url: str) -> str:
    """``url`` without a trailing ``/`` and without a trailing ``/v1``: the root the
    ``/v1/...`` paths are added to, whichever convention the user followed."""
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def first_env(*names: str) -> str | None:
    """The value of the first of these environment variables that is set and not empty."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class HttpService:
    """One OpenAI-compatible service, called with JSON (see the module doc).

    ``base_url`` is used as given (with or without ``/v1``). The API key is
    read at call time from the first of ``key_envs`` that is set.
    ``max_attempts`` counts the first try. ``timeout`` bounds each read,
    ``attempt_timeout`` one whole attempt (connect, send, the whole answer)
    and ``call_timeout`` one call, every attempt and wait between them
    included; all in seconds. ``max_response_bytes`` caps one answer.
    ``attempts`` and ``retries`` count what was done, for tests and notebooks.
    """

    def __init__(
        self,
        base_url: str,
        *,
        key_envs: Sequence[str] = (),
        wording: Wording = Wording(),
        errors: ErrorKinds = ErrorKinds(),
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        call_timeout: float = 600.0,
        call_timeout_name: str = "call_timeout",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        check_positive_int("max_attempts", max_attempts)
        check_positive_int("max_response_bytes", max_response_bytes)
        check_seconds("timeout", timeout)
        check_seconds("connect_timeout", connect_timeout)
        self.attempt_timeout = check_seconds("attempt_timeout", attempt_timeout)
        self.call_timeout = check_seconds(call_timeout_name, call_timeout)
        self.max_response_bytes = max_response_bytes
        url = base_url.rstrip("/")
        # The URL's credentials never stay in the URL: they go into a header at
        # call time, and what is shown (repr, every message) is the redacted URL.
        try:
            self._redact_url = Redactor.for_url(url)
            clean, user, password = split_credentials(url)
        except ValueError:  # urlsplit's own complaint, e.g. a broken [IPv6] host
            clean, user, password = "", None, None
        self._auth = httpx.BasicAuth(user or "", password or "") if user or password else None
        self._root = api_root(clean)
        #: The service's URL as it may be shown: user info replaced by ``***``.
        self.base_url = redact_url(url)
        _check_url(clean, self.base_url)
        self.key_envs = tuple(key_envs)
        self.wording = wording
        self.errors = errors
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._transport = transport
        self._sleep = sleep
        # The client is built here, not on the first request: building one loads
        # the certificate store, which blocks for a noticeable time, and done on
        # the first request it would hold up every task of a run started together.
        # It binds to the loop of its first request (None until then).
        self._client: httpx.AsyncClient | None = self._new_client()
        # Under a shared limit's guard (see _get_client); built on first use there.
        self._fenced_client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.attempts = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"HttpService({self.base_url!r})"

    def endpoint(self, path: str) -> str:
        """``path`` (``/v1/...``) under this service, as it may be shown (credentials redacted)."""
        return f"{api_root(self.base_url)}{path}"

    def __getstate__(self) -> dict[str, Any]:
        # Sent to other processes (Dask workers) without its clients, which
        # hold locks and sockets: each process builds its own.
        state = self.__dict__.copy()
        state["_client"] = state["_fenced_client"] = state["_client_loop"] = None
        return state

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, transport=self._transport)

    def _get_client(self) -> httpx.AsyncClient:
        # An AsyncClient belongs to the loop it first ran on; notebooks and
        # run_sync may use a fresh loop per call, so keep one client per loop.
        loop = asyncio.get_running_loop()
        if self._client_loop not in (None, loop):
            self._client = self._fenced_client = None
        self._client_loop = loop
        if self._transport is None and _fence_here():
            # Under a shared limit's guard: every write first asks the share.
            if self._fenced_client is None:
                from storylab.scheduling.fenced_http import FencedTransport

                self._fenced_client = httpx.AsyncClient(
                    timeout=self.timeout, transport=FencedTransport()
                )
            return self._fenced_client
        if self._client is None:
            self._client = self._new_client()
        return self._client

    async def aclose(self) -> None:
        """Close the connection pools (on the loop that opened them)."""
        if self._client_loop in (None, asyncio.get_running_loop()):
            for client in (self._client, self._fenced_client):
                if client is not None:
                    await client.aclose()
        self._client = self._fenced_client = None
        self._client_loop = None

    def api_key(self) -> str | None:
        return first_env(*self.key_envs)

    def redactor(self) -> Redactor:
        """Hides this service's URL credentials and its current API key."""
        return self._redact_url.with_secrets(self.api_key())

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)

    async def post_json(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """POST ``payload`` to ``path`` and return the body of the ``200`` answer.

        ``what`` names the thing asked for in every message (``"{{IMAGE_2}}"``,
        ``"the story"``). Raises the backend's :class:`ErrorKinds`.
        """
        errors, words = self.errors, self.wording
        all_headers = {"accept": "application/json", **(headers or {})}
        key = self.api_key()
        auth = self._auth
        if key:
            all_headers["authorization"] = f"Bearer {key}"
            auth = None  # an API key wins over a URL's user and password
        # Everything said about this request goes through ``redact``: the
        # server's words may echo the key or the password back.
        redact = self._redact_url.with_secrets(key)
        where = f"{words.service} at {self.base_url}"
        client = self._get_client()
        loop = asyncio.get_running_loop()
        call_deadline = loop.time() + self.call_timeout
        within = f"within its deadline of {self.call_timeout:g} s per {words.unit}"
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            retry_after: float | None = None
            attempt_deadline = min(loop.time() + self.attempt_timeout, call_deadline)
            outcome: tuple[int, bytes, str, str | None] | None = None
            try:
                async with asyncio.timeout_at(attempt_deadline):
                    outcome = await self._attempt(client, path, payload, all_headers, auth)
            except TimeoutError:
                if attempt_deadline >= call_deadline:
                    raise errors.deadline(
                        f"{where} gave no {words.product} for {what} {within} (attempt "
                        f"{attempt} of {self.max_attempts} cut off); last error: {last}"
                    ) from None
                last = (
                    f"no complete answer within the {self.attempt_timeout:g} s deadline per attempt"
                )
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = redact(f"{type(exc).__name__}: {exc or 'connection failed'}")
            except _TooLarge as exc:
                announced = f" (Content-Length {exc.size:,} bytes)" if exc.size is not None else ""
                raise errors.invalid(
                    f"{where} sent an answer for {what} larger than the limit of "
                    f"{_mib(self.max_response_bytes)}{announced}; reading stopped there"
                ) from None
            if outcome is not None:
                status, body, reason, retry_header = outcome
                if status == 200:
                    return body
                message = redact(_error_message(body, reason))
                if status not in RETRY_STATUS:
                    raise errors.rejected(
                        f"{where} refused the request for {what}: HTTP {status}: {message}",
                        status,
                        message,
                    )
                last = f"HTTP {status}: {message}"
                retry_after = parse_retry_after(retry_header)
            if attempt < self.max_attempts:
                delay = self._delay(attempt, retry_after)
                if loop.time() + delay >= call_deadline:
                    raise errors.deadline(
                        f"{where} gave no {words.product} for {what} {within} (the next attempt "
                        f"would start {delay:.2f} s later, past it; {attempt} of "
                        f"{self.max_attempts} attempts made); last error: {last}"
                    )
                self.retries += 1
                mark(f"retry {attempt}: {last}; next try in {delay:.2f} s")
                await self._sleep(delay)
        raise errors.unavailable(
            f"{where} failed for {what} after {self.max_attempts} attempts; last error: {last}"
        )

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        path: str,
        payload: dict[str, Any],
        headers: dict[str, str],
        auth: httpx.Auth | None,
    ) -> tuple[int, bytes, str, str | None]:
        """One POST, its answer read in full but never past the size limit."""
        extra: dict[str, Any] = {"auth": auth} if auth is not None else {}
        url = f"{self._root}{path}"
        async with client.stream("POST", url, json=payload, headers=headers, **extra) as response:
            ok = response.status_code == 200
            body = await _read_limited(
                response, self.max_response_bytes if ok else _MAX_ERROR_BODY, refuse=ok
            )
            return (
                response.status_code,
                body,
                response.reason_phrase,
                response.headers.get("retry-after"),
            )


_PROXY_WARNED = False


def _fence_here() -> bool:
    """Whether a request made here runs under a shared limit's guard
    (``DistributedCapacityRoot.guard()``), so that its writes must be fenced.

    The fenced transport connects directly: with a proxy set in the
    environment, the requests go through httpx's own transport instead,
    unfenced, and a warning says so once."""
    from storylab.scheduling.distributed import in_guard

    if not in_guard():
        return False
    import urllib.request

    proxies = urllib.request.getproxies()
    if any(proxies.get(k) for k in ("http", "https", "all")):
        global _PROXY_WARNED
        if not _PROXY_WARNED:
            _PROXY_WARNED = True
            log.warning(
                "storylab: a proxy is set in the environment, so requests under the shared "
                "limit go through it without the check of the share before each write"
            )
        return False
    return True


async def _read_limited(response: httpx.Response, limit: int, *, refuse: bool) -> bytes:
    """The body, read chunk by chunk. Past ``limit``: raise ``_TooLarge`` if ``refuse``,
    else keep the first ``limit`` bytes. Either way the rest is never read."""
    length = response.headers.get("content-length", "")
    if refuse and length.isdigit() and int(length) > limit:
        raise _TooLarge(int(length))
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            if refuse:
                raise _TooLarge(None)
            return bytes(body[:limit])
    return bytes(body)


def _error_message(body: bytes, reason: str) -> str:
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:  # Ollama and llama.cpp answer {"error": "..."}
            return err
    except (ValueError, AttributeError):
        pass
    return reason or "error"


def _check_url(url: str, shown: str) -> None:
    try:
        parsed = httpx.URL(url)
    except Exception:  # httpx.InvalidURL and friends
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {shown!r}")
