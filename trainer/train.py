"""The training loop: a plain loop over the mixture's phases, no framework.

Everything is wired here, in order: distributed setup, the shard cache and manifest, the model,
the optimizer, resume from the newest checkpoint, then for each phase its stream, rotary tables,
steps (with gradient accumulation), checkpoints, held-out eval and metrics.

Exactness. The loss of a step is the mean over every unmasked target token of the global batch,
whatever the split into ranks and micro-batches: each micro-batch contributes its token-loss
*sum* divided by the global token count, and the loss is scaled by the world size because DDP
averages gradients over ranks. So a run resumed with another world size trains on the same
batches with the same objective as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from midmix.errors import MidmixError, NotFoundError
from service.client import MidmixClient
from trainer.checkpoint import load_latest, restore_rng, rng_state, save_checkpoint, list_checkpoints
from trainer.config import TrainConfig
from trainer.metrics import MetricsLog
from trainer.model import Decoder, check_seq_len
from trainer.packing import IGNORE_INDEX, pack_documents
from trainer.phase_stream import PhaseStream
from trainer.schedule import LrSegment, PhaseLr, lr_at
from trainer.shard_cache import ShardCache

Event = dict[str, Any]
ProgressCallback = Callable[[Event], None]


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; plain fp32 on CPU, where results are exact and reproducible."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class Position:
    """Where a run is: the phase (index into the trained phases), the next step in it, steps and tokens done."""

    phase_index: int = 0
    next_step: int = 0
    global_step: int = 0
    tokens: int = 0


class _ResolvedShards:
    """Shard entry -> local file, resolved in the main process so DataLoader workers only read."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths

    def __call__(self, entry: dict) -> Path:
        return self.paths[entry["path"]]


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train on the configured mixture; returns a summary (per-phase loss, eval loss, shares, data wait)."""
    runtime = start_runtime(config.device)
    if config.cpu_threads is not None:
        # Small models on shared CPUs run many times faster without intra-op thread contention.
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, runtime, progress or (lambda event: None))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def start_runtime(device: str) -> Runtime:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MidmixError("device 'cuda' was asked for but torch sees no GPU; set device: cpu or auto")
    torch_device = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1:
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Runtime(rank=rank, world_size=world_size, device=torch_device)


def _train(config: TrainConfig, runtime: Runtime, progress: ProgressCallback) -> dict[str, Any]:
    if config.mixture is None:
        raise MidmixError("no mixture version to train on; set `mixture:` in the config or pass --mixture")
    accumulation = config.accumulation_steps(runtime.world_size)
    client = MidmixClient(config.service.url, config.service.token, retries=config.service.retries)
    cache = ShardCache(client, config.mixture, config.cache_dir, config.cache.max_bytes)
    manifest = _main_first(runtime, cache.manifest)
    phases = select_phases(manifest, config.phases)
    model_config = config.model.model_copy(update={"vocab_size": _vocab_size(config, manifest)})
    for phase in phases:
        check_seq_len(int(phase["seq_len"]), model_config)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    model = Decoder(model_config).to(runtime.device)
    optimizer = build_optimizer(model, config)
    position, phase_lrs = Position(), []
    resumed = _resume(config, runtime, model, optimizer)
    if resumed is not None:
        position, phase_lrs = resumed
    # Rotary tables are rebuilt identically on every rank, so DDP need not broadcast buffers.
    wrapped = DistributedDataParallel(model, broadcast_buffers=False) if runtime.world_size > 1 else model
    if runtime.is_main:
        cache.prefetch([shard for phase in phases[position.phase_index :] for shard in phase_shards(phase)])
    metrics = MetricsLog(config.out_dir / "metrics.jsonl", position.global_step) if runtime.is_main else None

    summary: dict[str, Any] = {"phases": [], "data_wait_s": 0.0, "step_s": 0.0}
    eos_id = int(manifest["tokenizer"]["eos_id"])
    for index in range(position.phase_index, len(phases)):
        phase = phases[index]
        start = position.next_step if index == position.phase_index else 0
        shard_path = _main_first(runtime, lambda: resolve_shards(cache, phase))
        model.set_rope(float(phase["rope_theta"]), int(phase["seq_len"]))
        stream = PhaseStream(
            phase, shard_path, int(phase["seq_len"]), eos_id, config.global_batch_size, config.micro_batch_size,
            rank=runtime.rank, world_size=runtime.world_size, start_step=start,
        )
        steps = stream.steps_in_phase()
        if config.max_steps_per_phase is not None:
            steps = min(steps, config.max_steps_per_phase)
        if steps == 0:
            raise MidmixError(
                f"phase {phase['name']!r} has too few tokens for one step of {config.global_batch_size} sequences "
                f"of {phase['seq_len']} tokens; lower global_batch_size"
            )
        if len(phase_lrs) == index:
            phase_lrs.append(PhaseLr(steps=steps, segment=config.lr or LrSegment(**phase["lr"])))
        progress({"event": "phase_start", "phase": phase["name"], "steps": steps, "start_step": start})
        phase_summary = _train_phase(
            config, runtime, wrapped, model, optimizer, stream, phase, phase_lrs, position, start, steps,
            accumulation, metrics, progress,
        )
        phase_summary["eval"] = evaluate(model, runtime, cache, manifest, int(phase["seq_len"]), eos_id, config.eval_sequences)
        phase_summary["shares"] = stream.realized_shares(steps)
        position = Position(index + 1, 0, position.global_step, position.tokens)
        if metrics is not None:
            metrics.write({"kind": "phase_end", **phase_summary})
        _checkpoint(config, runtime, model, optimizer, position, phase_lrs)
        cache.release(phase_shards(phase))  # the next phases' shards may now take their room
        progress({"event": "phase_end", **phase_summary})
        summary["phases"].append(phase_summary)
        summary["data_wait_s"] += phase_summary["data_wait_s"]
        summary["step_s"] += phase_summary["step_s"]
    cache.close()
    if metrics is not None:
        metrics.close()
    summary["global_steps"] = position.global_step
    summary["data_wait_fraction"] = summary["data_wait_s"] / summary["step_s"] if summary["step_s"] else 0.0
    summary["metrics"] = str(config.out_dir / "metrics.jsonl")
    if runtime.is_main:
        from trainer.plot import plot_metrics

        summary["plot"] = str(plot_metrics(config.out_dir / "metrics.jsonl", config.out_dir / "training.png"))
    return summary


def _train_phase(
    config: TrainConfig,
    runtime: Runtime,
    wrapped: torch.nn.Module,
    model: Decoder,
    optimizer: torch.optim.Optimizer,
    stream: PhaseStream,
    phase: dict,
    phase_lrs: list[PhaseLr],
    position: Position,
    start: int,
    steps: int,
    accumulation: int,
    metrics: MetricsLog | None,
    progress: ProgressCallback,
) -> dict[str, Any]:
    """Steps ``start``..``steps-1`` of one phase; updates ``position`` in place, checkpoints every N steps."""
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=config.num_workers,
        pin_memory=runtime.device.type == "cuda",
        prefetch_factor=4 if config.num_workers else None,
    )
    tokens_per_step = config.global_batch_size * int(phase["seq_len"])
    batches = iter(loader)
    wait_total = step_total = 0.0
    recent_losses: list[float] = []
    model.train()
    for step in range(start, steps):
        step_started = time.perf_counter()
        micro_batches, wait = _next_step_batches(batches, step, accumulation, phase["name"])
        lr = lr_at(position.global_step, phase_lrs, config.peak_lr)
        loss = optimizer_step(wrapped, model, optimizer, micro_batches, lr, config.grad_clip, runtime)
        position.global_step += 1
        position.next_step = step + 1
        position.tokens += tokens_per_step
        step_time = time.perf_counter() - step_started
        wait_total += wait
        step_total += step_time
        recent_losses = (recent_losses + [loss])[-10:]
        record = {
            "kind": "step", "global_step": position.global_step - 1, "phase": phase["name"], "phase_step": step,
            "loss": loss, "lr": lr, "tokens": position.tokens,
            "data_wait_s": wait, "step_s": step_time,
        }
        if (step + 1) % config.log_every == 0 and step + 1 < steps:
            record["shares"] = stream.realized_shares(step + 1)
        if metrics is not None:
            metrics.write(record)
        progress({"event": "step", **record, "steps": steps})
        every = config.checkpoint.every
        if every and position.global_step % every == 0 and step + 1 < steps:
            _checkpoint(config, runtime, model, optimizer, position, phase_lrs)
    del batches  # stops DataLoader workers before the next phase starts its own
    return {
        "phase": phase["name"], "global_step": position.global_step, "steps": steps,
        "loss": sum(recent_losses) / len(recent_losses) if recent_losses else None,
        "data_wait_s": wait_total, "step_s": step_total,
        "data_wait_fraction": wait_total / step_total if step_total else 0.0,
    }


def _next_step_batches(batches: Iterator[dict], step: int, accumulation: int, phase: str) -> tuple[list[dict], float]:
    """The ``accumulation`` micro-batches of ``step`` and the seconds spent waiting for them."""
    waited = time.perf_counter()
    micro_batches = [next(batches) for _ in range(accumulation)]
    wait = time.perf_counter() - waited
    got = sorted({int(batch["step"]) for batch in micro_batches})
    if got != [step]:
        raise MidmixError(f"phase {phase!r}: data stream gave steps {got} where step {step} was expected")
    return micro_batches, wait


def optimizer_step(
    wrapped: torch.nn.Module,
    model: Decoder,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[dict],
    lr: float,
    grad_clip: float | None,
    runtime: Runtime,
) -> float:
    """One optimizer step over this rank's micro-batches; returns the global-batch mean token loss."""
    device = runtime.device
    local_count = sum(int((batch["targets"] != IGNORE_INDEX).sum()) for batch in micro_batches)
    count = _all_reduce_sum(torch.tensor(float(local_count), dtype=torch.float64), runtime)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for index, batch in enumerate(micro_batches):
        inputs = {key: batch[key].to(device, non_blocking=True) for key in ("input_ids", "position_ids", "doc_ids")}
        targets = batch["targets"].to(device, non_blocking=True)
        last = index == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or runtime.world_size == 1 else wrapped.no_sync()
        with sync:
            with runtime.autocast():
                logits = wrapped(inputs["input_ids"], inputs["position_ids"], inputs["doc_ids"])
            token_loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), targets.view(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            (token_loss * (runtime.world_size / count.item())).backward()
        loss_sum += token_loss.detach().double().cpu()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(_all_reduce_sum(loss_sum, runtime) / count)


def _all_reduce_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.world_size > 1:
        value = value.to(runtime.device) if runtime.device.type == "cuda" else value
        dist.all_reduce(value)
    return value.cpu()


def build_optimizer(model: Decoder, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains are not decayed)."""
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.peak_lr, betas=config.betas)


def select_phases(manifest: dict, names: list[str] | None) -> list[dict]:
    """The manifest phases to train, in manifest order; an unknown name lists the known ones."""
    phases = manifest["phases"]
    if names is None:
        return list(phases)
    known = [phase["name"] for phase in phases]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise NotFoundError(
            f"mixture {manifest['version']} has no phase {', '.join(map(repr, unknown))}; its phases are {', '.join(known)}"
        )
    return [phase for phase in phases if phase["name"] in names]


def phase_shards(phase: dict) -> list[dict]:
    """A phase's shard entries over all its components."""
    return [shard for component in phase["components"] for shard in component["shards"]]


def resolve_shards(cache: ShardCache, phase: dict) -> _ResolvedShards:
    """Download (or find in the cache) every shard of a phase; the stream then only reads local files."""
    return _ResolvedShards({shard["path"]: cache.local_path(shard) for shard in phase_shards(phase)})


def _vocab_size(config: TrainConfig, manifest: dict) -> int:
    tokenizer_vocab = int(manifest["tokenizer"]["vocab_size"])
    if config.model.vocab_size is None:
        return tokenizer_vocab
    if config.model.vocab_size < tokenizer_vocab:
        raise MidmixError(
            f"model.vocab_size {config.model.vocab_size} is smaller than the mixture tokenizer's {tokenizer_vocab}; "
            "remove it from the config to use the tokenizer's"
        )
    return config.model.vocab_size


def _main_first(runtime: Runtime, work: Callable[[], Any]) -> Any:
    """Run ``work`` on rank 0 first, then on the others: downloads happen once, the rest hit the cache."""
    if runtime.world_size == 1:
        return work()
    result = work() if runtime.is_main else None
    dist.barrier()
    if not runtime.is_main:
        result = work()
    dist.barrier()
    return result


# --- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: Decoder, runtime: Runtime, cache: ShardCache, manifest: dict, seq_len: int, eos_id: int, max_sequences: int
) -> dict[str, float]:
    """Mean held-out token loss per eval domain on the first ``max_sequences`` packed sequences."""
    losses: dict[str, float] = {}
    if runtime.is_main:
        model.eval()
        for domain, entry in sorted(manifest.get("eval", {}).items()):
            documents = pq.read_table(cache.local_path(entry), columns=["input_ids"]).column("input_ids").to_pylist()
            losses[domain] = _eval_loss(model, runtime, documents, seq_len, eos_id, max_sequences)
        model.train()
    if runtime.world_size > 1:
        shared = [losses]
        dist.broadcast_object_list(shared, src=0)
        losses = shared[0]
    return losses


