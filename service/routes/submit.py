"""Submitting a job from a validated request: key it, queue it (or join its identical twin)."""

from __future__ import annotations

from pydantic import BaseModel

from midmix.service.jobs.record import JobKind
from midmix.service.jobs.store import JobStore
from midmix.service.jobs.tasks import job_key
from midmix.service.schemas import JobView


def submit(store: JobStore, kind: JobKind, request: BaseModel) -> JobView:
    """Queue a job for ``request``; an identical queued or running job is returned as is."""
    job, _ = store.submit(kind, job_key(kind, request), request.model_dump(mode="json"))
    return JobView.of(job)
