"""Global dedup clustering: exact groups plus MinHash LSH candidates verified by exact Jaccard.

Only ids, hashes, signatures and scores are held for the whole corpus; texts are re-read just
for the candidate pairs LSH proposes, to compute their true shingle Jaccard. Banding finds the
pairs (20 bands x 5 rows catch a 0.8-Jaccard pair with probability 0.9996); verification keeps
precision, so more bands cost only extra checks, never false merges. Clusters are stars around
the kept document, so every removed document is verified against what replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from midmix.pipelines.curation.config import DedupConfig
from midmix.pipelines.curation.steps.words import mix64, ngram_hashes, split_words

_ALL_PAIRS_UP_TO = 8
_ESTIMATE_SLACK = 0.25  # an estimate this far below the threshold is >5 sigma from a true match
_VERIFY_CHUNK = 4096  # candidate pairs verified per text load


@dataclass(frozen=True)
class DedupInput:
    """The per-document columns clustering needs, in global document order."""

    exact_hashes: np.ndarray  # uint64
    signatures: np.ndarray  # (n, num_perm) uint32
    has_signature: np.ndarray  # bool
    quality: np.ndarray  # float64, NaN when unscored


@dataclass(frozen=True)
class DedupResult:
    """Per document: its cluster's keeper, the cluster size and, for removed ones, why."""

    keeper: np.ndarray  # int64 global index of the kept doc of its cluster
    size: np.ndarray  # int64
    reason: list[str | None]


def shingle_set(text: str, ngram: int) -> np.ndarray:
    """Distinct shingle hashes of one (normalised) text, as MinHash saw them."""
    return shingle_sets([text], ngram)[0]


def shingle_sets(texts: list[str], ngram: int, batch_size: int = 256) -> list[np.ndarray]:
    """Distinct shingle hashes of each text, computed a batch at a time."""
    result = []
    for start in range(0, len(texts), batch_size):
        batch = split_words(texts[start : start + batch_size])
        hashes, owners = ngram_hashes(batch.hashes, batch.offsets, ngram)
        bounds = np.searchsorted(owners, np.arange(len(batch.offsets)))
        result.extend(np.unique(hashes[bounds[i] : bounds[i + 1]]) for i in range(len(batch.offsets) - 1))
    return result


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted distinct hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def lsh_candidates(signatures: np.ndarray, members: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Distinct (i, j) pairs, i < j, of ``members`` that share at least one band bucket."""
    pairs: list[np.ndarray] = []
    sigs = signatures[members].astype(np.uint64)
    for band in range(bands):
        key = np.zeros(len(members), dtype=np.uint64)
        for column in range(band * rows, (band + 1) * rows):
            key = key * np.uint64(0x100000001B3) + sigs[:, column]
        key = mix64(key ^ np.uint64(band))
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
        sizes = np.diff(np.append(starts, len(sorted_keys)))
        twos = starts[sizes == 2]  # most buckets hold one pair: take them all at once
        pairs.append(np.stack([members[order[twos]], members[order[twos + 1]]], axis=1))
        for start, size in zip(starts[sizes > 2].tolist(), sizes[sizes > 2].tolist()):
            pairs.append(_bucket_pairs(members[order[start : start + size]]))
    stacked = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    if len(stacked) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.sort(stacked, axis=1), axis=0)


def _bucket_pairs(bucket: np.ndarray) -> np.ndarray:
    """All pairs of a small bucket; for a large one, each member with the first and its predecessor."""
    if len(bucket) <= _ALL_PAIRS_UP_TO:
        left, right = np.triu_indices(len(bucket), k=1)
        return np.stack([bucket[left], bucket[right]], axis=1)
    rest = bucket[1:]
    return np.concatenate(
        [np.stack([np.full(len(rest), bucket[0]), rest], axis=1), np.stack([bucket[:-1], bucket[1:]], axis=1)]
    )


def cluster_documents(
    data: DedupInput, config: DedupConfig, load_texts: Callable[[np.ndarray], list[str]]
) -> DedupResult:
    """Group exact duplicates, link verified near duplicates, keep the best-quality doc of each cluster."""
    n = len(data.exact_hashes)
    group = np.arange(n)
    if config.exact and n:
        order = np.argsort(data.exact_hashes, kind="stable")
        sorted_hashes = data.exact_hashes[order]
        first_of_run = np.concatenate([[True], sorted_hashes[1:] != sorted_hashes[:-1]])
        group[order] = order[np.maximum.accumulate(np.where(first_of_run, np.arange(n), 0))]
    edges: list[tuple[int, int]] = []
    if config.minhash and n:
        representatives = np.unique(group)
        members = representatives[data.has_signature[representatives]]
        candidates = lsh_candidates(data.signatures, members, config.num_bands, config.rows_per_band)
        edges = _verified_pairs(candidates, data, config, load_texts)
    return _assign_keepers(group, edges, data)


def _verified_pairs(
    candidates: np.ndarray, data: DedupInput, config: DedupConfig, load_texts: Callable
) -> list[tuple[int, int]]:
    """Candidate pairs whose exact shingle Jaccard reaches the threshold, checked a chunk at a time.

    Signature estimates discard the hopeless pairs first; texts are loaded per chunk of pairs, so
    memory stays bounded however many documents have near-duplicates.
    """
    edges: list[tuple[int, int]] = []
    for start in range(0, len(candidates), _VERIFY_CHUNK):
        chunk = candidates[start : start + _VERIFY_CHUNK]
        estimate = (data.signatures[chunk[:, 0]] == data.signatures[chunk[:, 1]]).mean(axis=1)
        plausible = chunk[estimate >= config.jaccard_threshold - _ESTIMATE_SLACK]
        if len(plausible) == 0:
            continue
        needed = np.unique(plausible)
        shingles = dict(zip(needed.tolist(), shingle_sets(load_texts(needed), config.ngram)))
        edges.extend(
            (a, b) for a, b in plausible.tolist() if jaccard(shingles[a], shingles[b]) >= config.jaccard_threshold
        )
    return edges


def _assign_keepers(group: np.ndarray, edges: list[tuple[int, int]], data: DedupInput) -> DedupResult:
    """Greedy star clustering: the best unassigned group keeps itself and takes its direct neighbours.

    Every removed document is then an exact duplicate of, or verified >= threshold similar to,
    the very document its cluster keeps; a chain A~B~C with A and C dissimilar never makes C a
    duplicate of A (union-find would).
    """
    n = len(group)
    quality = np.where(np.isnan(data.quality), -np.inf, data.quality)
    by_quality = np.lexsort((np.arange(n), -quality))  # best first, then input order
    face: dict[int, int] = {}  # group -> its best document
    for item in by_quality.tolist():
        face.setdefault(int(group[item]), item)
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    keeper_of: dict[int, int] = {}
    for item in by_quality.tolist():
        node = int(group[item])
        if node in keeper_of:
            continue
        keeper_of[node] = face[node]
        for other in neighbours.get(node, ()):
            keeper_of.setdefault(other, face[node])
    keeper = np.array([keeper_of[node] for node in group.tolist()], dtype=np.int64)
    size = np.bincount(keeper, minlength=n)[keeper] if n else np.zeros(0, np.int64)
    reason: list[str | None] = []
    for item, kept in enumerate(keeper.tolist()):
        if item == kept:
            reason.append(None)
        elif data.exact_hashes[item] == data.exact_hashes[kept]:
            reason.append("exact_duplicate")
        else:
            reason.append("near_duplicate")
    return DedupResult(keeper=keeper, size=size, reason=reason)
