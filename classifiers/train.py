"""Train and evaluate fastText classifiers on labelled documents, deterministically.

The train/eval split is by a hash of the document id (``midmix.classifiers.split``), fastText runs
single-threaded with a fixed seed, so the same examples and params give the same model bytes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from midmix.classifiers.card import ModelCard, TrainedOn
from midmix.classifiers.fit import fit_in_subprocess
from midmix.classifiers.jsonl import read_jsonl
from midmix.classifiers.loading import ScoringModel
from midmix.classifiers.model import FastTextModel
from midmix.classifiers.split import DEFAULT_SPLIT, is_heldout
from midmix.classifiers.text import fasttext_line
from midmix.errors import MidmixError
from midmix.hashing import sha256_file, text_id
from midmix.publish import atomic_path

# Labels that mean "the good class" when a binary model's positive label is not given.
POSITIVE_LABELS = ("high", "hq", "positive", "pos", "1", "true", "yes")


class FastTextParams(BaseModel):
    """fastText ``train_supervised`` hyper-parameters (names as fastText spells them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(0.5, gt=0)
    epoch: int = Field(10, ge=1)
    dim: int = Field(32, ge=1)
    wordNgrams: int = Field(2, ge=1)
    minn: int = Field(0, ge=0)
    maxn: int = Field(0, ge=0)
    minCount: int = Field(1, ge=1)
    bucket: int = Field(200_000, ge=0)
    loss: str = "softmax"
    seed: int = 0


class LabelledDoc(NamedTuple):
    """One training or evaluation document; a ``(text, label)`` tuple with its id third.

    ``group`` is where it came from (its source): stacked models hold out whole groups.
    """

    text: str
    label: str
    doc_id: str
    group: str = ""


class LabelMetrics(BaseModel):
    """Precision, recall and F1 of one label, and how many held-out docs carry it."""

    precision: float
    recall: float
    f1: float
    support: int


class ClassifierMetrics(BaseModel):
    """Held-out metrics of a classifier; ``roc_auc`` only for binary tasks."""

    per_label: dict[str, LabelMetrics]
    macro_f1: float
    accuracy: float
    roc_auc: float | None = None
    docs: int
    confusion: dict[str, dict[str, int]] = Field(default_factory=dict, description="truth -> predicted -> docs")


def load_labelled_jsonl(
    path: str | Path,
    text_field: str = "text",
    label_field: str = "label",
    id_field: str = "id",
    group_field: str = "source",
) -> list[LabelledDoc]:
    """Read ``(text, label, id, group)`` from a JSONL (or .jsonl.gz) file, skipping null labels.

    A missing id falls back to a hash of the text, like curation does; a missing group is "".
    """
    path = Path(path)
    docs: list[LabelledDoc] = []
    records = 0
    with_label_field = 0
    for line_no, record in read_jsonl(path):
        records += 1
        if label_field in record:
            with_label_field += 1
        label = record.get(label_field)
        if label is None:
            continue
        text = record.get(text_field)
        if not isinstance(text, str):
            raise MidmixError(f"{path}:{line_no}: field '{text_field}' is missing or not a string")
        doc_id = record.get(id_field)
        if doc_id is None:
            doc_id = text_id(text)
        docs.append(LabelledDoc(text, str(label), str(doc_id), str(record.get(group_field) or "")))
    if records and not with_label_field:
        raise MidmixError(f"{path}: no record has the label field '{label_field}'; pass --label-field")
    if not docs:
        raise MidmixError(f"{path}: no documents with a non-null '{label_field}' label")
    return docs


def split_examples(
    examples: Sequence[tuple[str, ...]],
    eval_fraction: float = DEFAULT_SPLIT.eval_fraction,
    split_key: Callable[[tuple[str, ...]], str] | None = None,
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(train, eval) by a hash of each example's key: its id, or its text when it has none."""
    key = split_key or _default_split_key
    train, held_out = [], []
    for example in examples:
        (held_out if is_heldout(key(example), eval_fraction) else train).append(example)
    return train, held_out


def _default_split_key(example: tuple[str, ...]) -> str:
    return example[2] if len(example) > 2 else text_id(example[0])


def train_classifier(
    examples: Sequence[tuple[str, ...]],
    *,
    name: str,
    task: str,
    params: FastTextParams = FastTextParams(),
    eval_fraction: float = DEFAULT_SPLIT.eval_fraction,
    split_key: Callable[[tuple[str, ...]], str] | None = None,
    positive_label: str | None = None,
    trained_on: TrainedOn | None = None,
    out_path: Path | None = None,
    max_chars: int = 4000,
    chunk_words: int | None = None,
) -> tuple[Path, ModelCard]:
    """Train on the train split, evaluate on the held-out split; return the .bin and its card.

    The .bin is written to ``out_path`` (default: a new temporary directory the caller owns).

    Training lines keep the first ``max_chars`` characters of each document; ``chunk_words``
    splits them into lines of that many words (more, shorter examples: what language ID needs).
    Evaluation always scores whole documents, as prediction does.
    """
    train, held_out = split_examples(examples, eval_fraction, split_key)
    labels = check_labels(train, name, positive_label)
    positive = positive_label or default_positive(labels)
    out_path = Path(out_path) if out_path else Path(tempfile.mkdtemp(prefix="midmix-ft-")) / f"{name}.bin"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fit_fasttext(_training_lines(train, max_chars, chunk_words), params, out_path)
    model = FastTextModel.load(out_path)
    metrics = evaluate(model, held_out, positive_label=positive) if held_out else None
    card = ModelCard(
        name=name,
        task=task,
        sha256=model.sha256,
        labels=model.labels,
        positive_label=positive,
        train_docs=len(train),
        eval_docs=len(held_out),
        metrics=metrics.model_dump() if metrics else {},
        params={
            **params.model_dump(),
            "eval_fraction": eval_fraction,
            "train_max_chars": max_chars,
            "train_chunk_words": chunk_words,
        },
        trained_on=trained_on,
    )
    return out_path, card


def check_labels(train: Sequence[tuple[str, ...]], name: str, positive_label: str | None) -> list[str]:
    """The sorted labels of the train split; at least two, no whitespace, the positive one among them."""
    labels = sorted({example[1] for example in train})
    if len(labels) < 2:
        raise MidmixError(f"training '{name}' needs at least 2 labels in the train split, found {labels or 'none'}")
    bad = [label for label in labels if not label or any(ch.isspace() for ch in label)]
    if bad:
        raise MidmixError(f"labels must be non-empty and contain no whitespace: {bad!r}")
    if positive_label is not None and positive_label not in labels:
        raise MidmixError(f"positive label {positive_label!r} is not among the labels {labels}")
    return labels


def default_positive(labels: list[str]) -> str | None:
    """The good class of a binary label set (``high``, ``hq``, ...), or None."""
    if len(labels) != 2:
        return None
    return next((label for label in labels if label.lower() in POSITIVE_LABELS), None)


def _training_lines(
    train: Sequence[tuple[str, ...]], max_chars: int, chunk_words: int | None
) -> Iterator[str]:
    for example in train:
        line = fasttext_line(example[0], max_chars)
        if not chunk_words:
            yield f"__label__{example[1]} {line}\n"
            continue
        words = line.split(" ")
        for start in range(0, len(words), chunk_words):
            yield f"__label__{example[1]} {' '.join(words[start : start + chunk_words])}\n"


def fit_fasttext(lines: Iterable[str], params: FastTextParams, out_path: Path) -> None:
    """Train fastText on ``__label__X text`` lines and write the model to ``out_path`` atomically."""
    with tempfile.TemporaryDirectory(prefix="midmix-ft-train-") as work:
        train_file = Path(work) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        with atomic_path(out_path) as temporary:
            fit_in_subprocess(train_file, params.model_dump(), temporary)


def evaluate(
    model: ScoringModel, examples: Sequence[tuple[str, ...]], positive_label: str | None = None
) -> ClassifierMetrics:
    """Per-label precision/recall/F1, macro F1, accuracy and (binary) ROC-AUC on ``examples``."""
    if not examples:
        raise MidmixError("nothing to evaluate: the held-out split is empty; raise --eval-fraction")
    truth = [example[1] for example in examples]
    scores = model.predict_scores([example[0] for example in examples])
    predicted = [model.labels[index] for index in scores.argmax(axis=1)]
    roc_auc = None
    positive = positive_label or default_positive(model.labels)
    if len(model.labels) == 2 and positive in model.labels:
        is_positive = np.array([label == positive for label in truth])
        roc_auc = roc_auc_score(is_positive, scores[:, model.labels.index(positive)])
    return label_metrics(truth, predicted, roc_auc)


def label_metrics(truth: Sequence[str], predicted: Sequence[str], roc_auc: float | None = None) -> ClassifierMetrics:
    """Per-label precision/recall/F1, macro F1, accuracy and the confusion matrix of predicted labels."""
    truth, predicted = list(truth), list(predicted)
    per_label = _per_label(truth, predicted)
    confusion: dict[str, dict[str, int]] = {}
    for t, p in zip(truth, predicted):
        row = confusion.setdefault(t, {})
        row[p] = row.get(p, 0) + 1
    return ClassifierMetrics(
        per_label=per_label,
        macro_f1=float(np.mean([metric.f1 for metric in per_label.values()])),
        accuracy=sum(t == p for t, p in zip(truth, predicted)) / len(truth),
        roc_auc=roc_auc,
        docs=len(truth),
        confusion={t: dict(sorted(row.items())) for t, row in sorted(confusion.items())},
    )


def _per_label(truth: list[str], predicted: list[str]) -> dict[str, LabelMetrics]:
    """Metrics for every label seen in the truth or the predictions (as scikit-learn does)."""
    support = Counter(truth)
    predicted_count = Counter(predicted)
    correct = Counter(t for t, p in zip(truth, predicted) if t == p)
    result = {}
    for label in sorted(set(support) | set(predicted_count)):
        precision = correct[label] / predicted_count[label] if predicted_count[label] else 0.0
        recall = correct[label] / support[label] if support[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[label] = LabelMetrics(precision=precision, recall=recall, f1=f1, support=support[label])
    return result


def roc_auc_score(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC as the Mann-Whitney U statistic with tied scores sharing their average rank."""
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def file_trained_on(path: Path) -> TrainedOn:
    """Pin a training input by its path and content hash, for the model card."""
    return TrainedOn(path=str(path), sha256=sha256_file(path))
