"""Data-parallel training under torchrun (2 ranks, gloo, loopback) and resume on another world size.

Each rank trains on its slice of every global batch; the loss is the token mean of the whole
global batch, so a 2-rank run (2 micro-batches of 2 per rank) follows the 1-process run (2
micro-batches of 4) step for step, up to float summation order, and a checkpoint written by 2
ranks resumes in 1 process onto the same batches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer_loop import ServedMixture, final_params, free_port, run_config, step_records, write_mixture

from midmix.trainer.checkpoint import list_checkpoints
from midmix.trainer.train import train

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    write_mixture(data_dir)
    with ServedMixture(data_dir) as server:
        yield server


def torchrun(config_path: Path, nproc: int) -> subprocess.CompletedProcess:
    """``midmix train`` under torchrun with ``nproc`` CPU ranks on 127.0.0.1."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "midmix", "train", str(config_path),
    ]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def write_config(run_dir: Path, url: str, **overrides) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "train.json"
    path.write_text(run_config(url, run_dir, **overrides).model_dump_json(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_ranks(served, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "two"
    # 8 sequences per step = 2 ranks x 2 micro-batches of 2: gradient accumulation under no_sync.
    result = torchrun(write_config(run_dir, served.url, num_workers=1, micro_batch_size=2), nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


@pytest.fixture(scope="module")
def one_process(served, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "one"
    train(run_config(served.url, run_dir))
    return run_dir


def test_two_rank_run_matches_single_process_step_for_step(two_ranks, one_process):
    run_dir, result = two_ranks
    ddp, single = step_records(run_dir), step_records(one_process)
    assert [(r["global_step"], r["phase"], r["tokens"]) for r in ddp] == [
        (r["global_step"], r["phase"], r["tokens"]) for r in single
    ]
    assert [r["lr"] for r in ddp] == [r["lr"] for r in single]
    assert [r["loss"] for r in ddp] == pytest.approx([r["loss"] for r in single], rel=1e-5)
    assert "phase stable: 6 steps" in result.stdout and "phase anneal: 6 steps" in result.stdout
    assert result.stdout.count("eval loss by domain: code") == 2  # rank 0 reports, rank 1 stays quiet


def test_checkpoint_from_two_ranks_resumes_in_one_process(served, two_ranks, tmp_path):
    ddp_dir, _ = two_ranks
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "ckpt").mkdir(parents=True)
    shutil.copy(ddp_dir / "ckpt" / "step-00000004.pt", resumed_dir / "ckpt")
    train(run_config(served.url, resumed_dir, num_workers=2))
    resumed, ddp = step_records(resumed_dir), step_records(ddp_dir)
    assert [(r["global_step"], r["lr"], r["tokens"]) for r in resumed] == [
        (r["global_step"], r["lr"], r["tokens"]) for r in ddp[4:]
    ]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in ddp[4:]], rel=1e-5)
    expected, got = final_params(ddp_dir), final_params(resumed_dir)
    assert all(torch.allclose(expected[name], got[name], rtol=1e-4, atol=1e-6) for name in expected)
    assert len(list_checkpoints(resumed_dir / "ckpt")) == 5  # 4 (copied), 6 (phase end), 8, 10, 12 (end)


def test_service_down_stops_every_rank_with_the_error(tmp_path):
    result = torchrun(write_config(tmp_path / "run", f"http://127.0.0.1:{free_port()}"), nproc=2)
    assert result.returncode != 0
    assert "midmix train: error: the midmix service at http://127.0.0.1:" in result.stderr
    assert "midmix train: error: rank 0 failed: the midmix service" in result.stderr  # rank 1 did not hang
