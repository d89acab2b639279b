"""The training loop end to end over the real service: steps, exact resume, eval, metrics, bad input.

A two-phase mixture version is written per the manifest contract (docs/ARCHITECTURE.md) from
sample-corpus texts under the byte tokenizer, served by the real service app on 127.0.0.1,
and trained on with a tiny model on CPU in fp32, where runs are bit-for-bit reproducible.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import uvicorn

from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import SHARD_SCHEMA
from midmix.resources import SAMPLE_CORPUS
from midmix.service.app import create_app
from midmix.service.settings import ServiceSettings
from midmix.trainer.checkpoint import list_checkpoints
from midmix.trainer.config import TrainConfig
from midmix.trainer.metrics import read_metrics
from midmix.trainer.train import train

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

CORPUS = SAMPLE_CORPUS
VERSION = "mix-trainertest"
BYTE_EOS = 256


def corpus_docs(domain: str, count: int, max_bytes: int = 120) -> list[bytes]:
    """The first ``count`` sample-corpus texts of ``domain`` as UTF-8 bytes, cut to ``max_bytes``."""
    docs = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["domain"] == domain and len(record["text"]) > 20:
                docs.append(record["text"].encode("utf-8")[:max_bytes])
                if len(docs) == count:
                    break
    return docs


def write_shard(path: Path, docs: list[bytes], domain: str, source: str) -> dict:
    """One shard per SHARD_SCHEMA; returns its manifest entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "input_ids": [list(doc) for doc in docs],
            "doc_id": [f"{source}-{index}" for index in range(len(docs))],
            "source": [source] * len(docs),
            "domain": [domain] * len(docs),
            "quality": [0.5] * len(docs),
            "n_tokens": [len(doc) for doc in docs],
        },
        schema=SHARD_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=1024)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": len(docs), "tokens": sum(map(len, docs))}


