"""Mixture benchmarks: materialisation throughput against a plain HF ``datasets`` pipeline, and planner time.

    python bench/bench_mixture.py --bpe                # sample corpus (+32k BPE), 10x corpus, 1M-doc planner
    python bench/bench_mixture.py --sizes 1 --plan-docs 200000 --repeats 1
    python bench/bench_mixture.py --sizes --plan-docs 0 --bpe-build   # only the 32k BPE build: encoder, 1 vs 2 tasks

Materialisation: the same selection (every web/code/math/qa/academic document, one epoch, in
quality order) built by ``materialize_mixture`` (select in DuckDB, read text, tokenize, write
shards + manifest) versus the named peer ``datasets.Dataset(read_table) -> filter -> map(tokenize)
-> to_parquet``. Both use the byte tokenizer (or ``--bpe`` for a trained BPE on size 1). The 10x
corpus repeats the sample's real text with rotated paragraphs and new ids.

BPE build (``--bpe-build``): a 32k byte-level BPE trained by ``midmix tokenizer train`` on the curated
sample corpus; the dataset's n_tokens counted with it (so the plan is exact). The encoder (tiktoken
built from the tokenizer's merges) against the named peer, HF tokenizers' ``encode_batch``, on the
texts the build encodes, ids compared doc by doc, tokens per CPU-second of the process (all threads);
then ``materialize_mixture`` with 1 and 2 local tasks: wall time, and the bytes of both compared.

Planner: ``plan_mixture`` for a 3-phase, 8-component spec with percentile rules and an eval split
over catalog statistics of N synthetic documents (target: < 2 s for 1M).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from midmix.hashing import sha256_file
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.executors import LocalExecutor
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.plan import plan_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec
from midmix.pipelines.tokenizer_fast import compare_with_hf
from midmix.resources import SAMPLE_CORPUS

# The curated-dataset fixture is shared with the tests; bench scripts run from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sample_dataset import write_sample_dataset  # noqa: E402

SAMPLE = SAMPLE_CORPUS
DOMAINS = ["web", "code", "math", "qa", "academic"]


def selection_spec(budget: int, tokenizer: TokenizerSpec) -> dict:
    """One phase taking every document of DOMAINS exactly once, in quality order."""
    return {
        "name": "bench", "tokenizer": tokenizer.model_dump(),
        "phases": [{"name": "all", "token_budget": budget, "curriculum": {"key": "quality.fasttext_hq"},
                    "components": [{"name": "sel", "datasets": ["latest"], "weight": 1.0, "max_epochs": 1,
                                    "select": {"column": "domain", "op": "in", "value": DOMAINS}}]}],
    }  # fmt: skip


def bench_ours(data_dir: Path, tokenizer: TokenizerSpec) -> tuple[float, int]:
    """Seconds and tokens for materialize_mixture of the selection (catalog already synced)."""
    with Catalog(data_dir) as catalog:
        probe = plan_mixture(parse_spec(selection_spec(1, tokenizer)), catalog, strict=False)
    available = probe.phases[0].components[0].available_tokens
    spec = parse_spec(selection_spec(available, tokenizer))
    start = time.perf_counter()
    manifest = materialize_mixture(spec, data_dir)
    seconds = time.perf_counter() - start
    shutil.rmtree(data_dir / "mixtures" / manifest["version"])  # the next repeat builds it again
    return seconds, manifest["phases"][0]["tokens"]


def bench_peer(part: Path, out_dir: Path, tokenizer: TokenizerSpec) -> tuple[float, int]:
    """Seconds and tokens for Dataset(read_table) -> filter -> map(tokenize) -> to_parquet (HF tokenizers for BPE)."""
    import datasets

    datasets.disable_progress_bars()
    encoder = Tokenizer(tokenizer) if tokenizer.kind == "bytes" else HFEncoder(tokenizer.path or "")
    wanted = set(DOMAINS)
    start = time.perf_counter()
    # Projection: HF datasets has no type for the curated map<string, float> columns.
    columns = ["id", "text", "source", "domain", "quality_score"]
    ds = datasets.Dataset(pq.read_table(part, columns=columns))
    ds = ds.filter(lambda batch: [d in wanted for d in batch["domain"]], batched=True)
    ds = ds.sort("quality_score")  # ours writes in curriculum (quality) order too
    ds = ds.map(
        lambda batch: {"input_ids": encoder.encode_batch(batch["text"])},
        batched=True, remove_columns=[c for c in ds.column_names if c not in ("id", "source", "domain")],
    )  # fmt: skip
    ds = ds.map(lambda batch: {"n_tokens": [len(x) for x in batch["input_ids"]]}, batched=True)
    ds.to_parquet(str(out_dir / "peer.parquet"))
    seconds = time.perf_counter() - start
    return seconds, sum(ds["n_tokens"])


class HFEncoder:
    """HF tokenizers' ``encode_batch``, the peer for BPE (midmix's Tokenizer would use the fast encoder)."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.hf = HFTokenizer.from_file(path)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.hf.encode_batch(texts, add_special_tokens=False)]


