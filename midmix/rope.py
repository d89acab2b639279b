"""RoPE scaling of a long-context phase: the contract between a mixture spec, its manifest and the model.

A phase that extends the context may keep ``rope_theta`` and scale the rotary frequencies with
YaRN (Peng et al. 2023, used by Qwen2.5/Qwen3 and DeepSeek-V3 for context extension): dimensions
that rotate fast keep their frequency, slow ones are interpolated by ``factor``, with a linear
ramp between ``beta_fast`` and ``beta_slow`` rotations over ``original_seq_len``, and attention
logits are sharpened by ``0.1 ln(factor) + 1``. The spec may leave ``original_seq_len`` out to
mean the previous phase's ``seq_len``; the manifest always carries it resolved.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RopeScaling(BaseModel):
    """YaRN settings of one phase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["yarn"] = "yarn"
    factor: float = Field(gt=1, description="how many times longer than original_seq_len the context may get")
    original_seq_len: int | None = Field(
        default=None, gt=0, description="the context the model was trained on; None: the previous phase's seq_len"
    )
    beta_fast: float = Field(default=32.0, gt=0, description="dimensions rotating more often than this keep their frequency")
    beta_slow: float = Field(default=1.0, gt=0, description="dimensions rotating less often than this are fully interpolated")

    @model_validator(mode="after")
    def _fast_above_slow(self) -> RopeScaling:
        if self.beta_fast <= self.beta_slow:
            raise ValueError(f"rope_scaling beta_fast ({self.beta_fast:g}) must be above beta_slow ({self.beta_slow:g})")
        return self
