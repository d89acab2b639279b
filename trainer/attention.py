"""Document-masked causal attention without a dense ``[L, L]`` mask.

A packed row holds several documents, and a token may attend only to earlier tokens of its own
document. A boolean mask says so but costs ``L^2`` bytes per row (1 GiB at 32k tokens) and
forces SDPA onto kernels that read it. Two kernels that know the structure instead:

* ``flex``: FlexAttention with a ``BlockMask`` built from the document ids (CUDA; compiled
  Triton kernels skip every tile that lies across documents, in one launch however many
  documents a row holds). FlexAttention has no CPU backward in torch 2.13, so it is for GPUs.
* ``varlen``: variable-length attention by document: each document run of each row is attended
  on its own with ``is_causal=True`` (SDPA's flash kernel, memory linear in the run's length);
  runs of equal length share one call. Exact, any device; the number of calls per layer is the
  number of distinct run lengths in the micro-batch.

``DocumentLayout.build`` works out a micro-batch's runs (or block mask) once per forward pass,
shared by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Kernel = Literal["varlen", "flex"]


def default_kernel(device: torch.device) -> Kernel:
    """FlexAttention on CUDA, variable-length SDPA elsewhere."""
    return "flex" if device.type == "cuda" else "varlen"


@dataclass
class DocumentLayout:
    """How one micro-batch's rows split into documents, in the form its kernel needs."""

    kernel: Kernel
    shape: tuple[int, int]
    groups: list[torch.Tensor] | None = None  # varlen: per run length, token indices [runs, length] of flattened rows
    inverse: torch.Tensor | None = None  # varlen: puts the concatenated groups back in row order
    block_mask: object | None = None  # flex: a BlockMask

    @classmethod
    def build(cls, doc_ids: torch.Tensor, kernel: Kernel) -> DocumentLayout:
        """The layout of ``doc_ids`` [b, L]: a run is a maximal stretch of one document id within a row."""
        b, length = doc_ids.shape
        if kernel == "flex":
            return cls(kernel, (b, length), block_mask=_block_mask(doc_ids))
        flat = doc_ids.reshape(-1)
        starts = torch.ones_like(flat, dtype=torch.bool)
        starts[1:] = flat[1:] != flat[:-1]
        starts[::length] = True  # every row starts a run
        begin = torch.nonzero(starts).flatten()
        sizes = torch.diff(begin, append=torch.tensor([b * length], device=begin.device))
        groups = []
        for size in torch.unique(sizes).tolist():
            firsts = begin[sizes == size]
            groups.append(firsts[:, None] + torch.arange(size, device=begin.device))
        order = torch.cat([group.reshape(-1) for group in groups])
        return cls(kernel, (b, length), groups=groups, inverse=torch.argsort(order))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention within documents; q, k, v and the result are [b, heads, L, head_dim]."""
        if self.kernel == "flex":
            return _flex_attention()(q, k, v, block_mask=self.block_mask)
        b, heads, length, width = q.shape
        flat = [t.transpose(1, 2).reshape(b * length, heads, width) for t in (q, k, v)]
        outputs = []
        for index in self.groups or []:
            runs, size = index.shape
            q_run, k_run, v_run = (t[index.reshape(-1)].view(runs, size, heads, width).transpose(1, 2) for t in flat)
            out = F.scaled_dot_product_attention(q_run, k_run, v_run, is_causal=True)
            outputs.append(out.transpose(1, 2).reshape(runs * size, heads, width))
        merged = torch.cat(outputs)[self.inverse]
        return merged.view(b, length, heads, width).transpose(1, 2)


BLOCK = 128
"""FlexAttention's tile: the block mask says, per (query tile, key tile), skip, compute fully, or mask per token."""


def _block_mask(doc_ids: torch.Tensor) -> object:
    """The causal same-document ``BlockMask``, built from each tile's first and last document id.

    ``create_block_mask`` evaluates the mask for every (query, key) pair, ``L^2`` work and memory
    (10 GiB at 32k tokens, measured); here it is ``(L / 128)^2`` tile comparisons. Document ids
    never decrease along a row (packing numbers documents in stream order), so a key tile can meet
    a query tile's documents only if its last id reaches the query tile's first, and a tile pair
    is fully visible when both hold one and the same document and the key tile is strictly earlier.
    """
    from torch.nn.attention.flex_attention import BlockMask

    def same_document_causal(batch, head, query, key):  # noqa: ANN001, ARG001 - FlexAttention's mask_mod signature
        return (query >= key) & (doc_ids[batch, query] == doc_ids[batch, key])

    b, length = doc_ids.shape
    tiles = -(-length // BLOCK)
    padded = F.pad(doc_ids, (0, tiles * BLOCK - length), value=0)
    padded[:, length:] = doc_ids[:, -1:]  # padding repeats the last id: it adds no document
    per_tile = padded.view(b, tiles, BLOCK)
    first, last = per_tile[..., 0], per_tile[..., -1]  # [b, tiles]
    query, key = torch.arange(tiles, device=doc_ids.device)[:, None], torch.arange(tiles, device=doc_ids.device)[None, :]
    meets = (key <= query) & (last[:, None, :] >= first[:, :, None])  # [b, query tile, key tile]
    single = first == last
    full = (key < query) & single[:, None, :] & single[:, :, None] & (first[:, None, :] == first[:, :, None])
    full &= (query + 1) * BLOCK <= length  # a tile cut by the row's end is masked token by token, as create_block_mask does
    partial = meets & ~full

    def listing(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = chosen.sum(-1, dtype=torch.int32)
        indices = torch.argsort((~chosen).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # chosen tiles first
        return counts[:, None].contiguous(), indices[:, None].contiguous()

    counts, indices = listing(partial)
    full_counts, full_indices = listing(full)
    return BlockMask.from_kv_blocks(
        counts, indices, full_counts, full_indices, BLOCK_SIZE=BLOCK, mask_mod=same_document_causal,
        seq_lengths=(length, length),
    )


_COMPILED: list = []


def _flex_attention():
    """FlexAttention compiled once per process (uncompiled it materialises the scores)."""
    if not _COMPILED:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED.append(torch.compile(flex_attention, dynamic=False))
    return _COMPILED[0]
