"""An httpx transport that asks :func:`~storylab.scheduling.distributed.may_send`
right before every write to the network, with no ``await`` in between.

Why: a unit of a shared limit is only safe to use while its process's share
is (see :mod:`storylab.scheduling.distributed`). A task that already holds
its unit may be frozen (SIGSTOP, a stalled machine) just before it sends its
request; on waking, its next step can run before the timers that would
cancel it, after the scheduler has handed the share on. The only moment at
which a check is sure to come in time is the write itself, so the check is
made there: the bytes go to the socket in the same step as the check, or
not at all (the task is cancelled instead, as a deadline would, and gives
its unit back).

httpx's default transport writes through anyio, which lets the event loop
run once between being asked to write and writing; this one writes with
asyncio streams, whose ``write`` hands the bytes to the socket at once.

What no check in the process can close: a process frozen (or left without
a core) between the check and the write system call (a few bytecodes)
writes on waking, whatever the clock says then. Only the service can refuse
such a late request.

httpx and httpcore are imported with this module (not with
``storylab.scheduling``).
"""

from __future__ import annotations

import asyncio
import select
import ssl
import typing
from collections.abc import Callable, Iterable

import httpcore
import httpx

from storylab.scheduling.distributed import may_send

__all__ = ["FencedTransport"]

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


def _readable(sock: typing.Any) -> bool:
    """Whether a socket has something to read (or is closed): a connection
    kept alive that the server closed meanwhile."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    __slots__ = ("_reader", "_writer", "_fence")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fence: Callable[[], bool],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._fence = fence

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("no data within the read timeout") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if not self._fence():
            # The fence cancelled this task: the cancellation lands here,
            # as a deadline's would. Nothing was written.
            await asyncio.sleep(0)
            raise asyncio.CancelledError("not sent: the share may be gone")
        try:
            self._writer.write(buffer)  # to the socket now: no await since the check
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("not written within the write timeout") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout("no TLS handshake within the connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        writer = self._writer
        if info == "ssl_object":
            return writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return writer.get_extra_info("sockname")
        if info == "server_addr":
            return writer.get_extra_info("peername")
        if info == "socket":
            return writer.get_extra_info("socket")
        if info == "is_readable":
            return self._reader.at_eof() or _readable(writer.get_extra_info("socket"))
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, fence: Callable[[], bool]) -> None:
        self._fence = fence

    async def _open(self, opening: typing.Awaitable, socket_options: Iterable | None) -> _Stream:
        try:
            reader, writer = await opening
        except TimeoutError:
            raise httpcore.ConnectTimeout("no connection within the connect timeout") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(reader, writer, self._fence)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None

        async def opening() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(host, port, local_addr=local)

        return await self._open(opening(), socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async def opening() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with asyncio.timeout(timeout):
                return await asyncio.open_unix_connection(path)

        return await self._open(opening(), socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FencedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` (HTTP/1.1, no proxy) whose every write is
    preceded by ``fence()`` in the same step (by default :func:`may_send`,
    which is always True outside ``root.guard()``). ``verify``, ``limits``,
    ``trust_env``, ``retries``, ``local_address`` and ``socket_options`` as
    for httpx's transport."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits | None = None,
        trust_env: bool = True,
        retries: int = 0,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
        fence: Callable[[], bool] = may_send,
    ) -> None:
        limits = limits if limits is not None else httpx.Limits()
        # One SSL context (loading the certificate store blocks), for both.
        context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        )
        super().__init__(verify=context, limits=limits, trust_env=trust_env, retries=retries)
        # The pool httpx would make, on a network backend of our own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            retries=retries,
            local_address=local_address,
            socket_options=socket_options,
            network_backend=_Backend(fence),
        )
