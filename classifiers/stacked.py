"""Stacked classifiers: a fastText model plus structural signals, combined by a learned, sign-constrained model.

A stacked model is a directory, ``fasttext.bin`` and ``stacked.json`` (the combiner and how much of
each document its parts read), identified like every model by the content hash of its files.

Training is stacking done for unseen sources: the combiner never sees fastText scores on
documents that fastText trained on, nor on their sources. It learns from *out-of-source* scores
(folds of whole sources: what fastText says about a kind of text it never saw), so it learns how
far fastText can be trusted on new sources, and the signals carry the rest. Each source weighs
by the square root of its size, and labels are balanced, so one large source does not decide
what a label looks like. The price is in-source accuracy: scores of known sources are trusted less than they could be
(bench/RESULTS.md, "Classifiers that hold on unseen sources").
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from midmix.classifiers.card import ModelCard, TrainedOn
from midmix.classifiers.combiner import SignalCombiner, fit_combiner
from midmix.classifiers.domain_signals import FEATURE_NAMES, SIGNAL_PRIORS, signal_features
from midmix.classifiers.model import FastTextModel
from midmix.classifiers.text import fasttext_line
from midmix.classifiers.train import (
    FastTextParams,
    LabelledDoc,
    check_labels,
    default_positive,
    evaluate,
    fit_fasttext,
    split_examples,
)
from midmix.errors import MidmixError
from midmix.hashing import sha256_dir

FASTTEXT_FILE = "fasttext.bin"
STACKED_FILE = "stacked.json"
STACKED_FORMAT = "midmix-stacked-1"
PERCENTILE_KNOTS = 257


class StackedParams(BaseModel):
    """How a stacked model is trained: its fastText part, the folds and the combiner's L2 strength."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fasttext: FastTextParams
    fasttext_chars: int = Field(1500, ge=1, description="characters of each document fastText reads")
    signal_chars: int = Field(1500, ge=1, description="characters of each document the signals read")
    source_folds: int = Field(4, ge=2, description="folds of whole sources for out-of-source fastText scores")
    l2: float = Field(1.0, gt=0)
    source_weight_power: float = Field(0.5, ge=0, description="a source's weight is its size to this power")


class StackedSpec(BaseModel):
    """The contents of ``stacked.json``.

    ``percentile_knots`` (binary models): quantiles of the first label's logit margin over the
    training documents, those the model puts below its decision boundary and those above. The
    score reported for the first label is the document's percentile among the training documents
    on its side of the boundary, mapped to [0, 0.5) below and [0.5, 1] above: the decision stays at
    0.5, the order is the raw probability's (percentile selections are unchanged), and scores
    spread over [0, 1]. A raw probability is no useful score here: quality labels are set per
    source, every training source is separable, and raw probabilities pile up at 0 and 1.
    """

    model_config = ConfigDict(extra="forbid")

    format: str = STACKED_FORMAT
    fasttext_chars: int
    signal_chars: int
    combiner: SignalCombiner
    percentile_knots: tuple[list[float], list[float]] | None = None


