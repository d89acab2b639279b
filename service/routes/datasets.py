"""Curated datasets: start a curation job, list versions, read a manifest."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from midmix.pipelines.curation.config import CurationConfig
from midmix.service import dependencies
from midmix.service.auth import require_read, require_write
from midmix.service.files import json_bytes_response
from midmix.service.jobs.store import JobStore
from midmix.service.routes.submit import submit
from midmix.service.schemas import DatasetSummary, JobView
from midmix.service.versions import VersionStore

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post("", status_code=202, dependencies=[Depends(require_write)])
def curate(config: CurationConfig, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """Start curating a corpus; returns the job (identical running requests share one)."""
    return submit(store, "curate", config)


@router.get("", dependencies=[Depends(require_read)])
def list_datasets(versions: VersionStore = Depends(dependencies.versions)) -> list[DatasetSummary]:
    """Curated dataset versions, newest first, with document and token counts."""
    return [_summary(versions, version) for version in versions.versions("datasets")]


@router.get(
    "/{version}",
    dependencies=[Depends(require_read)],
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the dataset manifest"}},
)
async def dataset(version: str, request: Request, versions: VersionStore = Depends(dependencies.versions)) -> Response:
    """One dataset's manifest: steps, counts, tokens by domain/lang/source, quality histograms."""
    cached = versions.manifest("datasets", version)
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
