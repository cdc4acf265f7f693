"""Small helpers both stores' commit and lease code share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from storylab.entities.errors import LeaseLostError


def again(error: LeaseLostError) -> LeaseLostError:
    """A fresh copy of a lease-lost error, to raise once more."""
    return LeaseLostError(str(error), node_id=error.node_id)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop of this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def settle(waiters: list[asyncio.Future], error: Callable[[], BaseException] | None) -> None:
    """Resolve the futures of runs waiting for a commit, or if it failed give
    each its own exception made by ``error``, from whichever thread committed."""
    loop = waiters[0].get_loop()
    if loop is not running_loop():
        if not loop.is_closed():
            loop.call_soon_threadsafe(settle, waiters, error)
        return
    for waiter in waiters:
        if not waiter.done():  # a waiter cancelled meanwhile is left alone
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error())
