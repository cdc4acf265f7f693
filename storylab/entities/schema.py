"""The SQLite schema, now :mod:`storylab.entities.sqlite.schema` (this name is kept)."""

from storylab.entities.sqlite.schema import *  # noqa: F403
from storylab.entities.sqlite.schema import __all__ as __all__
