"""A small Llama-style decoder: RMSNorm, SwiGLU, RoPE and document-masked causal attention.

Readable top to bottom on purpose (nanoGPT's model.py is the bar). Two things are specific to
mid-training on packed mixtures:

* attention is masked per document (``doc_ids``): a packed sequence holds several documents and
  a token must never attend to a different document than its own (``trainer/attention.py``:
  FlexAttention block masks on CUDA, variable-length SDPA by document elsewhere; no dense mask);
* RoPE positions come from ``position_ids`` (reset at each document start) and the rotary base
  ``theta`` can change between phases (long-context phases raise it, or scale the frequencies
  with YaRN, ``midmix.rope``), so the rotary cache is rebuilt by :meth:`Decoder.set_rope`
  whenever a phase changes ``rope_theta``, ``rope_scaling`` or ``seq_len``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from midmix.errors import MidmixError
from midmix.rope import RopeScaling
from midmix.trainer.attention import DocumentLayout, default_kernel


class ModelConfig(BaseModel):
    """Model dimensions; ``vocab_size`` None means "take it from the mixture's tokenizer"."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int | None = Field(default=None, ge=2)
    d_model: int = Field(default=256, ge=8)
    n_layers: int = Field(default=4, ge=1)
    n_heads: int = Field(default=4, ge=1)
    ffn_hidden: int | None = Field(default=None, ge=8, description="SwiGLU width; default 8/3 d_model rounded to 64")
    max_seq_len: int = Field(default=1024, ge=8)
    rope_theta: float = Field(default=10000.0, gt=0)
    tie_embeddings: bool = True
    norm_eps: float = Field(default=1e-5, gt=0)
    init_std: float = Field(default=0.02, gt=0)
    attention: Literal["auto", "varlen", "flex"] = Field(
        default="auto", description="document-masked attention kernel; auto: flex on CUDA, varlen elsewhere"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head size d_model/n_heads = {self.d_model // self.n_heads} must be even for RoPE")
        return self

    @property
    def hidden(self) -> int:
        """SwiGLU hidden width: as configured, else Llama's 8/3 * d_model rounded up to 64."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return 64 * math.ceil(8 * self.d_model / 3 / 64)


class RMSNorm(nn.Module):
    """Root-mean-square norm: LayerNorm without centring or bias, as in Llama."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 so bf16 autocast does not lose the small variances.
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotary_tables(
    theta: float, head_dim: int, seq_len: int, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [seq_len, head_dim/2] for rotary position embeddings with base ``theta``.

    With YaRN ``scaling`` a pair that turns fewer than ``beta_slow`` times over the original
    context is slowed down ``factor`` times (interpolated), one that turns more than ``beta_fast``
    times keeps its frequency, and the pairs between are blended linearly; both tables are then
    multiplied by ``0.1 ln(factor) + 1``, which sharpens attention logits by its square.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    gain = 1.0
    if scaling is not None:
        original = scaling.original_seq_len or seq_len
        turns = original * inv_freq / (2 * math.pi)  # rotations of each pair over the original context
        keep = ((turns - scaling.beta_slow) / (scaling.beta_fast - scaling.beta_slow)).clamp(0.0, 1.0)
        inv_freq = inv_freq * keep + inv_freq / scaling.factor * (1 - keep)
        gain = 0.1 * math.log(scaling.factor) + 1.0
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return (angles.cos() * gain).float(), (angles.sin() * gain).float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (first half, second half) of ``x`` [b, h, L, d] by per-token angles [b, 1, L, d/2]."""
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    return rotated.type_as(x)


class Attention(nn.Module):
    """Multi-head causal self-attention within documents (``trainer/attention.py``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: DocumentLayout) -> torch.Tensor:
        b, length, width = x.shape
        q, k, v = (t.view(b, length, self.n_heads, -1).transpose(1, 2) for t in self.qkv(x).split(width, dim=-1))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = layout.attend(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, length, width))


class SwiGLU(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.hidden, bias=False)
        self.up = nn.Linear(config.d_model, config.hidden, bias=False)
        self.down = nn.Linear(config.hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: DocumentLayout) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, layout)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    """The language model: embeddings, ``n_layers`` blocks, final norm, output head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size is None:
            raise MidmixError("model vocab_size is not set; leave it out of the config to take the tokenizer's")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init_weights)
        # Residual output projections start smaller so the residual stream's variance does not grow with depth.
        for block in self.blocks:
            for proj in (block.attn.out, block.mlp.down):
                nn.init.normal_(proj.weight, std=config.init_std / math.sqrt(2 * config.n_layers))
        self.rope_theta = config.rope_theta
        self.rope_len = config.max_seq_len
        self.rope_scaling: RopeScaling | None = None
        self._set_tables()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)

    def _set_tables(self) -> None:
        cos, sin = rotary_tables(self.rope_theta, self.config.d_model // self.config.n_heads, self.rope_len, self.rope_scaling)
        device = self.embed.weight.device
        # Not persistent: the tables follow from (theta, seq_len), which the phase sets on resume.
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def set_rope(self, theta: float, seq_len: int, scaling: RopeScaling | None = None) -> None:
        """Rebuild the rotary tables for a phase's ``rope_theta``, ``rope_scaling`` and ``seq_len``
        (checked against max_seq_len)."""
        check_seq_len(seq_len, self.config)
        if (theta, seq_len, scaling) != (self.rope_theta, self.rope_len, self.rope_scaling):
            self.rope_theta, self.rope_len, self.rope_scaling = float(theta), seq_len, scaling
            self._set_tables()

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [b, L, vocab]; without doc_ids the whole row is one document, without position_ids 0..L-1."""
        b, length = input_ids.shape
        if length > self.rope_len:
            raise MidmixError(f"sequence of {length} tokens is longer than the rotary tables ({self.rope_len}); call set_rope")
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(b, length)
        if doc_ids is None:
            doc_ids = torch.zeros_like(input_ids)
        cos = self.rope_cos[position_ids][:, None]
        sin = self.rope_sin[position_ids][:, None]
        kernel = default_kernel(input_ids.device) if self.config.attention == "auto" else self.config.attention
        layout = DocumentLayout.build(doc_ids, kernel)  # once per pass, shared by every layer
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin, layout)
        return self.head(self.norm(x))

    def num_params(self) -> int:
        """Parameter count, tied weights counted once."""
        return sum(p.numel() for p in self.parameters())


def check_seq_len(seq_len: int, config: ModelConfig) -> None:
    """Refuse a phase whose sequences the model was not built for, before any training starts."""
    if seq_len > config.max_seq_len:
        raise MidmixError(
            f"phase seq_len {seq_len} exceeds the model's max_seq_len {config.max_seq_len}; "
            f"raise model.max_seq_len to at least {seq_len} or train a mixture with shorter sequences"
        )
