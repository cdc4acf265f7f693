"""The root of every storylab error, and a map of who raises what.

Catch :class:`StorylabError` for "storylab refused or could not do it"; every
error class storylab defines derives from it, and most also from the builtin
a caller reaches for first (a bad argument is a ``ValueError``, an unknown id
a ``LookupError``). Errors of Python itself (a ``TypeError`` for a call with
the wrong arguments, ``OSError`` from the disk, ``asyncio.CancelledError``)
are not wrapped. This module imports nothing, so any layer may use it.

The families, their bases and where they come from:

=================================  ===========================================
class (module)                     raised by
=================================  ===========================================
``ArgumentError``                  every argument check (:mod:`storylab._checks`):
(``storylab.errors``, also a       ``CapacitySource``, ``HierarchicalTaskPoolRunner``,
``ValueError``)                    ``StorySettings``, the HTTP backends and the image
                                   server's options, ``sweep``; the command line
                                   turns them into "argument --flag: ..." lines
``EntityGraphError``               ``EntityGraph.open`` and every graph and entity
(``storylab.entities.errors``)     operation: ``GraphNotFoundError``,
                                   ``GraphAccessError`` (read-only file, folder or
                                   disk), ``NotAStorylabGraphError`` (not a graph,
                                   or damaged: a page, a status, stored JSON),
                                   ``SchemaVersionError``, ``GraphFileGoneError``,
                                   ``UnknownEntityError`` (``eg``'s
                                   ``AmbiguousEntityError`` is one),
                                   ``DuplicateNameError``, ``LeaseLostError``, ...
``StoryValidationError``           ``create_story``, ``validate_story_request``,
(``storylab.story.models``, also   ``storylab run`` before anything runs: the field
a ``ValueError``)                  at fault (topic, customization) and what it allows
``StoryImagesFailedError``,        a story pipeline's run: every picture failed, or
``PageNotStoredError``             its page could not be stored (the story is kept
(``storylab.story.entities``)      and the next run finishes it)
``BackendError``                   the text, image and moderation backends:
(``storylab.story.backends``)      ``ImageBackendError`` (``SimulatedImageFailure``,
                                   ``ImageServiceUnavailable``,
                                   ``ImageDeadlineExceeded``,
                                   ``ImageRequestRejected``, ``ImageResponseInvalid``),
                                   ``TextBackendError`` (``StoryOutputInvalid``, the
                                   ``Text...`` HTTP errors), ``ModerationBackendError``
=================================  ===========================================

What each command does with them (exit codes in ``storylab --help``):

- ``storylab run``: an ``ArgumentError`` or ``StoryValidationError`` before
  anything is stored is exit 2 with one line; an ``EntityGraphError`` opening
  the graph is exit 1 with one line; a picture's ``BackendError`` fails that
  picture only (the run goes on, exit 1 at the end);
  ``StoryImagesFailedError`` and ``PageNotStoredError`` end that story (exit 1,
  one line each, the rest kept for the next run).
- ``storylab eg`` and ``storylab stories``: ``EntityGraphError`` (no graph,
  damaged, unknown or ambiguous name) is exit 1 with one line; nothing is
  written by ``eg``.
- ``storylab serve-images``: ``ArgumentError`` for its options, exit 2.
- ``storylab notebooks``: ``TutorialFilesError`` (the notebooks cannot be
  copied), exit 1. ``--cluster``: ``SharedLimitLost``
  (``storylab.scheduling.distributed``) when a worker lost its share of the
  global limit; the story is run again.
- Any other ``StorylabError`` that reaches the command line is one line and
  exit 1; anything else is a bug, and shows its traceback.
"""

from __future__ import annotations

__all__ = ["ArgumentError", "StorylabError"]


class StorylabError(Exception):
    """Base class of every error storylab raises on purpose."""


class ArgumentError(StorylabError, ValueError):
    """An argument outside what is allowed; the message names it and the allowed values."""
