"""Decontamination: drop documents that hold a run of an evaluation item's word n-grams.

Each eval set is a file (JSONL, Parquet or HF dataset folder) whose configured fields (``text``
for HumanEval; ``question`` and ``answer`` for GSM8K-style sets) are indexed as separate
components of an item: a document that holds the question alone is contaminated. Following AI2's
decon, a document is contaminated by a component when its matching n-grams form a *run*:
matches of that component in document order, each within ``max_gap`` positions of the previous.
A renamed identifier or an edited word breaks ``ngram`` consecutive n-grams, so the run bridges
such gaps instead of needing the whole item verbatim; whitespace never matters because words
ignore it. The run must hold ``min_run_ngrams`` of the component's n-grams, or
``overlap_threshold`` of them for components shorter than that.

Every n-gram counts for every item that contains it. N-grams shared by more than
``max_items_per_ngram`` items (a benchmark's template: instructions, answer formats) count for
none: they say a text follows the template, not which item it holds, so clean text written to
the same template is not flagged. Drop reasons name the eval set (``decontam:<set>``), so the
manifest counts drops per eval set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datatrove.data import Document

from midmix.errors import MidmixError
from midmix.pipelines.curation.config import DecontamConfig, EvalSet
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


def _field_text(value: object) -> str:
    """A field as text: lists (multiple-choice options) one per line, numbers as written."""
    if isinstance(value, list | tuple):
        return "\n".join(_field_text(item) for item in value)
    return "" if value is None else str(value)


@dataclass(frozen=True)
class EvalIndex:
    """(n-gram, component) pairs of every eval component, sorted by n-gram hash."""

    hashes: np.ndarray  # uint64 per pair, sorted (a hash repeats once per component holding it)
    components: np.ndarray  # int64 component per pair
    needed: np.ndarray  # int64 per component: run length that contaminates (0: never)
    component_set: list[str]  # eval set name per component
    bitmap: np.ndarray  # bool, set at (hash mod size) for every indexed n-gram

    def contaminating_sets(self, words: np.ndarray, offsets: np.ndarray, n: int, max_gap: int) -> list[str | None]:
        """Per document: the eval set of a component it holds a long enough run of, or None."""
        result: list[str | None] = [None] * (len(offsets) - 1)
        doc_hashes, owners = ngram_hashes(words, offsets, n)
        positions = np.arange(len(doc_hashes))  # runs are judged by distance in this order
        maybe = self.bitmap[(doc_hashes % np.uint64(_FILTER_BITS)).astype(np.int64)]
        doc_hashes, owners, positions = doc_hashes[maybe], owners[maybe], positions[maybe]
        if len(self.hashes) == 0 or len(doc_hashes) == 0:
            return result
        low = np.searchsorted(self.hashes, doc_hashes, side="left")
        high = np.searchsorted(self.hashes, doc_hashes, side="right")
        per_match = high - low
        if not per_match.any():
            return result
        # One row per (document n-gram, component holding it).
        rows = np.repeat(np.arange(len(doc_hashes)), per_match)
        pair = np.repeat(low - np.cumsum(per_match) + per_match, per_match) + np.arange(per_match.sum())
        doc, component, position, gram = owners[rows], self.components[pair], positions[rows], self.hashes[pair]
        order = np.lexsort((position, component, doc))
        doc, component, position, gram = doc[order], component[order], position[order], gram[order]
        new_run = np.ones(len(doc), dtype=bool)
        new_run[1:] = (doc[1:] != doc[:-1]) | (component[1:] != component[:-1]) | (position[1:] - position[:-1] > max_gap)
        run = np.cumsum(new_run) - 1
        distinct = np.unique(np.stack([run, gram.view(np.int64)]), axis=1)[0]
        run_lengths = np.bincount(distinct, minlength=run[-1] + 1)
        first = np.flatnonzero(new_run)
        needed = self.needed[component[first]]
        for index in np.flatnonzero((needed > 0) & (run_lengths >= needed)):
            owner = int(doc[first[index]])
            result[owner] = result[owner] or self.component_set[component[first[index]]]
        return result


def _components(eval_set: EvalSet) -> list[tuple[str, str]]:
    """(eval set name, text) per field of every item; a missing field is a one-line error."""
    found = []
    for unit in resolve_inputs([eval_set.path]):
        name = eval_set.name or unit.source_name
        for number, (_, record) in enumerate(read_records(unit), start=1):
            for field in eval_set.fields:
                if field not in record:
                    raise MidmixError(
                        f"eval file {unit.url}: item {number} has no field '{field}' (it has: "
                        f"{', '.join(sorted(record)) or 'none'}); set decontam.eval_files[].fields to fields it has"
                    )
                text = normalize_text(_field_text(record[field]))
                if text:
                    found.append((name, text))
    return found


def check_eval_sets(config: DecontamConfig) -> None:
    """Read every eval set once, so a missing file or field fails before a run writes anything."""
    for eval_set in config.eval_files:
        _components(eval_set)


def build_eval_index(config: DecontamConfig) -> EvalIndex:
    """Read every eval set into one index of specific n-grams (see the module docstring)."""
    components = [component for eval_set in config.eval_files for component in _components(eval_set)]
    hashes, owners = [], []
    for index, (_, text) in enumerate(components):
        words, offsets = concat_words([split_words([text]).hashes])
        distinct = np.unique(ngram_hashes(words, offsets, config.ngram)[0]) if len(words) >= config.ngram else []
        hashes.append(np.asarray(distinct, dtype=np.uint64))
        owners.append(np.full(len(distinct), index, dtype=np.int64))
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    all_owners = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    _, inverse, shared_by = np.unique(all_hashes, return_inverse=True, return_counts=True)
    specific = shared_by[inverse] <= config.max_items_per_ngram
    all_hashes, all_owners = all_hashes[specific], all_owners[specific]
    counts = np.bincount(all_owners, minlength=len(components))
    needed = np.minimum(config.min_run_ngrams, np.ceil(config.overlap_threshold * counts)).astype(np.int64)
    order = np.argsort(all_hashes, kind="stable")
    return EvalIndex(
        all_hashes[order], all_owners[order], needed, [name for name, _ in components], _filter_of(all_hashes)
    )


class Decontaminate(BatchStep):
    """Drop documents holding a run of an eval item; reason ``decontam:<eval set>``."""

    name = "decontam"

    def __init__(self, config: DecontamConfig, batch_size: int = 256):
        super().__init__(batch_size)
        self.config = config
        self._index: EvalIndex | None = None

    def process_batch(self, docs: list[Document]) -> None:
        if self._index is None:
            self._index = build_eval_index(self.config)
        words, offsets = concat_words([doc.metadata[WORDS] for doc in docs])
        hits = self._index.contaminating_sets(words, offsets, self.config.ngram, self.config.run_gap)
        for doc, eval_set in zip(docs, hits):
            if eval_set is not None:
                self.drop(doc, f"decontam:{eval_set}")
