"""JSON for the entity store: how data, outputs and the progress log are encoded.

Data and outputs must be JSON (a clear ``TypeError`` naming the field
otherwise); the progress log never fails a run, so anything it cannot encode
is logged by ``repr``. Progress rows pack consecutive envelopes of one node
into one row (schema 3, see :mod:`storylab.entities.schema`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Callable
from typing import Any

from storylab.entities.envelopes import Envelope

__all__ = ["dumps", "dumps_log", "encode_loose", "envelopes_from_rows", "loads", "progress_rows"]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_json") and callable(obj.to_json):
        return obj.to_json()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bytes | bytearray):
        raise TypeError(
            "bytes cannot be stored in entity data or output; "
            "put them in graph.blobs and store the key"
        )
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _make_encoder(default: Any) -> Any:
    """A reusable compact JSON encoder (same output as ``json.dumps(value,
    default=default, ensure_ascii=False)``). ``json.dumps`` with a ``default``
    builds a new encoder on every call, which costs more than encoding a
    small dict; this one is built once. No circular-reference bookkeeping:
    a cycle ends in a ``RecursionError``, reported like any unencodable value."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - no C accelerator
        encoder = json.JSONEncoder(default=default, ensure_ascii=False)
        return encoder.encode
    c_encode = c_make_encoder(
        None, default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


_encode = _make_encoder(_json_default)


def dumps(value: Any, *, what: str | Callable[[], str] = "value") -> str:
    """JSON for the store; a clear ``TypeError`` naming ``what`` otherwise
    (``what`` may be a function, called only to word the error)."""
    if value is None:
        return "null"
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            exc = ValueError("circular reference or nesting too deep")
        name = what() if callable(what) else what
        raise TypeError(f"{name} must be JSON serializable: {exc}") from None


def _loose_default(obj: Any) -> Any:
    try:
        return _json_default(obj)
    except TypeError:
        return repr(obj)


encode_loose = _make_encoder(_loose_default)


def dumps_log(value: Any) -> str:
    # The progress log never fails a run: unknown objects are logged by repr.
    try:
        return encode_loose(value)
    except (ValueError, RecursionError) as exc:
        return json.dumps(f"<not loggable: {exc}>")


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_MAX_PACKED = 64  # envelopes carried by one progress row at most


def progress_rows(envs: list[Envelope]) -> list[tuple]:
    """Rows for the progress table, in log order. A run of envelopes of the
    same node (no other node's envelope in between) shares one row: the first
    in the columns, the others in ``more``. The log reads back identically."""
    rows = []
    i, n = 0, len(envs)
    while i < n:
        env = envs[i]
        node = env.entity_id
        j = i + 1
        while j < n and j - i < _MAX_PACKED and envs[j].entity_id == node:
            j += 1
        more = None
        if j > i + 1:
            packed = [
                [e.type, e.status, e.message, e.sub_type, e.value, e.error, e.at]
                for e in envs[i + 1 : j]
            ]
            try:
                more = encode_loose(packed)
            except (ValueError, RecursionError):
                j = i + 1  # an unloggable value: this envelope on its own row
        rows.append(
            (
                node,
                env.type,
                env.status,
                env.message,
                env.sub_type,
                None if env.value is None else dumps_log(env.value),
                None if env.error is None else dumps_log(env.error),
                env.at,
                more,
            )
        )
        i = j
    return rows


def envelopes_from_rows(rows: list[tuple]) -> list[Envelope]:
    """Envelopes from progress rows joined with their node (type, name)."""
    out = []
    for r in rows:
        out.append(
            Envelope(
                type=r[3],
                entity_id=r[0],
                entity_type=r[1],
                entity_name=r[2],
                status=r[4],
                message=r[5],
                value=loads(r[6]),
                sub_type=r[7],
                error=loads(r[8]),
                at=r[9],
            )
        )
        if r[10] is not None:
            out.extend(
                Envelope(t, r[0], r[1], r[2], st, msg, value, sub, err, at)
                for t, st, msg, sub, value, err, at in json.loads(r[10])
            )
    return out
