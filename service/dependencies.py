"""FastAPI dependencies giving routes the service's shared objects.

Async because FastAPI runs sync dependencies in its thread pool: a thread hop per request.
"""

from __future__ import annotations

from fastapi import Request

from midmix.service.jobs.store import JobStore
from midmix.service.settings import ServiceSettings
from midmix.service.versions import VersionStore


async def settings(request: Request) -> ServiceSettings:
    """The service settings."""
    return request.app.state.settings


async def versions(request: Request) -> VersionStore:
    """Published datasets and mixtures."""
    return request.app.state.versions


async def jobs(request: Request) -> JobStore:
    """Job records."""
    return request.app.state.jobs
