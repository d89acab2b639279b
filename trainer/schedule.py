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
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from midmix.lr import DecayShape, LrSegment


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
