"""Jobs through the real service: a real sample dataset, real builds in worker processes,
persistence across a killed service, de-duplication of identical builds, and cancel."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from midmix.errors import ConflictError
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.build import mixture_version
from midmix.pipelines.mixtures.spec import MixtureSpec
from midmix.resources import SAMPLE_CORPUS
from midmix.service.client import MidmixClient
from midmix.service.jobs.runner import process_alive
from midmix.service.jobs.store import JobStore
from tests.sample_dataset import write_sample_dataset
from tests.service_fixtures import RunningService, slow_build_env, start_service

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

CORPUS = SAMPLE_CORPUS


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


@pytest.fixture(scope="module")
def slow_service(tmp_path_factory: pytest.TempPathFactory):
    """One service whose builds pause 1.5 s per shard, so jobs are still running when we act."""
    data_dir = tmp_path_factory.mktemp("slow") / "data"
    write_sample_dataset(data_dir, CORPUS, limit=400)
    service = start_service(data_dir, env=slow_build_env(1.5))
    yield service
    service.stop()


def expected_version(data_dir: Path, body: dict) -> str:
    with Catalog(data_dir) as catalog:
        return mixture_version(MixtureSpec.model_validate(body), catalog)


def staged(data_dir: Path, version: str) -> list[str]:
    """A build's work folder and publication staging (a build in progress, or a killed build's leftovers)."""
    work = data_dir / ".staging" / f"build-{version}"
    staging = [path.name for path in (data_dir / "mixtures" / ".staging").glob(f"{version}.*") if path.is_dir()]
    return ([work.name] if work.exists() else []) + staging


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


def test_identical_concurrent_builds_share_one_job(slow_service: RunningService) -> None:
    client = MidmixClient(slow_service.url, retries=0)
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(client.build(spec("twins")))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = client.wait(answers[0]["id"], poll=0.1, timeout=90)
    assert len({answer["id"] for answer in answers}) == 1
    assert [entry["id"] for entry in client.jobs() if entry["id"] == job["id"]] == [job["id"]]
    assert job["state"] == "succeeded"
    assert job["result"] == expected_version(slow_service.data_dir, spec("twins"))
    assert job["result"] in published(slow_service.data_dir)


def test_cancel_kills_the_worker_publishes_nothing_and_retry_completes(slow_service: RunningService) -> None:
    data_dir = slow_service.data_dir
    store = JobStore(data_dir / "jobs")
    client = MidmixClient(slow_service.url, retries=0)
    job_id = client.build(spec("cancelled"))["id"]
    wait_until(lambda: client.job(job_id)["step"] not in (None, "starting"))
    worker = store.get(job_id).worker_pid
    cancelled = client.cancel(job_id)
    wait_until(lambda: not process_alive(worker, None), timeout=10)
    version = expected_version(data_dir, spec("cancelled"))
    assert cancelled["state"] == client.job(job_id)["state"] == "cancelled"
    assert client.cancel(job_id) == client.job(job_id)  # a repeated cancel (a client retry) answers the same
    assert version not in published(data_dir)
    done = client.wait(client.retry(job_id)["id"], poll=0.1, timeout=90)
    assert (done["state"], done["result"]) == ("succeeded", version)
    assert staged(data_dir, version) == []
    with pytest.raises(ConflictError, match="already succeeded"):
        client.cancel(job_id)


def test_running_job_survives_a_killed_service_as_interrupted_then_retries_to_the_same_version(data_dir: Path) -> None:
    store = JobStore(data_dir / "jobs")
    slow = start_service(data_dir, env=slow_build_env(5))
    client = MidmixClient(slow.url, retries=0)
    version = expected_version(data_dir, spec("restarted"))
    job_id = client.build(spec("restarted"))["id"]
    wait_until(lambda: list((data_dir / ".staging" / f"build-{version}").glob("shards/**/*.parquet")))
    worker = store.get(job_id).worker_pid
    slow.kill()
    wait_until(lambda: not process_alive(worker, None), timeout=10)
    assert store.get(job_id).state == "running"  # nobody was left to record the crash
    assert staged(data_dir, version) == [f"build-{version}"]  # the killed build's work, never listed

    service = start_service(data_dir)
    try:
        client = MidmixClient(service.url, retries=0)
        interrupted = client.job(job_id)
        listed_before_retry = client.mixtures()
        retried = client.retry(job_id)
        done = client.wait(job_id, poll=0.1, timeout=60)
    finally:
        service.stop()
    assert interrupted["state"] == "interrupted"
    assert "service process running this job died" in interrupted["error"]
    assert listed_before_retry == []
    assert (retried["id"], retried["state"], retried["attempt"]) == (job_id, "queued", 2)
    assert (done["state"], done["result"]) == ("succeeded", version)
    assert published(data_dir) == [version]
    assert staged(data_dir, version) == []


def test_a_build_the_data_cannot_supply_fails_with_the_planner_message(slow_service: RunningService) -> None:
    body = spec("too-big")
    body["phases"][1]["token_budget"] = 50_000_000
    client = MidmixClient(slow_service.url, retries=0)
    job = client.wait(client.build(body)["id"], poll=0.1, timeout=60)
    assert job["state"] == "failed"
    assert "anneal" in job["error"] and "epochs" in job["error"]


class AnswerDroppingProxy:
    """A loopback HTTP proxy to a real service that forwards requests but drops the first answers
    to the given method: the client sees the connection close as if the network lost the answer
    after the service had acted on the request."""

    def __init__(self, upstream: str, method: str, drops: int = 1):
        self.upstream = upstream
        self.method = method
        self.drops = drops
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Idempotency-Key)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, proxy.upstream + self.path, content=body, headers=headers)
                if self.command == proxy.method and proxy.drops > 0:
                    proxy.drops -= 1
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_lost_answer_to_retry_or_cancel_is_retried_safely(slow_service: RunningService) -> None:
    body = spec("lost-answers")
    body["phases"][1]["token_budget"] = 50_000_000  # fails in the planner, quickly
    direct = MidmixClient(slow_service.url, retries=0)
    failed = direct.wait(direct.build(body)["id"], poll=0.1, timeout=60)
    assert failed["state"] == "failed"

    retry_proxy = AnswerDroppingProxy(slow_service.url, "POST")
    try:
        retried = MidmixClient(retry_proxy.url, retries=3, backoff=0.05).retry(failed["id"])
    finally:
        retry_proxy.close()
    slow_build = direct.build(spec("lost-cancel"))
    cancel_proxy = AnswerDroppingProxy(slow_service.url, "DELETE")
    try:
        cancelled = MidmixClient(cancel_proxy.url, retries=3, backoff=0.05).cancel(slow_build["id"])
    finally:
        cancel_proxy.close()

    # The retry was sent twice with one key: the second attempt got the first one's job, not a 409.
    assert [(method, key is not None) for method, _, key in retry_proxy.seen] == [("POST", True), ("POST", True)]
    assert len({key for _, _, key in retry_proxy.seen}) == 1
    assert (retried["id"], retried["attempt"]) == (failed["id"], 2)
    # The cancel was sent twice: the second answers with the cancelled job instead of a 409.
    assert [method for method, _, _ in cancel_proxy.seen] == ["DELETE", "DELETE"]
    assert (cancelled["id"], cancelled["state"]) == (slow_build["id"], "cancelled")
