"""Leave-source-out evaluation: retrain a model's recipe without each source, predict that source.

The id-hash split flatters a model: documents of every source are on both sides, so it can learn
a source's style instead of its label. Holding out whole sources asks what matters in curation,
how the model does on a kind of text it has never seen. Predictions of all folds are pooled and
scored once (per-fold macro-F1 is undefined: a fold holds one source, usually one label).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from midmix.classifiers.card import ModelCard
from midmix.classifiers.loading import ScoringModel, load_model
from midmix.classifiers.train import ClassifierMetrics, FastTextParams, LabelledDoc, label_metrics, train_classifier
from midmix.errors import MidmixError
from midmix.progress import ProgressCallback

Trainer = Callable[[Sequence[LabelledDoc], Path], ScoringModel]


def recipe_trainer(card: ModelCard) -> Trainer:
    """A function that trains ``card``'s recipe (kind and params) on given documents."""
    params = {key: value for key, value in card.params.items() if key != "eval_fraction"}
    if card.kind == "stacked":
        from midmix.classifiers.stacked import StackedParams, train_stacked

        stacked = StackedParams(**params)
        return lambda docs, work: load_model(train_stacked(docs, stacked, work / "model"))
    if card.kind == "fasttext" and params:
        max_chars = params.pop("train_max_chars", 4000)
        chunk_words = params.pop("train_chunk_words", None)
        fasttext = FastTextParams(**params)

        def train_fasttext(docs: Sequence[LabelledDoc], work: Path) -> ScoringModel:
            path, _ = train_classifier(
                docs, name=card.name, task=card.task, params=fasttext, eval_fraction=0.0,
                out_path=work / "model.bin", max_chars=max_chars, chunk_words=chunk_words,
            )
            return load_model(path)

        return train_fasttext
    raise MidmixError(
        f"model {card.name} ({card.kind}) has no training recipe on its card; leave-source-out evaluation "
        "retrains a model, so it works for models trained by midmix (fasttext, stacked)"
    )


def leave_source_out(
    examples: Sequence[LabelledDoc], train: Trainer, progress: ProgressCallback | None = None
) -> list[str]:
    """The label predicted for each example by a model trained on every other source (``group``)."""
    groups = sorted({doc.group for doc in examples})
    if len(groups) < 2:
        raise MidmixError("leave-source-out needs at least 2 sources; pass --group-field naming the source field")
    predicted = [""] * len(examples)
    for done, group in enumerate(groups, start=1):
        rest = [doc for doc in examples if doc.group != group]
        held = [index for index, doc in enumerate(examples) if doc.group == group]
        if len({doc.label for doc in rest}) < 2:
            raise MidmixError(f"without source {group!r} fewer than 2 labels remain; add sources")
        with tempfile.TemporaryDirectory(prefix="midmix-loso-") as work:
            model = train(rest, Path(work))
            scores = model.predict_scores([examples[index].text for index in held])
        for index, column in zip(held, scores.argmax(axis=1)):
            predicted[index] = model.labels[column]
        if progress:
            progress(group, done, len(groups))
    return predicted


def predictions(model: ScoringModel, examples: Sequence[LabelledDoc]) -> list[str]:
    """The top label of ``model`` for each example."""
    scores = model.predict_scores([doc.text for doc in examples])
    return [model.labels[column] for column in scores.argmax(axis=1)]


def metrics_by(truth: Sequence[str], predicted: Sequence[str], keys: Sequence[str]) -> dict[str, ClassifierMetrics]:
    """Metrics of the documents of each key (a language, a source), keys sorted."""
    rows: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        rows[key].append(index)
    return {
        key: label_metrics([truth[i] for i in indices], [predicted[i] for i in indices])
        for key, indices in sorted(rows.items())
    }


def format_confusion(metrics: ClassifierMetrics) -> str:
    """The confusion matrix as a table: one row per true label, one column per predicted label."""
    labels = sorted(set(metrics.confusion) | {p for row in metrics.confusion.values() for p in row})
    width = max(8, *(len(label) + 1 for label in labels))
    lines = ["truth \\ predicted".ljust(18) + "".join(label.rjust(width) for label in labels)]
    for truth in labels:
        row = metrics.confusion.get(truth, {})
        lines.append(truth.ljust(18) + "".join(str(row.get(label, 0)).rjust(width) for label in labels))
    return "\n".join(lines)


def format_by(metrics: dict[str, ClassifierMetrics], title: str) -> str:
    """One line per key: documents, accuracy and macro-F1 over the labels present."""
    lines = [f"{title:<12} {'docs':>6} {'accuracy':>9} {'macro_f1':>9}"]
    for key, row in metrics.items():
        present = [m.f1 for m in row.per_label.values() if m.support]
        macro = float(np.mean(present)) if present else 0.0
        lines.append(f"{key:<12} {row.docs:>6} {row.accuracy:>9.4f} {macro:>9.4f}")
    return "\n".join(lines)
