"""Job status, cancel and retry."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from midmix.service import dependencies
from midmix.service.auth import require_write
from midmix.service.ids import IdempotencyKey, JobId
from midmix.service.jobs.runner import cancel_job, retry_job
from midmix.service.jobs.store import JobStore
from midmix.service.routes.submit import JOB_ANSWER
from midmix.service.schemas import JobView

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("")
def list_jobs(
    limit: int = Query(100, ge=1, le=1000, description="jobs per page"),
    offset: int = Query(0, ge=0, le=1 << 40),
    store: JobStore = Depends(dependencies.jobs),
) -> list[JobView]:
    """Jobs, newest first, one page (finished jobs are pruned after the retention the settings give)."""
    return [JobView.of(job) for job in store.list(limit, offset)]


@router.get("/{job_id}", operation_id="get_job")
def get_job(job_id: JobId, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """One job's state, progress, current step, ETA and result."""
    return JobView.of(store.get(job_id))


@router.delete("/{job_id}", operation_id="cancel_job", dependencies=[Depends(require_write)])
def cancel(job_id: JobId, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """Cancel a queued or running job, with everything it started; cancelling it again answers the same."""
    return JobView.of(cancel_job(store, job_id))


@router.post(
    "/{job_id}/retry",
    operation_id="retry_job",
    status_code=202,
    dependencies=[Depends(require_write)],
    responses=JOB_ANSWER,
)
def retry(
    job_id: JobId, idempotency_key: IdempotencyKey = None, store: JobStore = Depends(dependencies.jobs)
) -> JobView:
    """Queue a failed, cancelled or interrupted job again; it completes the same version."""
    return JobView.of(retry_job(store, job_id, idempotency_key))