def write_mixture(data_dir: Path, version: str = VERSION) -> dict:
    """A two-phase mixture: 'stable' (web 60% + code 40%, data repeated 3x, seq 32) and 'anneal' (math + qa, seq 64)."""
    root = data_dir / "mixtures" / version
    phase_specs = [
        ("stable", 32, 10000.0, {"warmup": 0.2, "stable": 0.8, "decay": 0.0, "shape": "linear", "final_lr_ratio": 1.0},
         [("web", corpus_docs("web", 30) * 3, 0.6), ("code", corpus_docs("code", 20) * 3, 0.4)]),
        ("anneal", 64, 40000.0, {"warmup": 0.0, "stable": 0.0, "decay": 1.0, "shape": "1-sqrt", "final_lr_ratio": 0.1},
         [("math", corpus_docs("math", 40), 0.5), ("qa", corpus_docs("qa", 40), 0.5)]),
    ]
    phases = []
    for index, (name, seq_len, theta, lr, components) in enumerate(phase_specs):
        entries = []
        for component, docs, weight in components:
            relative = f"phases/{name}/{component}-00000.parquet"
            shard = {"path": relative, **write_shard(root / relative, docs, component, component)}
            entries.append({"name": component, "weight": weight, "target_tokens": shard["tokens"],
                            "realized_tokens": shard["tokens"], "docs": shard["rows"], "unique_docs": shard["rows"],
                            "epochs": 1.0, "general": False, "selection": {}, "thresholds": {}, "shards": [shard]})
        tokens = sum(entry["realized_tokens"] for entry in entries)
        phases.append({"name": name, "index": index, "token_budget": tokens, "seq_len": seq_len, "rope_theta": theta,
                       "lr": lr, "reserved_general_ratio": 0.0, "curriculum": None, "tokens": tokens,
                       "docs": sum(entry["docs"] for entry in entries), "components": entries})
    evals = {}
    for domain in ("code", "web"):
        relative = f"eval/{domain}-00000.parquet"
        evals[domain] = {"path": relative, **write_shard(root / relative, corpus_docs(domain, 60)[-10:], domain, "eval")}
    manifest = {"kind": "mixture", "version": version, "name": "trainer-test", "code_version": "0.1.0",
                "tokenizer": {"kind": "bytes", "sha256": "x", "vocab_size": 257, "eos_id": BYTE_EOS, "path": None},
                "phases": phases, "eval": evals, "lineage": {"datasets": {}}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return manifest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedMixture:
    """The real service app on uvicorn in a thread, serving ``data_dir`` on a free loopback port."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(ServiceSettings(data_dir=data_dir))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServedMixture":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    manifest = write_mixture(data_dir)
    with ServedMixture(data_dir) as server:
        server.manifest = manifest
        yield server


def run_config(url: str, run_dir: Path, **overrides) -> TrainConfig:
    """A tiny CPU run: d_model 32, 2 layers, 8 sequences per step in micro-batches of 4."""
    values = {
        "service": {"url": url, "retries": 1},
        "mixture": VERSION,
        "cache": {"dir": run_dir.parent / "cache", "max_bytes": 10**8},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64},
        "peak_lr": 3e-3,
        "global_batch_size": 8,
        "micro_batch_size": 4,
        "num_workers": 0,
        "max_steps_per_phase": 6,
        "eval_sequences": 4,
        "log_every": 2,
        "checkpoint": {"dir": run_dir / "ckpt", "every": 2, "keep": 100},
        "device": "cpu",
        "cpu_threads": 1,
        "out_dir": run_dir / "out",
    }
    values.update(overrides)
    return TrainConfig.model_validate(values)


def step_records(run_dir: Path) -> list[dict]:
    return [record for record in read_metrics(run_dir / "out" / "metrics.jsonl") if record["kind"] == "step"]


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(list_checkpoints(run_dir / "ckpt")[-1], weights_only=False)["model"]


@pytest.fixture(scope="module")
def uninterrupted(served, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    summary = train(run_config(served.url, run_dir))
    return run_dir, summary


def test_run_trains_every_phase_with_schedule_eval_and_shares(uninterrupted):
    run_dir, summary = uninterrupted
    assert [phase["phase"] for phase in summary["phases"]] == ["stable", "anneal"]
    assert summary["global_steps"] == 12
    records = step_records(run_dir)
    assert [record["global_step"] for record in records] == list(range(12))
    assert [record["phase"] for record in records] == ["stable"] * 6 + ["anneal"] * 6
    # stable: warmup 0.2 of 6 steps = 1 step, then the peak; anneal decays 1-sqrt to 0.1 * peak.
    assert [record["lr"] for record in records[:6]] == pytest.approx([3e-3] * 6)
    assert records[-1]["lr"] == pytest.approx(3e-4)
    assert records[6]["lr"] == pytest.approx(3e-4 + 2.7e-3 * (1 - (1 / 6) ** 0.5))
    assert records[5]["tokens"] == 6 * 8 * 32 and records[11]["tokens"] == 6 * 8 * 32 + 6 * 8 * 64
    stable, anneal = summary["phases"]
    assert set(stable["eval"]) == {"code", "web"} and all(value > 0 for value in stable["eval"].values())
    shares = stable["shares"]["components"]
    assert shares["web"]["tokens"] + shares["code"]["tokens"] == stable["shares"]["tokens"]
    # 6 steps x 8 sequences x 32 tokens, less one EOS per document of up to 120 bytes.
    assert 6 * 8 * 32 * 120 / 121 - 1 <= stable["shares"]["tokens"] < 6 * 8 * 32
    assert shares["web"]["share"] == pytest.approx(0.6, abs=0.05)
    assert anneal["steps"] == 6
    assert (run_dir / "out" / "training.png").stat().st_size > 10_000
    # Shares are logged per window of log_every (2) steps, not as prefixes.
    windows = [record["shares"]["steps"] for record in records if "shares" in record]
    assert windows == [[0, 2], [2, 4], [4, 6]] * 2
    assert sum(r["shares"]["tokens"] for r in records[:6] if "shares" in r) == stable["shares"]["tokens"]
    # Decoded shards, laid-out streams and the blend order live in the cache folder, under its cap.
    decoded = run_dir.parent / "cache" / "decoded"
    assert any(decoded.glob("stream-*.npy")) and any(decoded.glob("*.ids.npy")) and any(decoded.glob("order-*.npy"))


def test_a_local_data_directory_trains_the_same_without_the_service(served, uninterrupted, tmp_path):
    """``data_dir`` (hosts without the service, e.g. the GPU check): same files, same run."""
    full_dir, _ = uninterrupted
    config = run_config("http://127.0.0.1:9", tmp_path / "local", data_dir=served.data_dir, phases=["stable"])
    train(config)
    assert [r["loss"] for r in step_records(tmp_path / "local")] == [r["loss"] for r in step_records(full_dir)[:6]]
    with pytest.raises(NotFoundError, match="mixture version 'mix-nope' is not in"):
        train(run_config("http://127.0.0.1:9", tmp_path / "missing", data_dir=served.data_dir, mixture="mix-nope"))


def test_loss_falls_on_repeated_data(served, tmp_path):
    # The stable phase shows each document 3 times; 30 steps cover about 1.3 passes.
    summary = train(run_config(served.url, tmp_path / "run", phases=["stable"], max_steps_per_phase=30, peak_lr=1e-2))
    losses = [record["loss"] for record in step_records(tmp_path / "run")]
    assert losses[0] == pytest.approx(5.55, abs=0.1)  # ln(257) = 5.549: an untrained model
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5
    assert summary["phases"][0]["eval"]["web"] < 4.0


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_phase_is_bit_identical(served, uninterrupted, tmp_path, workers):
    full_dir, _ = uninterrupted
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "ckpt").mkdir(parents=True)
    shutil.copy(full_dir / "ckpt" / "step-00000004.pt", resumed_dir / "ckpt")  # 4 of stable's 6 steps done
    train(run_config(served.url, resumed_dir, num_workers=workers))
    full, resumed = step_records(full_dir), step_records(resumed_dir)
    assert [record["global_step"] for record in resumed] == list(range(4, 12))
    assert [(r["loss"], r["lr"]) for r in resumed] == [(r["loss"], r["lr"]) for r in full[4:]]
    expected, got = final_params(full_dir), final_params(resumed_dir)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_resume_at_phase_boundary_keeps_metrics_of_earlier_steps(served, uninterrupted, tmp_path):
    full_dir, _ = uninterrupted
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(full_dir, resumed_dir)
    for path in list_checkpoints(resumed_dir / "ckpt"):
        if path.name != "step-00000006.pt":
            path.unlink()
    train(run_config(served.url, resumed_dir))
    assert without_timings(resumed_dir) == without_timings(full_dir)


def without_timings(run_dir: Path) -> list[dict]:
    """Metrics records with wall-clock fields removed: everything else must be reproducible."""
    timing = {"data_wait_s", "step_s", "data_wait_fraction"}
    records = read_metrics(run_dir / "out" / "metrics.jsonl")
    return [{key: value for key, value in record.items() if key not in timing} for record in records]


def test_phase_subset_with_lr_override_trains_only_named_phases(served, tmp_path):
    constant = {"warmup": 0.5, "stable": 0.5, "decay": 0.0}
    summary = train(run_config(served.url, tmp_path / "run", phases=["anneal"], max_steps_per_phase=2, lr=constant))
    assert [phase["phase"] for phase in summary["phases"]] == ["anneal"]
    records = step_records(tmp_path / "run")
    assert [(record["phase_step"], record["lr"]) for record in records] == [(0, 3e-3), (1, 3e-3)]


def test_unknown_phase_names_the_known_ones(served, tmp_path):
    with pytest.raises(NotFoundError, match="has no phase 'warmup'; its phases are stable, anneal"):
        train(run_config(served.url, tmp_path / "run", phases=["warmup"]))


def test_phase_longer_than_model_is_refused_before_training(served, tmp_path):
    config = run_config(served.url, tmp_path / "run", model={"d_model": 32, "n_layers": 1, "n_heads": 4, "max_seq_len": 48})
    with pytest.raises(MidmixError, match="phase seq_len 64 exceeds the model's max_seq_len 48"):
        train(config)
    assert not (tmp_path / "run" / "ckpt").exists()


def test_service_down_fails_with_clear_error_after_retries(tmp_path):
    config = run_config(f"http://127.0.0.1:{free_port()}", tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(MidmixError, match="unreachable after 2 attempts"):
        train(config)
    assert time.monotonic() - started < 10


def test_checkpoint_of_another_run_is_refused(served, uninterrupted, tmp_path):
    full_dir, _ = uninterrupted
    run_dir = tmp_path / "other"
    shutil.copytree(full_dir / "ckpt", run_dir / "ckpt")
    with pytest.raises(MidmixError, match="belong to a run with other peak_lr"):
        train(run_config(served.url, run_dir, peak_lr=1e-3))


def test_sigterm_checkpoints_after_the_current_step_and_resume_finishes_the_same(served, tmp_path):
    stopped_dir, full_dir = tmp_path / "stopped", tmp_path / "full"
    overrides = {"phases": ["stable"], "max_steps_per_phase": 30}
    stopped = run_config(served.url, stopped_dir, **overrides, checkpoint={"dir": stopped_dir / "ckpt"})
    full = run_config(served.url, full_dir, **overrides, checkpoint={"dir": full_dir / "ckpt"})
    (stopped_dir / "out").mkdir(parents=True)
    config_path = stopped_dir / "train.json"
    # DataLoader workers in the stopped run: forked workers must not swallow SIGTERM themselves.
    config_path.write_text(stopped.model_copy(update={"num_workers": 2}).model_dump_json(), encoding="utf-8")
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-m", "midmix", "train", str(config_path)], cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = stopped_dir / "out" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while len(read_metrics(metrics)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "stopped by SIGTERM after step" in stderr, stderr[-2000:]
    done = len(step_records(stopped_dir))
    assert 3 <= done < 30
    assert [path.name for path in list_checkpoints(stopped_dir / "ckpt")] == [f"step-{done:08d}.pt"]

    train(stopped)
    train(full)
    assert without_timings(stopped_dir) == without_timings(full_dir)
    expected, got = final_params(full_dir), final_params(stopped_dir)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_bf16_autocast_path_trains_with_fp32_weights(served, tmp_path):
    # The CUDA path (precision auto on a GPU) runs the same code under autocast; here on CPU.
    summary = train(run_config(served.url, tmp_path / "run", phases=["stable"], max_steps_per_phase=8, precision="bf16"))
    losses = [record["loss"] for record in step_records(tmp_path / "run")]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert all(math.isfinite(value) for value in summary["phases"][0]["eval"].values())
    assert {tensor.dtype for tensor in final_params(tmp_path / "run").values()} == {torch.float32}
