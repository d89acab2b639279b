"""Benchmark the bundled default classifiers against named peers on the sample corpus.

1. Held-out quality of the tuned default recipes vs fastText's own untuned supervised
   defaults (lr 0.1, dim 100, epoch 5, whole 4,000-char lines), same id-hash split.
2. An honest by-source split: whole sources held out (quality_hint is set per source, so the
   id-hash split lets a model learn a source's style), same recipes.
3. Prediction throughput: ``FastTextModel.predict_scores`` (one batched k=-1 call) vs a
   per-document ``predict(k=-1)`` loop, what datatrove's FastTextClassifierFilter does.

Run: python bench/bench_classifiers.py
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midmix.classifiers.defaults import BUNDLED_CORPUS, RECIPES, ensure_default_models  # noqa: E402
from midmix.classifiers.jsonl import read_jsonl  # noqa: E402
from midmix.classifiers.model import FastTextModel  # noqa: E402
from midmix.classifiers.registry import ModelRegistry  # noqa: E402
from midmix.classifiers.split import is_heldout  # noqa: E402
from midmix.classifiers.text import fasttext_line  # noqa: E402
from midmix.classifiers.train import FastTextParams, LabelledDoc, evaluate, train_classifier  # noqa: E402

# fastText's documented supervised defaults; bucket only matters with n-grams, which are off.
FASTTEXT_DEFAULTS = FastTextParams(lr=0.1, epoch=5, dim=100, wordNgrams=1, minn=0, maxn=0, minCount=1, bucket=2_000_000)
SOURCE_HELDOUT_FRACTION = 0.3


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (fastText trains in a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def summary(metrics: dict) -> str:
    auc = metrics.get("roc_auc")
    return f"macro-F1 {metrics['macro_f1']:.4f} accuracy {metrics['accuracy']:.4f}" + (
        f" ROC-AUC {auc:.4f}" if auc is not None else ""
    )


def examples(records: list[dict], field: str, key: str) -> list[LabelledDoc]:
    return [LabelledDoc(r["text"], str(r[field]), str(r[key])) for r in records if r.get(field) is not None]


def bench_defaults_vs_untuned(records: list[dict], work: Path) -> None:
    print("== 1. held-out (id-hash split, 20%): tuned defaults vs fastText untuned defaults")
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    models = ensure_default_models(work / "models")
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    print(f"defaults: 3 models trained in {wall:.1f}s wall, {cpu:.1f}s CPU (incl. corpus read and eval)")
    for key in ("quality", "domain", "lang"):
        card = getattr(models, key)
        size = (work / "models" / f"{card.sha256}.bin").stat().st_size / 2**20
        print(f"  {card.name:<16} {summary(card.metrics)}  train {card.train_docs} eval {card.eval_docs} docs, {size:.1f} MiB")
    for key in ("quality", "domain"):
        recipe = RECIPES[key]
        start_cpu = cpu_seconds()
        _, peer = train_classifier(
            examples(records, recipe.label_field, "id"), name=f"untuned_{key}", task=key,
            params=FASTTEXT_DEFAULTS, positive_label=recipe.positive_label, out_path=work / f"untuned_{key}.bin",
        )
        peer_cpu = cpu_seconds() - start_cpu
        ours = getattr(models, key).metrics
        metric = "roc_auc" if key == "quality" else "macro_f1"
        print(f"  untuned {key:<8} {summary(peer.metrics)}  ({peer_cpu:.1f}s CPU)")
        print(f"  ratio {key} {metric} tuned/untuned = {ours[metric] / peer.metrics[metric]:.3f}")


def held_out_sources(docs: list[LabelledDoc], fraction: float) -> set[str]:
    """Sources (doc_id holds the source) hashed into ``fraction``, keeping one source per label for training."""
    sources_by_label: dict[str, set[str]] = {}
    for doc in docs:
        sources_by_label.setdefault(doc.label, set()).add(doc.doc_id)
    held = {source for sources in sources_by_label.values() for source in sources if is_heldout(source, fraction)}
    for sources in sources_by_label.values():
        if sources <= held:
            held.discard(max(sources, key=lambda source: (not is_heldout(source, fraction), source)))
    return held


def bench_by_source(records: list[dict], work: Path) -> None:
    print(f"== 2. by-source split: sources with is_heldout(source, {SOURCE_HELDOUT_FRACTION}) held out entirely,")
    print("      except that every label keeps at least one training source")
    for key in ("quality", "domain"):
        recipe = RECIPES[key]
        docs = examples(records, recipe.label_field, "source")
        held = held_out_sources(docs, SOURCE_HELDOUT_FRACTION)
        path, _ = train_classifier(
            [doc for doc in docs if doc.doc_id not in held], name=f"by_source_{key}", task=key,
            params=recipe.params, eval_fraction=0.0, positive_label=recipe.positive_label,
            out_path=work / f"by_source_{key}.bin", max_chars=recipe.max_chars, chunk_words=recipe.chunk_words,
        )
        held_docs = [doc for doc in docs if doc.doc_id in held]
        metrics = evaluate(FastTextModel.load(path), held_docs, positive_label=recipe.positive_label).model_dump()
        support = {label: row["support"] for label, row in metrics["per_label"].items() if row["support"]}
        print(f"  {key:<8} {summary(metrics)}  eval {len(held_docs)} docs {support}")
        print(f"           held-out sources: {', '.join(sorted(held))}")


def bench_throughput(records: list[dict], work: Path) -> None:
    print("== 3. prediction throughput (domain model, held-out docs): batched predict_scores vs per-doc loop")
    model = FastTextModel.load(ModelRegistry(work / "models").path("fasttext_domain"))
    texts = [r["text"] for r in records if is_heldout(r["id"])]
    start = time.perf_counter()
    batched = model.predict_scores(texts)
    batched_s = time.perf_counter() - start

    native, column = model._native, {f"__label__{label}": i for i, label in enumerate(model.labels)}
    start = time.perf_counter()
    looped = np.zeros_like(batched)
    for row, text in enumerate(texts):
        labels, probs = native.predict(fasttext_line(text), k=-1)
        for label, prob in zip(labels, probs):
            looped[row, column[label]] = prob
    looped_s = time.perf_counter() - start
    assert np.allclose(batched, looped, atol=1e-6), "batched and per-doc scores differ"
    n = len(texts)
    print(f"  batched predict_scores: {n / batched_s:,.0f} docs/s ({n} docs, {batched_s:.2f}s)")
    print(f"  per-doc predict loop:   {n / looped_s:,.0f} docs/s ({looped_s:.2f}s)")
    print(f"  ratio batched/per-doc = {looped_s / batched_s:.2f}x")


def main() -> None:
    records = [record for _, record in read_jsonl(BUNDLED_CORPUS)]
    with tempfile.TemporaryDirectory(prefix="midmix-bench-classifiers-") as tmp:
        work = Path(tmp)
        bench_defaults_vs_untuned(records, work)
        bench_by_source(records, work)
        bench_throughput(records, work)


if __name__ == "__main__":
    main()
