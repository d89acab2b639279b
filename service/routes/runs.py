"""Training runs: the ``run.json`` summaries the trainer writes into run folders under ``DATA/runs/``.

Read-only and small: the service never reads checkpoints or metrics, only the summary the trainer
keeps up to date at each phase end (``midmix.trainer.run_summary``). A run is named by its folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParameter

from midmix.errors import NotFoundError
from midmix.pipelines.mixtures.spec import NAME_PATTERN
from midmix.service import dependencies
from midmix.service.settings import ServiceSettings

# Mounted behind require_read with the other routers (service/app.py: PROTECTED_ROUTERS).
router = APIRouter(prefix="/runs", tags=["runs"])

RUN_SUMMARY = "run.json"
RunName = Annotated[str, PathParameter(pattern=NAME_PATTERN, max_length=128, description="a run folder under DATA/runs")]


@router.get("")
def list_runs(settings: ServiceSettings = Depends(dependencies.settings)) -> list[dict[str, Any]]:
    """Runs under the data directory, most recently updated first: name, mixture, steps, phases."""
    found = []
    for path in (settings.data_dir / "runs").glob(f"*/{RUN_SUMMARY}"):
        summary = _read(path)
        if summary is None:
            continue
        found.append((path.stat().st_mtime_ns, {
            "name": path.parent.name, "mixture": summary.get("mixture"), "global_steps": summary.get("global_steps"),
            "phases": [phase["name"] for phase in summary.get("phases", [])],
        }))  # fmt: skip
    return [entry for _, entry in sorted(found, key=lambda item: item[0], reverse=True)]


@router.get("/{name}", responses={404: {"description": "no such run"}})
def run(name: RunName, settings: ServiceSettings = Depends(dependencies.settings)) -> dict[str, Any]:
    """One run's summary: per phase, realized shares (whole phase and per window) against the manifest."""
    summary = _read(settings.data_dir / "runs" / name / RUN_SUMMARY)
    if summary is None:
        raise NotFoundError(f"no run {name!r} under the data directory's runs/; list them with GET /runs")
    return summary


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
