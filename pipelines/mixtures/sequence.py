"""Which rows a component's shards hold, in which order.

A pure function of per-document token counts (in curriculum order), the component's token target,
its length buckets and a seeded order for the partial epoch, so every build task derives the same
sequence. A component repeated for 2.5 epochs has every document twice and a seeded half of them
three times (``repeat_counts``). With a curriculum key the copies keep the curriculum over all
repeats: each document's copies sit ``REPEAT_SPREAD`` of the component apart around its
curriculum place, not epoch after epoch, which would restart the curriculum each epoch (a
saw-tooth); a shuffled component repeats epoch after epoch, keeping repeats far apart. In a phase
with length buckets each bucket of a component is repeated to its own target.
"""

from __future__ import annotations

import numpy as np

from midmix.errors import MidmixError
from midmix.pipelines.mixtures.plan import EPOCH_TOLERANCE

REPEAT_SPREAD = 1 / 32
"""Copies of a repeated document in a curriculum-ordered component sit this fraction of the
component apart: the order strays at most ``(copies - 1) / 2 * REPEAT_SPREAD`` from the curriculum
and a document comes back after about 3% of its component, not right after itself."""


def part_sequence(n_tokens: np.ndarray, part: dict, partial_order: np.ndarray) -> tuple[np.ndarray, dict]:
    """A component part's row sequence and its stats: available tokens and, with length buckets,
    each bucket's target and realized tokens. The repetition cap is rechecked on these counts."""
    buckets = part.get("buckets") or []
    inside = [(n_tokens >= b["min_tokens"]) & (n_tokens < b["max_tokens"]) for b in buckets]
    available = int(n_tokens[np.logical_or.reduce(inside)].sum()) if buckets else int(n_tokens.sum())
    check_epochs(part["phase"], part["name"], part["requested_tokens"], available, part["max_epochs"])
    if not buckets:
        counts = repeat_counts(n_tokens, part["requested_tokens"], partial_order)
    else:
        counts = np.zeros(len(n_tokens), dtype=np.int64)
        for bucket, members in zip(buckets, inside):
            rows = np.flatnonzero(members)
            ranks = np.searchsorted(rows, partial_order[members[partial_order]])  # the bucket's rows in partial order
            counts[rows] = repeat_counts(n_tokens[rows], bucket["target_tokens"], ranks)
    stats: dict = {"available_tokens": available}
    if buckets:
        stats["buckets"] = [
            {**bucket, "realized_tokens": int((counts * n_tokens)[members].sum()), "docs": int(counts[members].sum())}
            for bucket, members in zip(buckets, inside)
        ]
    return curriculum_sequence(counts, part.get("keyed", False)), stats


def repeat_counts(n_tokens: np.ndarray, target: int, partial_order: np.ndarray) -> np.ndarray:
    """Copies of each row: whole epochs, plus one more for the prefix of ``partial_order`` closest to ``target``.

    Stopping at whichever document boundary is nearer (not the first one past the target) keeps
    every component within half a document of its budget, so realized shares stay close to the
    weights even when documents are long.
    """
    total = int(n_tokens.sum())
    counts = np.zeros(len(n_tokens), dtype=np.int64)
    if target <= 0 or total == 0:
        return counts
    full, remainder = divmod(target, total)
    counts += full
    if remainder:
        reached = np.cumsum(n_tokens[partial_order], dtype=np.int64)
        count = int(np.searchsorted(reached, remainder)) + 1
        below = int(reached[count - 2]) if count >= 2 else 0
        if remainder - below < int(reached[count - 1]) - remainder and (count >= 2 or full > 0):
            count -= 1
        counts[partial_order[:count]] += 1
    return counts


def curriculum_sequence(counts: np.ndarray, keyed: bool) -> np.ndarray:
    """Row indices to write, ``counts[i]`` copies of row ``i`` (rows are in curriculum order).

    Shuffled (no key): epoch after epoch, each in row order. With a key: every copy by its place
    ``i + (r - (counts[i] - 1) / 2) * REPEAT_SPREAD * rows``, so the curriculum holds over all repeats.
    """
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    copy = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # r: 0, 1, ... per row
    if not keyed:
        return rows[np.lexsort((rows, copy))]
    place = rows + (copy - (counts[rows] - 1) / 2) * REPEAT_SPREAD * len(counts)
    return rows[np.lexsort((copy, rows, place))]



def check_epochs(phase: str, component: str, requested: int, available: int, cap: float) -> None:
    """Recheck the repetition cap with counts from the mixture's own tokenizer."""
    if requested > 0 and requested > available * cap * (1 + EPOCH_TOLERANCE):
        raise MidmixError(
            f"phase '{phase}': component '{component}' needs {requested / max(available, 1):.2f} epochs "
            f"with the mixture's tokenizer, cap is {cap:g}; lower its weight or the token_budget, or raise max_epochs"
        )
