"""Notebook 6's image server is closed when a cell fails or its cell runs twice.

A real IPython shell runs the cells and a real ImageServer listens on
127.0.0.1; the checks connect to its port.
"""

from __future__ import annotations

import asyncio

import pytest

from storylab.tutorial import ImageServer, SimulatedImageBackend, stop_server_on_error

IPython = pytest.importorskip("IPython")


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    yield sh
    InteractiveShell.clear_instance()


async def _accepts(server: ImageServer) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    except OSError:
        return False
    writer.close()
    return True


async def _started() -> ImageServer:
    server = ImageServer(SimulatedImageBackend(time_scale=0.001), host="127.0.0.1", port=0)
    await server.start()
    return server


async def test_a_failing_cell_stops_the_server_and_says_so(shell, capsys):
    server = await _started()
    try:
        assert stop_server_on_error(server) is True
        shell.run_cell("x = 1 + 1")  # a cell that works leaves it serving
        assert await _accepts(server)
        shell.run_cell("raise RuntimeError('a cell of the lesson failed')")
        assert not await _accepts(server)
        assert "image server" in capsys.readouterr().out
        # The watcher removed itself: later cells do not touch the server again.
        assert not [cb for cb in shell.events.callbacks["post_run_cell"]
                    if getattr(cb, "__name__", "") == "after_cell"]
    finally:
        await server.close()


async def test_running_the_start_cell_again_closes_the_first_server(shell):
    first, second = await _started(), await _started()
    try:
        stop_server_on_error(first)
        stop_server_on_error(second)
        assert not await _accepts(first)
        assert await _accepts(second)
        watchers = [cb for cb in shell.events.callbacks["post_run_cell"]
                    if getattr(cb, "__name__", "") == "after_cell"]
        assert len(watchers) == 1
    finally:
        await first.close()
        await second.close()


async def test_a_server_closed_by_the_lesson_is_no_longer_watched(shell):
    server = await _started()
    stop_server_on_error(server)
    await server.close()
    shell.run_cell("raise ValueError('later, unrelated')")
    assert not [cb for cb in shell.events.callbacks["post_run_cell"]
                if getattr(cb, "__name__", "") == "after_cell"]


def test_anything_but_a_server_is_refused_by_name():
    class NotAServer:
        pass

    with pytest.raises(TypeError, match="server must be a started ImageServer"):
        stop_server_on_error(NotAServer())


async def test_ensure_serving_brings_a_closed_server_back_on_its_port():
    from storylab.tutorial import ensure_serving

    server = await _started()
    try:
        assert await ensure_serving(server) is False  # already listening: left alone
        port = server.port
        await server.close()
        assert not await _accepts(server)
        assert await ensure_serving(server) is True
        assert server.port == port and await _accepts(server)
    finally:
        await server.close()


def test_relabel_legend_renames_an_entry_and_refuses_one_the_figure_lacks():
    import matplotlib.pyplot as plt

    from storylab.tutorial import relabel_legend

    fig, ax = plt.subplots()
    ax.plot([0, 1], label="ran, failed")
    ax.legend()
    assert relabel_legend(fig, {"ran, failed": "refused on every attempt"}) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["refused on every attempt"]
    with pytest.raises(ValueError, match="no legend entry 'ran, failed'"):
        relabel_legend(fig, {"ran, failed": "x"})
    plt.close(fig)
