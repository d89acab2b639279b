"""Expected wall time and memory per stage for N documents on K cores, from measured rates.

    python bench/plan_scale.py --docs 1000000000 --cores 512 --sources

Each stage's rate is a measured per-core figure with its provenance (the RESULTS.md section and
the command that produced it); docs/SCALE.md explains how each stage partitions its work. The
arithmetic is deliberately simple, so a reader can redo it by hand:

    work     = docs (or docs x tokens per doc for token-rate stages)
    cpu_s    = work / rate per core
    files    = ceil(docs / docs per input file)      (a curation task reads whole input files)
    tasks    = min(cores, files) for a parallel stage, 1 for a global one
    wall_s   = cpu_s / tasks
    mem/task = fixed + file bytes per doc x docs per file + corpus bytes per doc x docs

``--measure`` produces the figures: it runs the real curation stages on a corpus, one forked
child per stage, and prints CPU seconds and peak RSS per stage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from midmix.resources import SAMPLE_CORPUS

SAMPLE_CORPUS = SAMPLE_CORPUS
MB = 2**20
GB = 2**30


class StageRate(BaseModel):
    """One stage's measured cost per core and the memory it holds, with where the figures come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    unit: Literal["docs", "tokens"]
    per_core_s: float = Field(gt=0, description="units processed per CPU-second")
    parallel: bool = Field(description="one task per input file (up to the cores), or one global task")
    task_mem_mb: float = Field(ge=0, description="memory every task holds regardless of corpus size")
    file_bytes_per_doc: float = Field(0.0, ge=0, description="held per document of the input file in hand")
    corpus_bytes_per_doc: float = Field(0.0, ge=0, description="held per document of the whole corpus, by every task")
    source: str


@dataclass(frozen=True)
class StagePlan:
    """What one stage is expected to cost for a given corpus and cluster."""

    stage: str
    tasks: int
    cpu_hours: float
    wall_s: float
    mem_per_task_gb: float
    mem_concurrent_gb: float


_MEASURED = (
    "bench/RESULTS.md, Scale: `python bench/plan_scale.py --docs N --measure /tmp/scale-measure "
    "--corpus grown-40k.jsonl.gz` at N = 20000 and 40000"
)

# The curation stages as built (pipelines/curate.py at commit 4d1fa93), measured on a 40k-doc
# grown corpus with planted duplicates (bench/grow_corpus.py --docs 40000 --seed 1): rates at
# N = 40000 (dedup: marginal, its cost grows with candidate pairs), per-doc memory as the RSS
# slope from N = 20000 to 40000. Rerun --measure on your hardware and pass --rates to use yours.
RATES: tuple[StageRate, ...] = (
    StageRate(
        stage="1 annotate (read..minhash signature)",
        unit="docs",
        per_core_s=1814.0,
        parallel=True,
        task_mem_mb=305.0,
        file_bytes_per_doc=155.0,
        source=_MEASURED,
    ),
    StageRate(
        stage="2 dedup clustering (one task)",
        unit="docs",
        per_core_s=13014.0,
        parallel=False,
        task_mem_mb=213.0,
        corpus_bytes_per_doc=2565.0,
        source=_MEASURED + "; marginal rate",
    ),
    StageRate(
        stage="3 write kept/dropped parts",
        unit="docs",
        per_core_s=36807.0,
        parallel=True,
        task_mem_mb=178.0,
        file_bytes_per_doc=2594.0,
        source=_MEASURED,
    ),
    StageRate(
        stage="4 publish + manifest (one task)",
        unit="docs",
        per_core_s=96943.0,
        parallel=False,
        task_mem_mb=115.0,
        corpus_bytes_per_doc=738.0,
        source=_MEASURED,
    ),
)


