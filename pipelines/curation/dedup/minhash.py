"""MinHash signatures of word shingles, vectorised over a batch (one numpy pass per permutation).

Permutation ``k`` maps a 64-bit shingle hash ``s`` to ``a_k * s + b_k (mod 2**64)`` (multiply-
shift family); the signature keeps the top 32 bits of each minimum. Seeds are fixed so every
task, on any machine, computes the same signature for the same text.
"""

from __future__ import annotations

import numpy as np
import xxhash
from datatrove.data import Document

from midmix.pipelines.curation.steps.base import BatchStep
from midmix.pipelines.curation.steps.signals import WORDS
from midmix.pipelines.curation.steps.words import concat_words, ngram_hashes

EXACT_HASH = "exact_hash"
SIGNATURE = "minhash"
_SEED = 0x5EED_0D0C


def permutations(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (odd multiplier, offset) pairs of ``count`` hash permutations."""
    rng = np.random.default_rng(_SEED)
    multipliers = rng.integers(1, 2**63, size=count, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    offsets = rng.integers(0, 2**63, size=count, dtype=np.uint64)
    return multipliers, offsets


def signatures(words: np.ndarray, offsets: np.ndarray, ngram: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_docs, count) uint32 signatures and a mask of docs that have any shingle."""
    n_docs = len(offsets) - 1
    shingles, owners = ngram_hashes(words, offsets, ngram)
    result = np.full((n_docs, count), np.iinfo(np.uint32).max, dtype=np.uint32)
    present = np.zeros(n_docs, dtype=bool)
    if len(shingles) == 0:
        return result, present
    docs_with, starts = np.unique(owners, return_index=True)
    present[docs_with] = True
    multipliers, adds = permutations(count)
    hashed = np.empty_like(shingles)
    for k in range(count):
        np.multiply(shingles, multipliers[k], out=hashed)
        hashed += adds[k]
        result[docs_with, k] = np.minimum.reduceat(hashed, starts) >> np.uint64(32)
    return result, present


def exact_hash(text: str) -> int:
    """64-bit hash of the normalised text; equal hashes are exact duplicates."""
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


class DedupSignature(BatchStep):
    """Attach the exact-text hash and the MinHash signature (bytes) that stage 2 clusters on."""

    name = "signature"

    def __init__(self, ngram: int, num_perm: int, batch_size: int = 256):
        super().__init__(batch_size)
        self.ngram = ngram
        self.num_perm = num_perm

    def process_batch(self, docs: list[Document]) -> None:
        words, offsets = concat_words([doc.metadata[WORDS] for doc in docs])
        sigs, present = signatures(words, offsets, self.ngram, self.num_perm)
        for doc, signature, has_shingles in zip(docs, sigs, present):
            doc.metadata[EXACT_HASH] = exact_hash(doc.text)
            doc.metadata[SIGNATURE] = signature.tobytes() if has_shingles else None
