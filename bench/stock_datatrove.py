"""The peer: datatrove's stock blocks doing the curation steps midmix does, the way its docs show.

``curate``: JsonlReader -> GopherQualityFilter -> FastTextClassifierFilter (keep ``label`` >=
``threshold``, a local model path, never a hub URL) -> JsonlWriter -> MinhashDedupSignature,
then MinhashDedupBuckets -> MinhashDedupCluster -> JsonlReader -> MinhashDedupFilter -> JsonlWriter,
with the default ``MinhashConfig`` on ``LocalPipelineExecutor`` with one worker. Buckets runs one
task per bucket (datatrove requires tasks to be a multiple of the 14 buckets), one at a time.

``dedup``: the four MinHash stages alone on the raw corpus, keeping cluster ids, for the
dedup-quality benchmark. Prints one JSON line: documents in and out (and clusters for dedup).

Run it as its own process so the caller can measure its CPU time and peak RSS
(``bench/bench_curation.py`` and ``bench/bench_dedup.py`` do):

    python bench/stock_datatrove.py curate --corpus C.jsonl.gz --work /tmp/w --model M.bin --label high --threshold 0.5
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
from datatrove.pipeline.filters import FastTextClassifierFilter, GopherQualityFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def _run(pipeline: list, logs: Path, tasks: int = 1) -> None:
    LocalPipelineExecutor(
        pipeline=pipeline,
        tasks=tasks,
        workers=1,
        logging_dir=str(logs),
        skip_completed=False,
    ).run()


def _reader(corpus: Path) -> JsonlReader:
    return JsonlReader(str(corpus.parent), glob_pattern=corpus.name, recursive=False)


def _minhash_middle(work: Path, config: MinhashConfig, save_cluster_id: bool) -> None:
    """Stages 2 and 3: bucket matches, then union-find clusters into ``work/remove``."""
    _run(
        [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)],
        work / "logs/buckets",
        config.num_buckets,
    )
    _run(
        [
            MinhashDedupCluster(
                str(work / "buckets"),
                str(work / "remove"),
                config=config,
                save_cluster_id=save_cluster_id,
            )
        ],
        work / "logs/cluster",
    )


def _count_lines(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            total += sum(1 for _ in handle)
    return total


def curate(corpus: Path, work: Path, model: Path, label: str, threshold: float) -> dict:
    """Filter, then MinHash-deduplicate; returns documents in and out of each half."""
    config = MinhashConfig()
    _run(
        [
            _reader(corpus),
            GopherQualityFilter(),
            FastTextClassifierFilter(str(model), keep_labels=(label, threshold)),
            JsonlWriter(str(work / "filtered")),
            MinhashDedupSignature(str(work / "sigs"), config=config),
        ],
        work / "logs/filter",
    )
    _minhash_middle(work, config, save_cluster_id=False)
    _run(
        [
            JsonlReader(str(work / "filtered")),
            MinhashDedupFilter(str(work / "remove")),
            JsonlWriter(str(work / "deduped")),
        ],
        work / "logs/dedup_filter",
    )
    return {
        "filtered": _count_lines(work / "filtered"),
        "docs_out": _count_lines(work / "deduped"),
    }


def dedup_clusters(corpus: Path, work: Path) -> dict:
    """MinHash dedup alone on the raw corpus: cluster id by document index (documents with a match) and removed indices."""
    config = MinhashConfig()
    _run(
        [_reader(corpus), MinhashDedupSignature(str(work / "sigs"), config=config)],
        work / "logs/signature",
    )
    _minhash_middle(work, config, save_cluster_id=True)
    clusters, removed = (
        work / "remove" / "000000.clusters",
        work / "remove" / "000000.remove",
    )
    return {
        "clusters": dict(struct.iter_unpack("<2I", clusters.read_bytes()))
        if clusters.exists()
        else {},
        "removed": [
            index for (index,) in struct.iter_unpack("<I", removed.read_bytes())
        ]
        if removed.exists()
        else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_curate = commands.add_parser(
        "curate", help="Gopher + fastText filter, then 4-stage MinHash dedup"
    )
    run_dedup = commands.add_parser(
        "dedup",
        help="4-stage MinHash dedup only; writes clusters.json (clusters, removed)",
    )
    for sub in (run_curate, run_dedup):
        sub.add_argument("--corpus", type=Path, required=True)
        sub.add_argument(
            "--work", type=Path, required=True, help="empty work directory"
        )
    run_curate.add_argument(
        "--model", type=Path, required=True, help="local fastText .bin"
    )
    run_curate.add_argument("--label", default="high")
    run_curate.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    if args.command == "curate":
        print(
            json.dumps(
                curate(args.corpus, args.work, args.model, args.label, args.threshold)
            )
        )
        return
    result = dedup_clusters(args.corpus, args.work)
    (args.work / "clusters.json").write_text(json.dumps(result))
    print(
        json.dumps(
            {
                "docs_in_clusters": len(result["clusters"]),
                "removed": len(result["removed"]),
            }
        )
    )


if __name__ == "__main__":
    main()
