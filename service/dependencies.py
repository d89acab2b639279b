"""FastAPI dependencies giving routes the service's shared objects."""

from __future__ import annotations

from fastapi import Request

from service.jobs.store import JobStore
from service.settings import ServiceSettings
from service.versions import VersionStore


def settings(request: Request) -> ServiceSettings:
    """The service settings."""
    return request.app.state.settings


def versions(request: Request) -> VersionStore:
    """Published datasets and mixtures."""
    return request.app.state.versions


def jobs(request: Request) -> JobStore:
    """Job records."""
    return request.app.state.jobs
