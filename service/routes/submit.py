"""Submitting a job from a validated request: key it, queue it (or join its identical twin)."""

from __future__ import annotations

from pydantic import BaseModel

from midmix.service.jobs.record import JobKind
from midmix.service.jobs.store import JobStore
from midmix.service.jobs.tasks import job_key
from midmix.service.schemas import JobView

# OpenAPI links from an answer carrying a job to what can be done with it (clients and fuzzers follow them).
JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (("GetJob", "get_job"), ("CancelJob", "cancel_job"), ("RetryJob", "retry_job"))
}
JOB_ANSWER = {202: {"description": "the job", "links": JOB_LINKS}}


def submit(store: JobStore, kind: JobKind, request: BaseModel, idempotency_key: str | None) -> JobView:
    """Queue a job for ``request``; an identical queued or running job (or a retried request's) is returned."""
    job, _ = store.submit(kind, job_key(kind, request), request.model_dump(mode="json"), idempotency_key)
    return JobView.of(job)
