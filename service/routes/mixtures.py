"""Mixtures: plan (dry run), start a build, list versions, read a manifest, diff two versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.plan import plan_mixture
from midmix.service import dependencies
from midmix.service.access import mixture_spec
from midmix.service.auth import require_write
from midmix.service.files import json_bytes_response
from midmix.service.ids import IdempotencyKey, Version
from midmix.service.jobs.store import JobStore
from midmix.service.requests import MixtureRequest
from midmix.service.routes.submit import JOB_ANSWER, submit
from midmix.service.schemas import JobView, MixtureSummary, PhaseSummary
from midmix.service.settings import ServiceSettings
from midmix.service.versions import VersionStore

router = APIRouter(prefix="/mixtures", tags=["mixtures"])


@router.post("/plan", dependencies=[Depends(require_write)])
def plan(request: MixtureRequest, settings: ServiceSettings = Depends(dependencies.settings)) -> dict[str, Any]:
    """Dry run: the budgets, epochs and thresholds a build of this spec would use; nothing is written."""
    spec = mixture_spec(request, settings)
    # Read-only: the catalog resyncs itself when published versions changed.
    with Catalog(settings.data_dir) as catalog:
        return plan_mixture(spec, catalog).model_dump(mode="json")


@router.post(
    "",
    status_code=202,
    dependencies=[Depends(require_write)],
    responses=JOB_ANSWER | {403: {"description": "a tokenizer file the settings do not allow"}},
)
def build(
    request: MixtureRequest,
    idempotency_key: IdempotencyKey = None,
    store: JobStore = Depends(dependencies.jobs),
    settings: ServiceSettings = Depends(dependencies.settings),
) -> JobView:
    """Start building a mixture version; an identical queued or running build returns the same job."""
    mixture_spec(request, settings)  # refuses bad weights or a tokenizer file outside the roots before queueing
    return submit(store, "build", request, idempotency_key)


@router.get(
    "",
    responses={
        200: {
            "description": "mixture versions",
            "links": {
                "Manifest": {"operationId": "mixture_manifest", "parameters": {"version": "$response.body#/0/version"}}
            },
        }
    },
)
def list_mixtures(versions: VersionStore = Depends(dependencies.versions)) -> list[MixtureSummary]:
    """Mixture versions, newest first, with their phases' budgets and realised tokens."""
    return [_summary(versions, version) for version in versions.versions("mixtures")]


@router.get(
    "/{version}",
    operation_id="mixture_manifest",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the mixture manifest"}},
)
async def manifest(
    version: Version, request: Request, versions: VersionStore = Depends(dependencies.versions)
) -> Response:
    """One mixture version's manifest, as the trainer reads it."""
    cached = await versions.manifest_async("mixtures", version)
    return json_bytes_response(request, cached.body, cached.etag)


@router.get("/{a}/diff/{b}")
def diff(
    a: Version,
    b: Version,
    offset: int = Query(0, ge=0, le=1 << 40, description="skip this many doc ids in every list"),
    limit: int = Query(1000, ge=1, le=10_000, description="doc ids per list in this page"),
    versions: VersionStore = Depends(dependencies.versions),
) -> dict[str, Any]:
    """Per phase and component token changes, docs added and removed, from version a to b.

    Doc id lists are paged: each component's ``docs_added``/``docs_removed`` hold ids
    ``offset .. offset+limit`` (with ``*_total`` counts); ``next_offset`` is null on the last page.
    """
    full = versions.diff(a, b)
    more = False
    phases = []
    for phase in full["phases"]:
        components = []
        for component in phase["components"]:
            page = dict(component)
            for field in ("docs_added", "docs_removed"):
                page[field] = component[field][offset : offset + limit]
                page[f"{field}_total"] = len(component[field])
                more |= len(component[field]) > offset + limit
            components.append(page)
        phases.append(phase | {"components": components})
    return full | {"phases": phases, "offset": offset, "limit": limit, "next_offset": offset + limit if more else None}


@router.get("/{version}/composition")
def composition(
    version: Version, versions: VersionStore = Depends(dependencies.versions)
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
