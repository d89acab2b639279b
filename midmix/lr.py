"""The learning-rate segment of one phase: the contract between a mixture spec and the trainer.

A spec declares it per phase, the mixture manifest carries it, the trainer follows it (or a
training config overrides it). One model, one set of defaults, everywhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DecayShape = Literal["linear", "cosine", "1-sqrt"]
_TOLERANCE = 1e-6


class LrSegment(BaseModel):
    """How one phase spends its steps: warmup, stable and decay fractions summing to 1.

    Decay goes from the peak to ``final_lr_ratio * peak``; the default anneals to zero, as the
    anneal recipes of Llama 3 and OLMo 2 do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup: float = Field(default=0.0, ge=0, le=1)
    stable: float = Field(default=1.0, ge=0, le=1)
    decay: float = Field(default=0.0, ge=0, le=1)
    shape: DecayShape = "linear"
    final_lr_ratio: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> LrSegment:
        total = self.warmup + self.stable + self.decay
        if abs(total - 1.0) > _TOLERANCE:
            raise ValueError(f"lr warmup + stable + decay must sum to 1, got {total:g}")
        return self

    @classmethod
    def wsd(cls, warmup: float, decay: float, shape: DecayShape = "linear", final_lr_ratio: float = 0.0) -> LrSegment:
        """Warmup-stable-decay with the stable part filling the rest."""
        return cls(warmup=warmup, stable=1.0 - warmup - decay, decay=decay, shape=shape, final_lr_ratio=final_lr_ratio)

    @classmethod
    def cosine(cls, warmup: float = 0.0, final_lr_ratio: float = 0.0) -> LrSegment:
        """Warmup then one cosine decay over the rest of the phase."""
        return cls(warmup=warmup, stable=0.0, decay=1.0 - warmup, shape="cosine", final_lr_ratio=final_lr_ratio)

    @classmethod
    def constant(cls, warmup: float = 0.0) -> LrSegment:
        """Warmup then the peak LR to the end of the phase."""
        return cls(warmup=warmup, stable=1.0 - warmup, decay=0.0)
