"""The FastAPI application: routers per resource, auth, error mapping, jobs, browse page.

Deny by default: every router in ``PROTECTED_ROUTERS`` is mounted behind ``require_read``, and
routes that change state add ``require_write``; only ``PUBLIC_PATHS`` (liveness, version, the
API description and the static browse page, which fetches data with the user's token) answer
without a token. ``tests/test_service_auth.py`` walks ``app.routes`` and fails on any other route
without an auth dependency, so a new router cannot be exposed by accident.

Routes hold no curation logic: they validate, call ``pipelines``, and map ``MidmixError`` to
4xx JSON ``{"detail": "..."}`` so every client error says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from midmix import __version__
from midmix.errors import MidmixError, validation_problems
from midmix.service.auth import require_read
from midmix.service.jobs.processes import SETTINGS_ENV
from midmix.service.jobs.runner import JobRunner
from midmix.service.jobs.store import JobStore
from midmix.service.routes import datasets, jobs, meta, mixtures, runs, shards
from midmix.service.settings import ServiceSettings, load_settings
from midmix.service.versions import VersionStore

STATIC_DIR = Path(__file__).parent / "static"
# Shards first: FastAPI matches routes in order and shard downloads are the hot path.
PROTECTED_ROUTERS = (shards.router, mixtures.router, datasets.router, jobs.router, runs.router, meta.router)
PUBLIC_PATHS = frozenset(
    {"/health", "/version", "/", "/static", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


def create_app(settings: ServiceSettings) -> FastAPI:
    """An app serving ``settings.data_dir``; its job dispatcher runs while the app is up."""
    data_dir = settings.data_dir.resolve()
    settings = settings.model_copy(update={"data_dir": data_dir})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = JobRunner(app.state.jobs, settings)
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(
        title="midmix",
        version=__version__,
        lifespan=lifespan,
        description="Curate corpora, build versioned mid-training mixtures and serve their shards.",
    )
    app.state.settings = settings
    app.state.versions = VersionStore(data_dir, settings.shard_store)
    app.state.jobs = JobStore(data_dir / "jobs")
    for router in PROTECTED_ROUTERS:
        app.include_router(router, dependencies=[Depends(require_read)])
    app.include_router(meta.public_router)
    app.add_exception_handler(MidmixError, _midmix_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", _browse_page, include_in_schema=False)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one per worker process): settings from the environment.

    The serialized settings hold the tokens, so they leave this process's environment here: the
    job workers it starts inherit nothing of them.
    """
    serialized = os.environ.pop(SETTINGS_ENV, None)
    if serialized:
        return create_app(ServiceSettings.model_validate_json(serialized))
    return create_app(load_settings())


async def _browse_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def _midmix_error(request: Request, error: Exception) -> JSONResponse:
    status = getattr(error, "http_status", 400)
    return JSONResponse({"detail": str(error)}, status_code=status)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse(
        {"detail": "invalid request: " + validation_problems(error.errors(), "request")}, status_code=422
    )
