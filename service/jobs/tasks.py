"""What each job kind does: validate its request into the pipelines' typed config and run it.

The only place the job machinery touches curation and mixture code; routes use ``job_key`` to
decide whether two requests are the same job.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from midmix.errors import MidmixError, validation_problems
from midmix.hashing import sha256_json
from midmix.progress import ProgressCallback
from midmix.service.jobs.record import JobKind


class InvalidRequestError(MidmixError):
    """A request body that does not validate: 422, naming each bad field."""

    http_status = 422


def request_model(kind: JobKind) -> type[BaseModel]:
    """The pydantic model that validates a job's request body."""
    if kind == "curate":
        from midmix.pipelines.curation.config import CurationConfig

        return CurationConfig
    from midmix.pipelines.mixtures.spec import MixtureSpec

    return MixtureSpec


def validate_request(kind: JobKind, body: object) -> BaseModel:
    """The typed request; an ``InvalidRequestError`` naming each bad field if it does not validate."""
    try:
        return request_model(kind).model_validate(body)
    except ValidationError as error:
        raise InvalidRequestError("invalid request: " + validation_problems(error.errors(), "body")) from None


def job_key(kind: JobKind, request: BaseModel) -> str:
    """Content hash of a validated request: identical requests get identical keys."""
    return sha256_json({"kind": kind, "request": request.model_dump(mode="json")})


def run_task(kind: JobKind, request: dict, data_dir: Path, progress: ProgressCallback) -> str:
    """Run one job to completion and return the version it produced."""
    typed = validate_request(kind, request)
    if kind == "curate":
        from midmix.pipelines.curation.curate import curate_corpus

        manifest = curate_corpus(typed, data_dir, progress)
    else:
        from midmix.pipelines.mixtures.build import materialize_mixture

        # Dataset versions only in the object store (``midmix datasets push``) are pulled first.
        manifest = materialize_mixture(typed, data_dir, progress, store=os.environ.get("MIDMIX_SHARD_STORE"))
    return str(manifest["version"])
