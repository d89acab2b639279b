"""Job status, cancel and retry."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from midmix.service import dependencies
from midmix.service.auth import require_read, require_write
from midmix.service.jobs.runner import cancel_job, retry_job
from midmix.service.jobs.store import JobStore
from midmix.service.schemas import JobView

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", dependencies=[Depends(require_read)])
def list_jobs(store: JobStore = Depends(dependencies.jobs)) -> list[JobView]:
    """All jobs, newest first."""
    return [JobView.of(job) for job in store.all()]


@router.get("/{job_id}", dependencies=[Depends(require_read)])
def get_job(job_id: str, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """One job's state, progress, current step, ETA and result."""
    return JobView.of(store.get(job_id))


@router.delete("/{job_id}", dependencies=[Depends(require_write)])
def cancel(job_id: str, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """Cancel a queued or running job."""
    return JobView.of(cancel_job(store, job_id))


@router.post("/{job_id}/retry", status_code=202, dependencies=[Depends(require_write)])
def retry(job_id: str, store: JobStore = Depends(dependencies.jobs)) -> JobView:
    """Queue a failed, cancelled or interrupted job again; it completes the same version."""
    return JobView.of(retry_job(store, job_id))
