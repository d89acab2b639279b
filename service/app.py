"""The FastAPI application: routers per resource, auth, error mapping, jobs, browse page.

Routes hold no curation logic: they validate, call ``pipelines``, and map ``MidmixError`` to
4xx JSON ``{"detail": "..."}`` so every client error says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from midmix import __version__
from midmix.errors import MidmixError, validation_problems
from midmix.service.jobs.runner import JobRunner
from midmix.service.jobs.store import JobStore
from midmix.service.routes import datasets, jobs, meta, mixtures, shards
from midmix.service.settings import ServiceSettings, load_settings
from midmix.service.versions import VersionStore

STATIC_DIR = Path(__file__).parent / "static"
SETTINGS_ENV = "MIDMIX_SERVICE_SETTINGS_JSON"


def create_app(settings: ServiceSettings) -> FastAPI:
    """An app serving ``settings.data_dir``; its job dispatcher runs while the app is up."""
    data_dir = settings.data_dir.resolve()
    settings = settings.model_copy(update={"data_dir": data_dir})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = JobRunner(app.state.jobs, data_dir, settings.job_workers)
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
    # Shards first: FastAPI matches routes in order and shard downloads are the hot path.
    for module in (shards, mixtures, datasets, jobs, meta):
        app.include_router(module.router)
    app.add_exception_handler(MidmixError, _midmix_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", _browse_page, include_in_schema=False)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one per worker process): settings from the environment."""
    serialized = os.environ.get(SETTINGS_ENV)
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
    return JSONResponse({"detail": "invalid request: " + validation_problems(error.errors(), "request")}, status_code=422)
