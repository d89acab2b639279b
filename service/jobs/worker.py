"""A job's worker process: ``python -m midmix.service.jobs.worker DATA_DIR JOB_ID``.

Runs outside the service's event loop so a long curation never blocks a request. It writes
progress into the job record and dies with the service process that started it, so a job
left ``running`` by a dead service is really stopped and can be marked ``interrupted``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

from midmix.errors import MidmixError
from midmix.service.jobs.record import Job, utc_now
from midmix.service.jobs.store import JobStore
from midmix.service.jobs.tasks import run_task

_WRITE_INTERVAL_S = 0.2
_WATCH_INTERVAL_S = 0.2


class ProgressWriter:
    """The pipelines' progress callback: throttled writes of step, docs done, percent and ETA."""

    def __init__(self, store: JobStore, job_id: str):
        self.store = store
        self.job_id = job_id
        self._step: str | None = None
        self._step_started = time.monotonic()
        self._last_write = 0.0

    def __call__(self, step: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if step != self._step:
            self._step, self._step_started = step, now
        elif now - self._last_write < _WRITE_INTERVAL_S and done != total:
            return
        self._last_write = now
        percent = None if not total else min(100.0, 100.0 * done / total)
        elapsed = now - self._step_started
        eta = None if not total or done <= 0 else elapsed * (total - done) / done

        def change(job: Job) -> Job | None:
            if job.state != "running":
                return None
            return job.model_copy(
                update={"step": step, "docs_done": done, "docs_total": total, "progress": percent, "eta_s": eta}
            )

        self.store.update(self.job_id, change)


def _exit_when_orphaned(parent_pid: int) -> None:
    """Kill this process once its service process is gone (it was killed or crashed)."""
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_INTERVAL_S)
    os._exit(3)


def _finish(store: JobStore, job_id: str, **update: object) -> None:
    def change(job: Job) -> Job | None:
        if job.state != "running":  # cancelled meanwhile: keep the user's decision
            return None
        return job.model_copy(update={"finished_at": utc_now(), "eta_s": None, **update})

    store.update(job_id, change)


def main(data_dir: Path, job_id: str) -> int:
    """Run the job and record its outcome; the exit code only matters for crashes."""
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    store = JobStore(data_dir / "jobs")
    job = store.get(job_id)
    try:
        version = run_task(job.kind, job.request, data_dir, ProgressWriter(store, job_id))
    except MidmixError as error:
        _finish(store, job_id, state="failed", error=str(error))
        return 1
    except Exception as error:  # noqa: BLE001 - any crash must end up in the record
        traceback.print_exc()
        _finish(store, job_id, state="failed", error=f"internal error: {type(error).__name__}: {error}")
        return 1
    _finish(store, job_id, state="succeeded", result=version, progress=100.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
