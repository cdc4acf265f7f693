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

from storylab.entities.errors import UnregisteredTypeError

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity
    from storylab.entities.run import EntityRun

__all__ = [
    "LIVE",
    "check_entity_class",
    "entity_class",
    "is_entity",
    "register",
    "register_base",
    "registered_types",
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
