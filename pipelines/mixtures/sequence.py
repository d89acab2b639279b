"""Which rows a component's shards hold, in which order: whole epochs, then a partial epoch.

A pure function of per-document token counts (in curriculum order), the component's token target
and a seeded order for the partial epoch, so every build task derives the same sequence.
"""

from __future__ import annotations

import numpy as np

from midmix.errors import MidmixError
from midmix.pipelines.mixtures.plan import EPOCH_TOLERANCE


def epoch_sequence(n_tokens: np.ndarray, target: int, partial_order: np.ndarray) -> np.ndarray:
    """Row indices to write: whole epochs in order, then the prefix of ``partial_order`` closest to ``target``.

    The partial epoch keeps curriculum order. Stopping at whichever document boundary is nearer (not the
    first one past the target) keeps every component within half a document of its budget, so realized
    shares stay close to the weights even when documents are long.
    """
    total = int(n_tokens.sum())
    if target <= 0 or total == 0:
        return np.zeros(0, dtype=np.int64)
    full, remainder = divmod(target, total)
    parts = [np.arange(len(n_tokens), dtype=np.int64)] * full
    if remainder:
        reached = np.cumsum(n_tokens[partial_order], dtype=np.int64)
        count = int(np.searchsorted(reached, remainder)) + 1
        below = int(reached[count - 2]) if count >= 2 else 0
        if remainder - below < int(reached[count - 1]) - remainder and (count >= 2 or full > 0):
            count -= 1
        parts.append(np.sort(partial_order[:count]).astype(np.int64))
    return np.concatenate(parts)


def check_epochs(phase: str, component: str, requested: int, available: int, cap: float) -> None:
    """Recheck the repetition cap with counts from the mixture's own tokenizer."""
    if requested > 0 and requested > available * cap * (1 + EPOCH_TOLERANCE):
        raise MidmixError(
            f"phase '{phase}': component '{component}' needs {requested / max(available, 1):.2f} epochs "
            f"with the mixture's tokenizer, cap is {cap:g}; lower its weight or the token_budget, or raise max_epochs"
        )
