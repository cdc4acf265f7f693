"""What this process knows about entities, shared by the entity classes and the store.

* The **type registry**: every :class:`~storylab.entities.entity.RunnableEntity`
  subclass under its ``type_name``, which is how a node read back from a store
  revives as the right class.
* The **live runs**: the runs executing right now in this process, by (graph
  file, entity id). An InProgress node without an entry here, leased to this
  process, belongs to a run that is over (it was abandoned).

Both the entity module and the store import this one, and it imports
neither, so the two need not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storylab.entities.encoding import dumps
from storylab.entities.errors import EntityTypeMismatchError, UnregisteredTypeError

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity
    from storylab.entities.records import NodeRecord
    from storylab.entities.run import EntityRun
    from storylab.entities.store import EntityStore

__all__ = [
    "LIVE",
    "check_entity_class",
    "check_new",
    "entity_class",
    "is_entity",
    "register",
    "register_base",
    "registered_types",
    "revive",
    "running_here",
]

_REGISTRY: dict[str, type[RunnableEntity]] = {}
# The RunnableEntity class itself, set when its module is imported. Until then
# nothing can be an entity class.
_BASE: list[type] = []

LIVE: dict[tuple[str, str], EntityRun] = {}
"""Runs executing right now in this process, by (graph file key, entity id)."""


def register_base(cls: type) -> None:
    """Name the base class every entity class derives from (called once)."""
    _BASE[:] = [cls]


def register(cls: type[RunnableEntity]) -> None:
    """Register an entity class under its ``type_name`` (a later one replaces it)."""
    _REGISTRY[cls.type_name] = cls


def entity_class(type_name: str) -> type[RunnableEntity]:
    """The class registered under ``type_name``."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise UnregisteredTypeError(
            f"entity type {type_name!r} is not registered: import the module that "
            f"defines the RunnableEntity subclass {type_name!r} before reading it back"
        ) from None


def registered_types() -> dict[str, type[RunnableEntity]]:
    return dict(_REGISTRY)


def is_entity(obj: Any) -> bool:
    """Whether ``obj`` is an entity (an instance of a RunnableEntity class)."""
    return bool(_BASE) and isinstance(obj, _BASE[0])


def check_entity_class(cls: Any) -> None:
    """Raise ``TypeError`` unless ``cls`` is a RunnableEntity subclass."""
    if not (_BASE and isinstance(cls, type) and issubclass(cls, _BASE[0])):
        raise TypeError(f"entity class must be a RunnableEntity subclass; got {cls!r}")


def running_here(key: str, entity_id: str) -> bool:
    """Whether a run of ``entity_id`` of the graph file ``key`` executes in this process."""
    return (key, entity_id) in LIVE


def check_new(cls: Any, name: Any, data: Any) -> tuple[str, str]:
    """Check what a new node is made of: ``cls`` an entity class, ``name`` a
    non-empty string, ``data`` a dict (or ``None``) that JSON can hold. Its
    type name and encoded data."""
    check_entity_class(cls)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"entity name must be a non-empty string; got {name!r}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TypeError(f"entity data must be a dict; got {type(data).__name__}")
    return cls.type_name, dumps(data, what=lambda: f"data of entity {name!r}")


def revive(
    store: EntityStore, record: NodeRecord, expected: type[RunnableEntity] | None = None
) -> RunnableEntity:
    """The entity for ``record`` in ``store``: an instance of ``expected``
    (which must be its type, else ``EntityTypeMismatchError``) or of the
    class registered under its type."""
    if expected is None:
        return entity_class(record.type)(store, record)
    if record.type != expected.type_name:
        raise EntityTypeMismatchError(
            f"entity {record.name!r} exists with type {record.type!r}, not {expected.type_name!r}"
        )
    return expected(store, record)
