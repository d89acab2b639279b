"""Curation speed: midmix's full pipeline against datatrove's stock blocks, same grown corpus.

For each size N the corpus is grown (``bench/grow_corpus.py``, cached under ``--work``) and the
default models are trained, both outside the timed region. Then each pipeline runs as its own
child process and ``os.wait4`` reports that child's user+sys CPU seconds (its children included)
and peak RSS; wall time is measured around it.

- ours: ``midmix.pipelines.curation.curate.curate_corpus`` with the default config (normalise, decontaminate,
  language, domain, heuristics, quality >= 0.5, byte-token counts, exact + MinHash dedup,
  Parquet + manifest), one local task;
- stock: ``bench/stock_datatrove.py curate`` (GopherQualityFilter + FastTextClassifierFilter on
  our bundled quality model, ``high`` >= 0.5, + the 4-stage MinHash dedup), one worker.

The ratio printed is ours / stock in documents per CPU-second. Results also go to
``<work>/curation-results-<sizes>.json``.

    nice python bench/bench_curation.py --sizes 10000 50000 100000 --stock-sizes 10000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
QUALITY_THRESHOLD = 0.5


@dataclass
class Measured:
    """One child process run: CPU seconds (user+sys incl. its children), wall seconds, peak RSS."""

    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    stdout: str


def measure(command: list[str], log: Path) -> Measured:
    """Run ``command`` as a child, stderr to ``log``; raise with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log, "w", encoding="utf-8") as err,
        open(log.with_suffix(".out"), "w+", encoding="utf-8") as out,
    ):
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if child.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(
            f"{' '.join(command)} failed with {child.returncode}:\n{tail}"
        )
    return Measured(
        usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, stdout
    )


def grown_corpus(work: Path, n_docs: int, seed: int) -> Path:
    """The grown corpus of ``n_docs`` documents, built once per (N, seed) and reused."""
    from grow_corpus import grow, write_corpus

    path = work / f"corpus-{n_docs}-s{seed}.jsonl.gz"
    if not path.is_file():
        docs, pairs = grow(n_docs, seed)
        write_corpus(docs, pairs, path)
    return path


def default_models(work: Path) -> tuple[Path, Path]:
    """Train (once) the bundled default models; returns the models dir and the quality model's .bin."""
    from midmix.classifiers.defaults import ensure_default_models
    from midmix.classifiers.registry import ModelRegistry

    models_dir = work / "models"
    cards = ensure_default_models(models_dir)
    quality = ModelRegistry(models_dir).path(cards.quality.sha256)
    # The default quality model is stacked (a directory); stock datatrove runs only its fastText part.
    return models_dir, quality / "fasttext.bin" if quality.is_dir() else quality


def fresh_data_dir(path: Path, models_dir: Path) -> Path:
    """An empty data dir holding only the trained models, so nothing is cached from an earlier run."""
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(models_dir, path / "models")
    return path


def run_ours(
    corpus: Path, data_dir: Path, log: Path, config: dict
) -> tuple[Measured, dict]:
    """``curate_corpus`` in a child process; returns its measurements and the manifest's counts."""
    command = [
        sys.executable,
        str(Path(__file__)),
        "ours",
        "--data-dir",
        str(data_dir),
        "--config",
        json.dumps(config),
    ]
    measured = measure(command, log)
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


def ours_config(corpus: Path) -> dict:
    """The default curation config with the same quality cut as the stock filter."""
    return {"inputs": [str(corpus)], "quality": {"min_score": QUALITY_THRESHOLD}}


def run_stock(
    corpus: Path, work: Path, model: Path, log: Path
) -> tuple[Measured, dict]:
    """``stock_datatrove.py curate`` in a child process."""
    shutil.rmtree(work, ignore_errors=True)
    command = [
        sys.executable,
        str(BENCH_DIR / "stock_datatrove.py"),
        "curate",
        "--corpus",
        str(corpus),
        "--work",
        str(work),
        "--model",
        str(model),
        "--label",
        "high",
        "--threshold",
        str(QUALITY_THRESHOLD),
    ]
    measured = measure(command, log)
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


