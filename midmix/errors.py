"""User-facing errors: the CLI prints them without a traceback, the service maps them to 4xx."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class MidmixError(Exception):
    """An error the user can fix; the message says what to change."""

    http_status = 400


class NotFoundError(MidmixError):
    """A named dataset, mixture, phase, shard, job or model does not exist."""

    http_status = 404


class ForbiddenError(MidmixError):
    """The request names something the operator has not allowed; the message names the setting to change."""

    http_status = 403


class ConflictError(MidmixError):
    """The request clashes with existing state (for example a job that cannot be cancelled)."""

    http_status = 409


def validation_problems(errors: Iterable[Mapping[str, Any]], top_level: str = "(top level)") -> str:
    """One ``field.path: message`` per pydantic error, joined by ``; ``, so the user knows what to edit.

    Takes ``ValidationError.errors()`` (config files, request bodies) or FastAPI's
    ``RequestValidationError.errors()``; ``top_level`` names an error that has no field path.
    """
    problems = []
    for item in errors:
        where = ".".join(str(part) for part in item.get("loc", ())) or top_level
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems)
