"""Training loop benchmark: how much of each step waits for data, ours vs a synchronous peer.

Both train the same tiny model with the same optimizer step (``midmix.trainer.train.optimizer_step``) on
the same mixture, built from the bundled sample corpus by the real builder and served by the real
service on 127.0.0.1:

* ours: ``midmix.trainer.train.train`` (shards prefetched by ``ShardCache``, ``PhaseStream`` in
  DataLoader worker processes, exact blending and packing);
* peer: the nanoGPT-style loop over HF ``datasets`` (``Dataset.from_parquet`` on the same local
  shards, ``.iter(batch_size=64)``) with our packing, fetched synchronously in the training
  process (components read one after another: no blending, so it does less work than ours).

Reported: data wait as a share of step time (target < 2% for ours), tokens/s, and the ratios.

    python bench/bench_trainer.py [--steps 40] [--seq-len 512] [--batch 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn

from midmix.mixture_manifest import phase_shards
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from midmix.service.app import create_app
from midmix.service.settings import ServiceSettings
from midmix.trainer.config import TrainConfig
from midmix.trainer.metrics import read_metrics
from midmix.trainer.model import Decoder
from midmix.trainer.packing import pack_documents
from midmix.trainer.train import Runtime, build_optimizer, optimizer_step, train

# The curated-dataset fixture is shared with the tests; bench scripts run from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sample_dataset import write_sample_dataset  # noqa: E402

SAMPLE = SAMPLE_CORPUS
MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 2048}


def build_mixture(data_dir: Path, seq_len: int) -> dict:
    spec = {
        "name": "bench-trainer", "eval": {"count": 4},
        "phases": [{"name": "stable", "token_budget": 1_500_000, "seq_len": seq_len,
                    "curriculum": {"key": "none", "seed": 1},
                    "components": [
                        {"name": n, "datasets": ["latest"], "weight": w, "select": {"column": "domain", "op": "==", "value": n}}
                        for n, w in (("web", 0.5), ("code", 0.3), ("math", 0.2))]}],
    }  # fmt: skip
    write_sample_dataset(data_dir, SAMPLE)
    return materialize_mixture(parse_spec(spec), data_dir)


def serve(data_dir: Path) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(create_app(ServiceSettings(data_dir=data_dir)), host="127.0.0.1", port=0,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def run_ours(url: str, version: str, work: Path, args: argparse.Namespace) -> dict:
    config = TrainConfig.model_validate({
        "service": {"url": url}, "mixture": version, "out_dir": work / "ours", "model": MODEL,
        "global_batch_size": args.batch, "micro_batch_size": args.batch // 2, "num_workers": args.workers,
        "max_steps_per_phase": args.steps, "eval_sequences": 2, "device": "cpu", "cpu_threads": 1,
        "checkpoint": {"every": None},
    })  # fmt: skip
    summary = train(config)
    waits = [r["data_wait_s"] for r in read_metrics(config.out_dir / "metrics.jsonl") if r["kind"] == "step"]
    return {"wait_s": summary["data_wait_s"], "step_s": summary["step_s"], "tokens": args.steps * args.batch * args.seq_len,
            "first_wait_s": waits[0]}


def run_peer(shards: list[Path], vocab: int, eos_id: int, work: Path, args: argparse.Namespace) -> dict:
    from datasets import Dataset

    torch.manual_seed(0)
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    model = Decoder(TrainConfig(mixture="peer", model={**MODEL, "vocab_size": vocab}).model)
    optimizer = build_optimizer(model, TrainConfig(mixture="peer"))
    dataset = Dataset.from_parquet([str(path) for path in shards], cache_dir=str(work / "hf-cache"))
    rows = dataset.iter(batch_size=64)
    micro, pending = args.batch // 2, []
    wait_total = step_total = first_wait = 0.0

    def next_micro_batch() -> dict:
        cut = micro * args.seq_len  # stream tokens one micro-batch consumes
        while sum(len(doc) + 1 for doc in pending) < cut + 1:
            pending.extend(np.asarray(ids, dtype=np.int64) for ids in next(rows)["input_ids"])
        packed = pack_documents(pending, args.seq_len, eos_id)
        used = 0
        while used + len(pending[0]) + 1 <= cut:
            used += len(pending.pop(0)) + 1
        pending[0] = pending[0][cut - used :]  # the document crossing the cut continues next time
        return {key: torch.from_numpy(value[:micro]) for key, value in vars(packed).items()}

    for step in range(args.steps):
        started = time.perf_counter()
        batches = [next_micro_batch() for _ in range(2)]
        waited = time.perf_counter() - started
        optimizer_step(model, optimizer, batches, 1e-3, 1.0, runtime)
        first_wait = waited if step == 0 else first_wait
        wait_total += waited
        step_total += time.perf_counter() - started
    return {"wait_s": wait_total, "step_s": step_total, "tokens": args.steps * args.batch * args.seq_len,
            "first_wait_s": first_wait}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = build_mixture(work / "data", args.seq_len)
        server, url = serve(work / "data")
        ours = run_ours(url, manifest["version"], work, args)
        version_dir = work / "data" / "mixtures" / manifest["version"]
        shards = [version_dir / shard["path"] for _, shard in phase_shards(manifest["phases"][0])]
        tokenizer = manifest["tokenizer"]
        peer = run_peer(shards, tokenizer["vocab_size"], tokenizer["eos_id"], work, args)
        server.should_exit = True
    ours_name = f"ours (train(): prefetch, PhaseStream, {args.workers} DataLoader workers)"
    for name, result in ((ours_name, ours), ("peer (HF datasets, synchronous)", peer)):
        steady = (result["wait_s"] - result["first_wait_s"]) / (args.steps - 1)
        print(f"{name}: data wait {100 * result['wait_s'] / result['step_s']:.2f}% of step time "
              f"(first step {result['first_wait_s'] * 1000:.0f} ms, then {steady * 1000:.2f} ms/step), "
              f"{result['tokens'] / result['step_s']:,.0f} tokens/s")
    print(f"ratio data wait after the first step, peer / ours: "
          f"{(peer['wait_s'] - peer['first_wait_s']) / max(ours['wait_s'] - ours['first_wait_s'], 1e-9):.1f}x")
    print(f"ratio tokens/s, ours / peer: {(ours['tokens'] / ours['step_s']) / (peer['tokens'] / peer['step_s']):.2f}x")


if __name__ == "__main__":
    main()
