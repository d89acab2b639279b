"""The trainer on a GPU, checked against the CPU: one command, never part of the test suite.

    python bench/gpu_check.py [--steps 40] [--compare-steps 8] [--out gpu-check]

It writes a small mixture version from the bundled sample corpus (byte tokens, web/other/academic/qa
vs code+math 70/30) into a local data directory, then trains the same model on it twice with
``midmix.trainer.train.train`` reading that directory (``data_dir``, no service):

* on the CPU in fp32 (the reference; the first ``--compare-steps`` steps), and
* on CUDA under ``torchrun --standalone --nproc_per_node 1``: NCCL DDP with one GPU, bf16 autocast,
  FlexAttention block masks, DataLoader workers with pinned memory (``--steps`` steps).

Both use a constant learning rate, so their first steps see the same data and schedule; it
prints each step's two losses, fails (exit 1) when any differs by more than ``--tolerance``
(relative), and reports CUDA tokens/s after the first step (which compiles FlexAttention) and the
share of step time spent waiting for data. Without a CUDA GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VERSION = "mix-gpucheck"
EOS = 256


def write_mixture(data_dir: Path, seq_len: int) -> Path:
    """A one-phase mixture version per the manifest contract, from the bundled sample corpus."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_loader import load_components, write_phase

    from midmix.hashing import sha256_file
    from midmix.pipelines.curation.schema import SHARD_SCHEMA

    root = data_dir / "mixtures" / VERSION
    if (root / "manifest.json").is_file():
        return root
    components = load_components(1)
    held_out = components["general"][-40:]
    components["general"] = components["general"][:-40]
    phase = write_phase(components, root)
    total = sum(shard["tokens"] for c in phase["components"] for shard in c["shards"])
    for component in phase["components"]:
        tokens = sum(shard["tokens"] for shard in component["shards"])
        component.update(weight=tokens / total, realized_tokens=tokens, target_tokens=tokens)
    phase.update(seq_len=seq_len, rope_theta=10000.0, token_budget=total, tokens=total,
                 lr={"warmup": 0.0, "stable": 1.0, "decay": 0.0, "shape": "linear", "final_lr_ratio": 0.0})  # fmt: skip
    eval_path = root / "eval" / "web-00000.parquet"
    eval_path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(doc) for doc in held_out], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    table = pa.table({
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(held_out), type=pa.uint32())),
        "doc_id": [f"eval-{i}" for i in range(len(held_out))], "source": ["eval"] * len(held_out),
        "domain": ["web"] * len(held_out), "quality": pa.array(np.zeros(len(held_out)), type=pa.float32()),
        "n_tokens": lengths,
    }, schema=SHARD_SCHEMA)  # fmt: skip
    pq.write_table(table, eval_path)
    manifest = {
        "kind": "mixture", "version": VERSION, "name": "gpu-check", "code_version": "check",
        "tokenizer": {"kind": "bytes", "sha256": "bytes", "vocab_size": 257, "eos_id": EOS, "path": None},
        "phases": [phase], "lineage": {"datasets": {}},
        "eval": {"web": {"path": "eval/web-00000.parquet", "sha256": sha256_file(eval_path),
                         "bytes": eval_path.stat().st_size, "rows": len(held_out), "tokens": int(lengths.sum())}},
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def worker(args: argparse.Namespace) -> None:
    """One training run (launched by ``main``): CPU fp32, or CUDA bf16 under torchrun."""
    from midmix.trainer.config import TrainConfig
    from midmix.trainer.train import train

    cuda = args.worker == "cuda"
    config = TrainConfig.model_validate({
        "data_dir": args.data_dir, "mixture": VERSION,
        "cache": {"dir": Path(args.out) / f"cache-{args.worker}", "max_bytes": 10**10},
        "model": {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads, "max_seq_len": args.seq_len},
        "peak_lr": 1e-3, "lr": {"warmup": 0.0, "stable": 1.0, "decay": 0.0},
        "global_batch_size": args.batch, "micro_batch_size": args.micro_batch,
        "num_workers": 4 if cuda else 0, "max_steps_per_phase": args.steps if cuda else args.compare_steps,
        "eval_sequences": 8, "log_every": 10, "checkpoint": {"dir": Path(args.out) / f"ckpt-{args.worker}", "resume": False},
        "device": args.worker, "precision": "bf16" if cuda else "fp32", "cpu_threads": None if cuda else os.cpu_count(),
        "out_dir": Path(args.out) / args.worker,
    })  # fmt: skip
    train(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="CUDA steps (tokens/s is measured over them)")
    parser.add_argument("--compare-steps", type=int, default=8, help="steps compared with the CPU run")
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest relative loss difference allowed")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16, help="global batch, sequences")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--worker", choices=["cpu", "cuda"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
              "run this on a host with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)  # fmt: skip
        return 2
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    data_dir = out / "data"
    write_mixture(data_dir, args.seq_len)
    common = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in
              ("steps", "compare_steps", "seq_len", "batch", "micro_batch", "d_model", "layers", "heads")]  # fmt: skip
    common += [f"--out={out}", f"--data-dir={data_dir}"]
    runs = {
        "cpu": [sys.executable, __file__, "--worker=cpu", *common],
        "cuda": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__,
                 "--worker=cuda", *common],
    }  # fmt: skip
    wall = {}
    for name, command in runs.items():
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall[name] = time.perf_counter() - started
    return report(out, args, wall)


def report(out: Path, args: argparse.Namespace, wall: dict[str, float]) -> int:
    import torch

    steps = {}
    for name in ("cpu", "cuda"):
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        steps[name] = [record for record in records if record["kind"] == "step"]
    pairs = list(zip(steps["cpu"], steps["cuda"]))[: args.compare_steps]
    worst = 0.0
    print(f"{'step':>4} {'cpu fp32 loss':>14} {'cuda bf16 loss':>15} {'relative diff':>14}")
    for cpu, cuda in pairs:
        difference = abs(cuda["loss"] - cpu["loss"]) / abs(cpu["loss"])
        worst = max(worst, difference)
        print(f"{cpu['global_step']:>4} {cpu['loss']:>14.5f} {cuda['loss']:>15.5f} {difference:>14.5f}")
    timed = steps["cuda"][1:]  # the first step compiles FlexAttention
    tokens = sum(args.batch * args.seq_len for _ in timed)
    seconds = sum(record["step_s"] for record in timed)
    wait = sum(record["data_wait_s"] for record in timed)
    cpu_timed = steps["cpu"][1:]
    summary = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "compared_steps": len(pairs), "max_relative_loss_diff": worst, "tolerance": args.tolerance,
        "cuda_tokens_per_s": tokens / seconds if seconds else None,
        "cuda_first_step_s": steps["cuda"][0]["step_s"], "cuda_data_wait_fraction": wait / seconds if seconds else None,
        "cpu_tokens_per_s": len(cpu_timed) * args.batch * args.seq_len / sum(r["step_s"] for r in cpu_timed) if cpu_timed else None,
        "wall_s": wall, "model": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads},
        "seq_len": args.seq_len, "global_batch": args.batch, "cuda_steps": len(steps["cuda"]),
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = worst <= args.tolerance and len(pairs) == args.compare_steps
    print(f"gpu_check: {'PASS' if ok else 'FAIL'}: first {len(pairs)} steps' losses within {worst:.4f} "
          f"(tolerance {args.tolerance}); CUDA {summary['cuda_tokens_per_s'] or 0:,.0f} tokens/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
