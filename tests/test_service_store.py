"""The SQLite job store: one active job per request, idempotency keys, atomic claims across
processes, retention, and liveness that tells a reused pid apart."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from midmix.errors import MidmixError
from midmix.service.jobs.processes import process_alive, process_start_time
from midmix.service.jobs.record import Job
from midmix.service.jobs.store import JobStore


def _running(job: Job) -> Job:
    return job.model_copy(update={"state": "running"})


def test_identical_requests_share_the_active_job_and_a_finished_one_makes_way(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    first, new_first = store.submit("build", "key-a", {"name": "a"})
    twin, new_twin = store.submit("build", "key-a", {"name": "a"})
    store.update(first.id, lambda job: job.finished("succeeded", result="mix-1"))
    again, new_again = store.submit("build", "key-a", {"name": "a"})
    assert (new_first, new_twin, new_again) == (True, False, True)
    assert twin.id == first.id and again.id != first.id
    assert [job.id for job in store.list()] == [again.id, first.id]


def test_an_idempotency_key_gets_the_first_answer_even_after_the_job_finished(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    job, _ = store.submit("build", "key-a", {"name": "a"}, idempotency_key="retry-me-123")
    store.update(job.id, lambda current: current.finished("failed", error="boom"))
    repeated, new = store.submit("build", "key-a", {"name": "a"}, idempotency_key="retry-me-123")
    with pytest.raises(MidmixError, match="was sent before with a different request"):
        store.submit("build", "key-b", {"name": "b"}, idempotency_key="retry-me-123")
    assert (repeated.id, repeated.state, new) == (job.id, "failed", False)
    assert store.count() == 1


def _claim_in_another_process(jobs_dir: str, slots: int, out) -> None:
    store = JobStore(Path(jobs_dir))
    claimed = []
    for _ in range(20):
        claimed += [job.id for job in store.claim(slots, _running)]
    out.put(claimed)


@pytest.mark.slow
def test_claims_from_several_processes_never_exceed_the_slots(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    queued = [store.submit("build", f"key-{n}", {"n": n})[0].id for n in range(12)]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_claim_in_another_process, args=(str(tmp_path / "jobs"), 3, out)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    claimed = [job_id for _ in workers for job_id in out.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=30)
    assert len(claimed) == 3 and len(set(claimed)) == 3  # three slots, each job claimed once
    assert set(claimed) == set(queued[:3])  # oldest first
    assert sorted(job.id for job in store.running()) == sorted(claimed)


def test_pruning_drops_old_and_surplus_finished_jobs_and_keeps_active_ones(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    long_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    ids = [store.submit("build", f"key-{n}", {"n": n})[0].id for n in range(6)]
    store.update(ids[0], lambda job: job.finished("succeeded").model_copy(update={"finished_at": long_ago}))
    for job_id in ids[1:4]:
        store.update(job_id, lambda job: job.finished("failed"))
    store.claim(1, _running)  # ids[4]: running; ids[5]: queued
    pruned = store.prune(max_age=timedelta(days=30), keep=2)
    kept = {job.id: job.state for job in store.list()}
    assert pruned == 2  # the 40-day-old one, then the oldest of the three recent finished ones
    assert kept == {ids[2]: "failed", ids[3]: "failed", ids[4]: "running", ids[5]: "queued"}


@pytest.mark.slow
def test_liveness_tells_a_reused_pid_apart() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_start_time(child.pid)
        alive = process_alive(child.pid, started)
        other = process_alive(child.pid, (started or 0) - 5.0)
    finally:
        child.kill()
        child.wait()
    assert (alive, other) == (True, False)
    assert process_alive(child.pid, started) is False
    assert process_alive(None, None) is False