class StackedModel:
    """A loaded stacked model: ``predict_scores`` on raw document text, columns in ``labels`` order."""

    kind = "stacked"

    def __init__(self, path: Path, sha256: str):
        self.path = Path(path)
        self.sha256 = sha256
        spec_path = self.path / STACKED_FILE
        try:
            self.spec = StackedSpec.model_validate_json(spec_path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise MidmixError(f"{spec_path}: not a valid stacked model spec ({error}); retrain the model") from error
        self.fasttext = FastTextModel.load(self.path / FASTTEXT_FILE)
        self.labels = list(self.spec.combiner.labels)
        if sorted(self.fasttext.labels) != sorted(self.labels):
            raise MidmixError(
                f"{spec_path}: labels {self.labels} do not match {self.path / FASTTEXT_FILE}'s {self.fasttext.labels}; "
                "retrain the model"
            )
        self._fasttext_columns = [self.fasttext.labels.index(label) for label in self.labels]

    def predict_scores(self, texts: list[str], signals: np.ndarray | None = None) -> np.ndarray:
        """Probabilities, shape (len(texts), len(labels)), float32.

        ``signals``: ``signal_features(texts, spec.signal_chars)`` when the caller already has them
        (curation computes them once per document for the domain and quality models).
        """
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        lines = [fasttext_line(text, self.spec.fasttext_chars) for text in texts]
        fasttext_scores = self.fasttext.predict_scores(lines)[:, self._fasttext_columns]
        features = signal_features(texts, self.spec.signal_chars) if signals is None else signals
        if self.spec.percentile_knots is None:
            return self.spec.combiner.predict_proba(features, fasttext_scores)
        first = percentile_of(margins(self.spec.combiner.logits(features, fasttext_scores)), self.spec.percentile_knots)
        return np.stack([first, 1.0 - first], axis=1).astype(np.float32)


def train_stacked(train: Sequence[LabelledDoc], params: StackedParams, out_dir: Path) -> Path:
    """Train a stacked model on ``train`` (grouped by ``LabelledDoc.group``) into the new directory ``out_dir``."""
    labels = sorted({doc.label for doc in train})
    lines = [fasttext_line(doc.text, params.fasttext_chars) for doc in train]
    truth = [doc.label for doc in train]
    folds = _source_folds(train, params.source_folds)
    if folds is None:  # one source (or none named): the best left is folds of documents
        folds = _doc_folds(train, params.source_folds)
    if folds is None:
        raise MidmixError(f"a stacked model needs at least {2 * params.source_folds} training documents")
    fasttext_scores = _out_of_fold_scores(lines, truth, folds, labels, params.fasttext)
    features = signal_features([doc.text for doc in train], params.signal_chars)
    weights = _sample_weights(train, params.source_weight_power)
    combiner = fit_combiner(
        features, fasttext_scores, truth, weights, labels, FEATURE_NAMES, SIGNAL_PRIORS, params.l2
    )
    out_dir.mkdir(parents=True)
    fit_fasttext(_labelled_lines(lines, truth, range(len(train))), params.fasttext, out_dir / FASTTEXT_FILE)
    knots = None
    if len(labels) == 2:  # percentiles of the final model's margins on its own training documents
        final = FastTextModel.load(out_dir / FASTTEXT_FILE)
        scores = final.predict_scores(lines)[:, [final.labels.index(label) for label in labels]]
        margin = margins(combiner.logits(features, scores))
        knots = (_quantiles(margin[margin < 0]), _quantiles(margin[margin >= 0]))
    spec = StackedSpec(
        fasttext_chars=params.fasttext_chars, signal_chars=params.signal_chars, combiner=combiner,
        percentile_knots=knots,
    )
    (out_dir / STACKED_FILE).write_text(spec.model_dump_json(indent=1), encoding="utf-8")
    return out_dir


def margins(logits: np.ndarray) -> np.ndarray:
    """First label's logit minus the second's (binary models)."""
    return logits[:, 0] - logits[:, 1]


def _quantiles(values: np.ndarray) -> list[float]:
    if not len(values):
        return []
    return [float(value) for value in np.quantile(values, np.linspace(0.0, 1.0, PERCENTILE_KNOTS))]


def percentile_of(margin: np.ndarray, knots: tuple[list[float], list[float]]) -> np.ndarray:
    """Percentile of each margin among the training margins on its side of 0, mapped to [0, 0.5) or [0.5, 1]."""
    below, above = knots
    return np.where(margin < 0, 0.5 * _ecdf(margin, below, 0.0), 0.5 + 0.5 * _ecdf(margin, above, 1.0))


def _ecdf(values: np.ndarray, knots: list[float], empty: float) -> np.ndarray:
    """Share of the knots' distribution below each value, linearly interpolated, in [0, 1]."""
    if not knots:
        return np.full(len(values), empty)
    levels = np.linspace(0.0, 1.0, len(knots))
    # Tied knots (many training documents with the same margin) take their middle level.
    unique, inverse = np.unique(np.asarray(knots), return_inverse=True)
    middle = np.bincount(inverse, weights=levels) / np.bincount(inverse)
    return np.interp(values, unique, middle) if len(unique) > 1 else np.full(len(values), 0.5)


def _source_folds(train: Sequence[LabelledDoc], k: int) -> np.ndarray | None:
    """Fold of each document: sources dealt round-robin per label, largest first, so every fold
    holds out whole sources and most folds keep each label. None when there are fewer than 2 sources."""
    by_label: dict[str, Counter] = {}
    for doc in train:
        by_label.setdefault(doc.label, Counter())[doc.group] += 1
    sources = {doc.group for doc in train}
    if len(sources) < 2:
        return None
    fold_of: dict[str, int] = {}
    for label in sorted(by_label):
        offset = _stable_int(label)
        ranked = sorted(by_label[label].items(), key=lambda item: (-item[1], item[0]))
        for rank, (source, _) in enumerate(ranked):
            fold_of.setdefault(source, (rank + offset) % k)
    return np.array([fold_of[doc.group] for doc in train])


def _doc_folds(train: Sequence[LabelledDoc], k: int) -> np.ndarray | None:
    """Fold of each document by a hash of its id; None when there are too few documents."""
    if len(train) < 2 * k:
        return None
    return np.array([_stable_int(doc.doc_id) % k for doc in train])


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _out_of_fold_scores(
    lines: list[str], truth: list[str], folds: np.ndarray, labels: list[str], params: FastTextParams
) -> np.ndarray:
    """fastText probabilities of each document from a model trained on the other folds (two at a time)."""
    scores = np.zeros((len(lines), len(labels)), dtype=np.float32)
    fold_ids = sorted(set(folds.tolist()))

    def fold_scores(fold: int) -> None:
        held = np.flatnonzero(folds == fold)
        rest = np.flatnonzero(folds != fold)
        if not len(rest) or len({truth[i] for i in rest}) < 2:
            scores[held] = 1.0 / len(labels)  # nothing to learn from: fastText knows nothing here
            return
        with tempfile.TemporaryDirectory(prefix="midmix-oof-") as work:
            path = Path(work) / "fold.bin"
            fit_fasttext(_labelled_lines(lines, truth, rest), params, path)
            model = FastTextModel.load(path)
            predicted = model.predict_scores([lines[i] for i in held])
        for column, label in enumerate(model.labels):
            scores[held, labels.index(label)] = predicted[:, column]

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(fold_scores, fold_ids))
    return scores


