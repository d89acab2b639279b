"""Benchmark the bundled default classifiers against named peers on the sample corpus.

1. Domain, leave-source-out: each of the corpus's sources held out in turn, the recipe retrained
   on the rest, predictions on the held-out sources pooled and scored once (macro-F1 over the six
   labels, per label, per language). Stacked default recipe (fastText + structural signals,
   learned combination) vs the peer: the plain fastText recipe that was the default before.
   Also the id-hash split (20% held out) for both.
2. Quality: ROC-AUC on the id split and on a by-source split (sources hashed into 30% held out,
   each label keeping a training source), plain fastText vs stacked, and the histogram of the
   scores over the whole corpus with the score at the median (the demo's top-50% threshold):
   printed and drawn to ``bench/quality_histogram.png``.
3. Cost per document: structural signals (CPU-µs/doc), the stacked domain model vs plain
   fastText (docs/s), and pygments' ``guess_lexer`` (the code-syntax signal the issue suggested).

Run: python bench/bench_classifiers.py [--skip-loso]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midmix.classifiers.defaults import BUNDLED_CORPUS, RECIPES, ensure_default_models  # noqa: E402
from midmix.classifiers.domain_signals import signal_features  # noqa: E402
from midmix.classifiers.evaluation import format_by, format_confusion, leave_source_out, metrics_by  # noqa: E402
from midmix.classifiers.jsonl import read_jsonl  # noqa: E402
from midmix.classifiers.loading import load_model  # noqa: E402
from midmix.classifiers.registry import ModelRegistry  # noqa: E402
from midmix.classifiers.split import is_heldout  # noqa: E402
from midmix.classifiers.stacked import train_stacked  # noqa: E402
from midmix.classifiers.train import LabelledDoc, evaluate, label_metrics, train_classifier  # noqa: E402

SOURCE_HELDOUT_FRACTION = 0.3


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (fastText trains in a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def examples(records: list[dict], field: str) -> list[LabelledDoc]:
    return [LabelledDoc(r["text"], str(r[field]), r["id"], r["source"]) for r in records if r.get(field) is not None]


def fasttext_trainer(key: str):
    recipe = RECIPES[key]

    def train(docs, work: Path):
        path, _ = train_classifier(
            docs, name=f"plain_{key}", task=key, params=recipe.params, eval_fraction=0.0,
            positive_label=recipe.positive_label, out_path=work / "plain.bin", max_chars=recipe.max_chars,
        )
        return load_model(path)

    return train


def stacked_trainer(key: str):
    return lambda docs, work: load_model(train_stacked(docs, RECIPES[key].stacked, work / "stacked"))


def f1_line(metrics) -> str:
    per = " ".join(f"{label} {row.f1:.3f}" for label, row in metrics.per_label.items())
    return f"macro-F1 {metrics.macro_f1:.4f} accuracy {metrics.accuracy:.4f} | {per}"


def bench_domain(records: list[dict], work: Path, loso: bool) -> None:
    docs = examples(records, "domain")
    langs = {r["id"]: r["lang"] for r in records}
    train = [doc for doc in docs if not is_heldout(doc.doc_id)]
    held = [doc for doc in docs if is_heldout(doc.doc_id)]
    print(f"== 1. domain: id-hash split ({len(train)} train, {len(held)} held-out docs)")
    for name, trainer in (("plain fastText (peer)", fasttext_trainer("domain")), ("stacked", stacked_trainer("domain"))):
        start = cpu_seconds()
        model = trainer(train, Path(tempfile.mkdtemp(dir=work)))
        metrics = evaluate(model, held)
        print(f"  {name:<22} {f1_line(metrics)}  ({cpu_seconds() - start:.1f} CPU-s to train)")
    if not loso:
        return
    print(f"== 1b. domain: leave-source-out over {len({d.group for d in docs})} sources, predictions pooled")
    for name, trainer in (("plain fastText (peer)", fasttext_trainer("domain")), ("stacked", stacked_trainer("domain"))):
        start = cpu_seconds()
        predicted = leave_source_out(docs, lambda rest, w: trainer(rest, w))
        truth = [doc.label for doc in docs]
        metrics = label_metrics(truth, predicted)
        print(f"  {name:<22} {f1_line(metrics)}  ({cpu_seconds() - start:.0f} CPU-s)")
        print(format_confusion(metrics))
        print(format_by(metrics_by(truth, predicted, [langs[doc.doc_id] for doc in docs]), "language"))


def held_out_sources(docs: list[LabelledDoc], fraction: float) -> set[str]:
    """Sources hashed into ``fraction``, keeping one source per label for training."""
    sources_by_label: dict[str, set[str]] = {}
    for doc in docs:
        sources_by_label.setdefault(doc.label, set()).add(doc.group)
    held = {source for sources in sources_by_label.values() for source in sources if is_heldout(source, fraction)}
    for sources in sources_by_label.values():
        if sources <= held:
            held.discard(max(sources, key=lambda source: (not is_heldout(source, fraction), source)))
    return held


def bench_quality(records: list[dict], work: Path) -> None:
    docs = examples(records, "quality_hint")
    held_sources = held_out_sources(docs, SOURCE_HELDOUT_FRACTION)
    splits = {
        "id split": ([d for d in docs if not is_heldout(d.doc_id)], [d for d in docs if is_heldout(d.doc_id)]),
        "by-source split": ([d for d in docs if d.group not in held_sources], [d for d in docs if d.group in held_sources]),
    }
    print("== 2. quality (high vs low): ROC-AUC and macro-F1 at 0.5")
    print(f"  by-source held-out sources: {', '.join(sorted(held_sources))}")
    all_texts = [r["text"] for r in records]
    histograms = {}
    for name, trainer in (("plain fastText (peer)", fasttext_trainer("quality")), ("stacked", stacked_trainer("quality"))):
        for split, (train, held) in splits.items():
            model = trainer(train, Path(tempfile.mkdtemp(dir=work)))
            metrics = evaluate(model, held, positive_label="high")
            print(f"  {name:<22} {split:<16} ROC-AUC {metrics.roc_auc:.4f} macro-F1 {metrics.macro_f1:.4f} ({len(held)} docs)")
            if split == "id split":
                scores = model.predict_scores(all_texts)[:, model.labels.index("high")]
                histograms[name] = scores
    edges = np.linspace(0.0, 1.0, 11)
    print("  scores of all 6,461 corpus docs (id-split models), 10 bins over [0, 1]:")
    for name, scores in histograms.items():
        counts, _ = np.histogram(scores, bins=edges)
        print(f"    {name:<22} {' '.join(f'{c:>5d}' for c in counts)}  median {np.median(scores):.4f}"
              f"  top bin {counts[-1] / len(scores):.1%}")
    draw_histograms(histograms, edges, Path(__file__).with_name("quality_histogram.png"))


def draw_histograms(histograms: dict[str, np.ndarray], edges: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(histograms), figsize=(10, 3.6), sharey=True)
    for axis, (name, scores) in zip(np.atleast_1d(axes), histograms.items()):
        axis.hist(scores, bins=np.linspace(0, 1, 41), color="#4477aa")
        axis.axvline(np.median(scores), color="#cc3311", label=f"median (top-50% cut) {np.median(scores):.3f}")
        axis.set_title(f"quality score: {name}")
        axis.set_xlabel("P(high) as stored in the quality column")
        axis.legend(loc="upper center")
    np.atleast_1d(axes)[0].set_ylabel("documents (sample corpus, 6,461)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"  histogram: {path}")


def bench_cost(records: list[dict], work: Path) -> None:
    print("== 3. cost per document")
    texts = [r["text"] for r in records]
    start = time.process_time()
    for begin in range(0, len(texts), 256):
        signal_features(texts[begin : begin + 256], 1500)
    signals = time.process_time() - start
    print(f"  structural signals (1,500 chars, batches of 256): {signals / len(texts) * 1e6:.0f} CPU-µs/doc")
    models = ensure_default_models(work / "models")
    registry = ModelRegistry(work / "models")
    stacked = load_model(registry.path(models.domain.sha256))
    prefixes = [text[:1500] for text in texts]
    start = time.process_time()
    for begin in range(0, len(prefixes), 256):
        stacked.predict_scores(prefixes[begin : begin + 256])
    stacked_s = time.process_time() - start
    start = time.process_time()
    lines = [" ".join(text[:3000].lower().split())[:1500] for text in texts]
    for begin in range(0, len(lines), 256):
        stacked.fasttext.predict_scores(lines[begin : begin + 256])
    plain_s = time.process_time() - start
    print(f"  stacked domain model: {len(texts) / stacked_s:,.0f} docs/CPU-s; its fastText part alone "
          f"{len(texts) / plain_s:,.0f} docs/CPU-s (ratio {stacked_s / plain_s:.2f}x the CPU)")
    from pygments.lexers import guess_lexer

    sample = texts[::65][:100]
    start = time.process_time()
    for text in sample:
        guess_lexer(text[:1500])
    lexer = time.process_time() - start
    print(f"  pygments guess_lexer (1,500 chars): {lexer / len(sample) * 1e3:.1f} CPU-ms/doc "
          f"= {lexer / len(sample) / (signals / len(texts)):.0f}x all structural signals together")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-loso", action="store_true", help="skip the leave-source-out runs (the slow part)")
    args = parser.parse_args()
    records = [record for _, record in read_jsonl(BUNDLED_CORPUS)]
    with tempfile.TemporaryDirectory(prefix="midmix-bench-classifiers-") as tmp:
        work = Path(tmp)
        bench_cost(records, work)
        bench_quality(records, work)
        bench_domain(records, work, loso=not args.skip_loso)


if __name__ == "__main__":
    main()
