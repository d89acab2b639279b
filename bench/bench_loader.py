"""Trainer data loader benchmark: PhaseStream vs litdata StreamingDataset vs HF datasets.

All three deliver the same byte-tokenized sample corpus from local disk as packed ``[b, L]``
batches; we report tokens/s delivered and the ratio of ours to the fastest peer. Peers:

* litdata: the blended documents (each + EOS) written with ``litdata.optimize`` and read by
  ``StreamingDataset(item_loader=TokensLoader(block_size=L + 1))`` through its
  ``StreamingDataLoader`` (litdata packs contiguous tokens; it makes no doc ids, positions or
  masks, so it does less work per batch than we do).
* HF datasets, the standard recipe (transformers' ``run_clm.py``): the same Parquet shards,
  ``Dataset.map(group_texts, batched=True)`` concatenating each 1,000-document batch's
  ``input_ids`` + EOS and cutting it into ``L + 1``-token blocks (tail dropped), written out as
  the same four columns as ours (inputs, targets with -100 after each EOS, positions reset per
  document, doc ids) with plain numpy; then ``.with_format("torch").iter(batch_size=b)``.
* HF datasets + our packer (an upper bound, not a standard peer): ``Dataset.iter(batch_size=1024)``
  in Arrow format followed by OUR ``pack_documents`` of each 1,024-document batch into the same
  four tensors per batch as ours, in a plain loop; it reuses our vectorised packer, so it says
  how fast HF's iteration could go, not how HF users load data.

HF peers drop incomplete tails, so they deliver slightly fewer tokens; we report tokens/s (wall)
and tokens per CPU-second (this process and its reaped DataLoader workers; the fair figure on a
shared machine).

"Warm" times iteration only, each loader over its prepared local copy: litdata's chunks, HF's
Arrow cache, our decoded shards and laid-out stream (PhaseStream decodes each zstd Parquet shard
once and lays the phase's blended token stream out once, then memory-maps it). "Cold" starts from the Parquet shards a mixture build publishes: each peer's
one-off conversion plus a pass, and our first pass (which does the decoding).

Ratio accuracy: the largest deviation of a component's token share from its target in any window
of 8 global batches (64 sequences) and of 64 global batches, for our sequence blend vs HF
``interleave_datasets`` with ``probabilities`` set to the token shares (document sampling, as a
user would set it), both packed into the same windows of tokens.

    python bench/bench_loader.py [--repeat 2] [--seq-len 1024] [--batch 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import SHARD_SCHEMA
from midmix.pipelines.mixtures.shards import PARQUET_OPTIONS, SHARD_MAX_ROWS
from midmix.resources import SAMPLE_CORPUS
from midmix.trainer.packing import pack_documents
from midmix.trainer.phase_stream import PhaseStream, retain_freed_memory

CORPUS = SAMPLE_CORPUS
EOS = 256
MAJOR_DOMAINS = {"web", "other", "academic", "qa"}
HF_STANDARD = "HF map(group_texts) + iter"
HF_OURS = "HF .iter + OUR packer (upper bound)"


def load_components(repeat: int) -> dict[str, list[np.ndarray]]:
    """Byte-tokenized documents in two components sized 70/30 by rows, each repeated ``repeat`` times."""
    major, minor = [], []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            ids = np.frombuffer(record["text"].encode("utf-8"), dtype=np.uint8).astype(np.uint32)
            (major if record["domain"] in MAJOR_DOMAINS else minor).append(ids)
    minor = minor[: len(major) * 3 // 7]
    return {"general": major * repeat, "code_math": minor * repeat}


def write_phase(components: dict[str, list[np.ndarray]], root: Path) -> dict:
    """Shards as ``materialize_mixture`` writes them, and the phase entry of a manifest."""
    entries = []
    for name, docs in components.items():
        shards = []
        for number, start in enumerate(range(0, len(docs), SHARD_MAX_ROWS)):
            chunk = docs[start : start + SHARD_MAX_ROWS]
            relative = f"phases/bench/{name}-{number:05d}.parquet"
            lengths = np.array([len(doc) for doc in chunk], dtype=np.int32)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(chunk), type=pa.uint32()))
            table = pa.table(
                {
                    "input_ids": ids,
                    "doc_id": [f"{name}-{start + i}" for i in range(len(chunk))],
                    "source": [name] * len(chunk),
                    "domain": [name] * len(chunk),
                    "quality": pa.array(np.zeros(len(chunk)), type=pa.float32()),
                    "n_tokens": lengths,
                },
                schema=SHARD_SCHEMA,
            )
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / relative, **PARQUET_OPTIONS)  # as the mixture builder writes
            shards.append({"path": relative, "sha256": sha256_file(root / relative),
                           "bytes": (root / relative).stat().st_size, "rows": len(chunk), "tokens": int(lengths.sum())})
        entries.append({"name": name, "shards": shards})
    return {"name": "bench", "index": 0, "components": entries}


def bench_ours(
    phase: dict, root: Path, decoded: Path, seq_len: int, batch: int, workers: int | None
) -> tuple[int, float]:
    """A full pass through a DataLoader with ``workers`` workers, or a plain loop when None."""
    from torch.utils.data import DataLoader

    started = time.perf_counter()
    stream = PhaseStream(phase, lambda entry: root / entry["path"], seq_len, EOS, batch, batch, decoded_dir=decoded)
    tokens = 0
    for item in stream if workers is None else DataLoader(stream, batch_size=None, num_workers=workers):
        tokens += item["input_ids"].numel()
    return tokens, time.perf_counter() - started


def prepare_litdata(ordered: list[np.ndarray], out: Path) -> float:
    """litdata's one-off conversion: the blended documents (each + EOS) into its token chunks."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    started = time.perf_counter()
    eos = np.array([EOS], dtype=np.int32)
    optimize(
        fn=_litdata_doc, inputs=[np.concatenate([doc.astype(np.int32), eos]) for doc in ordered],
        output_dir=str(out), chunk_bytes="64MB", item_loader=TokensLoader(), num_workers=1, verbose=False,
    )
    return time.perf_counter() - started