def bench_materialize(size: int, root: Path, bpe: bool, repeats: int) -> None:
    data_dir = root / f"x{size}"
    start = time.perf_counter()
    dataset = write_sample_dataset(data_dir, SAMPLE, repeat=size)
    made = time.perf_counter() - start
    start = time.perf_counter()
    Catalog(data_dir).sync()
    synced = time.perf_counter() - start
    part = data_dir / "datasets" / dataset["version"] / "data" / "part-00000.parquet"
    print(f"\n## corpus x{size}: {dataset['counts']['docs']:,} docs, {dataset['counts']['tokens']:,} byte tokens "
          f"(written in {made:.1f} s; catalog sync {synced:.2f} s)", flush=True)  # fmt: skip
    runs = [("bytes", TokenizerSpec(), data_dir, part)]
    if bpe and size == 1:
        bpe_spec = train_bpe(root, data_dir, 32000)
        bpe_dir = root / f"x{size}-bpe"
        bpe_dataset = write_sample_dataset(bpe_dir, SAMPLE, repeat=size, tokenizer=bpe_spec)
        Catalog(bpe_dir).sync()
        runs.append(("bpe-32k", bpe_spec, bpe_dir, bpe_dir / "datasets" / bpe_dataset["version"] / "data" / "part-00000.parquet"))
    for label, tokenizer, run_dir, run_part in runs:
        # Best of `repeats`, alternating, so a burst of load on a shared machine hits both sides alike.
        ours, peer = [], []
        for _ in range(repeats):
            ours.append(bench_ours(run_dir, tokenizer))
            peer.append(bench_peer(run_part, root / f"peer-{size}-{label}", tokenizer))
        (ours_s, ours_tokens), (peer_s, peer_tokens) = min(ours), min(peer)
        print(f"tokenizer {label}: midmix materialize_mixture {ours_tokens:,} tokens in {ours_s:.2f} s = "
              f"{ours_tokens / ours_s / 1e6:.2f} M tok/s | peer datasets filter+sort+map+to_parquet {peer_tokens:,} tokens "
              f"in {peer_s:.2f} s = {peer_tokens / peer_s / 1e6:.2f} M tok/s | speedup x{peer_s / ours_s:.2f}", flush=True)  # fmt: skip


def train_bpe(root: Path, data_dir: Path, vocab_size: int) -> TokenizerSpec:
    """A byte-level BPE trained by the ``midmix tokenizer train`` command on the curated dataset in ``data_dir``."""
    path = root / f"bpe-{vocab_size}.json"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "midmix", "tokenizer", "train", "--dataset", "latest", "--vocab-size",
                        str(vocab_size), "--out", str(path), "--data-dir", str(data_dir)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return TokenizerSpec(kind="hf", path=str(path))


def version_bytes(version_dir: Path) -> dict[str, str]:
    return {p.relative_to(version_dir).as_posix(): sha256_file(p) for p in sorted(version_dir.rglob("*")) if p.is_file()}


