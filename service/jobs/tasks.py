"""What each job kind does: turn its stored request into the pipelines' typed config and run it.

The only place the job machinery touches curation and mixture code. The stored request is the
client's (``service.requests``); the executor and the allowed locations come from the settings
the worker was started with, and are checked again here, on the files patterns expand to.
"""

from __future__ import annotations

from pydantic import BaseModel

from midmix.hashing import sha256_json
from midmix.progress import ProgressCallback
from midmix.service.access import InputAccess, curation_config, mixture_spec
from midmix.service.jobs.record import JobKind
from midmix.service.requests import CurationRequest, MixtureRequest
from midmix.service.settings import ServiceSettings


def job_key(kind: JobKind, request: BaseModel) -> str:
    """Content hash of a validated request: identical requests get identical keys."""
    return sha256_json({"kind": kind, "request": request.model_dump(mode="json")})


def run_task(kind: JobKind, request: dict, settings: ServiceSettings, progress: ProgressCallback) -> dict:
    """Run one job to completion; the manifest it published (or, on Slurm, what it submitted)."""
    if kind == "curate":
        from midmix.pipelines.curation.curate import curate_corpus

        config = curation_config(CurationRequest.model_validate(request), settings)
        InputAccess.of(settings).check_expanded(config)
        return curate_corpus(config, settings.data_dir, progress)
    from midmix.pipelines.mixtures.build import materialize_mixture

    spec = mixture_spec(MixtureRequest.model_validate(request), settings)
    # Dataset versions only in the shard store (``midmix datasets push``) are pulled first.
    return materialize_mixture(spec, settings.data_dir, progress, settings.build_executor, store=settings.shard_store)
