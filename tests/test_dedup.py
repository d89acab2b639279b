"""Dedup on planted duplicates: recall >= 0.95 at 5-gram Jaccard >= 0.8, precision >= 0.98,
no exact duplicate survives, and each cluster keeps its best-quality document."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from midmix.pipelines.curation.config import DedupConfig
from midmix.pipelines.curation.dedup.cluster import (
    DedupInput,
    DedupResult,
    cluster_documents,
    jaccard,
    shingle_set,
)
from midmix.pipelines.curation.dedup.minhash import exact_hash, signatures
from midmix.pipelines.curation.steps.words import split_words

CONFIG = DedupConfig()


def planted_corpus(seed: int = 7) -> tuple[list[str], list[tuple[int, int]]]:
    """Unique random-word docs, plus an edited copy of most of them (1-8 word substitutions)."""
    rng = np.random.default_rng(seed)
    texts, pairs = [], []
    for _ in range(160):
        words = [f"w{w}" for w in rng.integers(0, 50_000, size=rng.integers(120, 400))]
        texts.append(" ".join(words))
        edited = list(words)
        for position in rng.choice(len(words), size=rng.integers(1, 9), replace=False):
            edited[position] = f"x{rng.integers(0, 10**9)}"
        pairs.append((len(texts) - 1, len(texts)))
        texts.append(" ".join(edited))
    for index in range(0, 40, 2):  # exact copies of 20 originals
        pairs.append((index, len(texts)))
        texts.append(texts[index])
    return texts, pairs


def run_dedup(texts: list[str], quality: np.ndarray, config: DedupConfig = CONFIG):
    batch = split_words(texts)
    sigs, present = signatures(batch.hashes, batch.offsets, config.ngram, config.num_bands * config.rows_per_band)
    data = DedupInput(np.array([exact_hash(text) for text in texts], dtype=np.uint64), sigs, present, quality)
    return cluster_documents(data, config, lambda indices: [texts[i] for i in indices])


class Planted(NamedTuple):
    texts: list[str]
    pairs: list[tuple[int, int]]
    quality: np.ndarray
    shingles: list[np.ndarray]
    result: DedupResult


@pytest.fixture(scope="module")
def planted() -> Planted:
    texts, pairs = planted_corpus()
    quality = np.random.default_rng(1).random(len(texts))
    shingles = [shingle_set(text, CONFIG.ngram) for text in texts]
    return Planted(texts, pairs, quality, shingles, run_dedup(texts, quality))


def test_near_duplicate_recall_and_precision(planted: Planted) -> None:
    keeper, shingles = planted.result.keeper, planted.shingles
    similar = [(a, b) for a, b in planted.pairs if jaccard(shingles[a], shingles[b]) >= 0.8]
    assert len(similar) >= 120  # the plant has enough true pairs to measure recall
    found = sum(keeper[a] == keeper[b] for a, b in similar)
    assert found / len(similar) >= 0.95
    merged = [(item, kept) for item, kept in enumerate(keeper.tolist()) if item != kept]
    correct = sum(jaccard(shingles[item], shingles[kept]) >= 0.8 for item, kept in merged)
    assert correct / len(merged) >= 0.98


def test_pairs_below_threshold_stay_apart(planted: Planted) -> None:
    keeper, shingles = planted.result.keeper, planted.shingles
    dissimilar = [(a, b) for a, b in planted.pairs if jaccard(shingles[a], shingles[b]) < 0.8]
    assert dissimilar  # edits of up to 8 words push some pairs below 0.8
    assert all(keeper[a] != keeper[b] for a, b in dissimilar)


def test_no_exact_duplicate_survives(planted: Planted) -> None:
    texts, keeper = planted.texts, planted.result.keeper
    kept = [texts[i] for i in range(len(texts)) if keeper[i] == i]
    assert len(kept) == len(set(kept))
    copies = [(a, b) for a, b in planted.pairs if texts[a] == texts[b]]
    assert len(copies) == 20 and all(keeper[a] == keeper[b] for a, b in copies)
    exact_removed = [i for i, reason in enumerate(planted.result.reason) if reason == "exact_duplicate"]
    assert all(texts[i] == texts[keeper[i]] for i in exact_removed)


def test_cluster_keeps_highest_quality_and_records_size(planted: Planted) -> None:
    keeper = planted.result.keeper
    for cluster in set(keeper.tolist()):
        members = np.flatnonzero(keeper == cluster)
        assert cluster == members[np.argmax(planted.quality[members])]
        assert (planted.result.size[members] == len(members)).all()


def test_exact_only_mode_ignores_near_duplicates() -> None:
    texts = [
        "alpha beta gamma delta epsilon zeta eta theta",
        "alpha beta gamma delta epsilon zeta eta iota",
        "alpha beta gamma delta epsilon zeta eta theta",
    ]
    result = run_dedup(texts, np.array([0.1, 0.9, 0.5]), DedupConfig(minhash=False))
    assert result.keeper.tolist() == [2, 1, 2]
    assert result.reason == ["exact_duplicate", None, None]
    assert result.size.tolist() == [2, 1, 2]
