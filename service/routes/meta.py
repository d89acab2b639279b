"""Liveness and code version (public: ``public_router``) and the registered classifiers (``router``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from midmix import __version__
from midmix.service import dependencies
from midmix.service.schemas import Health, VersionInfo
from midmix.service.settings import ServiceSettings

public_router = APIRouter(tags=["service"])
router = APIRouter(tags=["service"])


@public_router.get("/health")
async def health() -> Health:
    """Liveness probe; needs no token."""
    return Health(status="ok")


@public_router.get("/version")
async def version() -> VersionInfo:
    """The code version that builds versions here (part of every version hash); needs no token."""
    return VersionInfo(version=__version__)


@router.get("/classifiers")
def classifiers(settings: ServiceSettings = Depends(dependencies.settings)) -> list[dict[str, Any]]:
    """Registered fastText models with task, labels, metrics and sha256."""
    from midmix.classifiers.registry import ModelRegistry

    models_dir = settings.data_dir / "models"
    if not models_dir.is_dir():
        return []
    return [card.model_dump(mode="json") for card in ModelRegistry(models_dir).cards()]
