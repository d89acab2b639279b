"""Dedup quality: midmix's MinHash dedup against datatrove's default, on one grown corpus.

Both run dedup alone (ours: ``curate_corpus`` with decontamination, heuristics and quality
cuts off, so every document reaches dedup; stock: the 4 MinHash stages with the default
``MinhashConfig``). Against the planted ground truth of ``bench/grow_corpus.py``:

- recall: share of planted near-duplicate pairs (exact 5-gram Jaccard >= 0.8) of which at most
  one document survives (also per Jaccard bin, and the stricter share put in one cluster: ours
  builds star clusters around kept documents, so a pair can be caught in two clusters), and the
  same for planted exact duplicates;
- exact survivors: groups of identical texts with more than one kept document (must be 0);
- control merged: share of control pairs (Jaccard 0.5-0.7) put in one cluster;
- precision over documents: a document merged into a cluster (cluster size > 1) is a false
  positive unless some other member has exact 5-gram Jaccard >= 0.8 with it; ``precision_vs_kept``
  is stricter: each removed document against the document its cluster kept.

    nice python bench/bench_dedup.py --docs 20000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from bench_curation import (
    BENCH_DIR,
    default_models,
    fresh_data_dir,
    grown_corpus,
    measure,
    run_ours,
)
from grow_corpus import jaccard, load_truth, shingles

NEAR_THRESHOLD = 0.8
JACCARD_BINS = ((0.80, 0.85), (0.85, 0.90), (0.90, 1.0))


def load_texts(corpus: Path) -> tuple[list[str], dict[str, str]]:
    """Document ids in file order and their texts."""
    ids, texts = [], {}
    with gzip.open(corpus, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            ids.append(doc["id"])
            texts[doc["id"]] = doc["text"]
    return ids, texts


def ours_dedup(
    corpus: Path, work: Path, models_dir: Path
) -> tuple[dict[str, str], set[str], float]:
    """Cluster key per document id and the kept ids, from the published dataset's ``dup_cluster``."""
    import pyarrow.dataset as ds

    data_dir = fresh_data_dir(work / "dedup-ours", models_dir)
    config = {
        "inputs": [str(corpus)],
        "heuristics": {"enabled": False},
        "decontam": {"enabled": False},
    }
    measured, result = run_ours(corpus, data_dir, work / "logs/dedup-ours.log", config)
    version_dir = data_dir / "datasets" / result["version"]
    kept = (
        ds.dataset(version_dir / "data")
        .to_table(columns=["id", "dup_cluster"])
        .to_pydict()
    )
    dropped = (
        ds.dataset(version_dir / "dropped")
        .to_table(columns=["id", "dup_cluster"])
        .to_pydict()
    )
    clusters = dict(
        zip(kept["id"] + dropped["id"], kept["dup_cluster"] + dropped["dup_cluster"])
    )
    return clusters, set(kept["id"]), measured.cpu_s


def stock_dedup(
    corpus: Path, work: Path, ids: list[str]
) -> tuple[dict[str, str], set[str], float]:
    """Cluster key per document id and the kept ids from datatrove's ``.clusters`` and ``.remove``."""
    stock_work = work / "dedup-stock"
    shutil.rmtree(stock_work, ignore_errors=True)
    command = [
        sys.executable,
        str(BENCH_DIR / "stock_datatrove.py"),
        "dedup",
        "--corpus",
        str(corpus),
        "--work",
        str(stock_work),
    ]
    measured = measure(command, work / "logs/dedup-stock.log")
    result = json.loads((stock_work / "clusters.json").read_text())
    by_index = {
        int(index): f"c{cluster}" for index, cluster in result["clusters"].items()
    }
    clusters = {doc_id: by_index.get(index, doc_id) for index, doc_id in enumerate(ids)}
    removed = {ids[index] for index in result["removed"]}
    return clusters, set(ids) - removed, measured.cpu_s


