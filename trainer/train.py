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
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from midmix.errors import MidmixError, NotFoundError
from midmix.lr import LrSegment
from midmix.mixture_manifest import phase_shards
from midmix.rope import RopeScaling
from midmix.service.client import MidmixClient
from midmix.trainer.checkpoint import list_checkpoints, load_latest, restore_rng, rng_state, save_checkpoint
from midmix.trainer.config import TrainConfig
from midmix.trainer.metrics import MetricsLog
from midmix.trainer.model import Decoder, check_seq_len
from midmix.trainer.packing import IGNORE_INDEX, pack_documents
from midmix.trainer.phase_stream import PhaseStream
from midmix.trainer.run_summary import write_run_summary
from midmix.trainer.schedule import PhaseLr, lr_at
from midmix.trainer.shard_cache import LocalVersions, ShardCache

Event = dict[str, Any]
EventCallback = Callable[[Event], None]


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    device: torch.device
    bf16: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast (weights and optimizer stay fp32), or plain fp32, exact and reproducible."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class Position:
    """Where a run is: the phase (index into the trained phases), the next step in it, steps and tokens done."""

    phase_index: int = 0
    next_step: int = 0
    global_step: int = 0
    tokens: int = 0


class TrainingStopped(MidmixError):
    """The run stopped early on request (SIGTERM, e.g. preemption) after checkpointing."""


