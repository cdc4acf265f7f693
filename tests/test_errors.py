"""One error root: every error class storylab defines derives from StorylabError,
the map in ``storylab.errors`` names them, and argument checks live in one place."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import storylab
from storylab import _checks, errors
from storylab.errors import ArgumentError, StorylabError

# Modules that need an optional extra (Dask) to be imported at all.
OPTIONAL = ("storylab.story.cluster", "storylab.scheduling.distributed")


def _modules():
    for info in pkgutil.walk_packages(storylab.__path__, "storylab."):
        if info.name.endswith(".__main__"):  # runs the command line when imported
            continue
        try:
            yield importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if info.name in OPTIONAL:
                continue
            raise AssertionError(f"{info.name}: {exc}") from exc


def _error_classes() -> dict[str, type]:
    found = {}
    for module in _modules():
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_storylab_error_derives_from_the_root():
    classes = _error_classes()
    assert len(classes) >= 30  # the walk found the layers' errors
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, StorylabError))
    assert strays == []


def test_the_bases_keep_their_names_and_builtin_parents():
    from storylab.entities.errors import EntityGraphError, UnknownEntityError
    from storylab.story.backends import BackendError
    from storylab.story.entities import PageNotStoredError, StoryImagesFailedError
    from storylab.story.models import StoryValidationError

    for cls in (EntityGraphError, BackendError, StoryValidationError, PageNotStoredError):
        assert issubclass(cls, StorylabError)
    assert issubclass(UnknownEntityError, LookupError)
    assert issubclass(StoryValidationError, ValueError)
    assert issubclass(StoryImagesFailedError, RuntimeError)
    assert issubclass(ArgumentError, ValueError)


def test_the_map_names_every_public_error_family():
    doc = errors.__doc__
    for name in ("ArgumentError", "EntityGraphError", "StoryValidationError",
                 "StoryImagesFailedError", "PageNotStoredError", "BackendError",
                 "ImageBackendError", "TextBackendError", "ModerationBackendError",
                 "GraphAccessError", "NotAStorylabGraphError", "UnknownEntityError",
                 "AmbiguousEntityError"):  # fmt: skip
        assert f"``{name}``" in doc, name
    for command in ("storylab run", "storylab eg", "storylab stories", "storylab serve-images"):
        assert command in doc


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (_checks.check_positive_int, 0, "x must be an integer >= 1, got 0"),
        (_checks.check_positive_int, True, "x must be an integer >= 1, got True"),
        (_checks.check_positive_number, float("inf"), "x must be a number > 0, got inf"),
        (_checks.check_seconds, -1, "x must be a number of seconds > 0, got -1"),
        (_checks.check_seconds, "3", "x must be a number of seconds > 0, got '3'"),
    ],
)
def test_argument_checks_name_the_argument(check, value, message):
    with pytest.raises(ArgumentError) as caught:
        check("x", value)
    assert str(caught.value) == message


def test_the_checks_are_one_function_wherever_they_are_imported_from():
    from storylab.scheduling import capacity
    from storylab.story.backends import http

    assert capacity.check_positive_int is _checks.check_positive_int
    assert http.check_seconds is _checks.check_seconds
    assert _checks.check_positive_int("n", 3) == 3 and _checks.check_seconds("t", 2) == 2.0
