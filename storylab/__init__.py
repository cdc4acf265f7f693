"""storylab: see and learn entity-based parallelism.

The public face of the package. The layers (see docs/architecture.md for
the module map) are ``storylab.scheduling`` (capacity, sources, runner, trace),
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

# The story pipeline and the pictures are loaded on first use, so that
# ``import storylab`` (and ``import storylab.viz``) stays light and the viz
# layer never pulls in the story layer behind the reader's back.
_LAZY = {
    "create_story": "storylab.story",
    "generate_story": "storylab.story",
    "story_html": "storylab.story",
    "StorySettings": "storylab.story",
    "StoryValidationError": "storylab.story",
    "StoryPipelineEntity": "storylab.story",
    "ImageGenerationEntity": "storylab.story",
    "use_settings": "storylab.story",
    "configure": "storylab.story",
    "ProgressPanel": "storylab.viz",
    "entity_graph": "storylab.viz",
    "plot_entity_tree": "storylab.viz",
    "plot_timeline": "storylab.viz",
    "plot_capacity": "storylab.viz",
    "plot_sequential_vs_parallel": "storylab.viz",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'storylab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    *_LAZY,
]
