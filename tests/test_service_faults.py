"""Fault injection with real processes: a killed service, killed worker children, a full disk, Slurm.

- ``kill -9`` of the service during a curation (the mixture-build case is in test_service_jobs):
  after a restart the job is ``interrupted``, nothing partial is listed, and a retry publishes the
  same version, resuming datatrove's finished stages.
- Killing a worker's child processes (the local pool's forkserver and workers) fails the job at
  once, naming the process and the signal.
- A full disk during publication: the mixtures folder is a 2 MiB tmpfs the test mounts (as root)
  and fills; the build fails with a one-line error, leaves no partial version, and a retry
  completes once the space is back.
- A Slurm curation (stand-ins for sbatch/squeue/scancel, as in test_scale_slurm) stays ``running``
  until its version is published, and a cancel ends its Slurm jobs by name.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from midmix.pipelines.curation.config import LocalExecutor
from midmix.pipelines.curation.curate import curate_corpus
from midmix.resources import SAMPLE_CORPUS
from midmix.service.access import curation_config
from midmix.service.client import MidmixClient
from midmix.service.jobs.store import JobStore
from midmix.service.requests import CurationRequest
from midmix.service.settings import ServiceSettings
from tests.conftest import make_data_dir
from tests.sample_dataset import write_sample_dataset
from tests.service_fixtures import slow_curation_env, start_service

pytestmark = pytest.mark.slow  # starts services, workers and their children, and kills them


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture
def curation_setup(tmp_path: Path, default_models_dir: Path, corpus_subset: Path):
    """A data dir with the default models; 120 documents in two files under an input root; curations
    in two tasks on a local pool (so a job's worker has child processes)."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    lines = corpus_subset.read_text().splitlines(keepends=True)[:120]
    for half in range(2):
        (inputs / f"part-{half}.jsonl").write_text("".join(lines[half::2]))
    data_dir = make_data_dir(tmp_path / "data", default_models_dir)
    settings = {"input_roots": [str(inputs)], "curation_executor": {"kind": "local", "tasks": 2, "workers": 2}}
    return data_dir, inputs, settings


def work_version(data_dir: Path) -> str | None:
    """The version a curation is working on, once its third stage (the pool writing parts) has started."""
    started = list((data_dir / ".staging").glob("curate-*/tasks-2/logs/3-write/executor.json"))
    return started[0].parents[3].name.removeprefix("curate-") if started else None


def paused_worker(store: JobStore, job_id: str, data_dir: Path) -> psutil.Process:
    """The job's worker once the curation's pool is paused in its third stage."""

    def paused() -> bool:
        pid = store.get(job_id).worker_pid
        return pid is not None and work_version(data_dir) is not None and len(psutil.Process(pid).children(True)) >= 3

    wait_until(paused, what="the curation pausing before it publishes")
    return psutil.Process(store.get(job_id).worker_pid)


def test_kill_9_during_a_curation_then_a_retry_publishes_the_same_version(curation_setup) -> None:
    data_dir, inputs, config = curation_setup
    store = JobStore(data_dir / "jobs")
    slow = start_service(data_dir, config=config, env=slow_curation_env(60))
    job_id = MidmixClient(slow.url, retries=0).curate({"inputs": [str(inputs)]})["id"]
    worker = paused_worker(store, job_id, data_dir)
    version = work_version(data_dir)
    group = [worker, *worker.children(recursive=True)]
    slow.kill()
    wait_until(lambda: not any(process.is_running() for process in group), timeout=10, what="worker group gone")
    assert store.get(job_id).state == "running"  # nobody was left to record the crash

    service = start_service(data_dir, config=config)
    try:
        client = MidmixClient(service.url, retries=0)
        interrupted = client.job(job_id)
        listed_before = client.datasets()
        client.retry(job_id)
        done = client.wait(job_id, poll=0.1, timeout=120)
        listed_after = [dataset["version"] for dataset in client.datasets()]
    finally:
        service.stop()
    assert len(group) >= 4  # the worker, the pool's forkserver and its two worker processes
    assert (interrupted["state"], listed_before) == ("interrupted", [])
    assert (done["state"], done["result"], done["attempt"]) == ("succeeded", version, 2)
    assert listed_after == [version]
    assert not list((data_dir / "datasets" / ".staging").glob(f"{version}.*"))
    assert not (data_dir / ".staging" / f"curate-{version}").exists()


def test_killing_a_workers_children_fails_the_job_naming_the_signal(curation_setup) -> None:
    data_dir, inputs, config = curation_setup
    store = JobStore(data_dir / "jobs")
    service = start_service(data_dir, config=config, env=slow_curation_env(60))
    try:
        client = MidmixClient(service.url, retries=0)
        job_id = client.curate({"inputs": [str(inputs)]})["id"]
        worker = paused_worker(store, job_id, data_dir)
        children = worker.children(recursive=True)
        for child in children:
            child.send_signal(signal.SIGKILL)
        job = client.wait(job_id, poll=0.1, timeout=15)
        wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, timeout=10)
        listed = client.datasets()
    finally:
        service.stop()
    assert children, "the paused curation had no child processes to kill"
    assert job["state"] == "failed"
    assert "of this job was killed by SIGKILL" in job["error"] and "Retry it to finish the same version" in job["error"]
    assert any(f"process {child.pid} " in job["error"] for child in children)
    assert listed == []


