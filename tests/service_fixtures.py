"""Service test helpers: a real ``midmix serve`` process on a free loopback port, and a
mixture version directory written exactly per the contract (for read-path tests that must not
wait for a build)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import SHARD_ROW_GROUP_ROWS, SHARD_SCHEMA

REPO = Path(__file__).resolve().parents[1]
SLOW_BUILD_HOOK = Path(__file__).resolve().parent / "slow_build"


def slow_build_env(seconds: float) -> dict[str, str]:
    """Environment for a subprocess whose mixture builds pause ``seconds`` after each shard (tests/slow_build)."""
    return {"MIDMIX_TEST_SLOW_BUILD": str(seconds), "PYTHONPATH": os.pathsep.join([str(SLOW_BUILD_HOOK), str(REPO)])}


def slow_curation_env(seconds: float) -> dict[str, str]:
    """Environment for a subprocess whose curations pause ``seconds`` in each third-stage task (tests/slow_build)."""
    return {"MIDMIX_TEST_SLOW_CURATION": str(seconds), "PYTHONPATH": os.pathsep.join([str(SLOW_BUILD_HOOK), str(REPO)])}


def serve_command(data_dir: Path, port: int, *extra: str) -> list[str]:
    """``midmix serve`` on 127.0.0.1 (unless ``extra`` names another --host) over ``data_dir``."""
    return [sys.executable, "-m", "midmix", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), *extra]  # fmt: skip


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without MIDMIX_ settings (so the machine's own cannot leak in), plus ``extra``."""
    return {key: value for key, value in os.environ.items() if not key.startswith("MIDMIX_")} | (extra or {})


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningService:
    """A ``midmix serve`` subprocess; ``kill`` simulates a crash, ``stop`` a clean shutdown."""

    url: str
    process: subprocess.Popen
    data_dir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_service(
    data_dir: Path,
    config: dict | None = None,
    workers: int = 1,
    job_workers: int = 1,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> RunningService:
    """Start ``midmix serve`` on 127.0.0.1 (``env`` added to a MIDMIX_-free environment); wait for ``/health``."""
    port = port or free_port()
    command = serve_command(data_dir, port, "--workers", str(workers), "--job-workers", str(job_workers))
    if config is not None:
        config_path = data_dir.parent / f"service-{port}.json"
        config_path.write_text(json.dumps(config))
        command += ["--config", str(config_path)]
    process = subprocess.Popen(command, cwd=REPO, env=clean_environment(env), stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"midmix serve exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return RunningService(url, process, data_dir)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("midmix serve did not answer /health within 30 s")


def write_fixture_mixture(data_dir: Path, version: str = "mix-00000000000000aa", rows: int = 3000) -> dict:
    """Publish a small two-phase mixture version by hand, per the manifest contract; returns the manifest."""
    root = data_dir / "mixtures" / version
    phases = []
    for index, (phase, components) in enumerate((("stable", ("web", "code")), ("anneal", ("math",)))):
        entries = []
        for offset, component in enumerate(components):
            relative = f"phases/{phase}/{component}-00000.parquet"
            n_tokens = [8 + (row + offset) % 40 for row in range(rows)]
            table = pa.Table.from_pydict(
                {
                    "input_ids": [[(row * 7 + k) % 256 for k in range(n)] for row, n in enumerate(n_tokens)],
                    "doc_id": [f"{component}-{row}" for row in range(rows)],
                    "source": [component] * rows,
                    "domain": [component] * rows,
                    "quality": [row / rows for row in range(rows)],
                    "n_tokens": n_tokens,
                },
                schema=SHARD_SCHEMA,
            )
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / relative, row_group_size=SHARD_ROW_GROUP_ROWS)
            shard = {
                "path": relative,
                "sha256": sha256_file(root / relative),
                "bytes": (root / relative).stat().st_size,
                "rows": rows,
                "tokens": sum(n_tokens),
            }
            entries.append(
                {
                    "name": component,
                    "weight": 1 / len(components),
                    "target_tokens": sum(n_tokens),
                    "realized_tokens": sum(n_tokens),
                    "docs": rows,
                    "unique_docs": rows,
                    "epochs": 1.0,
                    "general": False,
                    "selection": None,
                    "thresholds": {},
                    "shards": [shard],
                }
            )
        phases.append(
            {
                "name": phase,
                "index": index,
                "token_budget": sum(c["realized_tokens"] for c in entries),
                "seq_len": 128,
                "rope_theta": 10000.0,
                "lr": {},
                "reserved_general_ratio": 0.0,
                "curriculum": {"key": "quality", "direction": "asc"},
                "tokens": sum(c["realized_tokens"] for c in entries),
                "docs": rows * len(entries),
                "components": entries,
            }
        )
    (root / "eval").mkdir()
    pq.write_table(pa.Table.from_pylist([], schema=SHARD_SCHEMA), root / "eval" / "math-00000.parquet")
    (root / "tokenizer.json").write_text('{"fixture": true}')
    manifest = {
        "kind": "mixture",
        "version": version,
        "name": "fixture",
        "code_version": "0.1.0",
        "tokenizer": {
            "kind": "hf",
            "sha256": sha256_file(root / "tokenizer.json"),
            "vocab_size": 257,
            "eos_id": 256,
            "path": "tokenizer.json",
        },
        "phases": phases,
        "eval": {
            "math": {
                "path": "eval/math-00000.parquet",
                "sha256": sha256_file(root / "eval/math-00000.parquet"),
                "bytes": (root / "eval/math-00000.parquet").stat().st_size,
                "rows": 0,
                "tokens": 0,
            }
        },
        "lineage": {"datasets": {}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