def _row(name: str, n_docs: int, measured: Measured, docs_out: int) -> dict:
    return {
        "pipeline": name,
        "docs": n_docs,
        "docs_out": docs_out,
        **{k: round(v, 2) for k, v in asdict(measured).items() if k != "stdout"},
        "docs_per_cpu_s": round(n_docs / measured.cpu_s, 1),
        "docs_per_wall_s": round(n_docs / measured.wall_s, 1),
    }


def _print_row(row: dict) -> None:
    print(
        f"{row['pipeline']:8} {row['docs']:7d} {row['docs_out']:7d} {row['cpu_s']:8.1f} {row['wall_s']:8.1f} "
        f"{row['docs_per_cpu_s']:10.1f} {row['docs_per_wall_s']:11.1f} {row['peak_rss_mb']:7.0f}",
        flush=True,
    )


def bench(
    sizes: list[int], stock_sizes: list[int], work: Path, seed: int
) -> list[dict]:
    """Run ours at every size and stock at ``stock_sizes``; print a table row per run as it finishes."""
    models_dir, quality_model = default_models(work)
    rows = []
    print(
        f"{'pipeline':8} {'docs':>7} {'kept':>7} {'cpu_s':>8} {'wall_s':>8} {'docs/cpu_s':>10} {'docs/wall_s':>11} {'rss_mb':>7}"
    )
    for n_docs in sizes:
        corpus = grown_corpus(work, n_docs, seed)
        data_dir = fresh_data_dir(work / f"ours-{n_docs}", models_dir)
        measured, result = run_ours(
            corpus, data_dir, work / f"logs/ours-{n_docs}.log", ours_config(corpus)
        )
        rows.append(ours := _row("ours", n_docs, measured, result["docs_out"]))
        _print_row(ours)
        if n_docs not in stock_sizes:
            continue
        measured, result = run_stock(
            corpus,
            work / f"stock-{n_docs}",
            quality_model,
            work / f"logs/stock-{n_docs}.log",
        )
        rows.append(stock := _row("stock", n_docs, measured, result["docs_out"]))
        _print_row(stock)
        print(
            f"ratio ours/stock at {n_docs}: {ours['docs_per_cpu_s'] / stock['docs_per_cpu_s']:.2f}x docs per CPU-second, "
            f"{ours['docs_per_wall_s'] / stock['docs_per_wall_s']:.2f}x docs per wall-second",
            flush=True,
        )
    (work / f"curation-results-{'-'.join(map(str, sizes))}.json").write_text(
        json.dumps(rows, indent=2)
    )
    return rows


def run_ours_child(data_dir: Path, config_json: str) -> None:
    """The child side of :func:`run_ours`: curate and print the counts as one JSON line."""
    from midmix.pipelines.curation.config import parse_config
    from midmix.pipelines.curation.curate import curate_corpus

    manifest = curate_corpus(parse_config(json.loads(config_json)), data_dir)
    print(
        json.dumps(
            {
                "version": manifest["version"],
                "docs_out": manifest["counts"]["docs"],
                "steps": manifest["steps"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    child = commands.add_parser(
        "ours", help="(internal) run curate_corpus once in this process"
    )
    child.add_argument("--data-dir", type=Path, required=True)
    child.add_argument("--config", required=True, help="curation config as JSON")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000]
    )
    parser.add_argument(
        "--stock-sizes",
        type=int,
        nargs="*",
        default=[10_000, 50_000],
        help="sizes to also run stock datatrove at",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/midmix-bench"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "ours":
        run_ours_child(args.data_dir, args.config)
        return
    bench(args.sizes, args.stock_sizes, args.work, args.seed)


if __name__ == "__main__":
    main()