def plan_stage(rate: StageRate, docs: int, cores: int, tokens_per_doc: float, docs_per_file: int) -> StagePlan:
    """The cost of one stage; see the module docstring for the formula."""
    work = docs * tokens_per_doc if rate.unit == "tokens" else docs
    cpu_s = work / rate.per_core_s
    files = math.ceil(docs / docs_per_file)
    tasks = min(cores, files) if rate.parallel else 1
    mem_per_task = (
        rate.task_mem_mb * MB + rate.file_bytes_per_doc * min(docs, docs_per_file) + rate.corpus_bytes_per_doc * docs
    )
    return StagePlan(
        stage=rate.stage,
        tasks=tasks,
        cpu_hours=cpu_s / 3600,
        wall_s=cpu_s / tasks,
        mem_per_task_gb=mem_per_task / GB,
        mem_concurrent_gb=mem_per_task * tasks / GB,
    )


def plan(
    docs: int, cores: int, tokens_per_doc: float, docs_per_file: int, rates: tuple[StageRate, ...] = RATES
) -> list[StagePlan]:
    """Every stage's plan, in pipeline order (stages run one after another)."""
    if docs < 1 or cores < 1 or docs_per_file < 1:
        raise ValueError("--docs, --cores and --docs-per-file must be at least 1")
    return [plan_stage(rate, docs, cores, tokens_per_doc, docs_per_file) for rate in rates]


