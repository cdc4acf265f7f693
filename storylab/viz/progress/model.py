"""The progress model: what a panel knows about each pipeline, fed with envelopes.

A pipeline (a root entity) announces that it is about to fan out N children
(a ``VALUE`` envelope with ``sub_type="progress"`` and ``{"stage", "total",
"items"}``), then every child reports ``STARTED``, ``COMPLETED`` or
``FAILED``. :class:`ProgressModel` turns that stream into frozen snapshots
(:class:`PipelineProgress`, one :class:`RowState` per child) that every form
draws the same way: the widget (:mod:`.widget`), the plain-text log
(:mod:`.text`) and the trace replay (:mod:`.replay`), which builds the same
snapshots from a trace instead of envelopes.

No display library is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storylab.viz._palette import COLOURS, REUSED_COLOUR, Status
from storylab.viz.labels import stage_label, task_label

__all__ = [
    "FINISHED",
    "REUSED_SYMBOL",
    "REUSED_TEXT",
    "SYMBOLS",
    "PipelineProgress",
    "ProgressModel",
    "RowState",
]

_ENVELOPE_FIELDS = ("type", "entity_id", "entity_type", "entity_name", "status", "message",
                    "value", "sub_type", "error")
_STATUS_EVENTS = {
    "STARTED": Status.RUNNING,
    "RUNNING": Status.RUNNING,
    "COMPLETED": Status.COMPLETED,
    "FAILED": Status.FAILED,
    "CANCELLED": Status.CANCELLED,
}
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
# A glyph per status, so nothing is told by colour alone.
SYMBOLS = {
    Status.WAITING: "·",
    Status.RUNNING: "▶",
    Status.COMPLETED: "✓",
    Status.FAILED: "✗",
    Status.CANCELLED: "⊘",
}
REUSED_SYMBOL = "↺"
REUSED_TEXT = "reused from the graph"


# -- state ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RowState:
    """One child as the panel shows it."""

    name: str
    entity_type: str | None
    entity_id: str | None
    status: Status
    message: str | None
    counted: bool  # announced by a progress envelope, so it counts towards the bar
    # Completed without starting here: handed back from the graph (a resumed
    # run's finished child), drawn in its own style so reuse is visible.
    reused: bool = False
    # The word for a pending row when no capacity source holds it back (a plain
    # loop that has not reached it yet): None keeps "waiting for capacity".
    waiting_text: str | None = None

    @property
    def colour(self) -> str:
        return REUSED_COLOUR if self.reused else COLOURS[self.status]

    @property
    def symbol(self) -> str:
        return REUSED_SYMBOL if self.reused else SYMBOLS[self.status]

    @property
    def status_text(self) -> str:
        if self.status is Status.WAITING and self.waiting_text:
            return self.waiting_text
        return f"{self.status}, {REUSED_TEXT}" if self.reused else str(self.status)

    @property
    def activity(self) -> str | None:
        """What the child is doing now; nothing once it completed (its last words, such as
        "Saving {{IMAGE_1}} to the blob store", would be stale on a finished row)."""
        return None if self.status is Status.COMPLETED else self.message

    @property
    def title(self) -> str:
        """The row's heading in the reader's words, as the timeline names its lane:
        ``image-{{IMAGE_2}}`` reads ``image-2``, with no class name in front."""
        return task_label(self.name)

    @property
    def detail(self) -> str:
        """The row as the graph knows it, for a reader who asks (a tooltip, ``detail=True``):
        its entity class and raw name, ``ImageGenerationEntity (image-{{IMAGE_2}})``."""
        return f"{self.entity_type} ({self.name})" if self.entity_type else self.name


@dataclass(frozen=True, slots=True)
class PipelineProgress:
    """A snapshot of one pipeline (root entity) of the panel."""

    key: str
    entity_id: str | None
    entity_type: str | None
    name: str | None
    status: Status
    message: str | None
    stage: str | None
    total: int
    rows: tuple[RowState, ...]
    label: str | None = None  # the reader's name for the story ("story A"), if given
    waiting_text: str | None = None  # as RowState.waiting_text, for the counts

    @property
    def done(self) -> int:
        """Announced children that finished, whichever way."""
        return sum(1 for r in self.rows if r.counted and r.status in FINISHED)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.rows if r.counted and r.status is Status.COMPLETED)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r.counted and r.status is Status.FAILED)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.rows if r.counted and r.status is status)

    @property
    def title(self) -> str:
        """The pipeline's heading: its label (``story A (a curious fox)``, the charts' name
        for it) or else its own name, with no class name in front."""
        if self.label:
            return self.label
        return task_label(self.name) if self.name else self.key

    @property
    def detail(self) -> str:
        """The pipeline as the graph knows it: entity class and name (as a row's detail)."""
        if self.entity_type and self.name:
            return f"{self.entity_type} ({self.name})"
        return self.name or self.key

    @property
    def stage_text(self) -> str | None:
        """The stage the bar counts, in plain words (``images``, not ``generating_images``)."""
        return stage_label(self.stage) if self.stage else None

    @property
    def bar_style(self) -> str:
        """ipywidgets bar style: green when all went well, orange/red otherwise."""
        if self.status is Status.FAILED:
            return "danger"
        if self.status is Status.CANCELLED:
            return "warning"
        if self.status is Status.COMPLETED:
            return "warning" if self.failed or self.count(Status.CANCELLED) else "success"
        return "danger" if self.failed else "info"

    @property
    def status_text(self) -> str:
        """How the pipeline stands, in words: a finished pipeline with failed children
        says ``completed with errors``, not just ``completed``."""
        if self.status is Status.COMPLETED and (self.failed or self.count(Status.CANCELLED)):
            return "completed with errors"
        return str(self.status)

    @property
    def activity(self) -> str | None:
        """What the pipeline is doing now; nothing once it completed (its last step's
        words, such as "Storing results", would be stale)."""
        return None if self.status is Status.COMPLETED else self.message

    def counts_text(self) -> str:
        stage = f"{self.stage_text}: " if self.stage else ""
        parts = [f"{self.done}/{self.total} done"]
        detail = [
            f"{n} {self.waiting_text if s is Status.WAITING and self.waiting_text else s}"
            for s in (Status.COMPLETED, Status.FAILED, Status.CANCELLED,
                                 Status.RUNNING, Status.WAITING)
            if (n := self.count(s))
        ]
        if detail:
            parts.append(f"({', '.join(detail)})")
        return stage + " ".join(parts)

    def summary_line(self, *, detail: bool = False) -> str:
        message = f" — {self.activity}" if self.activity else ""
        title = f"{self.title} · {self.detail}" if detail else self.title
        return f"{title} [{self.status_text}] {self.counts_text()}{message}"


class _Root:
    __slots__ = ("key", "entity_id", "entity_type", "name", "status", "message", "stage",
                 "stages", "rows", "by_id", "label")

    def __init__(self, key: str) -> None:
        self.key = key
        self.entity_id: str | None = None
        self.entity_type: str | None = None
        self.name: str | None = None
        self.status = Status.WAITING
        self.message: str | None = None
        self.stage: str | None = None
        self.stages: dict[str, int] = {}
        self.rows: dict[str, dict[str, Any]] = {}  # by child name, in announcement order
        self.by_id: dict[str, str] = {}  # child entity id -> row name
        self.label: str | None = None  # the text form's line prefix (default: the name)

    @property
    def prefix(self) -> str:
        return f"[{self.label or (task_label(self.name) if self.name else self.key)}] "

    def snapshot(self, waiting_text: str | None = None) -> PipelineProgress:
        rows = tuple(
            RowState(r["name"], r["entity_type"], r["entity_id"], r["status"], r["message"],
                     r["counted"],
                     r["status"] is Status.COMPLETED and not r.get("started"), waiting_text)
            for r in self.rows.values()
        )
        counted = sum(1 for r in rows if r.counted)
        total = max(sum(self.stages.values()), counted) if self.stages else counted
        return PipelineProgress(self.key, self.entity_id, self.entity_type, self.name,
                                self.status, self.message, self.stage, total, rows, self.label,
                                waiting_text)


def _fields(envelope: Any) -> dict[str, Any]:
    if isinstance(envelope, dict):
        get = envelope.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(envelope, name, default)
    out = {name: get(name, None) for name in _ENVELOPE_FIELDS}
    for name in ("type", "entity_id"):
        if not isinstance(out[name], str) or not out[name]:
            raise ValueError(
                f"envelope field {name!r} must be a non-empty string, got {out[name]!r}"
            )
    if out["type"] not in ("STATUS", "VALUE", "ERROR", "INTERNAL_UPDATE"):
        raise ValueError(
            "envelope field 'type' must be one of STATUS, VALUE, ERROR, INTERNAL_UPDATE; "
            f"got {out['type']!r}"
        )
    return out


def _progress_value(value: Any) -> tuple[str, int, list[str]]:
    if not isinstance(value, dict):
        raise ValueError(
            "a progress envelope's value must be a dict with 'stage', 'total' and 'items'; "
            f"got {type(value).__name__}"
        )
    total = value.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"progress value['total'] must be an integer >= 0, got {total!r}")
    items = value.get("items", [])
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"progress value['items'] must be a list of child names, got {items!r}")
    stage = value.get("stage") or "items"
    return str(stage), total, list(items)


