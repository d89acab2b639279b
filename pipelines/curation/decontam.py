"""Decontamination: drop documents that contain an evaluation item, by word n-gram overlap.

Each eval file becomes a sorted array of n-gram hashes (the same word hashes as signals and
MinHash use). A document is contaminated by an eval item when it holds at least
``overlap_threshold`` of that item's distinct n-grams; the drop reason names the eval set
(``decontam:<file stem>``) so a manifest shows which benchmark each drop protects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datatrove.data import Document

from midmix.errors import MidmixError
from midmix.pipelines.curation.readers import read_records, resolve_inputs
from midmix.pipelines.curation.steps.base import BatchStep
from midmix.pipelines.curation.steps.normalize import normalize_text
from midmix.pipelines.curation.steps.signals import WORDS
from midmix.pipelines.curation.steps.words import concat_words, ngram_hashes, split_words

_FILTER_BITS = 1 << 24  # 2 MiB bitmap: most document n-grams are rejected by one lookup


def _filter_of(hashes: np.ndarray) -> np.ndarray:
    bitmap = np.zeros(_FILTER_BITS, dtype=bool)
    bitmap[(hashes % np.uint64(_FILTER_BITS)).astype(np.int64)] = True
    return bitmap


@dataclass(frozen=True)
class EvalIndex:
    """Distinct n-gram hashes of all eval items, sorted, with the item each belongs to."""

    hashes: np.ndarray  # uint64, sorted, unique
    items: np.ndarray  # int64 item index per hash
    item_ngrams: np.ndarray  # int64 distinct n-grams per item
    item_set: list[str]  # eval set name per item
    bitmap: np.ndarray  # bool, set at (hash mod size) for every eval n-gram

    def contaminating_sets(self, words: np.ndarray, offsets: np.ndarray, n: int, threshold: float) -> list[str | None]:
        """Per document: the eval set of an item it contains, or None."""
        n_docs = len(offsets) - 1
        result: list[str | None] = [None] * n_docs
        doc_hashes, owners = ngram_hashes(words, offsets, n)
        maybe = self.bitmap[(doc_hashes % np.uint64(_FILTER_BITS)).astype(np.int64)]
        doc_hashes, owners = doc_hashes[maybe], owners[maybe]
        if len(self.hashes) == 0 or len(doc_hashes) == 0:
            return result
        position = np.minimum(np.searchsorted(self.hashes, doc_hashes), len(self.hashes) - 1)
        found = self.hashes[position] == doc_hashes
        if not found.any():
            return result
        pairs = np.unique(
            np.stack([owners[found], self.items[position[found]], doc_hashes[found].view(np.int64)]), axis=1
        )
        doc_item, matches = np.unique(pairs[:2], axis=1, return_counts=True)
        hit = matches >= threshold * self.item_ngrams[doc_item[1]]
        for doc, item in zip(doc_item[0][hit], doc_item[1][hit]):
            result[doc] = result[doc] or self.item_set[item]
        return result


def build_eval_index(eval_files: list[str], n: int, text_field: str = "text") -> EvalIndex:
    """Read every eval file (JSONL, Parquet or HF dataset folder) into one n-gram index."""
    hashes, items, item_ngrams, item_set = [], [], [], []
    for unit in resolve_inputs(eval_files):
        for _, record in read_records(unit):
            text = record.get(text_field)
            if not isinstance(text, str) or not text.strip():
                raise MidmixError(f"eval file {unit.url}: every item needs a non-empty '{text_field}' string")
            words, offsets = concat_words([split_words([normalize_text(text)]).hashes])
            distinct = np.unique(ngram_hashes(words, offsets, n)[0])
            hashes.append(distinct)
            items.append(np.full(len(distinct), len(item_set), dtype=np.int64))
            item_ngrams.append(len(distinct))
            item_set.append(unit.source_name)
    if not item_set:
        empty = np.zeros(0, np.uint64)
        return EvalIndex(empty, np.zeros(0, np.int64), np.zeros(0, np.int64), [], _filter_of(empty))
    all_hashes = np.concatenate(hashes)
    all_items = np.concatenate(items)
    unique, first = np.unique(all_hashes, return_index=True)
    return EvalIndex(unique, all_items[first], np.array(item_ngrams, dtype=np.int64), item_set, _filter_of(unique))


class Decontaminate(BatchStep):
    """Drop documents containing an eval item; reason ``decontam:<eval set>``."""

    name = "decontam"

    def __init__(self, eval_files: list[str], ngram: int, overlap_threshold: float, batch_size: int = 256):
        super().__init__(batch_size)
        self.eval_files = list(eval_files)
        self.ngram = ngram
        self.overlap_threshold = overlap_threshold
        self._index: EvalIndex | None = None

    def process_batch(self, docs: list[Document]) -> None:
        if self._index is None:
            self._index = build_eval_index(self.eval_files, self.ngram)
        words, offsets = concat_words([doc.metadata[WORDS] for doc in docs])
        hits = self._index.contaminating_sets(words, offsets, self.ngram, self.overlap_threshold)
        for doc, eval_set in zip(docs, hits):
            if eval_set is not None:
                self.drop(doc, f"decontam:{eval_set}")