def load_rates(path: Path) -> tuple[StageRate, ...]:
    """Rates from a JSON list of StageRate objects, to plan with figures measured elsewhere."""
    try:
        return tuple(StageRate.model_validate(item) for item in json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as error:
        raise SystemExit(f"plan_scale: cannot read rates from {path}: {error}") from None


def format_duration(seconds: float) -> str:
    """Seconds as a short human duration: 45s, 12.5min, 3.2h, 2.1d."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render(plans: list[StagePlan], docs: int, cores: int, tokens_per_doc: float) -> str:
    """The plan as a plain-text table with a total line."""
    header = f"{'stage':<40} {'tasks':>6} {'CPU-h':>10} {'wall':>9} {'GB/task':>8} {'GB total':>9}"
    lines = [f"plan for {docs:,} documents ({tokens_per_doc:,.0f} tokens each) on {cores:,} cores", header]
    for p in plans:
        lines.append(
            f"{p.stage:<40} {p.tasks:>6} {p.cpu_hours:>10,.1f} {format_duration(p.wall_s):>9} "
            f"{p.mem_per_task_gb:>8.2f} {p.mem_concurrent_gb:>9.1f}"
        )
    total_wall = sum(p.wall_s for p in plans)
    total_cpu = sum(p.cpu_hours for p in plans)
    peak = max(p.mem_concurrent_gb for p in plans)
    lines.append(
        f"{'total (stages run in sequence)':<40} {'':>6} {total_cpu:>10,.1f} {format_duration(total_wall):>9} {'':>8} {peak:>9.1f}"
    )
    return "\n".join(lines)


def run_pipeline(pipeline: list) -> None:
    """Pipe documents through the steps of one stage, as a datatrove executor does for rank 0 of 1."""
    from collections import deque

    data = None
    for step in pipeline:
        data = step(data, 0, 1)
    if data is not None:
        deque(data, maxlen=0)


def _child(work: Callable[[], object], queue) -> None:
    import resource
    import time

    start = time.process_time()
    work()
    queue.put((time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def measure_in_child(work: Callable[[], object]) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of ``work`` run in a forked child, so peaks do not mix."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(work, queue))
    child.start()
    child.join()  # the result is a few bytes: the child's put never blocks on the pipe
    if child.exitcode != 0:
        raise SystemExit("plan_scale: a measured stage failed (see the traceback above)")
    return queue.get()


def measure(n_docs: int, work: Path, corpus: Path) -> list[dict]:
    """Per-stage CPU and peak RSS of the real curation stages on the first ``n_docs`` of ``corpus``.

    The last row is the peer: the same corpus through ``curate_corpus`` in one call, so the
    stage rows can be checked to account for the whole run.
    """
    import gzip
    import shutil

    from midmix.classifiers.defaults import ensure_default_models
    from midmix.pipelines.curation.config import CurationConfig, LocalExecutor
    from midmix.pipelines.curation.curate import (
        PublishDataset,
        curate_corpus,
        plan_curation,
        stage_one_pipeline,
        step_names,
    )
    from midmix.pipelines.curation.dedup.stage import DedupClusters
    from midmix.pipelines.curation.writer import CuratedWriter

    shutil.rmtree(work / f"n{n_docs}", ignore_errors=True)
    root = work / f"n{n_docs}"
    root.mkdir(parents=True)
    n_lines = 0
    with gzip.open(corpus, "rb") as source, open(root / "input.jsonl", "wb") as target:
        for _, line in zip(range(n_docs), source):
            target.write(line)
            n_lines += 1
    ensure_default_models(work / "models")
    for data_dir in ("data", "peer-data"):
        shutil.copytree(work / "models", root / data_dir / "models")
    config = CurationConfig(inputs=[str(root / "input.jsonl")], executor=LocalExecutor(tasks=1, workers=1))
    plan = plan_curation(config, root / "data")
    inter, decisions, out = root / "intermediate", root / "decisions", root / "out"
    stages = {
        "annotate": stage_one_pipeline(plan, inter, None),
        "dedup": [DedupClusters(str(inter), str(decisions), 1, config.dedup, config.inputs)],
        "write": [CuratedWriter(str(inter), str(decisions), str(out), 1)],
        "publish": [
            PublishDataset(
                str(out),
                str(root / "data" / "datasets" / plan.version),
                plan.header,
                step_names(config),
                list(config.quality.classifiers),
            )
        ],
    }
    rows = []
    for name, pipeline in stages.items():
        cpu_s, peak = measure_in_child(lambda pipeline=pipeline: run_pipeline(pipeline))
        rows.append(
            {
                "stage": name,
                "docs": n_lines,
                "cpu_s": cpu_s,
                "docs_per_cpu_s": n_lines / cpu_s,
                "peak_rss_mb": peak / MB,
            }
        )
    cpu_s, peak = measure_in_child(lambda: curate_corpus(config, root / "peer-data"))
    rows.append(
        {
            "stage": "peer: curate_corpus, whole run",
            "docs": n_lines,
            "cpu_s": cpu_s,
            "docs_per_cpu_s": n_lines / cpu_s,
            "peak_rss_mb": peak / MB,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, required=True, help="documents in the raw corpus")
    parser.add_argument("--cores", type=int, help="CPU cores across the cluster")
    parser.add_argument("--tokens-per-doc", type=float, default=3190.0, help="default: sample corpus, bytes tokenizer")
    parser.add_argument(
        "--docs-per-file", type=int, default=100_000, help="documents per input file (one task reads whole files)"
    )
    parser.add_argument("--rates", type=Path, help="JSON list of stage rates to use instead of the built-in table")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--sources", action="store_true", help="print where each rate comes from")
    parser.add_argument(
        "--measure",
        type=Path,
        metavar="WORK_DIR",
        help="instead of planning, measure each curation stage on the first --docs docs of --corpus",
    )
    parser.add_argument("--corpus", type=Path, default=SAMPLE_CORPUS, help="JSONL.gz corpus for --measure")
    args = parser.parse_args(argv)
    if args.measure:
        rows = measure(args.docs, args.measure, args.corpus)
        for row in rows:
            print(json.dumps(row))
        stages_cpu = sum(row["cpu_s"] for row in rows[:-1])
        print(
            f"ratio sum of stages / peer (whole curate_corpus run): {stages_cpu / rows[-1]['cpu_s']:.2f}x CPU-seconds"
        )
        return 0
    if args.cores is None:
        parser.error("--cores is required to plan")
    rates = load_rates(args.rates) if args.rates else RATES
    try:
        plans = plan(args.docs, args.cores, args.tokens_per_doc, args.docs_per_file, rates)
    except ValueError as error:
        raise SystemExit(f"plan_scale: {error}") from None
    if args.json:
        print(json.dumps([asdict(p) for p in plans], indent=2))
    else:
        print(render(plans, args.docs, args.cores, args.tokens_per_doc))
    if args.sources:
        for rate in rates:
            print(f"- {rate.stage}: {rate.per_core_s:,.0f} {rate.unit}/CPU-s; {rate.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
