"""Mixtures: plan (dry run), start a build, list versions, read a manifest, diff two versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from midmix.errors import MidmixError
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.diff import diff_mixtures
from midmix.pipelines.mixtures.plan import plan_mixture
from midmix.pipelines.mixtures.spec import MixtureSpec
from midmix.service import dependencies
from midmix.service.auth import require_read, require_write
from midmix.service.files import json_bytes_response
from midmix.service.jobs.store import JobStore
from midmix.service.routes.submit import submit
from midmix.service.schemas import JobView, MixtureSummary, PhaseSummary
from midmix.service.settings import ServiceSettings
from midmix.service.versions import VersionStore

router = APIRouter(prefix="/mixtures", tags=["mixtures"])


@router.post("/plan", dependencies=[Depends(require_write)])
def plan(spec: MixtureSpec, settings: ServiceSettings = Depends(dependencies.settings)) -> dict[str, Any]:
    """Dry run: the budgets, epochs and thresholds a build of this spec would use; nothing is written."""
    # Read-only: the catalog resyncs itself when published versions changed.
    with Catalog(settings.data_dir) as catalog:
        return plan_mixture(spec, catalog).model_dump(mode="json")


@router.post("", status_code=202, dependencies=[Depends(require_write)])
def build(spec: MixtureSpec, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """Start building a mixture version; an identical queued or running build returns the same job."""
    return submit(store, "build", spec)


@router.get("", dependencies=[Depends(require_read)])
def list_mixtures(versions: VersionStore = Depends(dependencies.versions)) -> list[MixtureSummary]:
    """Mixture versions, newest first, with their phases' budgets and realised tokens."""
    return [_summary(versions, version) for version in versions.versions("mixtures")]


@router.get(
    "/{version}",
    dependencies=[Depends(require_read)],
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the mixture manifest"}},
)
async def manifest(version: str, request: Request, versions: VersionStore = Depends(dependencies.versions)) -> Response:
    """One mixture version's manifest, as the trainer reads it."""
    cached = versions.manifest("mixtures", version)
    return json_bytes_response(request, cached.body, cached.etag)


@router.get("/{a}/diff/{b}", dependencies=[Depends(require_read)])
def diff(a: str, b: str, versions: VersionStore = Depends(dependencies.versions)) -> dict[str, Any]:
    """Per phase and component token changes, docs added and removed, from version a to b."""
    # From the cached manifests, so a diff never waits on the DuckDB catalog.
    manifest_a, manifest_b = versions.manifest("mixtures", a).data, versions.manifest("mixtures", b).data
    mirrored = [version for version in (a, b) if versions.is_mirrored("mixtures", version)]
    if mirrored:
        raise MidmixError(f"mixture {mirrored[0]} is only in the shard store; a diff reads doc ids from local shards")
    return diff_mixtures(manifest_a, manifest_b, versions.data_dir)


@router.get("/{version}/composition", dependencies=[Depends(require_read)])
def composition(
    version: str, versions: VersionStore = Depends(dependencies.versions)
) -> dict[str, dict[str, dict[str, int]]]:
    """Tokens of each phase by domain and by source, summed over its shards (for the browse page)."""
    return versions.composition(version)


def _summary(versions: VersionStore, version: str) -> MixtureSummary:
    manifest = versions.manifest("mixtures", version).data
    return MixtureSummary(
        version=version,
        name=manifest.get("name"),
        created_at=versions.created_at("mixtures", version),
        tokenizer=(manifest.get("tokenizer") or {}).get("kind"),
        phases=[
            PhaseSummary(
                name=phase["name"],
                token_budget=phase.get("token_budget"),
                tokens=phase.get("tokens"),
                docs=phase.get("docs"),
            )
            for phase in manifest.get("phases") or []
        ],
    )
