"""The dispatcher: starts queued jobs in worker processes, notices how they end, prunes old jobs.

One runs in every service process. Claims are atomic in the store, so with several service
processes the running jobs never exceed ``job_workers``. Each worker leads a process group of its
own; a job whose supervising service process is dead (it was killed) is marked ``interrupted``
and what is left of its group is killed. An idle tick is two index probes, however many finished
jobs the store keeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

from midmix.errors import ConflictError
from midmix.service.jobs.processes import (
    JOB_SETTINGS_ENV,
    exit_reason,
    kill_group,
    process_alive,
    process_start_time,
    worker_environment,
)
from midmix.service.jobs.record import ACTIVE_STATES, RETRYABLE_STATES, Job, utc_now
from midmix.service.jobs.slurm import cancel_slurm_jobs
from midmix.service.jobs.store import JobStore
from midmix.service.settings import ServiceSettings

_TICK_S = 0.2
_PRUNE_EVERY_S = 60.0


class JobRunner:
    """Runs jobs from ``store`` in subprocesses, at most ``settings.job_workers`` at a time across processes."""

    def __init__(self, store: JobStore, settings: ServiceSettings):
        self.store = store
        self.settings = settings
        self._pid = os.getpid()
        self._started = process_start_time(self._pid)
        # Workers get the settings without tokens: they need roots and executors, never credentials.
        token_free = settings.model_copy(
            update={"write_tokens": [], "read_tokens": [], "write_tokens_file": None, "read_tokens_file": None}
        )
        self._worker_env = worker_environment({JOB_SETTINGS_ENV: token_free.model_dump_json()})
        self._children: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="midmix-jobs", daemon=True)

    def start(self) -> None:
        """Mark jobs of dead services interrupted, then dispatch in a background thread."""
        self.mark_orphans_interrupted()
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; jobs still running are killed (whole groups) and marked interrupted."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for job_id, child in list(self._children.items()):
            kill_group(child.pid, None)  # SIGKILL, as in cancel_job; a retry finishes the same version
            child.wait()
            self.store.update(job_id, _interrupted_by_shutdown)
        self._children.clear()

    def mark_orphans_interrupted(self) -> None:
        """Jobs ``running`` under a service process that no longer exists become ``interrupted``."""
        for job in self.store.running():
            if not process_alive(job.owner_pid, job.owner_started):
                if self.store.update(job.id, _interrupted_if_orphaned).state == "interrupted":
                    kill_group(job.worker_pid, job.worker_started)

    def _loop(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(_TICK_S):
            try:
                self._reap_children()
                self.mark_orphans_interrupted()
                self._claim_and_start()
                if (now := time.monotonic()) >= next_prune:
                    next_prune = now + _PRUNE_EVERY_S
                    self.store.prune(
                        timedelta(days=self.settings.job_retention_days), self.settings.job_retention_count
                    )
            except Exception as error:  # noqa: BLE001 - the dispatcher must outlive one bad tick (a full disk)
                print(f"midmix jobs: dispatcher error: {error!r}", file=sys.stderr)

    def _claim_and_start(self) -> None:
        if not self.store.has_state("queued"):
            return
        for job in self.store.claim(self.settings.job_workers, self._claimed):
            self._spawn(job)

    def _claimed(self, job: Job) -> Job:
        return job.model_copy(
            update={
                "state": "running",
                "started_at": utc_now(),
                "finished_at": None,
                "owner_pid": self._pid,
                "owner_started": self._started,
                "worker_pid": None,
                "worker_started": None,
                "executor": (
                    self.settings.curation_executor if job.kind == "curate" else self.settings.build_executor
                ).kind,
                "detached": False,
                "step": "starting",
                "progress": 0.0,
                "docs_done": 0,
                "docs_total": None,
                "eta_s": None,
                "error": None,
            }
        )

    def _spawn(self, job: Job) -> None:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "midmix.service.jobs.worker", job.id],
                stdin=subprocess.DEVNULL,
                env=self._worker_env,
                start_new_session=True,  # the worker leads a process group: cancel kills all it started
            )
        except OSError as error:
            reason = f"could not start a worker: {error}"
            self.store.update(job.id, lambda current: _failed_if_running(current, reason))
            return
        self._children[job.id] = child
        started = process_start_time(child.pid)

        def record_worker(current: Job) -> Job | None:
            if current.state != "running":
                return None
            return current.model_copy(update={"worker_pid": child.pid, "worker_started": started})

        if self.store.update(job.id, record_worker).state != "running":
            kill_group(child.pid, started)  # cancelled before its pid was known: nobody else can stop it

    def _reap_children(self) -> None:
        for job_id, child in list(self._children.items()):
            # Peek without reaping: while the worker is an unreaped zombie its pid (the group id) cannot
            # be reused, so killing the group's leftovers cannot hit a stranger.
            if os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                continue
            kill_group(child.pid, None)
            code = child.wait()
            reason = f"the job's worker {exit_reason(code)}"
            self.store.update(job_id, lambda current, reason=reason: _failed_if_running(current, reason, child.pid))
            del self._children[job_id]


def cancel_job(store: JobStore, job_id: str) -> Job:
    """Cancel a queued or running job (again: the same answer); finished jobs conflict.

    The worker's whole process group gets SIGKILL, not SIGTERM: a SystemExit raised by a SIGTERM
    handler can be swallowed by library code (seen inside a lazy pandas import) and the build would
    then go on to publish. Killed, it publishes nothing; the next build of the version removes its
    staging directory (``midmix.publish``). Slurm jobs the curation submitted are cancelled by name.
    """
    with store.transaction() as tx:
        job = tx.get(job_id)
        if job.state == "cancelled":
            return job
        if job.state not in ACTIVE_STATES:
            raise ConflictError(f"job {job_id} is already {job.state}; only queued or running jobs can be cancelled")
        cancelled = tx.put(job.finished("cancelled"))
    if job.state == "running":
        kill_group(job.worker_pid, job.worker_started)
        if job.executor == "slurm":
            problem = cancel_slurm_jobs(job.id)
            if problem:
                cancelled = store.update(job_id, lambda current: current.model_copy(update={"error": problem}))
    return cancelled


def retry_job(store: JobStore, job_id: str, idempotency_key: str | None = None) -> Job:
    """Queue a failed, cancelled or interrupted job again; an identical active job is returned instead.

    With ``idempotency_key`` a repeated request (a client retry) gets the first answer's job back.
    """
    fingerprint = f"retry:{job_id}"
    with store.transaction() as tx:
        if idempotency_key and (earlier := tx.remembered(idempotency_key, fingerprint)):
            return earlier
        job = tx.get(job_id)
        if job.state not in RETRYABLE_STATES:
            raise ConflictError(
                f"job {job_id} is {job.state}; only failed, cancelled or interrupted jobs can be retried"
            )
        answer = tx.active_with_key(job.key) or tx.put(
            job.model_copy(
                update={
                    "state": "queued",
                    "attempt": job.attempt + 1,
                    "error": None,
                    "result": None,
                    "progress": None,
                    "step": None,
                    "eta_s": None,
                    "started_at": None,
                    "finished_at": None,
                    "worker_pid": None,
                    "worker_started": None,
                    "detached": False,
                }
            )
        )
        if idempotency_key:
            tx.remember(idempotency_key, fingerprint, answer)
        return answer


def _failed_if_running(job: Job, reason: str, worker_pid: int | None = None) -> Job | None:
    if job.state != "running" or (worker_pid is not None and job.worker_pid not in (None, worker_pid)):
        return None
    return job.finished("failed", error=f"{reason}; retry the job to finish the same version")


def _interrupted_by_shutdown(job: Job) -> Job | None:
    if job.state != "running":
        return None
    return job.finished(
        "interrupted", error="the service stopped while this job ran; retry it to finish the same version"
    )


def _interrupted_if_orphaned(job: Job) -> Job | None:
    if job.state != "running" or process_alive(job.owner_pid, job.owner_started):
        return None
    return job.finished(
        "interrupted", error="the service process running this job died; retry it to finish the same version"
    )
