"""The dispatcher: starts queued jobs in worker processes and notices how they end.

One runs in every service process. Claiming a job happens under the store lock, so with
several service processes the total of running jobs never exceeds ``slots``. A job whose
supervising process is dead (the service was killed) is marked ``interrupted``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from midmix.errors import ConflictError
from midmix.service.jobs.record import ACTIVE_STATES, RETRYABLE_STATES, Job, utc_now
from midmix.service.jobs.store import JobStore

_TICK_S = 0.2


def process_start_time(pid: int) -> int | None:
    """Kernel start time of a process (clock ticks since boot), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int | None, started: int | None) -> bool:
    """Whether ``pid`` is still the process that was recorded with start time ``started``."""
    if pid is None:
        return False
    now_started = process_start_time(pid)
    return now_started is not None and (started is None or now_started == started)


class JobRunner:
    """Runs jobs from ``store`` in subprocesses, at most ``slots`` at a time across processes."""

    def __init__(self, store: JobStore, data_dir: Path, slots: int):
        self.store = store
        self.data_dir = data_dir
        self.slots = slots
        self._pid = os.getpid()
        self._started = process_start_time(self._pid)
        self._children: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="midmix-jobs", daemon=True)

    def start(self) -> None:
        """Mark jobs of dead services interrupted, then dispatch in a background thread."""
        self.mark_orphans_interrupted()
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; jobs still running are stopped and marked interrupted."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for job_id, child in list(self._children.items()):
            child.kill()  # as in cancel_job: SIGTERM can be swallowed; a retry finishes the same version
            child.wait()
            self.store.update(job_id, _interrupt_if_running)
        self._children.clear()

    def mark_orphans_interrupted(self) -> None:
        """Jobs ``running`` under a service process that no longer exists become ``interrupted``."""
        with self.store.locked():
            for job in self.store.all():
                if job.state == "running" and not process_alive(job.owner_pid, job.owner_started):
                    self.store.update_unlocked(job.id, _interrupt_if_running)

    def _loop(self) -> None:
        while not self._stop.wait(_TICK_S):
            try:
                self._reap_children()
                self.mark_orphans_interrupted()
                self._claim_and_start()
            except Exception as error:  # noqa: BLE001 - the dispatcher must outlive one bad tick
                print(f"midmix jobs: dispatcher error: {error!r}", file=sys.stderr)

    def _claim_and_start(self) -> None:
        with self.store.locked():
            jobs = self.store.all()
            free = self.slots - sum(job.state == "running" for job in jobs)
            queued = sorted((job for job in jobs if job.state == "queued"), key=lambda job: job.created_at)
            for job in queued[: max(free, 0)]:
                self._start(job)

    def _start(self, job: Job) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "midmix.service.jobs.worker", str(self.data_dir), job.id],
            stdin=subprocess.DEVNULL,
        )
        self._children[job.id] = child
        running = job.model_copy(
            update={
                "state": "running",
                "started_at": utc_now(),
                "finished_at": None,
                "owner_pid": self._pid,
                "owner_started": self._started,
                "worker_pid": child.pid,
                "step": "starting",
                "progress": 0.0,
                "docs_done": 0,
                "docs_total": None,
                "eta_s": None,
                "error": None,
            }
        )
        self.store.update_unlocked(job.id, lambda _: running)

    def _reap_children(self) -> None:
        for job_id, child in list(self._children.items()):
            code = child.poll()
            if code is None:
                continue
            del self._children[job_id]

            def crashed(job: Job, code: int = code) -> Job | None:
                if job.state != "running":
                    return None
                return job.model_copy(
                    update={"state": "failed", "finished_at": utc_now(), "error": f"worker exited with code {code}"}
                )

            self.store.update(job_id, crashed)


def cancel_job(store: JobStore, job_id: str) -> Job:
    """Cancel a queued or running job; finished jobs conflict.

    The worker gets SIGKILL, not SIGTERM: a SystemExit raised by a SIGTERM handler can be
    swallowed by library code (seen inside a lazy pandas import) and the build would then go on
    to publish. Killed, it can publish nothing; its staging directory is removed by the next
    build of the same version (see ``midmix.publish``).
    """
    with store.locked():
        job = store.get(job_id)
        if job.state not in ACTIVE_STATES:
            raise ConflictError(f"job {job_id} is already {job.state}; only queued or running jobs can be cancelled")
        cancelled = job.model_copy(update={"state": "cancelled", "finished_at": utc_now(), "eta_s": None})
        store.update_unlocked(job_id, lambda _: cancelled)
    if job.state == "running" and job.worker_pid and process_alive(job.owner_pid, job.owner_started):
        try:
            os.kill(job.worker_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return cancelled


def retry_job(store: JobStore, job_id: str) -> Job:
    """Queue a failed, cancelled or interrupted job again; an identical active job is returned instead."""
    with store.locked():
        job = store.get(job_id)
        if job.state not in RETRYABLE_STATES:
            raise ConflictError(
                f"job {job_id} is {job.state}; only failed, cancelled or interrupted jobs can be retried"
            )
        for other in store.all():
            if other.key == job.key and other.state in ACTIVE_STATES:
                return other
        queued = job.model_copy(
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
            }
        )
        store.update_unlocked(job_id, lambda _: queued)
        return queued


def _interrupt_if_running(job: Job) -> Job | None:
    if job.state != "running":
        return None
    return job.model_copy(
        update={
            "state": "interrupted",
            "finished_at": utc_now(),
            "eta_s": None,
            "error": "the service stopped while this job ran; retry it to finish the same version",
        }
    )
