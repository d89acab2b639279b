"""Safe on a network: deny by default, tokens by role, refusals to start, and tokens that stay put.

The route walk runs in-process (it reads the app's routes); every refusal is checked against a
real ``midmix serve`` on 127.0.0.1. Refusals to start exit before binding anything: the
non-loopback address they are given (192.0.2.1, TEST-NET-1) is not this machine's.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from fastapi import routing

from midmix.errors import MidmixError
from midmix.resources import SAMPLE_CORPUS
from midmix.service.app import PUBLIC_PATHS, create_app
from midmix.service.auth import require_read, require_write
from midmix.service.jobs.store import JobStore
from midmix.service.settings import ServiceSettings, check_exposure
from tests.conftest import REPO
from tests.sample_dataset import write_sample_dataset
from tests.service_fixtures import (
    RunningService,
    clean_environment,
    free_port,
    serve_command,
    slow_build_env,
    start_service,
    write_fixture_mixture,
)

VERSION = "mix-00000000000000aa"
READ, WRITE = "read-token-4c1b9e", "write-token-9f3a77"
NOT_HERE = "192.0.2.1"  # TEST-NET-1: never an address of this machine, so nothing can bind it
HTTP = httpx.Client(timeout=30)  # one client: building one per request costs ~50 ms


def _routes(app):
    """Every route with its path, methods and dependant, also inside included routers (FastAPI >= 0.16x)."""
    walk = getattr(routing, "iter_route_contexts", None)
    return list(walk(app.routes)) if walk else list(app.routes)


def _dependency_calls(dependant) -> set:
    calls = set()
    for sub in dependant.dependencies:
        calls |= {sub.call} | _dependency_calls(sub)
    return calls


def test_every_route_but_the_public_ones_needs_a_token_and_every_change_a_write_token(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(data_dir=tmp_path))
    unguarded, ungated_writes, seen = [], [], 0
    for route in _routes(app):
        if route.path in PUBLIC_PATHS:
            continue
        dependant = getattr(route, "dependant", None)
        calls = _dependency_calls(dependant) if dependant is not None else set()
        seen += 1
        if not calls & {require_read, require_write}:
            unguarded.append(route.path)
        if (route.methods or set()) - {"GET", "HEAD"} and require_write not in calls:
            ungated_writes.append((sorted(route.methods), route.path))
    assert seen >= 18
    assert unguarded == [], "routes anyone can call: add them to PROTECTED_ROUTERS in service/app.py"
    assert ungated_writes == [], "state-changing routes without require_write"


@pytest.mark.slow
def test_read_tokens_without_write_tokens_refuse_to_start(tmp_path: Path) -> None:
    answer = _serve_refusal(tmp_path, "127.0.0.1", env={"MIDMIX_READ_TOKENS": READ})
    assert answer.returncode == 2
    assert "read_tokens are set but write_tokens are not" in answer.stderr
    assert "set write_tokens (MIDMIX_WRITE_TOKENS or write_tokens_file)" in answer.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, ["set write_tokens", "set read_tokens"]),
        ({"MIDMIX_WRITE_TOKENS": WRITE}, ["set read_tokens (MIDMIX_READ_TOKENS or read_tokens_file), or public_reads"]),
    ],
    ids=["no tokens", "write tokens only"],
)
def test_a_non_loopback_address_without_tokens_refuses_to_start(tmp_path: Path, env: dict, names: list[str]) -> None:
    answer = _serve_refusal(tmp_path, NOT_HERE, env=env)
    assert answer.returncode == 2, answer.stderr
    assert answer.stderr.startswith(f"midmix serve: error: refusing to start: listening on {NOT_HERE} without")
    assert all(name in answer.stderr for name in names)
    assert "--insecure" in answer.stderr


@pytest.mark.slow
def test_insecure_starts_anyway_and_says_so_loudly(tmp_path: Path) -> None:
    answer = _serve_refusal(tmp_path, NOT_HERE, "--insecure")
    # It got past the checks and tried to bind (which fails: the address is not this machine's).
    assert "WARNING (--insecure): listening on 192.0.2.1 without write tokens" in answer.stderr
    assert "!" * 100 in answer.stderr
    assert "midmix serve: " + str(tmp_path / "data") in answer.stderr


def test_check_exposure_allows_loopback_and_full_tokens() -> None:
    assert check_exposure(ServiceSettings(), "127.0.0.1", insecure=False) == []
    assert check_exposure(ServiceSettings(), "localhost", insecure=False) == []
    full = ServiceSettings(write_tokens=[WRITE], read_tokens=[READ])
    assert check_exposure(full, NOT_HERE, insecure=False) == []
    public = ServiceSettings(write_tokens=[WRITE], public_reads=True)
    assert check_exposure(public, "0.0.0.0", insecure=False) == []


def test_compose_takes_tokens_from_secrets_and_its_service_refuses_to_start_without_them(tmp_path: Path) -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    service = compose["services"]["service"]
    environment = service["environment"]
    assert not {"MIDMIX_WRITE_TOKENS", "MIDMIX_READ_TOKENS"} & set(environment), "tokens must not be plain env"
    secrets = {f"/run/secrets/{name}" for name in service["secrets"]}
    assert {environment["MIDMIX_WRITE_TOKENS_FILE"], environment["MIDMIX_READ_TOKENS_FILE"]} <= secrets
    for name in service["secrets"]:
        assert compose["secrets"][name] == {"environment": name.upper()}
    host = service["command"][service["command"].index("--host") + 1]
    files = {key: value for key, value in environment.items() if key.endswith("_TOKENS_FILE")}
    empty = tmp_path / "empty"
    empty.write_text("")
    without = ServiceSettings(**{key.removeprefix("MIDMIX_").lower(): str(empty) for key in files})
    with pytest.raises(MidmixError, match="refusing to start"):
        check_exposure(without, host, insecure=False)
    (tmp_path / "write").write_text(f"{WRITE}\n")
    (tmp_path / "read").write_text(f"# trainers\n{READ}\n")
    with_secrets = ServiceSettings(write_tokens_file=tmp_path / "write", read_tokens_file=tmp_path / "read")
    assert (with_secrets.write_tokens, with_secrets.read_tokens) == ([WRITE], [READ])
    assert check_exposure(with_secrets, host, insecure=False) == []


def _serve_refusal(tmp_path: Path, host: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = serve_command(tmp_path / "data", free_port(), *extra)
    command[command.index("--host") + 1] = host
    return subprocess.run(
        command, cwd=REPO, env=clean_environment(env), capture_output=True, text=True, timeout=60, check=False
    )


# --- one guarded service for every refusal over HTTP ---------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A service with one input root, its write token from the environment and its read token from a
    file, serving a fixture mixture and a small dataset; its builds pause 30 s per shard."""
    root = tmp_path_factory.mktemp("guarded")
    data_dir = root / "data"
    write_fixture_mixture(data_dir, VERSION, rows=10)
    write_sample_dataset(data_dir, SAMPLE_CORPUS, limit=100)
    (root / "read-tokens").write_text(f"# trainers\n{READ}\n")
    inputs = root / "inputs"
    inputs.mkdir()
    (inputs / "corpus.jsonl").write_text('{"text": "hello"}\n')
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"text": "the server\'s secret"}\n')
    (inputs / "link.jsonl").symlink_to(outside / "secret.jsonl")
    config = {"read_tokens_file": str(root / "read-tokens"), "input_roots": [str(inputs)]}
    service = start_service(data_dir, config=config, env=slow_build_env(30) | {"MIDMIX_WRITE_TOKENS": WRITE})
    yield service, inputs, outside
    service.stop()


