"""Per-step speed: midmix's curation steps against the datatrove stock blocks doing the same job.

Same documents (the first ``--docs`` of the bundled sample corpus, NFC-normalised), same
process, CPU seconds from ``time.process_time`` after one warm-up batch:

- heuristics: ours = ``HeuristicSignals`` (vectorised word splitter, all ten ``sig_*``) +
  ``HeuristicFilter``; peer = datatrove ``GopherQualityFilter()`` (spaCy word tokenizer);
- MinHash signatures: ours = ``split_words`` + ``signatures`` (20 x 5 = 100 permutations, 5-word
  shingles); peer = datatrove ``MinhashDedupSignature`` with its default ``MinhashConfig``
  (14 x 8 = 112 hashes, 5-grams), writing its signature files to a temp dir.

    python bench/bench_curation_steps.py --docs 2000
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datatrove.data import Document

from midmix.resources import SAMPLE_CORPUS

REPO = Path(__file__).resolve().parents[1]
CORPUS = SAMPLE_CORPUS


def load_docs(n_docs: int) -> list[Document]:
    from midmix.pipelines.curation.steps.normalize import normalize_text

    docs = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            docs.append(
                Document(text=normalize_text(record["text"]), id=record["id"], metadata={"lang": record["lang"]})
            )
            if len(docs) == n_docs:
                break
    return docs


def fresh(docs: list[Document]) -> list[Document]:
    return [Document(text=doc.text, id=doc.id, metadata=dict(doc.metadata)) for doc in docs]


def cpu_seconds(run: Callable[[list[Document]], None], docs: list[Document]) -> float:
    run(fresh(docs[:64]))  # warm-up: imports, model and tokenizer loading
    batch = fresh(docs)
    start = time.process_time()
    run(batch)
    return time.process_time() - start


def ours_heuristics(docs: list[Document]) -> None:
    from midmix.pipelines.curation.config import HeuristicsConfig
    from midmix.pipelines.curation.steps.heuristics import HeuristicFilter
    from midmix.pipelines.curation.steps.signals import HeuristicSignals

    for _ in HeuristicFilter(HeuristicsConfig()).run(HeuristicSignals().run(iter(docs))):
        pass


def stock_heuristics(docs: list[Document]) -> None:
    from datatrove.pipeline.filters import GopherQualityFilter

    for _ in GopherQualityFilter().run(iter(docs)):
        pass


def ours_minhash(docs: list[Document]) -> None:
    from midmix.pipelines.curation.dedup.minhash import signatures
    from midmix.pipelines.curation.steps.words import split_words

    for start in range(0, len(docs), 256):
        batch = split_words([doc.text for doc in docs[start : start + 256]])
        signatures(batch.hashes, batch.offsets, 5, 100)


def stock_minhash(docs: list[Document]) -> None:
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    with tempfile.TemporaryDirectory() as folder:
        MinhashDedupSignature(output_folder=folder, config=MinhashConfig()).run(iter(docs))  # writes, yields nothing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    import datatrove.pipeline.dedup  # noqa: F401  (its import adds a log sink; remove it after)
    from loguru import logger

    logger.remove()  # datatrove's per-block INFO lines would interleave with the table
    docs = load_docs(args.docs)
    print(f"{len(docs)} docs, {sum(len(doc.text) for doc in docs) / len(docs):.0f} chars each on average")
    print(f"{'step':<12} {'ours docs/CPU-s':>16} {'stock docs/CPU-s':>17} {'ratio':>7}")
    for name, ours, stock in (
        ("heuristics", ours_heuristics, stock_heuristics),
        ("minhash", ours_minhash, stock_minhash),
    ):
        ours_rate = len(docs) / cpu_seconds(ours, docs)
        stock_rate = len(docs) / cpu_seconds(stock, docs)
        print(f"{name:<12} {ours_rate:>16,.0f} {stock_rate:>17,.0f} {ours_rate / stock_rate:>6.1f}x")


if __name__ == "__main__":
    main()
