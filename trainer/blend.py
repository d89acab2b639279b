"""Exact blending: which component supplies each document position of a phase.

Megatron-LM's ``BlendedDataset`` walks the positions one by one and picks the component
furthest behind its target (``argmax weight * (i + 1) - count``). A Python loop over 10M
positions takes seconds, so we compute the same idea in closed form: component ``c``'s
``k``-th document is *due* at position ``(k + 1/2) / w_c`` (where the greedy rule finds it
half a document behind), and the schedule is all components' documents merged by due
position, ties to the lower component index. For two components its running counts stay
within one document of the greedy loop's; any 1,000-document window of a 70/30 or 5:4:3:2:1
mix is within one document of target (both tested). With many components of arbitrary
weights a window can be off by up to about two documents, as with the greedy loop (about 1.5).

Due positions are compared in exact integer arithmetic (weights as integers ``r_c``: the
document ``k`` of ``c`` is due before document ``j`` of ``d`` iff ``(2k+1) r_d < (2j+1) r_c``),
so the schedule is deterministic across machines and needs no sort: each document's position
is its own index plus, for every other component, how many of that component's documents
are due earlier, one vectorised integer expression per component pair. That is
O(total * n_components) numpy work; 10M positions over 5 components take about 0.3 s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from midmix.errors import MidmixError

_FLOAT_SCALE = 1 << 24
"""Float weights become integers on this scale (relative error below 1e-7)."""


def blend_schedule(weights: Sequence[float], total: int) -> np.ndarray:
    """Component index (int16) for each of ``total`` positions, each share tracking its weight."""
    ratios = _integer_weights(weights)
    if total < 0:
        raise MidmixError(f"blend total must be >= 0, got {total}")
    schedule = np.full(total, -1, dtype=np.int16)
    weight_sum = int(ratios.sum())
    for component, ratio in enumerate(ratios):
        if ratio == 0:
            continue
        # Enough candidates: a prefix never holds more than its share plus n_components.
        candidates = -(-total * int(ratio) // weight_sum) + len(ratios) + 1
        due = 2 * np.arange(candidates, dtype=np.int64) + 1
        position = np.arange(len(due), dtype=np.int64)
        for other, other_ratio in enumerate(ratios):
            if other == component or other_ratio == 0:
                continue
            # Documents j of `other` with (2j+1) * ratio < due * other_ratio (<= for ties
            # when `other` has the lower index): count odd numbers up to a bound.
            bound = due * int(other_ratio) - (0 if other < component else 1)
            position += (bound // int(ratio) + 1) // 2
        keep = position < total
        schedule[position[keep]] = component
    return schedule


def _integer_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights as exact non-negative integers: kept if already integral, else scaled."""
    values = np.asarray(weights, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise MidmixError("blend weights must be a non-empty list of numbers")
    if len(values) > np.iinfo(np.int16).max:
        raise MidmixError(f"at most {np.iinfo(np.int16).max} components can be blended, got {len(values)}")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise MidmixError(f"blend weights must be finite, >= 0 and not all zero, got {list(weights)}")
    if np.all(values == np.round(values)) and values.max() < 2**31:
        return values.astype(np.int64)
    scaled = np.round(values / values.sum() * _FLOAT_SCALE).astype(np.int64)
    scaled[(scaled == 0) & (values > 0)] = 1
    return scaled
