"""Envelopes: the messages an entity's run streams to whoever consumes it.

A consumer of a long run wants to know *what is happening* (status lines),
*what came out* (the return value, progress values) and *what went wrong*
(errors), and wants to know which entity said so, even when the envelope was
produced three levels down and forwarded by a parent. So every envelope
carries the id, type and name of the entity that produced it.

The stream of one fresh run always has this shape::

    STATUS STARTED, ...the entity's own yields..., VALUE(return), STATUS COMPLETED

and on failure ``..., ERROR, STATUS FAILED`` followed by the exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Envelope", "EnvelopeType", "StatusEvent", "ValueKind"]


class EnvelopeType(StrEnum):
    STATUS = "STATUS"
    VALUE = "VALUE"
    ERROR = "ERROR"
    INTERNAL_UPDATE = "INTERNAL_UPDATE"


class StatusEvent(StrEnum):
    """The ``status`` of a ``STATUS`` envelope (not the node's stored status)."""

    STARTED = "STARTED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ValueKind(StrEnum):
    """The ``sub_type`` of a ``VALUE`` envelope."""

    RETURN = "return"
    PROGRESS = "progress"


_TYPES = frozenset(EnvelopeType)
_FIELDS = (
    "type",
    "entity_id",
    "entity_type",
    "entity_name",
    "status",
    "message",
    "value",
    "sub_type",
    "error",
    "at",
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message of an entity's stream. See the module docstring.

    ``status`` is set on ``STATUS`` envelopes, ``value`` and ``sub_type``
    (``"return"`` or ``"progress"``) on ``VALUE`` ones, ``error`` (a dict with
    ``type``, ``message`` and ``traceback``) on ``ERROR`` ones; ``at`` is the
    wall-clock time it was made.
    """

    type: str
    entity_id: str
    entity_type: str
    entity_name: str
    status: str | None = None
    message: str | None = None
    value: Any = None
    sub_type: str | None = None
    error: dict | None = None
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def _make(
        cls,
        type: str,
        entity_id: str,
        entity_type: str,
        entity_name: str,
        status: str | None = None,
        message: str | None = None,
        value: Any = None,
        sub_type: str | None = None,
        error: dict | None = None,
    ) -> Envelope:
        """The same envelope as ``Envelope(...)``, stamped now, built faster.

        An entity run makes several envelopes per entity; the dataclass
        ``__init__`` of a frozen class sets each field through
        ``object.__setattr__``, which costs twice as much as setting the
        slots directly. Callers pass valid values (no checks here either)."""
        env = _new(cls)
        _set_type(env, type)
        _set_entity_id(env, entity_id)
        _set_entity_type(env, entity_type)
        _set_entity_name(env, entity_name)
        _set_status(env, status)
        _set_message(env, message)
        _set_value(env, value)
        _set_sub_type(env, sub_type)
        _set_error(env, error)
        _set_at(env, _now())
        return env

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Envelope:
        if not isinstance(d, dict):
            raise TypeError(f"an envelope must be a dict, got {type(d).__name__}")
        kind = d.get("type")
        if kind not in _TYPES:
            allowed = ", ".join(sorted(_TYPES))
            raise ValueError(f"envelope field 'type' must be one of {allowed}; got {kind!r}")
        missing = [k for k in ("entity_id", "entity_type", "entity_name") if k not in d]
        if missing:
            raise ValueError(f"envelope is missing field(s) {', '.join(missing)}")
        kwargs = {name: d[name] for name in _FIELDS if name in d}
        if kwargs.get("at") is None:
            kwargs.pop("at", None)
        return cls(**kwargs)


_new = object.__new__
_now = time.time
(
    _set_type,
    _set_entity_id,
    _set_entity_type,
    _set_entity_name,
    _set_status,
    _set_message,
    _set_value,
    _set_sub_type,
    _set_error,
    _set_at,
) = (getattr(Envelope, name).__set__ for name in _FIELDS)
