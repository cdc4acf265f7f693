"""Entities and the persisted entity graph.

An entity is a unit of work bound to a node of an SQLite-backed graph: its
status, output, children and progress survive the process, so a pipeline
started again after a crash does only what is left. This layer may use
``storylab.scheduling`` and knows nothing of stories.

Modules: ``entity`` (RunnableEntity), ``run`` (EntityRun and what run_impl
yields), ``store`` (the EntityStore protocol, all entities need of a store),
``graph`` (EntityGraph, the SQLite store), ``schema``, ``records``,
``encoding`` and ``registry`` (entity types and live runs, shared by both
sides), ``blobs``, ``envelopes``, ``errors``.
"""

from storylab.entities.blobs import BlobStore
from storylab.entities.entity import (
    Condition,
    Delegate,
    EntityRun,
    Return,
    RunnableEntity,
    entity_class,
    registered_types,
)
from storylab.entities.envelopes import Envelope, EnvelopeType, StatusEvent, ValueKind
from storylab.entities.errors import (
    DuplicateNameError,
    EntityGraphError,
    EntityRunInterrupted,
    EntityTypeMismatchError,
    GraphAccessError,
    GraphFileGoneError,
    GraphNotFoundError,
    GraphUnreachableError,
    LeaseLostError,
    NotAStorylabGraphError,
    SchemaVersionError,
    UnknownBlobError,
    UnknownBranchError,
    UnknownEntityError,
    UnregisteredTypeError,
)
from storylab.entities.graph import (
    EntityGraph,
    EntityStatus,
    LeaseRecord,
    NodeRecord,
    default_graph_path,
)
from storylab.entities.store import EntityStore

__all__ = [
    "BlobStore",
    "Condition",
    "Delegate",
    "DuplicateNameError",
    "EntityGraph",
    "EntityGraphError",
    "EntityRun",
    "EntityRunInterrupted",
    "EntityStatus",
    "EntityStore",
    "EntityTypeMismatchError",
    "Envelope",
    "EnvelopeType",
    "GraphAccessError",
    "GraphFileGoneError",
    "GraphNotFoundError",
    "GraphUnreachableError",
    "LeaseLostError",
    "LeaseRecord",
    "NodeRecord",
    "NotAStorylabGraphError",
    "Return",
    "RunnableEntity",
    "SchemaVersionError",
    "StatusEvent",
    "UnknownBlobError",
    "UnknownBranchError",
    "UnknownEntityError",
    "UnregisteredTypeError",
    "ValueKind",
    "default_graph_path",
    "entity_class",
    "registered_types",
]
