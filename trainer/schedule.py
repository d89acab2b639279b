"""Learning-rate schedules tied to the mixture's phase boundaries.

Each phase carries an LR segment (from its manifest entry): fractions of its steps spent in
warmup, stable and decay, a decay shape and a final ratio. One rule covers every schedule:

* warmup ramps linearly from the phase's start LR to the peak (the first phase starts from 0, a
  later phase from where the previous one ended, so a later warmup *rewarms* a decayed LR);
* stable holds the peak;
* decay goes from the peak to ``final_lr_ratio * peak`` with shape linear, cosine or 1-sqrt.

WSD is ``warmup/stable/decay``; cosine is ``warmup w, stable 0, decay 1-w, shape cosine``;
constant is ``stable 1``; rewarm + re-decay is a later phase with its own warmup and decay.
:func:`lr_at` is a pure function of the phase step counts, their segments and the peak LR.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

DecayShape = Literal["linear", "cosine", "1-sqrt"]


class LrSegment(BaseModel):
    """How one phase spends its steps: warmup, stable and decay fractions summing to 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup: float = Field(default=0.0, ge=0, le=1)
    stable: float = Field(default=1.0, ge=0, le=1)
    decay: float = Field(default=0.0, ge=0, le=1)
    shape: DecayShape = "linear"
    final_lr_ratio: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "LrSegment":
        total = self.warmup + self.stable + self.decay
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"lr warmup + stable + decay must sum to 1, got {total:g}")
        return self

    @classmethod
    def wsd(cls, warmup: float, decay: float, shape: DecayShape = "linear", final_lr_ratio: float = 0.0) -> "LrSegment":
        """Warmup-stable-decay with the stable part filling the rest."""
        return cls(warmup=warmup, stable=1.0 - warmup - decay, decay=decay, shape=shape, final_lr_ratio=final_lr_ratio)

    @classmethod
    def cosine(cls, warmup: float = 0.0, final_lr_ratio: float = 0.0) -> "LrSegment":
        """Warmup then one cosine decay over the rest of the phase."""
        return cls(warmup=warmup, stable=0.0, decay=1.0 - warmup, shape="cosine", final_lr_ratio=final_lr_ratio)

    @classmethod
    def constant(cls, warmup: float = 0.0) -> "LrSegment":
        """Warmup then the peak LR to the end of the phase."""
        return cls(warmup=warmup, stable=1.0 - warmup, decay=0.0)


class PhaseLr(BaseModel):
    """One phase of the schedule: its number of optimizer steps and its LR segment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(ge=0)
    segment: LrSegment

    @property
    def warmup_steps(self) -> int:
        return round(self.segment.warmup * self.steps)

    @property
    def decay_steps(self) -> int:
        return min(round(self.segment.decay * self.steps), self.steps - self.warmup_steps)


def decay_factor(shape: DecayShape, progress: float) -> float:
    """Fraction of the way from final LR (0) to peak (1) at ``progress`` in [0, 1] through the decay."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - math.sqrt(progress)


def phase_lr(phase: PhaseLr, step: int, peak: float, start: float) -> float:
    """LR at 0-based ``step`` within one phase whose warmup starts from ``start``."""
    warmup, decay = phase.warmup_steps, phase.decay_steps
    if step < warmup:
        # Step 0 already moves (no wasted step at the start LR); step warmup-1 reaches the peak.
        return start + (peak - start) * (step + 1) / warmup
    decay_start = phase.steps - decay
    if step < decay_start:
        return peak
    final = phase.segment.final_lr_ratio * peak
    progress = (step - decay_start + 1) / decay
    return final + (peak - final) * decay_factor(phase.segment.shape, progress)


def lr_at(global_step: int, phases: Sequence[PhaseLr], peak: float) -> float:
    """LR of optimizer step ``global_step`` (0-based, counted over all phases in order)."""
    if global_step < 0:
        raise ValueError(f"step must be >= 0, got {global_step}")
    start = 0.0
    offset = 0
    for phase in phases:
        if global_step < offset + phase.steps:
            return phase_lr(phase, global_step - offset, peak, start)
        if phase.steps:
            start = phase_lr(phase, phase.steps - 1, peak, start)
        offset += phase.steps
    raise ValueError(f"step {global_step} is past the schedule's {offset} steps")


def total_steps(phases: Sequence[PhaseLr]) -> int:
    """Steps over all phases."""
    return sum(phase.steps for phase in phases)
