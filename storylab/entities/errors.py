"""Errors of the entity layer, in one small hierarchy.

Catch :class:`EntityGraphError` for "something about the store or an entity
is wrong"; the subclasses also derive from the builtin a caller would reach
for first (an unknown id is a ``LookupError``, a taken name a ``ValueError``).
Every one of them is raised *before* anything is written, so catching it
leaves the store exactly as it was (a :class:`GraphFileGoneError` means there
is no store left to change).
"""

from __future__ import annotations

from storylab.errors import StorylabError

__all__ = [
    "DuplicateNameError",
    "EntityGraphError",
    "EntityRunInterrupted",
    "EntityTypeMismatchError",
    "GraphAccessError",
    "GraphFileGoneError",
    "GraphNotFoundError",
    "GraphUnreachableError",
    "LeaseLostError",
    "NotAStorylabGraphError",
    "SchemaVersionError",
    "UnknownBlobError",
    "UnknownBranchError",
    "UnknownEntityError",
    "UnregisteredTypeError",
]


class EntityGraphError(StorylabError):
    """Base class of every error raised by ``storylab.entities``."""


class UnknownEntityError(EntityGraphError, LookupError):
    """No node with this id in the graph."""


class UnknownBlobError(EntityGraphError, LookupError):
    """No blob with this key in the blob folder (or the key is malformed)."""


class UnknownBranchError(EntityGraphError, LookupError):
    """``condition(label, key, branches)`` got a key that names no branch."""


class UnregisteredTypeError(EntityGraphError, LookupError):
    """A stored node names an entity type no imported class registered."""


class DuplicateNameError(EntityGraphError, ValueError):
    """The name is already taken under this parent (or among root entities)."""


class EntityTypeMismatchError(EntityGraphError, TypeError):
    """An existing child was retrieved by name but has another type."""


class GraphNotFoundError(EntityGraphError, FileNotFoundError):
    """Asked to open an existing graph, and there is no file at that path."""


class GraphAccessError(EntityGraphError, PermissionError):
    """The graph cannot be opened, or cannot be written although writing was asked for
    (a read-only file, folder or mount). Nothing was changed."""


class GraphUnreachableError(EntityGraphError, ConnectionError):
    """The server holding the graph cannot be reached (down, or nothing
    listens at that address). Nothing was changed."""


class NotAStorylabGraphError(EntityGraphError):
    """The file exists but is not a storylab entity graph."""


class SchemaVersionError(EntityGraphError):
    """The graph was written by a newer storylab with a schema this one cannot read."""


class EntityRunInterrupted(EntityGraphError, RuntimeError):
    """A run that another caller attached to was abandoned before it finished."""


class GraphFileGoneError(EntityGraphError):
    """The graph's file was deleted or replaced while this process had it open."""


class LeaseLostError(EntityGraphError, RuntimeError):
    """A run lost the lease on its node (another process took the node over
    after the lease expired, or this process could not renew it in time):
    the run stopped, and nothing more of it was stored. ``node_id`` names
    the node."""

    def __init__(self, message: str, *, node_id: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id


def taken_over(
    node_id: str, what: str, owner: str | None, status: str | None, age: float, ttl: float
) -> LeaseLostError:
    """The one line for a lease found taken, shared by both stores: ``what``
    names the node, ``owner`` the new holder if known (else the node's
    ``status`` says whether it has finished since), ``age`` the seconds since
    our last renewal and ``ttl`` the lease's length."""
    if owner is not None:
        who = f"another process, {owner},"
    elif status in ("Completed", "Failed"):
        who = f"another process (which has finished it since: it is {status})"
    else:
        who = "another process (which has let it go since)"
    if age >= ttl:
        when = (
            f"after this process's lease on it expired (renewed last {age:.1f} s before; "
            f"a lease lasts {ttl:g} s)"
        )
    else:
        when = (
            f"while this process's lease on it was still live by this host's clock "
            f"(renewed {age:.1f} s before, lasting {ttl:g} s: are two hosts' clocks apart?)"
        )
    return LeaseLostError(
        f"{what} was taken over by {who} {when}; this run stopped and stored nothing "
        "more: the new owner's work stands",
        node_id=node_id,
    )
