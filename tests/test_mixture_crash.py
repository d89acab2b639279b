"""Crash safety: a build killed with SIGKILL leaves no visible version, and a rerun completes it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midmix.hashing import sha256_file
from midmix.pipelines.catalog import Catalog
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset
from tests.service_fixtures import slow_build_env

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = SAMPLE_CORPUS
DOMAINS = ("web", "code", "math", "qa", "academic", "other")


def _write_spec(path: Path) -> Path:
    components = [
        {"name": d, "datasets": ["latest"], "weight": 1, "select": {"column": "domain", "op": "==", "value": d}} for d in DOMAINS
    ]
    spec = {"name": "crash", "normalize_weights": True, "eval": {"count": 3},
            "phases": [{"name": "stable", "token_budget": 120_000, "components": components}]}  # fmt: skip
    path.write_text(json.dumps(spec))
    return path


def _build(data_dir: Path, spec: Path, slow: float | None) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "MIDMIX_TEST_SLOW_BUILD"}
    env.update(slow_build_env(slow) if slow else {"PYTHONPATH": str(ROOT)})
    return subprocess.Popen(
        [sys.executable, "-m", "midmix", "build", str(spec), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_a_staged_shard(data_dir: Path, process: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        staged = list((data_dir / "mixtures" / ".staging").glob("mix-*/phases/stable/*.parquet"))
        if staged:
            return staged[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    pytest.fail("the build never staged a shard")


def test_kill_9_mid_build_leaves_nothing_visible_and_a_rerun_completes(tmp_path):
    data_dir = tmp_path / "data"
    write_sample_dataset(data_dir, SAMPLE, limit=600)
    spec = _write_spec(tmp_path / "spec.json")

    process = _build(data_dir, spec, slow=2.0)
    _wait_for_a_staged_shard(data_dir, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert [p.name for p in (data_dir / "mixtures").iterdir()] == [".staging"]
    with Catalog(data_dir) as catalog:
        assert catalog.mixtures() == []

    rerun = _build(data_dir, spec, slow=None)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    (version_dir,) = [p for p in (data_dir / "mixtures").iterdir() if p.name != ".staging"]
    assert f"mixture {version_dir.name} (crash)" in out
    manifest = json.loads((version_dir / "manifest.json").read_text())
    shards = [s for c in manifest["phases"][0]["components"] for s in c["shards"]] + list(manifest["eval"].values())
    assert len(shards) == 12
    for shard in shards:
        path = version_dir / shard["path"]
        assert (sha256_file(path), path.stat().st_size) == (shard["sha256"], shard["bytes"])
    listed = {p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*.parquet")}
    assert listed == {s["path"] for s in shards}
    assert not (data_dir / "mixtures" / ".staging" / version_dir.name).exists()
    with Catalog(data_dir) as catalog:
        assert [m["version"] for m in catalog.mixtures()] == [version_dir.name]
