"""A lesson's local HTTP server never outlives the lesson.

Notebook 6 starts a real :class:`~storylab.story.backends.ImageServer` on
127.0.0.1 in the kernel and closes it in its last code cell. Two ways it could
be left listening: a cell in between fails (Run All stops there, the closing
cell never runs), or the learner runs the starting cell again (a second
server, the first one forgotten). :func:`stop_server_on_error` covers both.
IPython is imported only when it is called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ensure_serving", "stop_server_on_error"]

# Servers registered by this kernel, with the callback that watches for errors.
_WATCHED: list[tuple[Any, Any]] = []


def _listening(server: Any) -> bool:
    """Whether the server still accepts connections (closed and killed servers do not)."""
    sockets = getattr(server, "_server", None)
    return sockets is not None and sockets.is_serving()


def _forget(shell: Any, entry: tuple[Any, Any]) -> None:
    if entry in _WATCHED:
        _WATCHED.remove(entry)
    if shell is not None:
        try:
            shell.events.unregister("post_run_cell", entry[1])
        except ValueError:  # already unregistered
            pass


def stop_server_on_error(server: Any) -> bool:
    """Close ``server`` as soon as a notebook cell fails; close any server watched before.

    ``server`` is a started :class:`~storylab.story.backends.ImageServer` (or
    anything with ``kill()``). Servers an earlier run of the same cell
    started are closed first, so re-running it leaves one server, not two.
    After every cell IPython runs, the watcher checks: if the cell raised,
    the server stops listening at once (its port is freed) and a line says
    which cell to run again; once the server has been closed normally, the
    watcher removes itself. Returns ``False`` (and does nothing more) outside
    IPython, where the caller's own ``try``/``finally`` or ``async with``
    is the way to close it.
    """
    if not callable(getattr(server, "kill", None)):
        raise TypeError(f"server must be a started ImageServer, got {type(server).__name__}")
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        return False
    shell = get_ipython()
    for old, callback in list(_WATCHED):
        if old is not server and _listening(old):
            old.kill()
            print(f"closed the image server started earlier ({old.url})")
        _forget(shell, (old, callback))
    if shell is None:
        return False

    def after_cell(result: Any) -> None:
        if not _listening(server):  # closed by the lesson: nothing left to watch
            _forget(shell, entry)
            return
        if getattr(result, "error_in_exec", None) is not None or getattr(
                result, "error_before_exec", None) is not None:
            server.kill()
            _forget(shell, entry)
            print(f"A cell failed, so the image server at {server.url} was stopped. "
                  "Run the cell that starts it again before the cells that use it.")

    entry = (server, after_cell)
    _WATCHED.append(entry)
    shell.events.register("post_run_cell", after_cell)
    return True


async def ensure_serving(server: Any) -> bool:
    """Start ``server`` again if it was closed; True if it had to be restarted.

    A lesson closes its server in its last cell, and an exercise run after that
    (Run All, then the exercise) would meet a refused connection. The server
    comes back on the port it had, so ``server.url`` stays valid; its
    statistics keep counting from where they were.
    """
    if _listening(server):
        return False
    await server.start()
    stop_server_on_error(server)
    return True
