"""A content-addressed folder for binary outputs (images, HTML pages).

Entity outputs live in SQLite as JSON; megabytes of base64 do not belong
there. A blob is stored once under the SHA-256 of its bytes, so writing the
same image twice (a resumed run, two stories with the same picture) costs
nothing, and a key in an entity's output is enough to find it again. Keys
look like ``<64 hex digits>.<ext>``; the extension records the content type.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from storylab.entities.errors import UnknownBlobError

__all__ = [
    "BlobStore",
    "Blobs",
    "blob_content_type",
    "blob_key",
    "check_blob_key",
    "write_atomically",
]

_EXT_BY_TYPE = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
    "text/html": "html",
    "text/plain": "txt",
    "application/json": "json",
    "application/pdf": "pdf",
    "application/octet-stream": "bin",
}
_TYPE_BY_EXT = {ext: ctype for ctype, ext in _EXT_BY_TYPE.items()}
_KEY = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{1,8})$")


def _umask() -> int:
    """The process's umask, read without changing it where the system says it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def write_atomically(
    path: Path, data: bytes, before_rename: Callable[[], object] | None = None
) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder,
    flushed to disk before it is renamed into place: a reader (or a crash)
    sees the old file or the whole new one, never half of it. If
    ``before_rename`` (called once the bytes are on disk) raises, nothing is
    left at ``path`` or beside it, and the error goes on."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file readable by its owner only; a page or a
        # picture gets the permissions any new file gets (others may read it
        # under the usual umask 022).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def blob_key(data: bytes, content_type: str) -> tuple[bytes, str]:
    """``(the bytes, their key)``, the key ``<sha256 hex>.<ext>``; ``TypeError``
    or ``ValueError`` (naming the allowed types) for what cannot be a blob."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
    ext = _EXT_BY_TYPE.get(content_type)
    if ext is None:
        allowed = ", ".join(sorted(_EXT_BY_TYPE))
        raise ValueError(f"content_type must be one of {allowed}; got {content_type!r}")
    data = bytes(data)
    return data, f"{hashlib.sha256(data).hexdigest()}.{ext}"


def check_blob_key(key: object) -> str:
    """``key`` if it is a blob key, else ``UnknownBlobError``."""
    if not isinstance(key, str) or _KEY.match(key) is None:
        raise UnknownBlobError(f"not a blob key: {key!r} (expected '<sha256 hex>.<ext>')")
    return key


def blob_content_type(key: str) -> str:
    """The content type a key's extension records."""
    ext = key.rsplit(".", 1)[-1] if isinstance(key, str) else ""
    return _TYPE_BY_EXT.get(ext, "application/octet-stream")


@runtime_checkable
class Blobs(Protocol):
    """Where a graph keeps binary outputs, by content key: a folder beside a
    SQLite file (:class:`BlobStore`), a table on a database server. A key
    written through one handle is readable through any other of the graph,
    in any process that can open it."""

    root: object
    """Where the blobs are (shown in messages)."""

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` (durably, before returning) and return its key."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``UnknownBlobError`` if there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool:
        """Remove the bytes under ``key``; whether there were any. The caller
        makes sure no stored node names ``key`` any more (keys are shared by
        equal contents)."""
        ...

    @staticmethod
    def content_type(key: str) -> str: ...


class BlobStore:
    """``put(bytes, content_type) -> key``, ``get(key) -> bytes``, ``path_for(key)``.

    Files are written to a temporary name and renamed into place, so a crash
    never leaves a half-written blob under a valid key.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"<BlobStore {str(self.root)!r}>"

    def put(
        self,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        before_rename: Callable[[], object] | None = None,
    ) -> str:
        """Store ``data`` and return its key. A new file is written only if
        ``before_rename`` (given) does not raise once its bytes are on disk,
        just before it takes its name (see :func:`write_atomically`)."""
        data, key = blob_key(data, content_type)
        path = self.path_for(key)
        try:
            if path.stat().st_size == len(data):
                return key
        except FileNotFoundError:
            pass
        # Not there, or cut short (a crash of a storylab that wrote in place):
        # write it whole, under a temporary name, durable before the rename,
        # so a key always names complete bytes.
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data, before_rename)
        return key

    def path_for(self, key: str) -> Path:
        m = _KEY.match(key) if isinstance(key, str) else None
        if m is None:
            raise UnknownBlobError(f"not a blob key: {key!r} (expected '<sha256 hex>.<ext>')")
        return self.root / m.group(1)[:2] / key

    def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise UnknownBlobError(f"no blob {key!r} in {self.root}") from None

    def exists(self, key: str) -> bool:
        try:
            return self.path_for(key).exists()
        except UnknownBlobError:
            return False

    def delete(self, key: str) -> bool:
        """Remove the file under ``key``; whether there was one (``False`` for
        what is not a key)."""
        try:
            path = self.path_for(key)
        except UnknownBlobError:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    content_type = staticmethod(blob_content_type)
