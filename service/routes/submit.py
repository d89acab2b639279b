"""Submitting a job from a request body: validate it, key it, queue it (or join its twin)."""

from __future__ import annotations

from typing import Any

from service.jobs.record import JobKind
from service.jobs.store import JobStore
from service.jobs.tasks import job_key, validate_request
from service.schemas import JobView


def submit(store: JobStore, kind: JobKind, body: dict[str, Any]) -> JobView:
    """Queue a job for a validated request; an identical queued or running job is returned as is."""
    typed = validate_request(kind, body)
    job, _ = store.submit(kind, job_key(kind, typed), typed.model_dump(mode="json"))
    return JobView.of(job)