def _error_message(error: Any) -> str | None:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return f"{kind}: {message}" if kind and message else (message or kind)
    return None if error is None else str(error)



class ProgressModel:
    """Pipelines by key, each with its children; applies envelopes and says what changed.

    :meth:`apply` returns the pipeline state it changed and the log line the
    change is worth (``None`` when it is not worth a line), so a form can
    print it or ignore it.
    """

    def __init__(self, waiting_text: str | None = None) -> None:
        self.roots: dict[str, _Root] = {}
        self.waiting_text = waiting_text

    @property
    def pipelines(self) -> list[PipelineProgress]:
        return [root.snapshot(self.waiting_text) for root in self.roots.values()]

    def apply(self, envelope: Any, root: str | None = None) -> tuple[_Root, str | None]:
        env = _fields(envelope)
        state = self._root_for(env, root)
        if env["entity_id"] == state.entity_id:
            return state, self._apply_root(state, env)
        return state, self._apply_child(state, env)

    def labelled(self, key: str, label: str | None) -> _Root:
        state = self.roots.get(key)
        if state is None:
            state = self.roots[key] = _Root(key)
        if label is not None:
            state.label = label
        return state

    def _root_for(self, env: dict[str, Any], key: str | None) -> _Root:
        eid = env["entity_id"]
        if key is not None:
            state = self.roots.get(key)
            if state is None:
                state = self.roots[key] = _Root(key)
            if state.entity_id is None and (eid == key or not state.rows):
                self._identify(state, env)
            return state
        for state in self.roots.values():
            if eid == state.entity_id or eid in state.by_id:
                return state
        name = env["entity_name"]
        for state in self.roots.values():
            row = state.rows.get(name)
            if row is not None and row["entity_id"] is None:
                return state
        state = self.roots[eid] = _Root(eid)
        self._identify(state, env)
        return state

    @staticmethod
    def _identify(state: _Root, env: dict[str, Any]) -> None:
        state.entity_id = env["entity_id"]
        state.entity_type = env["entity_type"]
        state.name = env["entity_name"]

    def _apply_root(self, state: _Root, env: dict[str, Any]) -> str | None:
        """Apply a pipeline's own envelope; the log line it is worth, if any."""
        kind = env["type"]
        if kind == "STATUS":
            state.status = _STATUS_EVENTS.get(env["status"], state.status)
            if env["message"]:
                state.message = env["message"]
                if state.status is Status.RUNNING:  # how it ended is the summary's to say
                    return str(env["message"])
        elif kind == "VALUE" and env["sub_type"] == "progress":
            stage, total, items = _progress_value(env["value"])
            state.stage = stage
            state.stages[stage] = total
            for name in items:
                row = state.rows.get(name)
                if row is None:
                    state.rows[name] = {"name": name, "entity_type": None, "entity_id": None,
                                        "status": Status.WAITING, "message": None,
                                        "counted": True}
                else:
                    row["counted"] = True
        elif kind == "VALUE" and env["sub_type"] == "return":
            state.status = Status.COMPLETED  # a finished entity started again sends only this
        elif kind == "ERROR":
            state.status = Status.FAILED
            state.message = _error_message(env["error"]) or state.message
        return None

    def _apply_child(self, state: _Root, env: dict[str, Any]) -> str | None:
        """Apply a child's envelope; the log line its change of status is worth, if any."""
        eid, name = env["entity_id"], env["entity_name"] or env["entity_id"]
        row_name = state.by_id.get(eid)
        if row_name is None:
            row = state.rows.get(name)
            if row is not None and row["entity_id"] not in (None, eid):
                row_name = f"{name} [{eid}]"  # same name, another entity
                row = None
            else:
                row_name = name
            if row is None:
                state.rows[row_name] = {"name": name, "entity_type": None, "entity_id": None,
                                        "status": Status.WAITING, "message": None,
                                        "counted": False}
            state.by_id[eid] = row_name
        row = state.rows[row_name]
        before = row["status"]
        row["entity_id"] = eid
        row["entity_type"] = env["entity_type"] or row["entity_type"]
        kind = env["type"]
        if kind == "STATUS":
            row["status"] = _STATUS_EVENTS.get(env["status"], row["status"])
            if env["message"]:
                row["message"] = env["message"]
        elif kind == "VALUE" and env["sub_type"] == "return":
            row["status"] = Status.COMPLETED
        elif kind == "ERROR":
            row["status"] = Status.FAILED
            row["message"] = _error_message(env["error"]) or row["message"]
        if row["status"] is before:
            return None
        change = _change(row)
        return f"{task_label(row_name)} {change}" if change else None


def _change(row: dict[str, Any]) -> str | None:
    """How the log words a child's new status (``None``: not worth a line)."""
    status = row["status"]
    if status is Status.RUNNING:
        row["started"] = True
        return "started"
    if status is Status.COMPLETED:
        # Completed without starting in this run: handed back from the graph.
        return "done" if row.get("started") else "already done"
    if status is Status.FAILED:
        return f"FAILED: {row['message']}" if row["message"] else "FAILED"
    if status is Status.CANCELLED:
        return "cancelled"
    return None


def _run_root_id(run: Any) -> str | None:
    for attr in ("entity_id", "id"):
        value = getattr(run, attr, None)
        if isinstance(value, str) and value:
            return value
    entity = getattr(run, "entity", None)
    value = getattr(entity, "id", None)
    return value if isinstance(value, str) and value else None
