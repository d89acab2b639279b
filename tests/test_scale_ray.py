"""Curation on a real local Ray cluster gives the same dataset version and rows as a local run.

The test starts its own Ray head (``ray start --head`` on 127.0.0.1, two CPUs) in a fresh
process group with its own temp dir, and ends exactly that group in teardown, so it never
touches another Ray instance on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from midmix.pipelines.curation.config import CurationConfig, LocalExecutor, RayExecutor
from midmix.pipelines.curation.curate import curate_corpus
from tests.conftest import make_data_dir

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

# Ray reads this once, at import: with it a driver uses 127.0.0.1 as its own address, so every
# connection stays on loopback (scripts/test.sh exports it as well).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' (it is in the test extra)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_start_command(port: int, temp_dir: str) -> list[str]:
    """``ray start --head`` bound to loopback, with every listening port chosen free up front."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return [
        ray_bin,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a fresh single-node Ray cluster on 127.0.0.1; torn down by process group."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must fit
    # Both the head and this driver need it, or the driver dials the machine's public address.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Ray workers inherit the head's environment; datatrove writes task logs under TMPDIR/ray_logs.
    env = {**os.environ, "TMPDIR": temp_dir}
    log_path = Path(temp_dir) / "ray-start.log"
    # A file, not a pipe: the daemons `ray start` leaves behind inherit it and would hold a pipe open.
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            ray_start_command(port, temp_dir), env=env, start_new_session=True, stdout=log, stderr=log
        )
        head.wait(timeout=120)
    address = f"127.0.0.1:{port}"
    try:
        assert head.returncode == 0, log_path.read_text()
        ray.init(address=address, _node_ip_address="127.0.0.1", logging_level="ERROR", log_to_driver=False)
        patch.setenv("RAY_ADDRESS", address)  # curation code that calls ray.init() joins this cluster
        yield address
    finally:
        ray.shutdown()
        _end_process_group(head.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
        patch.undo()


def _end_process_group(pgid: int) -> None:
    """SIGTERM the Ray head's own process group, then SIGKILL what is left after a grace period."""
    for sig, grace_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_the_ray_cluster_listens_on_loopback_only(ray_cluster):
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert [node["NodeManagerAddress"] for node in nodes] == ["127.0.0.1"]
    assert ray.cluster_resources()["CPU"] == 2.0


def split_corpus(corpus: Path, out_dir: Path, parts: int, every: int) -> list[str]:
    """Every ``every``-th line of ``corpus`` dealt round-robin into ``parts`` JSONL files.

    Each file is one input unit, so each lands in its own task.
    """
    out_dir.mkdir(parents=True)
    lines = corpus.read_bytes().splitlines(keepends=True)[::every]
    paths = [out_dir / f"part-{index}.jsonl" for index in range(parts)]
    for index, path in enumerate(paths):
        path.write_bytes(b"".join(lines[index::parts]))
    return [str(path) for path in paths]


def plant_cross_task_duplicates(inputs: list[str]) -> tuple[str, str]:
    """Copy a document of part 0 into part 1 twice: exactly, and with one word changed.

    The copies land in a different task than the original, so only a dedup stage with a global
    view can cluster them. Returns (original id, near-duplicate id).
    """
    first, second = Path(inputs[0]), Path(inputs[1])
    records = [json.loads(line) for line in first.read_text().splitlines()]
    original = next(r for r in records if r["domain"] == "web" and r["lang"] == "en" and len(r["text"].split()) > 300)
    words = original["text"].split(" ")
    words[len(words) // 2] = "zebra"
    exact = {**original, "id": "planted-exact"}
    near = {**original, "id": "planted-near", "text": " ".join(words)}
    with open(second, "a") as handle:
        handle.write(json.dumps(exact) + "\n" + json.dumps(near) + "\n")
    return original["id"], near["id"]


def read_rows(manifest: dict, data_dir: Path, folder: str) -> list[dict]:
    version_dir = data_dir / "datasets" / manifest["version"]
    parts = sorted((version_dir / folder).glob("*.parquet"))
    return [row for part in parts for row in pq.read_table(part).to_pylist()]


@dataclass(frozen=True)
class Runs:
    """The same corpus curated locally and on Ray, with the ids of the planted cross-task copies."""

    local: dict
    local_dir: Path
    ray: dict
    ray_dir: Path
    original_id: str
    near_id: str


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory, default_models_dir, corpus_subset) -> Runs:
    root = tmp_path_factory.mktemp("ray-vs-local")
    inputs = split_corpus(corpus_subset, root / "inputs", parts=2, every=2)  # 324 docs: keeps the test short
    original_id, near_id = plant_cross_task_duplicates(inputs)
    local_dir = make_data_dir(root / "local", default_models_dir)
    ray_dir = make_data_dir(root / "ray", default_models_dir)
    local = curate_corpus(CurationConfig(inputs=inputs, executor=LocalExecutor(tasks=2, workers=1)), local_dir)
    on_ray = curate_corpus(CurationConfig(inputs=inputs, executor=RayExecutor(kind="ray", tasks=2)), ray_dir)
    return Runs(local, local_dir, on_ray, ray_dir, original_id, near_id)


def test_ray_run_gives_the_same_version_and_rows_as_a_local_run(runs):
    assert runs.ray["version"] == runs.local["version"]
    assert runs.ray["counts"] == runs.local["counts"]
    assert runs.ray["steps"] == runs.local["steps"]
    assert read_rows(runs.ray, runs.ray_dir, "data") == read_rows(runs.local, runs.local_dir, "data")
    assert read_rows(runs.ray, runs.ray_dir, "dropped") == read_rows(runs.local, runs.local_dir, "dropped")
    assert [f["sha256"] for f in runs.ray["files"]] == [f["sha256"] for f in runs.local["files"]]


def test_ray_dedup_clusters_duplicates_that_sit_in_different_tasks(runs):
    rows = read_rows(runs.ray, runs.ray_dir, "data") + read_rows(runs.ray, runs.ray_dir, "dropped")
    by_id = {row["id"]: row for row in rows}
    planted = (runs.original_id, "planted-exact", runs.near_id)
    assert {by_id[doc]["dup_cluster"] for doc in planted} == {by_id[runs.original_id]["dup_cluster"]}
    assert [by_id[doc]["dup_cluster_size"] for doc in planted] == [3, 3, 3]
    assert sorted(by_id[doc].get("drop_step") or "kept" for doc in planted) == ["dedup", "dedup", "kept"]


def test_ray_run_leaves_no_work_files(runs):
    staging = runs.ray_dir / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