def _true_duplicate_members(members: list[str], texts: dict[str, str]) -> set[str]:
    """Members with exact 5-gram Jaccard >= 0.8 to some other member (identical texts short-cut)."""
    by_text: dict[str, list[str]] = defaultdict(list)
    for member in members:
        by_text[hashlib.sha1(texts[member].encode("utf-8")).hexdigest()].append(member)
    groups = list(by_text.values())
    sets = [shingles(texts[group[0]]) for group in groups]
    good = {member for group in groups if len(group) > 1 for member in group}
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if jaccard(sets[i], sets[j]) >= NEAR_THRESHOLD:
                good.update(groups[i])
                good.update(groups[j])
    return good


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _precision(clusters: dict[str, str], kept: set[str], texts: dict[str, str]) -> dict:
    """Precision over merged documents, and over removed documents against their cluster's keeper."""
    members: dict[str, list[str]] = defaultdict(list)
    for doc_id, key in clusters.items():
        members[key].append(doc_id)
    merged = [group for group in members.values() if len(group) > 1]
    n_merged = sum(len(group) for group in merged)
    true_positives = sum(len(_true_duplicate_members(group, texts)) for group in merged)
    removed_ok = removed = 0
    for group in merged:
        keepers = [doc_id for doc_id in group if doc_id in kept]
        keeper = shingles(texts[keepers[0]]) if keepers else set()
        for doc_id in group:
            if doc_id not in kept:
                removed += 1
                removed_ok += jaccard(keeper, shingles(texts[doc_id])) >= NEAR_THRESHOLD
    return {
        "precision": round(true_positives / n_merged, 4) if n_merged else 1.0,
        "precision_vs_kept": round(removed_ok / removed, 4) if removed else 1.0,
        "docs_merged": n_merged,
        "docs_removed": removed,
    }


def _recall(clusters: dict[str, str], kept: set[str], truth: list) -> dict:
    """Planted pairs caught (at most one document survives), per kind and per Jaccard bin."""

    def caught(pair) -> bool:
        return pair.a not in kept or pair.b not in kept

    near = [
        pair for pair in truth if pair.kind == "near" and pair.jaccard >= NEAR_THRESHOLD
    ]
    by_bin = {
        f"{low:.2f}-{high:.2f}": [caught(p) for p in near if low <= p.jaccard < high]
        for low, high in JACCARD_BINS
    }
    return {
        "near_recall": _share([caught(pair) for pair in near]),
        "near_recall_by_jaccard": {
            name: _share(hits) for name, hits in by_bin.items() if hits
        },
        "near_recall_same_cluster": _share(
            [clusters[pair.a] == clusters[pair.b] for pair in near]
        ),
        "exact_recall": _share(
            [caught(pair) for pair in truth if pair.kind == "exact"]
        ),
        "control_merged": _share(
            [
                clusters[pair.a] == clusters[pair.b]
                for pair in truth
                if pair.kind == "control"
            ]
        ),
    }


def score(
    clusters: dict[str, str], kept: set[str], texts: dict[str, str], truth: list
) -> dict:
    """Recall, precision, control merges and exact survivors of one dedup result."""
    kept_texts: dict[str, int] = defaultdict(int)
    for doc_id in kept:
        kept_texts[texts[doc_id]] += 1
    return {
        **_recall(clusters, kept, truth),
        **_precision(clusters, kept, texts),
        "exact_survivors": sum(1 for count in kept_texts.values() if count > 1),
        "kept": len(kept),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/midmix-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-stock", action="store_true", help="measure ours only")
    args = parser.parse_args()
    corpus = grown_corpus(args.work, args.docs, args.seed)
    models_dir, _ = default_models(args.work)
    ids, texts = load_texts(corpus)
    truth = load_truth(corpus)
    runs = {"ours": lambda: ours_dedup(corpus, args.work, models_dir)}
    if not args.skip_stock:
        runs["stock"] = lambda: stock_dedup(corpus, args.work, ids)
    results = {}
    for name, run in runs.items():
        clusters, kept, cpu_s = run()
        results[name] = {
            "docs": len(ids),
            "cpu_s": round(cpu_s, 1),
            **score(clusters, kept, texts, truth),
        }
        print(name, json.dumps(results[name]), flush=True)
    (args.work / f"dedup-results-{args.docs}.json").write_text(
        json.dumps(results, indent=2)
    )


if __name__ == "__main__":
    main()
