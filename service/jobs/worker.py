"""A job's worker process: ``python -m midmix.service.jobs.worker JOB_ID`` (settings in the environment).

Runs outside the service's event loop so a long curation never blocks a request, in a process
group of its own (the dispatcher starts it in a new session). It writes progress into the job
record and ends its whole group:

- when the service process that started it is gone (killed or crashed), so a job left
  ``running`` by a dead service is really stopped and can be marked ``interrupted``;
- when one of its child processes is killed (SIGKILL from a person or the OOM killer, a
  segfault): that child's work is lost, so the job fails at once naming the process and the
  signal, instead of later with whatever broken pipe or pool the loss leaves behind. (A pool
  worker under the executor's forkserver is a grandchild: its loss is the executor's to retry,
  ``midmix.pipelines.executors``.)

A curation or build on Slurm only submits jobs; the worker then waits, holding no job slot, until
the version is published or the Slurm jobs are gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import psutil

from midmix.errors import MidmixError
from midmix.progress import ProgressCallback
from midmix.publish import is_out_of_space
from midmix.service.jobs.processes import JOB_SETTINGS_ENV
from midmix.service.jobs.record import Job
from midmix.service.jobs.slurm import active_slurm_jobs, slurm_job_name
from midmix.service.jobs.store import JobStore
from midmix.service.jobs.tasks import run_task
from midmix.service.settings import ServiceSettings

_WRITE_INTERVAL_S = 0.2
_WATCH_INTERVAL_S = 0.2
# Signals that mean a process died by accident or by force; SIGTERM/SIGINT are how owners stop children.
_FATAL_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}
)
_RETRY = "Retry it to finish the same version"


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
        update = {"step": step, "docs_done": done, "docs_total": total, "progress": percent, "eta_s": eta}
        self.store.update(self.job_id, lambda job: job.model_copy(update=update) if job.state == "running" else None)


def _end_group() -> None:
    """SIGKILL this worker's process group, the worker included."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _die_with_the_service(parent_pid: int) -> None:
    """End the group once the service process that started this worker is gone."""
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_INTERVAL_S)
    _end_group()


class KilledChild:
    """The first child of this worker killed by a fatal signal, and the sentence that says so.

    Seen the moment it dies (a SIGCHLD handler peeks at it before its owner reaps it, so before
    the main thread can trip over the broken pipe it leaves), and by polling for what the handler
    cannot see while the main thread sits in a long C call.
    """

    def __init__(self) -> None:
        self.reason: str | None = None

    def install(self) -> None:
        """Look at every child's death as it happens; children dying must not interrupt system calls."""
        signal.signal(signal.SIGCHLD, lambda signum, frame: self.look())
        signal.siginterrupt(signal.SIGCHLD, False)

    def look(self) -> str | None:
        """The reason once a child was killed (peeked at with WNOWAIT: its owner still reaps it)."""
        if self.reason is not None:
            return self.reason
        try:
            seen = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if seen is None or seen.si_code not in (os.CLD_KILLED, os.CLD_DUMPED) or seen.si_status not in _FATAL_SIGNALS:
            return None
        try:
            name = psutil.Process(seen.si_pid).name()
        except psutil.Error:
            name = "?"
        self.reason = (
            f"process {seen.si_pid} ({name}) of this job was killed by {signal.Signals(seen.si_status).name} "
            "(by hand, or the system ran out of memory)"
        )
        return self.reason


def _fail_when_a_child_is_killed(store: JobStore, job_id: str, killed: KilledChild) -> None:
    while killed.look() is None:
        time.sleep(_WATCH_INTERVAL_S)
    _finish(store, job_id, "failed", error=f"{killed.reason}; its work was lost, so the job stopped. {_RETRY}")
    _end_group()


def _finish(store: JobStore, job_id: str, state: str, **update: object) -> None:
    def change(job: Job) -> Job | None:
        if job.state != "running":  # cancelled meanwhile: keep the user's decision
            return None
        return job.finished(state, **update)

    store.update(job_id, change)


def _wait_for_slurm(store: JobStore, job: Job, submitted: dict, settings: ServiceSettings) -> str:
    """Hold the job ``running`` until Slurm publishes the version; fail if its Slurm jobs end without it."""
    version = str(submitted["version"])
    manifest = settings.data_dir / ("datasets" if job.kind == "curate" else "mixtures") / version / "manifest.json"
    store.update(job.id, lambda current: current.model_copy(update={"detached": True}))
    while not manifest.is_file():
        try:
            active = active_slurm_jobs(job.id)
        except RuntimeError as error:
            raise MidmixError(f"cannot follow the Slurm jobs named {slurm_job_name(job.id)}: {error}") from None
        if not active and not manifest.is_file():
            raise MidmixError(
                f"the Slurm jobs of this job ({slurm_job_name(job.id)}) ended without publishing {version}; "
                f"their logs are under {submitted.get('work_dir')}/logs"
            )
        step = f"slurm: {len(active)} jobs queued or running ({slurm_job_name(job.id)})"
        store.update(job.id, lambda current: current.model_copy(update={"step": step}))
        time.sleep(settings.slurm_poll_s)
    return version


def run(store: JobStore, job: Job, settings: ServiceSettings, progress: ProgressCallback) -> str:
    """Run the job's task; returns the version it produced (waiting for Slurm when it submitted)."""
    if job.executor == "slurm":
        os.environ["SBATCH_JOB_NAME"] = slurm_job_name(job.id)
    result = run_task(job.kind, job.request, settings, progress)
    if result.get("state") == "submitted":
        return _wait_for_slurm(store, job, result, settings)
    return str(result["version"])


def main(job_id: str) -> int:
    """Run the job and record its outcome; the exit code only matters for crashes."""
    settings = ServiceSettings.model_validate_json(os.environ.pop(JOB_SETTINGS_ENV))
    store = JobStore(settings.data_dir / "jobs")
    job = store.get(job_id)
    if job.state != "running" or job.owner_pid != os.getppid():
        return 0  # cancelled, or claimed again by another service, before this worker started
    killed = KilledChild()
    killed.install()
    watchers: list[tuple[Callable, tuple]] = [
        (_die_with_the_service, (os.getppid(),)),
        (_fail_when_a_child_is_killed, (store, job_id, killed)),
    ]
    for target, args in watchers:
        threading.Thread(target=target, args=args, daemon=True).start()
    try:
        version = run(store, job, settings, ProgressWriter(store, job_id))
    except Exception as error:  # noqa: BLE001 - any failure must end up in the record, saying why
        _finish(store, job_id, "failed", error=_failure(error, killed))
        if not isinstance(error, MidmixError):
            traceback.print_exc()
        return 1
    _finish(store, job_id, "succeeded", result=version, progress=100.0)
    return 0


def _failure(error: Exception, killed: KilledChild) -> str:
    """What a failed job's record says: a killed child first (the cause), else the error itself."""
    if killed.look():
        return f"{killed.reason}; the job stopped ({type(error).__name__}: {error}). {_RETRY}"
    if isinstance(error, MidmixError):
        return str(error)
    if is_out_of_space(error):
        return f"no space left on device ({error}); nothing was published. Free space in the data directory, then retry the job"
    return f"internal error: {type(error).__name__}: {error}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
