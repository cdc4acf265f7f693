"""Task sources: where a runner gets its next task, one pull at a time.

A runner never asks for a task before it holds a capacity unit for it. That
only pays off if the source does no work ahead of the pull: when pulling the
next item *creates* something (a child entity, a database row, a request),
"pull on demand" is what makes creation follow capacity. Hence two rules for
every source here:

* :meth:`TaskSource.pull` advances the underlying iterator by exactly one step;
* :meth:`TaskSource.peek` never advances it. It reports an item only if one is
  already in hand, and ``None`` otherwise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from enum import Enum
from typing import Any, Final

__all__ = [
    "EXHAUSTED",
    "BufferMode",
    "SourceBufferObj",
    "SourceFromIterable",
    "TaskSource",
    "as_source",
]


class _Exhausted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EXHAUSTED"


EXHAUSTED: Final = _Exhausted()
"""What :meth:`TaskSource.pull` returns once the source has nothing left."""


class BufferMode(Enum):
    FIFO = "fifo"
    LIFO = "lifo"


class TaskSource:
    """Base class: ``await pull()`` gives the next item or :data:`EXHAUSTED`.

    Sources whose next item is available without awaiting set ``sync = True``
    and implement :meth:`pull_nowait`; the runner then skips a suspension per
    task. ``done`` becomes true once :data:`EXHAUSTED` has been returned.
    """

    sync: bool = False
    done: bool = False

    async def pull(self) -> Any:
        return self.pull_nowait()

    def pull_nowait(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def peek(self) -> Any:
        return None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (item := await self.pull()) is not EXHAUSTED:
            yield item


class SourceBufferObj(TaskSource):
    """Tasks known up front, held in a buffer that may grow while running.

    ``SourceBufferObj(thunks, one_shot=True, mode=BufferMode.FIFO)``. FIFO
    pulls from the front, LIFO from the back. A one-shot buffer is exhausted
    once drained. A buffer that is not one-shot waits for :meth:`push` when
    empty and ends only after :meth:`close`.
    """

    def __init__(
        self,
        thunks: Iterable[Any] = (),
        one_shot: bool = True,
        mode: BufferMode = BufferMode.FIFO,
    ) -> None:
        if not isinstance(mode, BufferMode):
            raise ValueError(f"mode must be BufferMode.FIFO or BufferMode.LIFO, got {mode!r}")
        self.buffer: deque[Any] = deque(thunks)
        self.one_shot = one_shot
        self.mode = mode
        self.sync = one_shot
        self.done = False
        self._closed = one_shot
        self._wakeup: asyncio.Future | None = None

    def peek(self) -> Any:
        if not self.buffer:
            return None
        return self.buffer[0] if self.mode is BufferMode.FIFO else self.buffer[-1]

    def push(self, item: Any) -> None:
        if self.done or (self._closed and not self.one_shot):
            raise RuntimeError("cannot push to a closed SourceBufferObj")
        self.buffer.append(item)
        self._wake()

    def close(self) -> None:
        """No more pushes: the source ends once the buffer is drained."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def pull_nowait(self) -> Any:
        if self.buffer:
            return self.buffer.popleft() if self.mode is BufferMode.FIFO else self.buffer.pop()
        if self._closed:
            self.done = True
            return EXHAUSTED
        raise BlockingIOError("buffer empty; await pull() instead")

    async def pull(self) -> Any:
        while not self.buffer and not self._closed:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self.pull_nowait()


class SourceFromIterable(TaskSource):
    """Adapts a sync or async iterable, advancing it one step per pull.

    This is the bridge from a lazy generator of tasks (such as an entity's
    ``parallel_calls``) to a runner: each pull runs the generator up to its
    next ``yield`` and no further.
    """

    def __init__(self, iterable: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._aiter: AsyncIterator[Any] | None = None
        self._iter: Iterator[Any] | None = None
        if hasattr(iterable, "__aiter__"):
            self._aiter = iterable.__aiter__()
        elif hasattr(iterable, "__iter__"):
            self._iter = iter(iterable)
            self.sync = True
        else:
            raise TypeError(
                f"SourceFromIterable needs an iterable or async iterable, "
                f"got {type(iterable).__name__}"
            )
        self.done = False

    def pull_nowait(self) -> Any:
        if self.done:
            return EXHAUSTED
        if self._iter is None:
            raise BlockingIOError("async iterable; await pull() instead")
        try:
            return next(self._iter)
        except StopIteration:
            self.done = True
            return EXHAUSTED

    async def pull(self) -> Any:
        if self._aiter is None:
            return self.pull_nowait()
        if self.done:
            return EXHAUSTED
        try:
            return await self._aiter.__anext__()
        except StopAsyncIteration:
            self.done = True
            return EXHAUSTED

    async def aclose(self) -> None:
        """Close the underlying generator, sync or async (runs its ``finally``
        blocks); later pulls return :data:`EXHAUSTED`."""
        self.done = True
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()
        aclose = getattr(self._aiter, "aclose", None)
        if aclose is not None:
            await aclose()


def as_source(source: Any) -> TaskSource:
    """Return ``source`` if it is a :class:`TaskSource`, else wrap the iterable."""
    if isinstance(source, TaskSource):
        return source
    return SourceFromIterable(source)
