"""Job records as JSON files under ``DATA/jobs/``, one per job, written atomically.

Several service processes (``--workers N``) share the directory, so every read-modify-write
holds an exclusive ``flock`` on ``jobs/.lock``; readers need no lock because each file is
replaced in one rename.
"""

from __future__ import annotations

import fcntl
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from midmix.errors import NotFoundError
from midmix.publish import atomic_write_text
from midmix.service.jobs.record import ACTIVE_STATES, Job, JobKind


class JobStore:
    """Create, read and update job records in ``jobs_dir``."""

    def __init__(self, jobs_dir: Path):
        self.jobs_dir = jobs_dir
        jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock_path = jobs_dir / ".lock"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store-wide lock (blocks other processes' read-modify-writes)."""
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def submit(self, kind: JobKind, key: str, request: dict) -> tuple[Job, bool]:
        """The active job with this key, or a new queued one; the flag says whether it is new."""
        with self.locked():
            for job in self.all():
                if job.key == key and job.state in ACTIVE_STATES:
                    return job, False
            job = Job(id=f"{kind}-{secrets.token_hex(6)}", kind=kind, key=key, request=request)
            self._write(job)
            return job, True

    def get(self, job_id: str) -> Job:
        """One job by id."""
        path = self._path(job_id)
        try:
            return Job.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValueError, ValidationError):
            raise NotFoundError(f"no job {job_id!r}; list jobs with GET /jobs") from None

    def all(self) -> list[Job]:
        """Every job, newest first; unreadable files are skipped."""
        jobs = []
        for path in self.jobs_dir.glob("*.json"):
            try:
                jobs.append(Job.model_validate_json(path.read_bytes()))
            except (FileNotFoundError, ValueError, ValidationError):
                continue
        return sorted(jobs, key=lambda job: (job.created_at, job.id), reverse=True)

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Apply ``change`` under the lock; it returns the new record, or None to keep it."""
        with self.locked():
            return self.update_unlocked(job_id, change)

    def update_unlocked(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """``update`` for callers already holding ``locked()``."""
        job = self.get(job_id)
        changed = change(job)
        if changed is None:
            return job
        self._write(changed)
        return changed

    def _path(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise NotFoundError(f"no job {job_id!r}; list jobs with GET /jobs")
        return self.jobs_dir / f"{job_id}.json"

    def _write(self, job: Job) -> None:
        path = self._path(job.id)
        atomic_write_text(path, json.dumps(job.model_dump(mode="json"), indent=1))
