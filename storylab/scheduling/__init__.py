"""Scheduling core: capacity trees, task sources, the pool runner and its trace.

This layer imports nothing else from storylab and works on plain coroutines.
"""

from storylab.scheduling.capacity import CapacitySource, CapacityStatistics
from storylab.scheduling.runner import (
    HierarchicalTaskPoolRunner,
    RunnerStatistics,
    TaskEventType,
    TaskProgressEnvelope,
    TaskStream,
)
from storylab.scheduling.sources import (
    EXHAUSTED,
    BufferMode,
    SourceBufferObj,
    SourceFromIterable,
    TaskSource,
)
from storylab.scheduling.trace import (
    EventKind,
    Trace,
    TraceEvent,
    current_trace,
    mark,
    merge_traces,
    task_scope,
)

__all__ = [
    "EXHAUSTED",
    "BufferMode",
    "CapacitySource",
    "CapacityStatistics",
    "EventKind",
    "HierarchicalTaskPoolRunner",
    "RunnerStatistics",
    "SourceBufferObj",
    "SourceFromIterable",
    "TaskEventType",
    "TaskProgressEnvelope",
    "TaskSource",
    "TaskStream",
    "Trace",
    "TraceEvent",
    "current_trace",
    "mark",
    "merge_traces",
    "task_scope",
]
