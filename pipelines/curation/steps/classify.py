"""Classifier steps: language ID, domain tagging and quality scores, each batched.

Steps hold a model *path* (``DATA/models/<sha256>.bin`` or a model directory) and load it lazily
inside the task, so a step pickles cheaply to worker processes and a model is always the exact
bytes the version id recorded (``load_model`` caches by content hash, never by path).

Models see a document prefix (``max_chars``, as in their training). fastText models get its
fastText line, cached on the document so every fastText model shares one; stacked and
transformer models get the raw prefix (line breaks and case are part of what they read).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datatrove.data import Document

from midmix.classifiers.domain_signals import signal_features
from midmix.classifiers.loading import ScoringModel, load_model
from midmix.classifiers.model import FastTextModel
from midmix.classifiers.stacked import StackedModel
from midmix.pipelines.curation.steps.base import BatchStep

_LINES = "_fasttext_lines"
_SIGNALS = "_signal_features"


def model_lines(docs: list[Document], max_chars: int) -> list[str]:
    """The fastText line of each document's first ``max_chars`` characters, computed once."""
    lines = []
    for doc in docs:
        cache = doc.metadata.setdefault(_LINES, {})
        if max_chars not in cache:
            # Whitespace collapsing shortens text, so read twice the prefix before truncating;
            # str.split is 3x faster than fasttext_line's regex and gives the same line.
            cache[max_chars] = " ".join(doc.text[: 2 * max_chars].lower().split())[:max_chars].rstrip()
        lines.append(cache[max_chars])
    return lines


def predict(model: ScoringModel, docs: list[Document], max_chars: int) -> np.ndarray:
    """``model``'s scores for the first ``max_chars`` characters of each document.

    fastText models read the cached fastText line; stacked models the raw prefix and its
    structural signals, cached per document so the domain and quality models compute them once;
    transformers the raw prefix.
    """
    if isinstance(model, FastTextModel):
        return model.predict_scores(model_lines(docs, max_chars))
    prefixes = [doc.text[:max_chars] for doc in docs]
    if isinstance(model, StackedModel):
        return model.predict_scores(prefixes, signals(docs, min(max_chars, model.spec.signal_chars)))
    return model.predict_scores(prefixes)


def signals(docs: list[Document], chars: int) -> np.ndarray:
    """``signal_features`` of each document's first ``chars`` characters, computed once per document."""
    missing = [doc for doc in docs if chars not in doc.metadata.get(_SIGNALS, {})]
    if missing:
        for doc, row in zip(missing, signal_features([doc.text for doc in missing], chars)):
            doc.metadata.setdefault(_SIGNALS, {})[chars] = row
    return np.stack([doc.metadata[_SIGNALS][chars] for doc in docs])


@dataclass(frozen=True)
class ScoreColumn:
    """A model path and which of its labels is the score we keep (quality: the positive label;
    a regression model's one output)."""

    path: str
    label: str


class LanguageTagger(BatchStep):
    """Top language label and its probability; optionally drop languages not in ``keep``."""

    name = "language"

    def __init__(self, model_path: str, keep: list[str] | None, max_chars: int, batch_size: int = 256):
        super().__init__(batch_size)
        self.model_path = model_path
        self.keep = set(keep) if keep is not None else None
        self.max_chars = max_chars

    def process_batch(self, docs: list[Document]) -> None:
        model = load_model(self.model_path)
        scores = predict(model, docs, self.max_chars)
        best = scores.argmax(axis=1)
        for doc, column, row in zip(docs, best, scores):
            lang = model.labels[column]
            doc.metadata["lang"] = lang
            doc.metadata["lang_score"] = float(row[column])
            if self.keep is not None and lang not in self.keep:
                self.drop(doc, "language_not_kept")


class DomainTagger(BatchStep):
    """Score per configured domain label (renormalised over them) and the top label."""

    name = "domain"

    def __init__(self, model_path: str, labels: list[str], max_chars: int, batch_size: int = 256):
        super().__init__(batch_size)
        self.model_path = model_path
        self.labels = list(labels)
        self.max_chars = max_chars

    def process_batch(self, docs: list[Document]) -> None:
        model = load_model(self.model_path)
        columns = [model.labels.index(label) for label in self.labels]
        scores = predict(model, docs, self.max_chars)[:, columns]
        totals = scores.sum(axis=1, keepdims=True)
        scores = np.divide(scores, totals, out=np.full_like(scores, 1.0 / len(columns)), where=totals > 0)
        best = scores.argmax(axis=1)
        for doc, column, row in zip(docs, best, scores):
            doc.metadata["domain"] = self.labels[column]
            doc.metadata["domain_scores"] = {label: float(value) for label, value in zip(self.labels, row)}


class QualityScorer(BatchStep):
    """P(positive label) per quality classifier; the primary one is ``quality_score``.

    With ``min_score`` set, documents below it on the primary classifier are dropped.
    """

    name = "quality"

    def __init__(
        self,
        classifiers: dict[str, ScoreColumn],
        primary: str,
        min_score: float | None,
        max_chars: int,
        batch_size: int = 256,
    ):
        super().__init__(batch_size)
        self.classifiers = dict(classifiers)
        self.primary = primary
        self.min_score = min_score
        self.max_chars = max_chars

    def process_batch(self, docs: list[Document]) -> None:
        per_name = {}
        for name, column in self.classifiers.items():
            model = load_model(column.path)
            scores = predict(model, docs, self.max_chars)
            per_name[name] = scores[:, model.labels.index(column.label)]
        for index, doc in enumerate(docs):
            doc.metadata["quality"] = {name: float(scores[index]) for name, scores in per_name.items()}
            doc.metadata["quality_score"] = float(per_name[self.primary][index])
            if self.min_score is not None and doc.metadata["quality_score"] < self.min_score:
                self.drop(doc, "below_min_quality")
