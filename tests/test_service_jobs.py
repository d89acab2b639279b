"""Jobs through the real service: a real sample dataset, real builds in worker processes,
persistence across a killed service, de-duplication of identical builds, and cancel."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from midmix.errors import ConflictError
from midmix.hashing import sha256_file
from pipelines.catalog import Catalog
from pipelines.mixture.build import mixture_version
from pipelines.mixture.shards import TEST_SLOW_ENV
from pipelines.mixture.sample_dataset import write_sample_dataset
from pipelines.mixture.spec import MixtureSpec
from service.client import MidmixClient
from service.jobs.runner import process_alive
from service.jobs.store import JobStore
from tests.service_fixtures import REPO, start_service

CORPUS = REPO / "data" / "sample-corpus" / "corpus.jsonl.gz"


def spec(name: str) -> dict:
    """A small two-phase spec over the latest dataset (byte tokens)."""
    def domain(value: str) -> dict:
        return {"column": "domain", "op": "==", "value": value}

    return {
        "name": name,
        "phases": [
            {"name": "stable", "token_budget": 60000, "components": [
                {"name": "web", "datasets": ["latest"], "select": domain("web"), "weight": 0.5},
                {"name": "code", "datasets": ["latest"], "select": domain("code"), "weight": 0.5}]},
            {"name": "anneal", "token_budget": 20000, "components": [
                {"name": "math", "datasets": ["latest"], "select": domain("math"), "weight": 1.0}]},
        ],
    }  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_sample_dataset(tmp_path / "data", CORPUS, limit=400)
    return tmp_path / "data"


def expected_version(data_dir: Path, body: dict) -> str:
    with Catalog(data_dir) as catalog:
        return mixture_version(MixtureSpec.model_validate(body), catalog)


def published(data_dir: Path) -> list[str]:
    """Published mixture versions (the empty ``.staging`` directory is not one)."""
    root = data_dir / "mixtures"
    return sorted(name for name in os.listdir(root) if not name.startswith(".")) if root.exists() else []


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_build_through_the_service_publishes_the_local_version(data_dir: Path, tmp_path: Path) -> None:
    service = start_service(data_dir)
    try:
        client = MidmixClient(service.url, retries=0)
        plan = client.plan(spec("served"))
        seen: list[dict] = []
        job = client.wait(client.build(spec("served"))["id"], poll=0.1, timeout=60, on_progress=seen.append)
        version = job["result"]
        manifest = client.manifest(version)
        shards = client.shards(version, "stable")
        downloaded = [client.download(version, shard["path"], tmp_path / shard["name"]) for shard in shards]
        diff = client.diff(version, version)
        listed = [job["id"] for job in client.jobs()]
    finally:
        service.stop()
    assert [phase["name"] for phase in plan["phases"]] == ["stable", "anneal"]
    assert (job["state"], job["progress"], job["error"]) == ("succeeded", 100.0, None)
    assert version == expected_version(data_dir, spec("served"))
    assert seen[-1] == job and listed == [job["id"]]
    assert manifest["phases"][0]["tokens"] >= 60000
    assert [shard["component"] for shard in shards] == ["web", "code"]
    assert [sha256_file(path) for path in downloaded] == [shard["sha256"] for shard in shards]
    assert all(phase["tokens_delta"] == 0 for phase in diff["phases"])


def test_identical_concurrent_builds_share_one_job(data_dir: Path) -> None:
    service = start_service(data_dir, env={TEST_SLOW_ENV: "0.5"})
    try:
        client = MidmixClient(service.url, retries=0)
        answers: list[dict] = []
        threads = [threading.Thread(target=lambda: answers.append(client.build(spec("twins")))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        job = client.wait(answers[0]["id"], poll=0.1, timeout=60)
        jobs = client.jobs()
    finally:
        service.stop()
    assert len({answer["id"] for answer in answers}) == 1
    assert [entry["id"] for entry in jobs] == [job["id"]]
    assert job["state"] == "succeeded"
    assert published(data_dir) == [job["result"]]


def test_cancel_stops_the_worker_and_publishes_nothing(data_dir: Path) -> None:
    service = start_service(data_dir, env={TEST_SLOW_ENV: "5"})
    store = JobStore(data_dir / "jobs")
    try:
        client = MidmixClient(service.url, retries=0)
        job_id = client.build(spec("cancelled"))["id"]
        wait_until(lambda: client.job(job_id)["step"] not in (None, "starting"))
        worker = store.get(job_id).worker_pid
        cancelled = client.cancel(job_id)
        wait_until(lambda: not process_alive(worker, None), timeout=10)
        with pytest.raises(ConflictError, match="already cancelled"):
            client.cancel(job_id)
        final = client.job(job_id)
    finally:
        service.stop()
    assert cancelled["state"] == final["state"] == "cancelled"
    assert published(data_dir) == []
    assert not (data_dir / "mixtures" / ".staging" / expected_version(data_dir, spec("cancelled"))).exists()


def test_running_job_survives_a_killed_service_as_interrupted_then_retries_to_the_same_version(data_dir: Path) -> None:
    store = JobStore(data_dir / "jobs")
    slow = start_service(data_dir, env={TEST_SLOW_ENV: "5"})
    client = MidmixClient(slow.url, retries=0)
    job_id = client.build(spec("restarted"))["id"]
    wait_until(lambda: client.job(job_id)["step"] not in (None, "starting"))
    worker = store.get(job_id).worker_pid
    slow.kill()
    wait_until(lambda: not process_alive(worker, None), timeout=10)
    assert store.get(job_id).state == "running"  # nobody was left to record the crash

    service = start_service(data_dir)
    try:
        client = MidmixClient(service.url, retries=0)
        interrupted = client.job(job_id)
        retried = client.retry(job_id)
        done = client.wait(job_id, poll=0.1, timeout=60)
    finally:
        service.stop()
    assert interrupted["state"] == "interrupted"
    assert (retried["id"], retried["state"], retried["attempt"]) == (job_id, "queued", 2)
    assert done["state"] == "succeeded"
    assert done["result"] == expected_version(data_dir, spec("restarted"))
    assert published(data_dir) == [done["result"]]
    assert not (data_dir / "mixtures" / ".staging" / done["result"]).exists()


def test_a_build_the_data_cannot_supply_fails_with_the_planner_message(data_dir: Path) -> None:
    body = spec("too-big")
    body["phases"][1]["token_budget"] = 50_000_000
    service = start_service(data_dir)
    try:
        client = MidmixClient(service.url, retries=0)
        job = client.wait(client.build(body)["id"], poll=0.1, timeout=60)
    finally:
        service.stop()
    assert job["state"] == "failed"
    assert "anneal" in job["error"] and "epochs" in job["error"]