def _litdata_doc(tokens: np.ndarray):
    import torch

    return torch.from_numpy(tokens)


def bench_litdata(out: Path, seq_len: int, batch: int) -> tuple[int, float]:
    from litdata import StreamingDataLoader, StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    started = time.perf_counter()
    dataset = StreamingDataset(str(out), item_loader=TokensLoader(block_size=seq_len + 1), shuffle=False)
    tokens = 0
    for block in StreamingDataLoader(dataset, batch_size=batch, num_workers=0, drop_last=True):
        pair = (block[:, :-1].long(), block[:, 1:].long())  # inputs and targets, as we deliver them
        tokens += pair[0].numel()
    return tokens, time.perf_counter() - started


def prepare_hf(phase: dict, root: Path, cache: Path):
    """HF's one-off conversion: the Parquet shards into its Arrow cache; returns (dataset, seconds)."""
    from datasets import Dataset

    started = time.perf_counter()
    files = [str(root / shard["path"]) for component in phase["components"] for shard in component["shards"]]
    dataset = Dataset.from_parquet(files, cache_dir=str(cache), columns=["input_ids"]).with_format("arrow")
    return dataset, time.perf_counter() - started


def prepare_hf_group_texts(dataset, seq_len: int, cache: Path):
    """run_clm.py's ``group_texts`` with EOS between documents, as four numpy columns; returns (dataset, seconds)."""
    started = time.perf_counter()

    def group_texts(batch: dict, indices: list[int]) -> dict:
        docs = [np.append(np.asarray(ids, dtype=np.int64), EOS) for ids in batch["input_ids"]]
        tokens = np.concatenate(docs)
        doc_ids = np.repeat(np.asarray(indices), [len(doc) for doc in docs])
        blocks = (len(tokens) - 1) // (seq_len + 1)  # run_clm drops each batch's remainder
        tokens = tokens[: blocks * (seq_len + 1)].reshape(blocks, seq_len + 1)
        doc_ids = doc_ids[: blocks * (seq_len + 1)].reshape(blocks, seq_len + 1)[:, :-1]
        targets = tokens[:, 1:].copy()
        targets[tokens[:, :-1] == EOS] = -100  # no learning across documents
        column = np.broadcast_to(np.arange(seq_len), doc_ids.shape)
        new_doc = np.ones(doc_ids.shape, dtype=bool)
        new_doc[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        positions = column - np.maximum.accumulate(np.where(new_doc, column, 0), axis=1)
        return {"input_ids": tokens[:, :-1], "targets": targets, "position_ids": positions, "doc_ids": doc_ids}

    grouped = dataset.with_format(None).map(
        group_texts, batched=True, batch_size=1000, with_indices=True, remove_columns=["input_ids"],
        cache_file_name=str(cache / "grouped.arrow"),
    )
    return grouped.with_format("torch"), time.perf_counter() - started


def bench_hf_group_texts(grouped, seq_len: int, batch: int) -> tuple[int, float]:
    started = time.perf_counter()
    tokens = 0
    for item in grouped.iter(batch_size=batch, drop_last_batch=True):
        tokens += item["input_ids"].numel()
    return tokens, time.perf_counter() - started


def bench_hf(dataset, seq_len: int, batch: int) -> tuple[int, float]:
    import torch

    started = time.perf_counter()
    tokens = 0
    for table in dataset.iter(batch_size=1024):
        ids = table.column("input_ids").combine_chunks()
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy()
        documents = [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        packed = pack_documents(documents, seq_len * batch, EOS)  # one row = one [b, L] batch, tail dropped
        for row in range(len(packed.input_ids)):
            item = {key: torch.from_numpy(value[row].reshape(batch, seq_len)) for key, value in vars(packed).items()}
            tokens += item["input_ids"].numel()
    return tokens, time.perf_counter() - started


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children (DataLoader workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def document_order(components: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
    """The documents interleaved evenly by count (litdata packs them in this order; order does not change its speed)."""
    keys = np.concatenate([(np.arange(len(docs)) + 0.5) / len(docs) for docs in components.values()])
    documents = [doc for docs in components.values() for doc in docs]
    return [documents[i] for i in np.argsort(keys, kind="stable")]


def ratio_accuracy(
    phase: dict, root: Path, decoded: Path, components: dict[str, list[np.ndarray]], seq_len: int, batch: int
) -> dict[str, tuple[float, float]]:
    """Largest |token share - target| of component 0 (pp) over windows of 8 and 64 global batches: (ours, HF)."""
    from datasets import Dataset, interleave_datasets

    stream = PhaseStream(phase, lambda entry: root / entry["path"], seq_len, EOS, batch, batch, decoded_dir=decoded)
    name = stream.component_names[0]
    steps = stream.steps_in_phase() - 1  # the last step holds each component's padded tail
    lengths = [np.array([len(doc) for doc in docs]) for docs in components.values()]
    share = lengths[0].sum() / sum(length.sum() for length in lengths)
    parts = [Dataset.from_dict({"component": [index] * len(length), "tokens": length})
             for index, length in enumerate(lengths)]  # fmt: skip
    mixed = interleave_datasets(parts, probabilities=[share, 1 - share], seed=0, stopping_strategy="all_exhausted")
    owner, tokens = np.asarray(mixed["component"]), np.asarray(mixed["tokens"])
    stream_owner = np.repeat(owner, tokens + 1)[:-1]  # each document + EOS, the EOS not counted below
    is_token = np.ones(len(stream_owner), dtype=bool)
    is_token[np.cumsum(tokens + 1)[:-1] - 1] = False
    results = {}
    for window in (8, 64):
        ours = max(
            abs(stream.realized_shares(first, first + window)["components"][name]["share"] - share)
            for first in range(0, steps - window + 1)
        )
        span = window * batch * seq_len
        starts = np.arange(0, len(stream_owner) - span + 1, batch * seq_len)
        mine = np.concatenate([[0], np.cumsum((stream_owner == 0) & is_token)])
        every = np.concatenate([[0], np.cumsum(is_token)])
        hf = np.abs((mine[starts + span] - mine[starts]) / (every[starts + span] - every[starts]) - share).max()
        results[f"{window} global batches ({window * batch} sequences)"] = (100 * ours, 100 * float(hf))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="copies of the corpus (materialised epochs)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for ours (peers use 0)")
    parser.add_argument("--runs", type=int, default=3, help="timed passes per loader; the best counts")
    args = parser.parse_args()
    retain_freed_memory()  # PhaseStream sets this malloc tuning; set it for every loader alike

    work = Path(tempfile.mkdtemp(prefix="midmix-bench-loader-"))
    try:
        components = load_components(args.repeat)
        rows = [len(docs) for docs in components.values()]
        phase = write_phase(components, work / "mix")
        total = sum(len(doc) + 1 for docs in components.values() for doc in docs)
        print(f"data: {sum(rows)} docs, {total / 1e6:.1f}M stream tokens, 70/30 rows {rows}, "
              f"seq_len {args.seq_len}, batch {args.batch}, ours with {args.workers} DataLoader workers")
        prepare = {"litdata StreamingDataset": prepare_litdata(document_order(components), work / "litdata")}
        hf_dataset, prepare[HF_OURS] = prepare_hf(phase, work / "mix", work / "hf")
        hf_grouped, seconds = prepare_hf_group_texts(hf_dataset, args.seq_len, work / "hf")
        prepare[HF_STANDARD] = prepare[HF_OURS] + seconds
        run_ours = lambda: bench_ours(
            phase, work / "mix", work / "decoded", args.seq_len, args.batch, args.workers
        )
        ours_cold = run_ours()  # decodes each shard once into work/decoded
        loaders = {
            "ours (PhaseStream)": run_ours,
            "ours, plain loop (no DataLoader)": lambda: bench_ours(
                phase, work / "mix", work / "decoded", args.seq_len, args.batch, None
            ),
            "litdata StreamingDataset": lambda: bench_litdata(work / "litdata", args.seq_len, args.batch),
            HF_STANDARD: lambda: bench_hf_group_texts(hf_grouped, args.seq_len, args.batch),
            HF_OURS: lambda: bench_hf(hf_dataset, args.seq_len, args.batch),
        }
        # Best of --runs full passes each, interleaved, so a busy machine hurts all alike. CPU
        # seconds (this process and reaped DataLoader workers) are the fair figure on shared cores.
        results: dict[str, tuple[int, float]] = {}
        cpu: dict[str, float] = {}
        for _ in range(args.runs):
            for name, run in loaders.items():
                before = cpu_seconds()
                tokens, seconds = run()
                used = cpu_seconds() - before
                if name not in results or seconds < results[name][1]:
                    results[name] = (tokens, seconds)
                cpu[name] = min(cpu.get(name, used), used)
        report(results, prepare, ours_cold)
        print("warm, per CPU-second (best pass):")
        per_cpu = {name: results[name][0] / cpu[name] for name in results}
        for name, rate in per_cpu.items():
            print(f"  {name:40s} {rate / 1e6:7.1f}M tokens per CPU-s")
        print(f"  ours / litdata StreamingDataset per CPU-s: "
              f"{per_cpu['ours (PhaseStream)'] / per_cpu['litdata StreamingDataset']:.2f}x (target >= 2x)")
        for window, (ours_dev, hf_dev) in ratio_accuracy(
            phase, work / "mix", work / "decoded", components, args.seq_len, args.batch
        ).items():
            print(f"max token-share deviation of {list(components)[0]} over windows of {window}: ours {ours_dev:.2f} pp, "
                  f"HF interleave_datasets(probabilities) {hf_dev:.2f} pp")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, tuple[int, float]], prepare: dict[str, float], ours_cold: tuple[int, float]) -> None:
    """Warm: iteration over each loader's prepared copy. Cold: from the Parquet shards."""
    print("warm (best pass; peers over their converted copies, ours over its decoded shards):")
    rates = {name: tokens / seconds for name, (tokens, seconds) in results.items()}
    for name, (tokens, seconds) in results.items():
        print(f"  {name:40s} {tokens / 1e6:7.1f}M tokens in {seconds:6.2f} s = {rates[name] / 1e6:7.1f}M tokens/s")
    ours = rates.pop("ours (PhaseStream)")
    rates.pop("ours, plain loop (no DataLoader)")
    for name, rate in rates.items():
        print(f"  ours / {name}: {ours / rate:.2f}x")
    standard = {name: rate for name, rate in rates.items() if name != HF_OURS}
    fastest = max(standard, key=standard.get)
    print(f"  ours / fastest standard peer ({fastest}): {ours / standard[fastest]:.2f}x (target >= 2x)")
    print("cold (from the Parquet shards: each peer's conversion + best pass; ours' first pass, decoding):")
    cold = {name: seconds + prepare[name] for name, (_, seconds) in results.items() if name in prepare}
    cold["ours (PhaseStream)"] = ours_cold[1]
    for name, seconds in cold.items():
        print(f"  {name:40s} {seconds:6.2f} s = {results[name][0] / seconds / 1e6:7.1f}M tokens/s")
    ours_seconds = cold.pop("ours (PhaseStream)")
    for name, seconds in cold.items():
        print(f"  ours / {name}: {seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
