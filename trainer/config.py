"""``TrainConfig``: everything one training run does, validated once when the file is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from midmix.config_files import read_mapping_file, validate_model
from midmix.errors import MidmixError
from midmix.lr import LrSegment
from midmix.trainer.model import ModelConfig


class ServiceConfig(BaseModel):
    """Where the mixture is served from."""

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8000"
    token: str | None = Field(
        default_factory=lambda: os.environ.get("MIDMIX_TOKEN") or None,
        description="a read token when the service needs one; default: $MIDMIX_TOKEN (as for `midmix remote`)",
    )
    retries: int = Field(default=5, ge=0, description="retries with backoff before the service counts as down")


class CacheConfig(BaseModel):
    """Local shard cache: downloaded shards live here, evicted least-recently-used above the cap."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(default=None, description="None: <out_dir>/cache; share one between runs to download once")
    max_bytes: int = Field(default=20 * 2**30, ge=1)


class CheckpointConfig(BaseModel):
    """Checkpoints at every phase end and every ``every`` steps; a run resumes from the newest."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(default=None, description="None: <out_dir>/checkpoints")
    every: int | None = Field(default=None, ge=1, description="steps between checkpoints; None: phase ends only")
    keep: int = Field(default=3, ge=1)
    resume: bool = True


class TrainConfig(BaseModel):
    """One training run on one mixture version; see examples/train-demo.yaml."""

    model_config = ConfigDict(extra="forbid")

    service: ServiceConfig = ServiceConfig()
    data_dir: Path | None = Field(
        default=None, description="read the mixture from this midmix data directory instead of the service (hosts without one)"
    )
    mixture: str | None = Field(default=None, description="mixture version id, e.g. mix-1a2b3c4d5e6f7a8b (or --mixture)")
    cache: CacheConfig = CacheConfig()
    model: ModelConfig = ModelConfig()
    peak_lr: float = Field(default=3e-4, gt=0)
    lr: LrSegment | None = Field(default=None, description="use this LR segment for every phase instead of the manifest's")
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = Field(default=1.0, gt=0)
    global_batch_size: int = Field(default=32, ge=1, description="sequences per optimizer step over all ranks")
    micro_batch_size: int = Field(default=8, ge=1, description="sequences per forward pass on one rank")
    num_workers: int = Field(default=2, ge=0, description="DataLoader worker processes per rank")
    phases: list[str] | None = Field(default=None, description="phase names to train, in manifest order; None: all")
    max_steps_per_phase: int | None = Field(default=None, ge=1, description="cap on steps per phase (demos)")
    eval_sequences: int = Field(default=16, ge=1, description="held-out sequences per eval domain")
    log_every: int = Field(default=10, ge=1, description="steps between realized-share records and progress lines")
    checkpoint: CheckpointConfig = CheckpointConfig()
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU (exact, reproducible)"
    )
    cpu_threads: int | None = Field(default=None, ge=1, description="torch threads on CPU; None: torch's default")
    out_dir: Path = Path("train-out")

    @model_validator(mode="after")
    def _micro_divides_global(self) -> "TrainConfig":
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of micro_batch_size {self.micro_batch_size}"
            )
        return self

    @property
    def cache_dir(self) -> Path:
        """Where shards are cached."""
        return self.cache.dir if self.cache.dir is not None else self.out_dir / "cache"

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpoints are written and resumed from."""
        return self.checkpoint.dir if self.checkpoint.dir is not None else self.out_dir / "checkpoints"

    def with_overrides(self, url: str | None = None, mixture: str | None = None, out_dir: Path | None = None) -> "TrainConfig":
        """The config with the command line's --url, --mixture and --out applied."""
        update: dict = {}
        if url is not None:
            update["service"] = self.service.model_copy(update={"url": url})
        if mixture is not None:
            update["mixture"] = mixture
        if out_dir is not None:
            update["out_dir"] = Path(out_dir)
        return self.model_copy(update=update)

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank: global / (micro * world)."""
        per_rank, remainder = divmod(self.global_batch_size, self.micro_batch_size * world_size)
        if remainder or not per_rank:
            raise MidmixError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x world size {world_size}; change one so it divides"
            )
        return per_rank


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a YAML or JSON training config; relative paths in it are taken from the file's folder."""
    config = validate_model(TrainConfig, read_mapping_file(path, "training config"), "training config", f"in {path}")
    return _anchor_paths(config, Path(path).parent)


def _anchor_paths(config: TrainConfig, base: Path) -> TrainConfig:
    def anchored(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else base / value

    return config.model_copy(
        update={
            "out_dir": anchored(config.out_dir),
            "data_dir": anchored(config.data_dir),
            "cache": config.cache.model_copy(update={"dir": anchored(config.cache.dir)}),
            "checkpoint": config.checkpoint.model_copy(update={"dir": anchored(config.checkpoint.dir)}),
        }
    )