def test_cancel_kills_the_workers_whole_process_group_pool_included(curation_setup) -> None:
    data_dir, inputs, config = curation_setup
    store = JobStore(data_dir / "jobs")
    service = start_service(data_dir, config=config, env=slow_curation_env(60))
    try:
        client = MidmixClient(service.url, retries=0)
        job_id = client.curate({"inputs": [str(inputs)]})["id"]
        worker = paused_worker(store, job_id, data_dir)
        group = [worker, *worker.children(recursive=True)]
        cancelled = client.cancel(job_id)
        wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in group), timeout=10)
        listed = client.datasets()
    finally:
        service.stop()
    assert len(group) >= 4  # the worker, the pool's forkserver and its two worker processes
    assert cancelled["state"] == "cancelled" and listed == []


# --- a full disk during publication ---------------------------------------------------------------


def _spec() -> dict:
    def domain(value: str) -> dict:
        return {"column": "domain", "op": "==", "value": value}

    return {"name": "full-disk", "phases": [{"name": "stable", "token_budget": 120000, "components": [
        {"name": "web", "datasets": ["latest"], "select": domain("web"), "weight": 0.5},
        {"name": "code", "datasets": ["latest"], "select": domain("code"), "weight": 0.5}]}]}  # fmt: skip


@pytest.fixture
def small_mixtures_disk(tmp_path: Path):
    """``data/mixtures`` on a 2 MiB tmpfs, with a dataset beside it on the normal disk."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small filesystem (mount -t tmpfs); CI runs as root")
    data_dir = tmp_path / "data"
    write_sample_dataset(data_dir, SAMPLE_CORPUS, limit=400)
    mixtures = data_dir / "mixtures"
    mixtures.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mixtures)], check=True)
    try:
        yield data_dir, mixtures
    finally:
        subprocess.run(["umount", "-l", str(mixtures)], check=False)


def test_a_full_disk_during_publication_fails_cleanly_and_a_retry_completes_once_space_is_back(
    small_mixtures_disk,
) -> None:
    data_dir, mixtures = small_mixtures_disk
    filler = mixtures / "filler"
    free = os.statvfs(mixtures)
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - (64 << 10)))  # leave 64 KiB
    service = start_service(data_dir)
    try:
        client = MidmixClient(service.url, retries=0)
        failed = client.wait(client.build(_spec())["id"], poll=0.1, timeout=60)
        listed_full = client.mixtures()
        staged_full = sorted(path.name for path in (mixtures / ".staging").iterdir() if path.is_dir())
        filler.unlink()
        client.retry(failed["id"])
        done = client.wait(failed["id"], poll=0.1, timeout=60)
        listed = [mixture["version"] for mixture in client.mixtures()]
    finally:
        service.stop()
    assert failed["state"] == "failed"
    assert failed["error"].startswith(f"no space left on the device holding {mixtures} while publishing mix-")
    assert "nothing was published: free space there and run again" in failed["error"]
    assert (listed_full, staged_full) == ([], [])
    assert done["state"] == "succeeded" and listed == [done["result"]]
    assert failed["error"].split("while publishing ")[1].startswith(done["result"])


# --- Slurm ---------------------------------------------------------------------------------------

FAKE_SLURM = {
    # Records each submission (its arguments and the job name sbatch takes from the environment) and queues it.
    "sbatch": """#!/usr/bin/env bash