def _as(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _operations(url: str) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the OpenAPI schema, path parameters filled with valid values."""
    values = {"version": VERSION, "a": VERSION, "b": VERSION, "phase": "stable", "name": "web-00000.parquet",
              "path": "phases/stable/web-00000.parquet", "job_id": "build-000000000000"}  # fmt: skip
    schema = HTTP.get(f"{url}/openapi.json").json()
    return [
        (method.upper(), path.format(**values))
        for path, item in schema["paths"].items()
        for method in item
        if path not in PUBLIC_PATHS
    ]


@pytest.mark.slow
def test_without_a_token_every_operation_is_401_and_a_read_token_cannot_write(guarded) -> None:
    service, _, _ = guarded
    operations = _operations(service.url)
    anonymous = {op: HTTP.request(op[0], service.url + op[1], json={}).status_code for op in operations}
    reader = {
        op: HTTP.request(op[0], service.url + op[1], json={}, headers=_as(READ)).status_code
        for op in operations
        if op[0] not in ("GET", "HEAD")
    }
    wrong = HTTP.get(f"{service.url}/mixtures/{VERSION}", headers=_as("guess")).status_code
    assert len(operations) >= 18
    assert set(anonymous.values()) == {401}, anonymous
    assert set(reader.values()) == {403}, reader
    assert wrong == 401
    assert HTTP.get(f"{service.url}/mixtures/{VERSION}", headers=_as(READ)).status_code == 200
    assert HTTP.get(f"{service.url}/mixtures/{VERSION}", headers=_as(WRITE)).status_code == 200
    assert HTTP.get(f"{service.url}/health").status_code == 200


def _job_count(service: RunningService) -> int:
    return len(HTTP.get(f"{service.url}/jobs", params={"limit": 1000}, headers=_as(READ)).json())


def _curate(service: RunningService, body: dict) -> httpx.Response:
    return HTTP.post(f"{service.url}/datasets", json=body, headers=_as(WRITE))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"inputs": ["/etc/passwd"]}, "input '/etc/passwd' is not under an input root"),
        ({"inputs": ["corpus.jsonl"]}, "input 'corpus.jsonl' is not an absolute path under an input root"),
        ({"inputs": ["{inputs}/../outside/secret.jsonl"]}, "is not under an input root"),
        ({"inputs": ["{inputs}/link.jsonl"]}, "is not under an input root"),
        ({"inputs": ["http://169.254.169.254/latest/meta-data/"]}, "is not under an allowed URL prefix (none are configured)"),
        ({"inputs": ["file:///etc/hostname"]}, "input '/etc/hostname' is not under an input root"),
        ({"inputs": ["{inputs}/corpus.jsonl"], "decontam": {"eval_files": ["/etc/passwd"]}}, "decontam eval file"),
        ({"inputs": ["{inputs}/corpus.jsonl"], "quality": {"classifiers": {"fasttext_hq": "/root/model.bin"}}},
         "quality.classifiers.fasttext_hq '/root/model.bin'"),
        ({"inputs": ["{inputs}/corpus.jsonl"], "language": {"model": "s3://someone/lang.bin"}}, "language.model"),
        ({"inputs": ["{inputs}/corpus.jsonl"], "tokenizer": {"kind": "hf", "path": "/etc/tokenizer.json"}},
         "tokenizer path '/etc/tokenizer.json'"),
    ],
    ids=["absolute", "relative", "dotdot", "symlink", "url", "file-url", "eval", "model-path", "model-url", "tokenizer"],
)  # fmt: skip
def test_a_curation_naming_a_location_outside_the_roots_is_403_and_queues_nothing(guarded, body, named) -> None:
    service, inputs, _ = guarded
    body = json.loads(json.dumps(body).replace("{inputs}", str(inputs)))
    before = _job_count(service)
    answer = _curate(service, body)
    assert answer.status_code == 403, answer.text
    detail = answer.json()["detail"]
    assert named in detail
    assert "the operator allows more with the service setting input_" in detail
    assert _job_count(service) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"executor": {"kind": "slurm", "partition": "p", "sbatch_args": {"wrap": "id"}}}, "executor"),
        ({"executor": {"kind": "local", "tasks": 64}}, "executor"),
        ({"batch_size": 1}, "batch_size"),
    ],
    ids=["slurm", "local", "batch_size"],
)
def test_server_knobs_in_a_curation_are_422(guarded, body, field) -> None:
    service, inputs, _ = guarded
    before = _job_count(service)
    answer = _curate(service, {"inputs": [str(inputs / "corpus.jsonl")], **body})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(f"invalid request: body.{field}: Extra inputs are not permitted")
    assert _job_count(service) == before


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/mixtures", "/mixtures/plan"])
def test_a_mixture_tokenizer_outside_the_roots_is_403(guarded, route: str) -> None:
    service, _, _ = guarded
    spec = {"name": "m", "tokenizer": {"kind": "hf", "path": "/etc/passwd"}, "phases": [
        {"name": "p", "token_budget": 10, "components": [{"name": "c", "datasets": ["latest"], "weight": 1}]}]}  # fmt: skip
    before = _job_count(service)
    answer = HTTP.post(service.url + route, json=spec, headers=_as(WRITE))
    assert answer.status_code == 403
    assert answer.json()["detail"].startswith("tokenizer path '/etc/passwd' is not under an input root")
    assert _job_count(service) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/jobs/" + "a" * 5000, 422),
        ("DELETE", "/jobs/" + "a" * 5000, 422),
        ("POST", "/jobs/" + "a" * 5000 + "/retry", 422),
        ("GET", "/jobs/build-0000", 422),
        ("GET", "/jobs/build-000000000000", 404),
        ("DELETE", "/jobs/curate-ffffffffffff", 404),
        ("GET", "/mixtures/" + "m" * 5000, 422),
        ("GET", "/datasets/.hidden", 422),
        ("GET", f"/mixtures/{VERSION}/phases/{'p' * 300}/shards", 422),
        ("GET", f"/mixtures/{VERSION}/files/{'x/' * 1000}", 422),
    ],
)
def test_malformed_ids_are_422_and_unknown_ones_404(guarded, method: str, path: str, status: int) -> None:
    service, _, _ = guarded
    answer = HTTP.request(method, service.url + path, headers=_as(WRITE))
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]


@pytest.mark.slow
def test_idempotency_keys_are_checked(guarded) -> None:
    service, inputs, _ = guarded
    spec = {"inputs": [str(inputs / "corpus.jsonl")]}
    before = _job_count(service)
    bad = HTTP.post(f"{service.url}/datasets", json=spec, headers=_as(WRITE) | {"Idempotency-Key": "no spaces"})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]
    assert _job_count(service) == before


@pytest.mark.slow
def test_a_glob_that_reaches_outside_through_a_link_fails_the_job_in_the_worker(guarded) -> None:
    service, inputs, outside = guarded
    answer = _curate(service, {"inputs": [str(inputs / "l*.jsonl")], "decontam": {"enabled": False}})
    assert answer.status_code == 202  # the pattern itself is under the root
    job_id = answer.json()["id"]
    job = _wait_finished(service, job_id)
    assert job["state"] == "failed"
    assert job["error"].startswith(
        f"input file '{inputs / 'link.jsonl'}' is not under an input root (it leads to {outside / 'secret.jsonl'})"
    )
    assert len(HTTP.get(f"{service.url}/datasets", headers=_as(READ)).json()) == 1  # the fixture's only


def _wait_finished(service: RunningService, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = HTTP.get(f"{service.url}/jobs/{job_id}", headers=_as(READ)).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']}")


@pytest.mark.slow
def test_tokens_never_reach_a_job_worker(guarded) -> None:
    service, _, _ = guarded
    spec = {"name": "env", "phases": [{"name": "p", "token_budget": 20000, "components": [
        {"name": "all", "datasets": ["latest"], "weight": 1}]}]}  # fmt: skip
    job_id = HTTP.post(f"{service.url}/mixtures", json=spec, headers=_as(WRITE)).json()["id"]
    store = JobStore(service.data_dir / "jobs")
    deadline = time.monotonic() + 30
    while store.get(job_id).worker_pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = psutil.Process(store.get(job_id).worker_pid)
    environment, command = worker.environ(), " ".join(worker.cmdline())
    HTTP.delete(f"{service.url}/jobs/{job_id}", headers=_as(WRITE))
    leaked = [name for name, value in environment.items() if READ in value or WRITE in value]
    assert leaked == [] and READ not in command and WRITE not in command
    assert environment["MIDMIX_TEST_SLOW_BUILD"] == "30"  # the rest of the environment is passed on
