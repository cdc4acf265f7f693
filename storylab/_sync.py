"""``run_sync``: run a coroutine to completion from synchronous code.

Scripts and the CLI have no event loop, so ``asyncio.run`` does. A Jupyter
kernel already runs a loop on the main thread, where ``asyncio.run`` refuses
to start; there we run the coroutine on a fresh loop in a worker thread and
wait for it. This keeps asyncio unpatched (no nest-asyncio in the kernel),
which is the safer choice next to ipywidgets and httpx. In a notebook, plain
top-level ``await`` is still the better way: it keeps the kernel responsive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_sync"]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_a_loop = False
    else:
        in_a_loop = True
    if not in_a_loop:
        # Outside the ``except`` block: an error of the run must not carry
        # "no running event loop" as its context.
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="storylab-run") as pool:
        return pool.submit(asyncio.run, coro).result()