set -euo pipefail
n=$(( $(ls "{dir}" | grep -c '\\.args$' || true) + 101 ))
printf '%s\\n' "${{@:1:$#-1}}" "name=${{SBATCH_JOB_NAME:-}}" > "{dir}/$n.args"
echo "$n" >> "{dir}/queue"
echo "Submitted batch job $n"
""",
    "squeue": """#!/usr/bin/env bash
cat "{dir}/queue" 2>/dev/null || true
""",
    "scancel": """#!/usr/bin/env bash
echo "$@" >> "{dir}/scancel.log"
: > "{dir}/queue"
""",
}


@pytest.fixture
def slurm_service(curation_setup, tmp_path: Path):
    data_dir, corpus, config = curation_setup
    config = {"input_roots": config["input_roots"]}
    record_dir = tmp_path / "slurm"
    bin_dir = tmp_path / "bin"
    record_dir.mkdir()
    bin_dir.mkdir()
    for name, script in FAKE_SLURM.items():
        (bin_dir / name).write_text(script.format(dir=record_dir))
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR)
    settings = config | {"curation_executor": {"kind": "slurm", "partition": "cpu"}, "slurm_poll_s": 0.2}
    service = start_service(data_dir, config=settings, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    yield service, corpus, record_dir, settings
    service.stop()


def _submitted_names(record_dir: Path) -> set[str]:
    return {line for path in record_dir.glob("*.args") for line in path.read_text().split() if line.startswith("name=")}


def test_a_slurm_curation_stays_running_until_its_version_is_published(slurm_service) -> None:
    service, corpus, record_dir, settings = slurm_service
    client = MidmixClient(service.url, retries=0)
    request = {"inputs": [str(corpus)]}
    job_id = client.curate(request)["id"]
    wait_until(lambda: (client.job(job_id)["step"] or "").startswith("slurm:"), what="the Slurm jobs submitted")
    time.sleep(1.0)  # several polls of the queue
    waiting = client.job(job_id)
    # The cluster finishes: here, the same version published by a local run (the executor is not in the version).
    local = curation_config(CurationRequest.model_validate(request), ServiceSettings.model_validate(settings))
    manifest = curate_corpus(local.model_copy(update={"executor": LocalExecutor()}), service.data_dir)
    done = client.wait(job_id, poll=0.1, timeout=30)
    assert waiting["state"] == "running"
    assert waiting["step"] == f"slurm: 8 jobs queued or running (midmix-{job_id})"
    assert _submitted_names(record_dir) == {f"name=midmix-{job_id}"}
    assert (done["state"], done["result"]) == ("succeeded", manifest["version"])


def test_cancelling_a_slurm_curation_cancels_its_slurm_jobs(slurm_service) -> None:
    service, corpus, record_dir, _ = slurm_service
    store = JobStore(service.data_dir / "jobs")
    client = MidmixClient(service.url, retries=0)
    job_id = client.curate({"inputs": [str(corpus)], "quality": {"min_score": 0.2}})["id"]
    wait_until(lambda: (client.job(job_id)["step"] or "").startswith("slurm:"), what="the Slurm jobs submitted")
    worker = psutil.Process(store.get(job_id).worker_pid)
    cancelled = client.cancel(job_id)
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, timeout=10)
    assert (cancelled["state"], cancelled["error"]) == ("cancelled", None)
    assert (record_dir / "scancel.log").read_text().split() == [f"--name=midmix-{job_id}"]
    assert (record_dir / "queue").read_text() == ""