class StopOnSigterm:
    """While active, SIGTERM only sets ``requested``: the loop checkpoints after the current step and stops.

    Schedulers preempt with SIGTERM; dying mid-step would lose everything since the last
    periodic checkpoint. Signals can be caught only in the main thread, so elsewhere it does
    nothing; forked DataLoader workers inherit the handler and still die on SIGTERM.
    """

    def __init__(self) -> None:
        self.requested = False
        self._pid = os.getpid()
        self._previous: Any = signal.SIG_DFL
        self._installed = False

    def __enter__(self) -> "StopOnSigterm":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._request)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)

    def _request(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked worker: behave as if no handler were installed
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.requested = True


class _ResolvedShards:
    """Shard entry -> local file, resolved in the main process so DataLoader workers only read."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths

    def __call__(self, entry: dict) -> Path:
        return self.paths[entry["path"]]


def train(config: TrainConfig, progress: EventCallback | None = None) -> dict[str, Any]:
    """Train on the configured mixture; returns a summary (per-phase loss, eval loss, shares, data wait)."""
    runtime = start_runtime(config.device, config.precision)
    if config.cpu_threads is not None:
        # Small models on shared CPUs run many times faster without intra-op thread contention.
        torch.set_num_threads(config.cpu_threads)
    try:
        with StopOnSigterm() as stop:
            return Trainer(config, runtime, progress or (lambda event: None), stop).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def start_runtime(device: str, precision: str = "auto") -> Runtime:
    """Join the torchrun process group when launched by torchrun (nccl on CUDA, gloo on CPU; also
    with one process, so a one-GPU run takes the same DDP path as many); pick device and precision."""
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
    if world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    bf16 = precision == "bf16" or (precision == "auto" and torch_device.type == "cuda")
    return Runtime(rank=rank, world_size=world_size, device=torch_device, bf16=bf16)


class Trainer:
    """One run: every component built from the config in ``__init__``, trained phase by phase in ``run``."""

    def __init__(self, config: TrainConfig, runtime: Runtime, progress: EventCallback, stop: "StopOnSigterm"):
        if config.mixture is None:
            raise MidmixError("no mixture version to train on; set `mixture:` in the config or pass --mixture")
        self.config, self.runtime, self.progress, self.stop = config, runtime, progress, stop
        self.accumulation = config.accumulation_steps(runtime.world_size)
        client = (
            LocalVersions(config.data_dir)
            if config.data_dir is not None
            else MidmixClient(config.service.url, config.service.token, retries=config.service.retries)
        )
        self.cache = ShardCache(client, config.mixture, config.cache_dir, config.cache.max_bytes)
        self.manifest = _main_first(runtime, self.cache.manifest)
        self.phases = select_phases(self.manifest, config.phases)
        self.eos_id = int(self.manifest["tokenizer"]["eos_id"])
        model_config = config.model.model_copy(update={"vocab_size": _vocab_size(config, self.manifest)})
        for phase in self.phases:
            check_seq_len(int(phase["seq_len"]), model_config)  # before any download or step

        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.model = Decoder(model_config).to(runtime.device)
        self.optimizer = build_optimizer(self.model, config)
        self.position, self.phase_lrs = Position(), []
        self._resume()
        self.wrapped = _data_parallel(self.model, runtime)
        self.metrics_path = config.out_dir / "metrics.jsonl"
        self.metrics = MetricsLog(self.metrics_path, self.position.global_step) if runtime.is_main else None

    def run(self) -> dict[str, Any]:
        """Train the remaining phases; the summary covers the phases trained in this call."""
        if self.runtime.is_main:
            remaining = self.phases[self.position.phase_index :]
            self.cache.prefetch([shard for phase in remaining for shard in phase_shard_entries(phase)])
        summaries = [self._train_phase(index) for index in range(self.position.phase_index, len(self.phases))]
        self.cache.close()
        wait, step = sum(p["data_wait_s"] for p in summaries), sum(p["step_s"] for p in summaries)
        summary = {
            "phases": summaries, "global_steps": self.position.global_step, "data_wait_s": wait, "step_s": step,
            "data_wait_fraction": wait / step if step else 0.0, "metrics": str(self.metrics_path),
        }
        if self.metrics is not None:
            self.metrics.close()
            from midmix.trainer.plot import plot_metrics

            summary["plot"] = str(plot_metrics(self.metrics_path, self.config.out_dir / "training.png"))
        return summary

    def _train_phase(self, index: int) -> dict[str, Any]:
        """Set up one phase (shards, rotary tables, stream, schedule), train it, evaluate, checkpoint."""
        config, phase = self.config, self.phases[index]
        start = self.position.next_step if index == self.position.phase_index else 0
        shard_path = _main_first(self.runtime, lambda: resolve_shards(self.cache, phase))
        seq_len = int(phase["seq_len"])
        self.model.set_rope(float(phase["rope_theta"]), seq_len, phase_rope_scaling(phase))
        stream = PhaseStream(
            phase, shard_path, seq_len, self.eos_id, config.global_batch_size, config.micro_batch_size,
            rank=self.runtime.rank, world_size=self.runtime.world_size, start_step=start,
            decoded_dir=self.cache.decoded_dir,
        )
        # Decoded shards and the laid-out stream live in the cache, under its byte cap: make room
        # for them now and keep them (on every rank's cache object) until the phase ends.
        self.cache.hold(stream.cache_prefixes())
        if self.runtime.is_main:
            self.cache.reserve(stream.decoded_bytes())
        steps = stream.steps_in_phase()
        if config.max_steps_per_phase is not None:
            steps = min(steps, config.max_steps_per_phase)
        if steps == 0:
            raise MidmixError(
                f"phase {phase['name']!r} has too few tokens for one step of {config.global_batch_size} sequences "
                f"of {seq_len} tokens; lower global_batch_size"
            )
        if len(self.phase_lrs) == index:
            self.phase_lrs.append(PhaseLr(steps=steps, segment=config.lr or phase_segment(phase)))
        self.progress({"event": "phase_start", "phase": phase["name"], "steps": steps, "start_step": start})
        summary = self._train_steps(stream, phase, start, steps)
        summary["eval"] = evaluate(
            self.model, self.runtime, self.cache, self.manifest, seq_len, self.eos_id, config.eval_sequences
        )
        summary["shares"] = stream.realized_shares(0, steps)
        summary["padding"] = stream.padding(steps)
        self.position = Position(index + 1, 0, self.position.global_step, self.position.tokens)
        if self.metrics is not None:
            self.metrics.write({"kind": "phase_end", **summary})
            write_run_summary(config.out_dir, self.manifest, self.phases)
        self._save()
        self.cache.release(phase_shard_entries(phase))  # the next phases' shards may now take their room
        self.cache.release_held(stream.cache_prefixes())
        self.progress({"event": "phase_end", **summary})
        return summary

    def _train_steps(self, stream: PhaseStream, phase: dict, start: int, steps: int) -> dict[str, Any]:
        """Steps ``start``..``steps-1`` of one phase, with metrics and a checkpoint every N steps."""
        config, position = self.config, self.position
        loader = DataLoader(
            stream, batch_size=None, num_workers=config.num_workers, pin_memory=self.runtime.device.type == "cuda",
            prefetch_factor=4 if config.num_workers else None,
        )
        tokens_per_step = config.global_batch_size * int(phase["seq_len"])
        batches = iter(loader)
        wait_total = step_total = 0.0
        recent_losses: list[float] = []
        self.model.train()
        for step in range(start, steps):
            step_started = time.perf_counter()
            micro_batches, wait = _next_step_batches(batches, step, self.accumulation, phase["name"])
            lr = lr_at(position.global_step, self.phase_lrs, config.peak_lr)
            loss = optimizer_step(self.wrapped, self.optimizer, micro_batches, lr, config.grad_clip, self.runtime)
            position.global_step, position.next_step = position.global_step + 1, step + 1
            position.tokens += tokens_per_step
            step_time = time.perf_counter() - step_started
            wait_total, step_total = wait_total + wait, step_total + step_time
            recent_losses = (recent_losses + [loss])[-10:]
            record = {
                "kind": "step", "global_step": position.global_step - 1, "phase": phase["name"], "phase_step": step,
                "loss": loss, "lr": lr, "tokens": position.tokens, "data_wait_s": wait, "step_s": step_time,
            }
            if (step + 1) % config.log_every == 0 or step + 1 == steps:
                # The window since the last record, not the prefix: a prefix hides drift inside the phase.
                record["shares"] = stream.realized_shares(step // config.log_every * config.log_every, step + 1)
            if self.metrics is not None:
                self.metrics.write(record)
            self.progress({"event": "step", **record, "steps": steps})
            if self._stop_requested():
                self._save()
                raise TrainingStopped(
                    f"stopped by SIGTERM after step {position.global_step}; the checkpoint in "
                    f"{config.checkpoint_dir} holds it: run the same command to resume"
                )
            every = config.checkpoint.every
            if every and position.global_step % every == 0 and step + 1 < steps:  # phase ends save anyway
                self._save()
        del batches  # stops DataLoader workers before the next phase starts its own
        return {
            "phase": phase["name"], "global_step": position.global_step, "steps": steps,
            "loss": sum(recent_losses) / len(recent_losses) if recent_losses else None,
            "data_wait_s": wait_total, "step_s": step_total,
            "data_wait_fraction": wait_total / step_total if step_total else 0.0,
        }

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGTERM; agreed over ranks so they all stop after the same step."""
        flag = torch.tensor(float(self.stop.requested), dtype=torch.float64)
        return bool(_all_reduce_sum(flag, self.runtime).item()) if self.runtime.world_size > 1 else self.stop.requested

    def _fingerprint(self) -> dict[str, Any]:
        """What must not change between a checkpoint and its resume (world size and workers may)."""
        config = self.config
        return {
            "mixture": config.mixture, "model": config.model.model_dump(), "global_batch_size": config.global_batch_size,
            "phases": config.phases, "max_steps_per_phase": config.max_steps_per_phase, "peak_lr": config.peak_lr,
            "lr": config.lr.model_dump() if config.lr else None,
        }

    def _save(self) -> None:
        """Checkpoint the run as it stands (rank 0 writes; every rank waits for it)."""
        if self.runtime.is_main:
            state = {
                "fingerprint": self._fingerprint(),
                "position": vars(self.position).copy(),
                "phase_lrs": [phase.model_dump() for phase in self.phase_lrs],
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
            }
            save_checkpoint(self.config.checkpoint_dir, self.position.global_step, state, self.config.checkpoint.keep)
        if self.runtime.world_size > 1:
            dist.barrier()

    def _resume(self) -> None:
        """Load the newest checkpoint, if any, into model, optimizer, RNGs, position and schedule."""
        directory = self.config.checkpoint_dir
        if not self.config.checkpoint.resume:
            if list_checkpoints(directory):
                raise MidmixError(
                    f"{directory} holds checkpoints but checkpoint.resume is false; empty it or point checkpoint.dir elsewhere"
                )
            return
        state = load_latest(directory)
        if state is None:
            return
        expected = self._fingerprint()
        if state["fingerprint"] != expected:
            changed = sorted(key for key, value in expected.items() if state["fingerprint"].get(key) != value)
            raise MidmixError(
                f"the checkpoints in {directory} belong to a run with other {', '.join(changed)}; "
                "restore those settings or point checkpoint.dir elsewhere"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.position = Position(**state["position"])
        self.phase_lrs = [PhaseLr.model_validate(item) for item in state["phase_lrs"]]


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
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on device: one sync per step
    for index, batch in enumerate(micro_batches):
        inputs = {key: batch[key].to(device, non_blocking=True) for key in ("input_ids", "position_ids", "doc_ids")}
        targets = batch["targets"].to(device, non_blocking=True)
        last = index == len(micro_batches) - 1
        ddp = isinstance(wrapped, DistributedDataParallel)
        sync = wrapped.no_sync() if ddp and not last else contextlib.nullcontext()
        with sync:
            with runtime.autocast():
                logits = wrapped(inputs["input_ids"], inputs["position_ids"], inputs["doc_ids"])
            token_loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), targets.view(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            (token_loss * (runtime.world_size / count.item())).backward()
        loss_sum += token_loss.detach().double()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(_all_reduce_sum(loss_sum, runtime) / count)


def _all_reduce_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum over ranks (on the device: NCCL reduces CUDA tensors only), returned on CPU."""
    value = value.to(runtime.device)
    if runtime.world_size > 1:
        dist.all_reduce(value)
    return value.cpu()


def _data_parallel(model: Decoder, runtime: Runtime) -> torch.nn.Module:
    """DDP when the process group is up (torchrun, even with one rank); the bare model otherwise."""
    if not dist.is_initialized():
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    # Rotary tables are rebuilt identically on every rank, so DDP need not broadcast buffers.
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


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


def phase_segment(phase: dict) -> LrSegment:
    """The LR segment a manifest phase carries; a malformed one names the phase."""
    try:
        return LrSegment.model_validate(phase.get("lr") or {})
    except ValidationError as error:
        raise MidmixError(
            f"phase {phase['name']!r} of the mixture has an invalid lr segment ({error.errors()[0]['msg']}); "
            "set `lr:` in the training config to override it"
        ) from error


def phase_rope_scaling(phase: dict) -> RopeScaling | None:
    """The YaRN settings a manifest phase carries, if any; a malformed entry names the phase."""
    if not phase.get("rope_scaling"):
        return None
    try:
        return RopeScaling.model_validate(phase["rope_scaling"])
    except ValidationError as error:
        raise MidmixError(
            f"phase {phase['name']!r} of the mixture has invalid rope_scaling ({error.errors()[0]['msg']}); rebuild the mixture"
        ) from error


def phase_shard_entries(phase: dict) -> list[dict]:
    """A phase's shard entries over all its components."""
    return [shard for _, shard in phase_shards(phase)]


def resolve_shards(cache: ShardCache, phase: dict) -> _ResolvedShards:
    """Download (or find in the cache) every shard of a phase; the stream then only reads local files."""
    return _ResolvedShards({shard["path"]: cache.local_path(shard) for shard in phase_shard_entries(phase)})


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
    """Run ``work`` on rank 0 first, then on the others: downloads happen once, the rest hit the cache.

    A user error on rank 0 (service down, bad shard) is raised on every rank instead of leaving
    the others waiting at a barrier forever.
    """
    if runtime.world_size == 1:
        return work()
    result, error, failure = None, None, [None]
    if runtime.is_main:
        try:
            result = work()
        except MidmixError as raised:
            error, failure = raised, [str(raised)]
    dist.broadcast_object_list(failure, src=0)
    if error is not None:
        raise error
    if failure[0] is not None:
        raise MidmixError(f"rank 0 failed: {failure[0]}")
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
