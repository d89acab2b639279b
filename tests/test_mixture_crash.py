"""Crash safety: a build killed with SIGKILL publishes nothing and a rerun (any task count) completes it
with the same bytes; a build task whose process dies is run again and the version is the same."""

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


def _build(data_dir: Path, spec: Path, slow: float | None, tasks: int = 1) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "MIDMIX_TEST_SLOW_BUILD"}
    env.update(slow_build_env(slow) if slow else {"PYTHONPATH": str(ROOT)})
    return subprocess.Popen(
        [sys.executable, "-m", "midmix", "build", str(spec), "--data-dir", str(data_dir), "--tasks", str(tasks)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_staged_shards(data_dir: Path, process: subprocess.Popen, count: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((data_dir / ".staging").glob("build-mix-*/shards/phases/stable/*.parquet"))) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    pytest.fail("the build never staged a shard")


def _published(data_dir: Path) -> list[Path]:
    root = data_dir / "mixtures"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _check_version(data_dir: Path, out: str) -> dict:
    (version_dir,) = _published(data_dir)
    assert f"mixture {version_dir.name} (crash)" in out
    manifest = json.loads((version_dir / "manifest.json").read_text())
    shards = [s for c in manifest["phases"][0]["components"] for s in c["shards"]] + list(manifest["eval"].values())
    assert len(shards) == 12
    for shard in shards:
        path = version_dir / shard["path"]
        assert (sha256_file(path), path.stat().st_size) == (shard["sha256"], shard["bytes"])
    listed = {p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*.parquet")}
    assert listed == {s["path"] for s in shards}
    assert not list((data_dir / ".staging").glob("build-*")) and not (data_dir / "mixtures" / ".staging" / version_dir.name).exists()
    with Catalog(data_dir) as catalog:
        assert [m["version"] for m in catalog.mixtures()] == [version_dir.name]
    return manifest


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The version built in one task, start to end."""
    root = tmp_path_factory.mktemp("reference")
    write_sample_dataset(root / "data", SAMPLE, limit=600)
    build = _build(root / "data", _write_spec(root / "spec.json"), slow=None)
    out, err = build.communicate(timeout=120)
    assert build.returncode == 0, err
    return _check_version(root / "data", out)


def test_kill_9_mid_build_leaves_nothing_visible_and_a_rerun_with_other_tasks_completes(tmp_path, reference):
    data_dir = tmp_path / "data"
    write_sample_dataset(data_dir, SAMPLE, limit=600)
    spec = _write_spec(tmp_path / "spec.json")

    process = _build(data_dir, spec, slow=2.0)
    _wait_for_staged_shards(data_dir, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert _published(data_dir) == []
    with Catalog(data_dir) as catalog:
        assert catalog.mixtures() == []

    rerun = _build(data_dir, spec, slow=None, tasks=3)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert _check_version(data_dir, out) == reference


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def test_a_build_task_whose_process_dies_is_run_again_and_the_bytes_are_the_same(tmp_path, reference):
    """Two pool workers; one is SIGKILLed while it writes shards. The stage reruns its incomplete tasks."""
    data_dir = tmp_path / "data"
    write_sample_dataset(data_dir, SAMPLE, limit=600)
    process = _build(data_dir, _write_spec(tmp_path / "spec.json"), slow=1.5, tasks=2)
    _wait_for_staged_shards(data_dir, process)
    # The pool's workers are the forkserver's children: the build's grandchildren.
    workers = [pid for child in _descendants(process.pid) for pid in _descendants(child)]
    assert workers, "no pool worker found"
    os.kill(workers[0], signal.SIGKILL)
    (log,) = data_dir.glob(".staging/build-*/logs/tasks-2/datatrove.log")
    deadline = time.monotonic() + 60
    while "midmix: stage 3-write: tasks [" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "failed (BrokenProcessPool); running them again (1/2)" in log.read_text()
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    assert _check_version(data_dir, out) == reference