def _eval_loss(
    model: Decoder, runtime: Runtime, documents: list[list[int]], seq_len: int, eos_id: int, max_sequences: int
) -> float:
    packed = vars(pack_documents([np.asarray(doc, dtype=np.int64) for doc in documents], seq_len, eos_id))
    total, count = 0.0, 0
    for start in range(0, min(len(packed["input_ids"]), max_sequences), 8):
        batch = {key: torch.as_tensor(value[start : start + 8]).to(runtime.device) for key, value in packed.items()}
        with runtime.autocast():
            logits = model(batch["input_ids"], batch["position_ids"], batch["doc_ids"])
        total += float(F.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), batch["targets"].view(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        ))
        count += int((batch["targets"] != IGNORE_INDEX).sum())
    return total / count if count else float("nan")


# --- checkpoints -----------------------------------------------------------------------------


def _fingerprint(config: TrainConfig) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume (world size and workers may)."""
    return {
        "mixture": config.mixture,
        "model": config.model.model_dump(),
        "global_batch_size": config.global_batch_size,
        "phases": config.phases,
        "max_steps_per_phase": config.max_steps_per_phase,
        "peak_lr": config.peak_lr,
        "lr": config.lr.model_dump() if config.lr else None,
    }


def _checkpoint(
    config: TrainConfig,
    runtime: Runtime,
    model: Decoder,
    optimizer: torch.optim.Optimizer,
    position: Position,
    phase_lrs: list[PhaseLr],
) -> None:
    if runtime.is_main:
        state = {
            "fingerprint": _fingerprint(config),
            "position": vars(position).copy(),
            "phase_lrs": [phase.model_dump() for phase in phase_lrs],
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
        }
        save_checkpoint(config.checkpoint_dir, position.global_step, state, config.checkpoint.keep)
    if runtime.world_size > 1:
        dist.barrier()


def _resume(
    config: TrainConfig, runtime: Runtime, model: Decoder, optimizer: torch.optim.Optimizer
) -> tuple[Position, list[PhaseLr]] | None:
    """Load the newest checkpoint into model and optimizer; None for a fresh run."""
    directory = config.checkpoint_dir
    if not config.checkpoint.resume:
        if list_checkpoints(directory):
            raise MidmixError(
                f"{directory} holds checkpoints but checkpoint.resume is false; empty it or point checkpoint.dir elsewhere"
            )
        return None
    state = load_latest(directory)
    if state is None:
        return None
    if state["fingerprint"] != _fingerprint(config):
        changed = sorted(key for key, value in _fingerprint(config).items() if state["fingerprint"].get(key) != value)
        raise MidmixError(
            f"the checkpoints in {directory} belong to a run with other {', '.join(changed)}; "
            "restore those settings or point checkpoint.dir elsewhere"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    restore_rng(state["rng"])
    return Position(**state["position"]), [PhaseLr.model_validate(item) for item in state["phase_lrs"]]