def bench_bpe_build(root: Path, vocab_size: int, task_counts: list[int], size: int) -> None:
    """The encoder against HF encode_batch on the build's texts, then the build with each task count."""
    bytes_dir = root / "bpe-build-bytes"
    if not bytes_dir.exists():
        write_sample_dataset(bytes_dir, SAMPLE)
    start = time.perf_counter()
    spec_tokenizer = train_bpe(root, bytes_dir, vocab_size)  # on the sample corpus, whatever the size
    data_dir = root / f"bpe-build-x{size}"
    dataset = write_sample_dataset(data_dir, SAMPLE, repeat=size, tokenizer=spec_tokenizer)
    Catalog(data_dir).sync()
    print(f"\n## BPE build, corpus x{size}: {vocab_size:,}-token BPE by `midmix tokenizer train` (+ recount) in {time.perf_counter() - start:.1f} s; "
          f"{dataset['counts']['docs']:,} docs, {dataset['counts']['tokens']:,} BPE tokens", flush=True)  # fmt: skip
    part = data_dir / "datasets" / dataset["version"] / "data" / "part-00000.parquet"
    table = pq.read_table(part, columns=["text", "domain"])
    texts = [t for t, d in zip(table.column("text").to_pylist(), table.column("domain").to_pylist()) if d in DOMAINS]
    batches = [texts[i : i + 1024] for i in range(0, min(len(texts), 6000), 1024)]  # the first 6,000 docs at most
    result = compare_with_hf(Path(spec_tokenizer.path or "").read_text(encoding="utf-8"), batches)
    hf_rate, fast_rate = result["tokens"] / result["hf_cpu_s"], result["tokens"] / result["fast_cpu_s"]
    print(f"encoder on the build's {result['docs']:,} docs ({result['tokens']:,} tokens): HF tokenizers encode_batch "
          f"{hf_rate / 1e6:.2f} M tok/CPU-s ({result['hf_cpu_s']:.2f} CPU-s) | midmix fast encoder {fast_rate / 1e6:.2f} M tok/CPU-s "
          f"({result['fast_cpu_s']:.2f} CPU-s) | x{fast_rate / hf_rate:.2f} | docs with other ids: {result['mismatched_docs']} "
          f"| {result['reason']}", flush=True)  # fmt: skip
    with Catalog(data_dir) as catalog:
        probe = plan_mixture(parse_spec(selection_spec(1, spec_tokenizer)), catalog, strict=False)
    spec = parse_spec(selection_spec(probe.phases[0].components[0].available_tokens, spec_tokenizer))
    reference = None
    for tasks in task_counts:
        start, start_cpu = time.perf_counter(), time.process_time()
        manifest = materialize_mixture(spec, data_dir, executor=LocalExecutor(tasks=tasks))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        version_dir = data_dir / "mixtures" / manifest["version"]
        files = version_bytes(version_dir)
        reference = reference or files
        tokens = manifest["phases"][0]["tokens"]
        print(f"materialize_mixture, {tasks} task(s): {tokens:,} tokens in {wall:.2f} s wall = {tokens / wall / 1e6:.2f} M tok/s "
              f"(driver CPU {cpu:.2f} s) | same bytes as the first run: {files == reference} | load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        shutil.rmtree(version_dir)


def write_stats_dataset(data_dir: Path, docs: int) -> None:
    """A curated dataset of ``docs`` synthetic rows (tiny text, realistic statistics) + manifest."""
    version = f"ds-bench{docs:011d}"
    directory = data_dir / "datasets" / version
    (directory / "data").mkdir(parents=True)
    part = directory / "data" / "part-00000.parquet"
    duckdb.sql(f"""
        COPY (SELECT 'doc-' || i AS id, 'x' AS text,
                     'src-' || (i % 40) AS source, ['en','de','fr','zxx'][1 + i % 4] AS lang, 0.9::FLOAT AS lang_score,
                     ['web','code','math','qa','academic','other'][1 + (hash(i) % 6)::INT] AS domain,
                     MAP {{'web': 0.5::FLOAT}} AS domain_scores,
                     MAP {{'fasttext_hq': (hash(i * 7) % 1000000 / 1e6)::FLOAT, 'edu': (hash(i * 13) % 500 / 100)::FLOAT}} AS quality,
                     (hash(i * 7) % 1000000 / 1e6)::FLOAT AS quality_score,
                     (50 + hash(i * 3) % 2000)::FLOAT AS sig_n_words, 4.5::FLOAT AS sig_mean_word_length,
                     0.0::FLOAT AS sig_symbol_ratio, 0.9::FLOAT AS sig_alpha_word_ratio, 0.4::FLOAT AS sig_stopword_ratio,
                     0.0::FLOAT AS sig_bullet_line_ratio, 0.0::FLOAT AS sig_ellipsis_line_ratio,
                     0.0::FLOAT AS sig_duplicate_line_ratio, 0.01::FLOAT AS sig_top_2gram_ratio, 0.0::FLOAT AS sig_non_ascii_ratio,
                     'doc-' || i AS dup_cluster, 1 AS dup_cluster_size, (400 + hash(i * 5) % 8000)::INT AS n_chars,
                     (100 + hash(i * 5) % 2000)::INT AS n_tokens, '{{}}' AS meta
              FROM range({docs}) t(i)) TO '{part}' (FORMAT parquet)
    """)  # fmt: skip
    rows = pq.ParquetFile(part).metadata.num_rows
    manifest = {"version": version, "kind": "dataset", "models": {}, "files": [{"path": "data/part-00000.parquet", "rows": rows}],
                "counts": {"docs": rows}, "tokenizer": Tokenizer(TokenizerSpec()).describe()}  # fmt: skip
    import json

    (directory / "manifest.json").write_text(json.dumps(manifest))


def planner_spec() -> dict:
    def comp(name: str, weight: float, select: dict, **extra) -> dict:
        return {"name": name, "datasets": ["latest"], "weight": weight, "select": select, **extra}

    def domain(d: str) -> dict:
        return {"column": "domain", "op": "==", "value": d}

    top = lambda p: {"column": "quality.fasttext_hq", "op": "top_percent", "value": p}
    return {
        "name": "plan-bench", "eval": {"fraction": 0.001},
        "phases": [
            {"name": "stable", "token_budget": 200_000_000, "components": [
                comp("web", 0.6, {"all": [domain("web"), {"column": "lang", "op": "in", "value": ["en", "de"]}]}),
                comp("code", 0.25, domain("code")), comp("math", 0.15, domain("math"))]},
            {"name": "anneal", "token_budget": 50_000_000, "reserved_general_ratio": 0.3,
             "curriculum": {"key": "quality.fasttext_hq"}, "components": [
                comp("general", 0.3, domain("web"), general=True),
                comp("math-hq", 0.4, {"all": [domain("math"), top(7), {"column": "quality.edu", "op": ">=", "value": 2}]}),
                comp("code-hq", 0.3, {"all": [domain("code"), {"any": [top(20), {"column": "sig_n_words", "op": ">", "value": 1500}]}]})]},
            {"name": "long", "token_budget": 20_000_000, "seq_len": 4096, "rope_theta": 500000, "components": [
                comp("long-web", 0.5, {"all": [domain("web"), {"column": "n_tokens", "op": ">=", "value": 1800}]}),
                comp("long-academic", 0.5, {"all": [domain("academic"), {"column": "n_tokens", "op": ">=", "value": 1500}]})]},
        ],
    }  # fmt: skip


def bench_planner(docs: int, root: Path) -> None:
    data_dir = root / "plan"
    write_stats_dataset(data_dir, docs)
    start = time.perf_counter()
    Catalog(data_dir).sync()
    synced = time.perf_counter() - start
    spec = parse_spec(planner_spec())
    times, cpu = [], []
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.process_time()
        with Catalog(data_dir) as catalog:
            plan = plan_mixture(spec, catalog, strict=False)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    components = sum(len(p.components) for p in plan.phases)
    print(f"\n## planner over {docs:,} documents: catalog sync {synced:.2f} s; plan_mixture ({len(plan.phases)} phases, "
          f"{components} components, 3 percentile rules, eval split) best {min(times):.2f} s, "
          f"runs {', '.join(f'{t:.2f}' for t in times)} s (target < 2 s), CPU time (all threads) "
          f"{', '.join(f'{t:.2f}' for t in cpu)} s; feasible={plan.feasible}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 10], help="corpus multiples of the sample (none: skip)")
    parser.add_argument("--plan-docs", type=int, default=1_000_000)
    parser.add_argument("--bpe", action="store_true", help="also compare with a trained BPE tokenizer (size 1)")
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timing for each side")
    parser.add_argument("--bpe-build", action="store_true", help="32k BPE build: encoder vs HF, 1 and 2 tasks")
    parser.add_argument("--build-tasks", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--bpe-build-sizes", type=int, nargs="*", default=[1, 10], help="corpus multiples for --bpe-build")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="midmix-bench-") as tmp:
        root = Path(tmp)
        for size in args.sizes:
            bench_materialize(size, root, args.bpe, args.repeats)
        for size in args.bpe_build_sizes if args.bpe_build else []:
            bench_bpe_build(root, 32000, args.build_tasks, size)
        if args.plan_docs:
            bench_planner(args.plan_docs, root)


if __name__ == "__main__":
    main()
