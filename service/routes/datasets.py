"""Curated datasets: start a curation job, list versions, read a manifest."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from midmix.service import dependencies
from midmix.service.access import curation_config
from midmix.service.auth import require_write
from midmix.service.files import json_bytes_response
from midmix.service.ids import IdempotencyKey, Version
from midmix.service.jobs.store import JobStore
from midmix.service.requests import CurationRequest
from midmix.service.routes.submit import JOB_ANSWER, submit
from midmix.service.schemas import DatasetSummary, JobView
from midmix.service.settings import ServiceSettings
from midmix.service.versions import VersionStore

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=202,
    dependencies=[Depends(require_write)],
    responses=JOB_ANSWER | {403: {"description": "a location the settings do not allow"}},
)
def curate(
    request: CurationRequest,
    idempotency_key: IdempotencyKey = None,
    store: JobStore = Depends(dependencies.jobs),
    settings: ServiceSettings = Depends(dependencies.settings),
) -> JobView:
    """Start curating a corpus; returns the job (identical running requests share one).

    Inputs, eval files, models and tokenizer files must be under the service's input roots or URL
    prefixes (403 names the setting otherwise); the executor is the service's.
    """
    curation_config(request, settings)  # refuses before anything is queued
    return submit(store, "curate", request, idempotency_key)


@router.get("")
def list_datasets(versions: VersionStore = Depends(dependencies.versions)) -> list[DatasetSummary]:
    """Curated dataset versions, newest first, with document and token counts."""
    return [_summary(versions, version) for version in versions.versions("datasets")]


@router.get(
    "/{version}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the dataset manifest"}},
)
async def dataset(
    version: Version, request: Request, versions: VersionStore = Depends(dependencies.versions)
) -> Response:
    """One dataset's manifest: steps, counts, tokens by domain/lang/source, quality histograms."""
    cached = await versions.manifest_async("datasets", version)
    return json_bytes_response(request, cached.body, cached.etag)


def _summary(versions: VersionStore, version: str) -> DatasetSummary:
    manifest = versions.manifest("datasets", version).data
    counts = manifest.get("counts") or {}
    return DatasetSummary(
        version=version,
        created_at=versions.created_at("datasets", version),
        docs=counts.get("docs"),
        tokens=counts.get("tokens"),
        inputs=[str(entry.get("path")) for entry in manifest.get("inputs") or []],
    )
