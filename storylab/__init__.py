"""storylab: see and learn entity-based parallelism.

The public face of the package. The layers (see docs/architecture in the
README) are ``storylab.scheduling`` (capacity, sources, runner, trace),
``storylab.entities`` (entities and the SQLite entity graph),
``storylab.story`` (the illustrated-story pipeline) and ``storylab.viz``
(progress panels and charts, imported lazily).
"""

from storylab._sync import run_sync
from storylab.entities import (
    DuplicateNameError,
    EntityGraph,
    EntityGraphError,
    EntityRun,
    Envelope,
    Return,
    RunnableEntity,
    UnknownEntityError,
)
from storylab.scheduling import (
    BufferMode,
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    SourceFromIterable,
    TaskEventType,
    TaskProgressEnvelope,
    Trace,
)

__version__ = "0.1.0"

__all__ = [
    "BufferMode",
    "CapacitySource",
    "DuplicateNameError",
    "EntityGraph",
    "EntityGraphError",
    "EntityRun",
    "Envelope",
    "EventKind",
    "HierarchicalTaskPoolRunner",
    "Return",
    "RunnableEntity",
    "SourceBufferObj",
    "SourceFromIterable",
    "TaskEventType",
    "TaskProgressEnvelope",
    "Trace",
    "UnknownEntityError",
    "__version__",
    "run_sync",
]
