"""Shard listing and byte serving (GET and HEAD, Range, ETag) for mixture versions."""

from __future__ import annotations

from pathlib import PurePosixPath

from fastapi import APIRouter, Depends, Request, Response

from midmix.errors import NotFoundError
from midmix.mixture_manifest import find_phase, phase_shards
from midmix.service import dependencies
from midmix.service.files import file_response
from midmix.service.ids import PhaseName, ShardName, Version, VersionFile
from midmix.service.schemas import ShardEntry
from midmix.service.settings import ServiceSettings
from midmix.service.versions import VersionStore

router = APIRouter(prefix="/mixtures/{version}", tags=["shards"])

_PARQUET = "application/vnd.apache.parquet"
_BYTES = {
    206: {"description": "the requested range"},
    304: {"description": "unchanged"},
    416: {"description": "range not satisfiable"},
}


def shard_entries(manifest: dict, phase: str) -> list[ShardEntry]:
    """The shards of ``phase`` in training order, flattened across its components."""
    return [
        ShardEntry(name=PurePosixPath(shard["path"]).name, component=component, **shard)
        for component, shard in phase_shards(find_phase(manifest, phase))
    ]


@router.get("/phases/{phase}/shards")
async def list_shards(
    version: Version, phase: PhaseName, versions: VersionStore = Depends(dependencies.versions)
) -> list[ShardEntry]:
    """Each shard of a phase with path, sha256, bytes, rows, tokens and component."""
    return shard_entries((await versions.manifest_async("mixtures", version)).data, phase)


@router.get("/phases/{phase}/shards/{name}", response_class=Response, responses=_BYTES)
@router.head("/phases/{phase}/shards/{name}", response_class=Response, responses=_BYTES)
async def shard(
    version: Version,
    phase: PhaseName,
    name: ShardName,
    request: Request,
    versions: VersionStore = Depends(dependencies.versions),
    settings: ServiceSettings = Depends(dependencies.settings),
) -> Response:
    """One shard's bytes; supports Range, If-Range and If-None-Match (ETag is its sha256)."""
    relative = f"phases/{phase}/{name}"
    cached = await versions.manifest_async("mixtures", version)
    if relative in cached.files:
        served = await versions.servable_file_async(version, relative)
        return file_response(request, served, _PARQUET, redirect=settings.shard_store_mode == "redirect")
    shard_entries(cached.data, phase)  # names the phases if unknown
    raise NotFoundError(f"phase {phase!r} of mixture {version} has no shard {name!r}; list them with GET .../shards")


@router.get("/files/{path:path}", response_class=Response, responses=_BYTES)
@router.head("/files/{path:path}", response_class=Response, responses=_BYTES)
async def version_file(
    version: Version,
    path: VersionFile,
    request: Request,
    versions: VersionStore = Depends(dependencies.versions),
    settings: ServiceSettings = Depends(dependencies.settings),
) -> Response:
    """Any file the manifest lists (phase or eval shards, tokenizer.json), same headers as shards."""
    media_type = _PARQUET if path.endswith(".parquet") else "application/json"
    served = await versions.servable_file_async(version, path)
    return file_response(request, served, media_type, redirect=settings.shard_store_mode == "redirect")
