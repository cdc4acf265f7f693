"""A misbehaving images server on 127.0.0.1, for the HTTP backend's defences.

Real sockets and a thread per connection, so it serves an in-process async
test and a ``storylab run`` subprocess alike. Images named in ``bad`` (all
of them when ``bad`` is None) get the chosen misbehaviour; the others get a
real PNG, the way the well-behaved server would answer:

* ``trickle``: a 200 head announcing a large body, then one byte every
  ``interval`` seconds, for ever (until the client hangs up);
* ``huge``: a 200 answer streamed without a length, ``total`` bytes of a
  never-ending JSON string (the same chunk sent again and again, so nothing
  large is allocated here);
* ``huge-length``: a 200 head with ``Content-Length: total``, a little of the
  body, then silence;
* ``half-png``: a well-formed answer whose picture is the first half of a PNG;
* ``echo``: an error answer (``status``) whose message repeats the request's
  ``Authorization`` header and the credentials decoded from it, as careless
  services do.

``bytes_sent`` counts body bytes per image; ``hung_up`` lists images whose
client closed the connection while the server was still sending.
"""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading
import time
from collections import Counter
from typing import Any

from storylab.story.backends.images import draw_illustration

_CHUNK = b"A" * 65536  # valid base64, so only the size can stop a reader


class HostileServer:
    def __init__(
        self,
        mode: str,
        *,
        bad: set[str] | None = None,
        interval: float = 0.05,
        total: int = 300 * 1024 * 1024,
        status: int = 401,
    ) -> None:
        self.mode, self.bad, self.interval, self.total, self.status = (
            mode,
            bad,
            interval,
            total,
            status,
        )
        self.bytes_sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.hung_up: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._hang_up = threading.Condition(self._lock)
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    # -- one connection, one request -------------------------------------------------
    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        head, body = _read_request(sock)
        if head is None:
            return
        headers = head["headers"]
        placeholder = headers.get("x-storylab-placeholder", "")
        with self._lock:
            self.requests[placeholder] += 1
            self.headers_seen.append(headers)
        if self.bad is not None and placeholder not in self.bad:
            self._send_png(sock, json.loads(body or b"{}").get("prompt", ""))
            return
        try:
            getattr(self, "_" + self.mode.replace("-", "_"))(sock, placeholder, headers)
        except (BrokenPipeError, ConnectionResetError):
            self._note_hang_up(placeholder)

    def _note_hang_up(self, placeholder: str) -> None:
        with self._hang_up:
            self.hung_up.append(placeholder)
            self._hang_up.notify_all()

    def wait_hung_up(self, placeholder: str, times: int = 1, timeout: float = 30) -> None:
        """Block until the server has seen ``times`` hang-ups for ``placeholder``.

        The server notices a hang-up only on its next write or read, some time
        after the client closed; waiting for it here, rather than for a fixed
        time, gives the same verdict on a fast machine and a loaded one. Fails
        if it does not happen within ``timeout`` seconds.
        """
        with self._hang_up:
            seen = self._hang_up.wait_for(lambda: self.hung_up.count(placeholder) >= times, timeout)
        assert seen, f"the server saw {self.hung_up.count(placeholder)} of {times} hang-ups"

    def _count(self, placeholder: str, n: int) -> None:
        with self._lock:
            self.bytes_sent[placeholder] += n

    def _send_png(self, sock: socket.socket, prompt: str) -> None:
        png = draw_illustration(prompt or "a picture", "watercolor", 96, 64)
        payload = json.dumps({"data": [{"b64_json": base64.b64encode(png).decode()}]})
        sock.sendall(_head(200, len(payload)) + payload.encode())

    def _trickle(self, sock: socket.socket, placeholder: str, headers: dict[str, str]) -> None:
        sock.sendall(_head(200, 10_000_000))
        while not self._stop.wait(self.interval):
            sock.sendall(b" ")  # JSON allows leading spaces: every byte is "progress"
            self._count(placeholder, 1)
        # Ended by the server's shutdown, not by the client: the client never gave up.

    def _huge(self, sock: socket.socket, placeholder: str, headers: dict[str, str]) -> None:
        sock.sendall(_head(200, None) + b'{"data": [{"b64_json": "')
        sent = 0
        while sent < self.total and not self._stop.is_set():
            sock.sendall(_CHUNK)
            sent += len(_CHUNK)
            self._count(placeholder, len(_CHUNK))
        sock.sendall(b'"}]}')

    def _huge_length(self, sock: socket.socket, placeholder: str, headers: dict[str, str]) -> None:
        sock.sendall(_head(200, self.total) + b'{"data": [{"b64_json": "' + _CHUNK[:1024])
        self._count(placeholder, 1024)
        # Wait for the client to hang up (recv returns b"") or for the shutdown.
        sock.settimeout(self.interval)
        while not self._stop.is_set():
            try:
                if sock.recv(1) == b"":
                    self._note_hang_up(placeholder)
                    return
            except TimeoutError:
                continue

    def _half_png(self, sock: socket.socket, placeholder: str, headers: dict[str, str]) -> None:
        png = draw_illustration("half a picture", "watercolor", 320, 213)
        half = png[: len(png) // 2]
        payload = json.dumps({"data": [{"b64_json": base64.b64encode(half).decode()}]})
        sock.sendall(_head(200, len(payload)) + payload.encode())

    def _echo(self, sock: socket.socket, placeholder: str, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        decoded = ""
        if auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth.split(None, 1)[1]).decode(errors="replace")
        message = f"credentials refused: {auth!r} ({decoded}) for key {auth.split()[-1:]}"
        payload = json.dumps({"error": {"message": message, "type": "authentication_error"}})
        sock.sendall(_head(self.status, len(payload)) + payload.encode())


def _head(status: int, length: int | None) -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 500: "Internal Server Error"}.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", "connection: close"]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_request(sock: socket.socket) -> tuple[dict[str, Any] | None, bytes]:
    data = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or time.monotonic() > deadline:
            return None, b""
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return {"request_line": lines[0], "headers": headers}, body