def _labelled_lines(lines: list[str], truth: list[str], indices) -> list[str]:
    return [f"__label__{truth[i]} {lines[i]}\n" for i in indices]


def _sample_weights(train: Sequence[LabelledDoc], power: float) -> np.ndarray:
    """Each source weighs size**power in all; then each label weighs the same in all."""
    source_size = Counter(doc.group for doc in train)
    weights = np.array([source_size[doc.group] ** (power - 1.0) for doc in train])
    label_total: Counter = Counter()
    for doc, weight in zip(train, weights):
        label_total[doc.label] += weight
    return weights / np.array([label_total[doc.label] for doc in train])


def train_stacked_classifier(
    examples: Sequence[LabelledDoc],
    *,
    name: str,
    task: str,
    params: StackedParams,
    eval_fraction: float,
    out_dir: Path,
    positive_label: str | None = None,
    trained_on: TrainedOn | None = None,
) -> tuple[Path, ModelCard]:
    """Train on the id-hash train split, evaluate on the held-out split; return the directory and its card."""
    train, held_out = split_examples(examples, eval_fraction)
    labels = check_labels(train, name, positive_label)
    positive = positive_label or default_positive(labels)
    train_stacked(train, params, out_dir)
    metrics = evaluate(load_stacked(out_dir), held_out, positive_label=positive) if held_out else None
    card = ModelCard(
        name=name,
        task=task,
        kind=StackedModel.kind,
        sha256=sha256_dir(out_dir),
        labels=labels,
        positive_label=positive,
        train_docs=len(train),
        eval_docs=len(held_out),
        metrics=metrics.model_dump() if metrics else {},
        params=stacked_card_params(params, eval_fraction),
        trained_on=trained_on,
    )
    return out_dir, card


def stacked_card_params(params: StackedParams, eval_fraction: float) -> dict:
    """The ``params`` a card of a stacked model carries (defaults find their models by them)."""
    return {**params.model_dump(), "eval_fraction": eval_fraction}


def load_stacked(path: Path) -> StackedModel:
    """Load a stacked model directory (through the shared content-hash cache)."""
    from midmix.classifiers.loading import load_model

    model = load_model(path)
    if not isinstance(model, StackedModel):
        raise MidmixError(f"{path} is not a stacked model directory")
    return model
