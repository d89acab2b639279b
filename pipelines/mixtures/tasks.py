"""A mixture build as four datatrove stages, so it runs on the same executors as curation.

The driver (``build.py``) decides everything that depends on the catalog first and writes it to a
work folder, ``DATA/.staging/build-<version>/`` (``BuildWork``): which documents each *part* (a
phase component, or an eval domain) takes and in which curriculum rank, the encode units, and for
parts whose token counts are already exact, the row sequence. Then:

1. **encode** (N tasks): one unit = a run of documents in storage order (curated file, row), so each
   text is read once (only its row groups) and each document is tokenized once however many parts
   take it. Out: ``encoded/unit-NNNNN.parquet`` (part, rank, ids, shard columns), sorted by (part, rank).
2. **sequence** (1 task): each remaining part's row sequence from the real token counts (repeats
   that keep the curriculum, per length bucket: ``sequence.part_sequence``), the epoch cap
   rechecked; the shard layout.
3. **write** (N tasks): one unit = one shard; its rows are gathered from the encoded units by rank
   (Parquet statistics skip the row groups of other parts and ranks) and written in sequence order.
4. **publish** (1 task): shards linked into a staging folder, the manifest written last, renamed.

Units are fixed by the data, not by the task count (task r takes units r, r + N, ...), every output
is written atomically and skipped when present, so 1 or 16 tasks, a retried task or a rerun after a
crash all give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from midmix.pipelines.mixtures.encode import encode_arrow
from midmix.pipelines.mixtures.sequence import part_sequence
from midmix.pipelines.mixtures.shards import SHARD_MAX_ROWS, read_texts, shard_table, write_json, write_shard
from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec
from midmix.publish import atomic_path, publishing

MIN_UNIT_DOCS = 1024
MAX_UNITS = 1024
"""Encode units hold max(MIN_UNIT_DOCS, docs / MAX_UNITS) documents: a few per task on small builds,
and never more than ~1,024 units, because every shard reads its rows from each unit holding its part
(units x shards reads; 10^8 documents: units of ~100k documents)."""
_WORK_ROW_GROUP = 1024
_ROW_COLUMNS = ("part", "rank", "dataset", "file", "row_index", "id", "source", "domain", "quality_score")

Tick = Callable[[str, int], None] | None
"""Progress from inside a task: (stage, units in the stage); only set when tasks run in the driver."""


class BuildWork:
    """Paths of a build's work folder; every file in it is written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.info_path = self.root / "build.json"
        self.rows = self.root / "rows.parquet"
        self.layout_path = self.root / "layout.json"

    def info(self) -> dict:
        return json.loads(self.info_path.read_text(encoding="utf-8"))

    def encoded(self, unit: int) -> Path:
        return self.root / "encoded" / f"unit-{unit:05d}.parquet"

    def sequence(self, part: int) -> Path:
        return self.root / "parts" / f"{part:05d}.sequence.npy"

    def partial_order(self, part: int) -> Path:
        return self.root / "parts" / f"{part:05d}.partial.npy"

    def stats(self, part: int) -> Path:
        return self.root / "parts" / f"{part:05d}.json"

    def shard(self, relative: str) -> Path:
        return self.root / "shards" / relative

    def shard_entry(self, relative: str) -> Path:
        return self.root / "shards" / f"{relative}.json"

    def logs(self, tasks: int) -> Path:
        """Datatrove's completion markers are per task count, so a rerun with another count redoes them."""
        return self.root / "logs" / f"tasks-{tasks}"


def save_array(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, values)


def _units_for(rank: int, world_size: int, count: int) -> range:
    return range(rank, count, world_size)


class _BuildStep(PipelineStep):
    """A build stage: reads and writes only the work folder, so it pickles small and runs anywhere."""

    type = "🔢 - MIDMIX"

    def __init__(self, work: str, tick: Tick = None):
        super().__init__()
        self.work, self.tick = work, tick


class EncodeUnits(_BuildStep):
    """Stage 1: tokenize each unit's documents once, in storage order."""

    name = "encode"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = BuildWork(Path(self.work))
        info = work.info()
        tokenizer = Tokenizer(TokenizerSpec(**info["tokenizer"]))
        units = info["units"]
        for unit in _units_for(rank, world_size, len(units)):
            if not work.encoded(unit).is_file():
                encode_unit(work, Path(info["data_dir"]), units[unit], tokenizer, work.encoded(unit))
            if self.tick:
                self.tick("encode", len(units))
        return
        yield


def encode_unit(work: BuildWork, data_dir: Path, unit: dict, tokenizer: Tokenizer, out: Path) -> None:
    """Read and tokenize one unit's documents; write (part, rank, ids, shard columns) sorted by part, rank."""
    rows = pq.read_table(
        work.rows,
        columns=["doc", *_ROW_COLUMNS],
        filters=[("doc", ">=", unit["first_doc"]), ("doc", "<=", unit["last_doc"])],
    )
    doc = rows.column("doc").to_numpy()
    unique_docs, first = np.unique(doc, return_index=True)
    # Texts file by file, in storage order (rows.parquet is sorted by dataset, file, row): each read once.
    firsts = rows.take(pa.array(first, pa.int64()))
    keys = list(zip(firsts.column("dataset").to_pylist(), firsts.column("file").to_pylist()))
    row_index = firsts.column("row_index").to_numpy()
    texts, begin = [], 0
    while begin < len(keys):
        end = begin
        while end < len(keys) and keys[end] == keys[begin]:
            end += 1
        dataset, file = keys[begin]
        texts.append(read_texts(data_dir / "datasets" / dataset / file, row_index[begin:end]))
        begin = end
    ids = encode_arrow(tokenizer, pa.chunked_array(texts, pa.string()))
    # A document several parts take is encoded once and repeated for each of them.
    expand = np.searchsorted(unique_docs, doc)
    input_ids = ids.take(pa.array(expand, pa.int64())) if len(expand) != len(unique_docs) else ids
    table = pa.table({
        "part": rows.column("part"), "rank": rows.column("rank"),
        "n_tokens": pc.list_value_length(input_ids).cast(pa.int32()), "input_ids": input_ids,
        "id": rows.column("id"), "source": rows.column("source"), "domain": rows.column("domain"),
        "quality_score": rows.column("quality_score"),
    }).sort_by([("part", "ascending"), ("rank", "ascending")])  # fmt: skip
    with atomic_path(out) as temporary:
        pq.write_table(table, temporary, row_group_size=_WORK_ROW_GROUP, compression="zstd", compression_level=1)


class PlanSequences(_BuildStep):
    """Stage 2 (one task): row sequences of the parts whose token counts were not exact, and the shard layout."""

    name = "sequence"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = BuildWork(Path(self.work))
        if rank != 0 or work.layout_path.is_file():
            return
        info = work.info()
        pending = [i for i in range(len(info["parts"])) if not work.sequence(i).is_file()]
        counts = _token_counts(work, info["units"], pending, info["parts"])
        for i in pending:
            sequence, stats = part_sequence(counts[i], info["parts"][i], np.load(work.partial_order(i)))
            write_json(work.stats(i), stats)
            save_array(work.sequence(i), sequence)
        layout = []
        for i, part in enumerate(info["parts"]):
            length = len(np.load(work.sequence(i), mmap_mode="r"))
            for index, begin in enumerate(range(0, length, SHARD_MAX_ROWS)):
                layout.append({"part": i, "begin": begin, "end": min(begin + SHARD_MAX_ROWS, length),
                               "path": f"{part['stem']}-{index:05d}.parquet"})  # fmt: skip
        write_json(work.layout_path, {"shards": layout})
        return
        yield


def _token_counts(
    work: BuildWork, units: list[dict], parts: list[int], info_parts: list[dict]
) -> dict[int, np.ndarray]:
    """Per part, tokens of each of its documents by rank, from the encoded units."""
    counts = {i: np.zeros(info_parts[i]["docs"], dtype=np.int64) for i in parts}
    for unit, described in enumerate(units):
        if not set(described["parts"]) & set(parts):
            continue
        table = pq.read_table(work.encoded(unit), columns=["part", "rank", "n_tokens"], filters=[("part", "in", parts)])
        part, rank, n_tokens = (table.column(c).to_numpy() for c in ("part", "rank", "n_tokens"))
        for i in np.unique(part):
            mask = part == i
            counts[int(i)][rank[mask]] = n_tokens[mask]
    return counts


class WriteShards(_BuildStep):
    """Stage 3: each shard's rows gathered from the encoded units in sequence order, then written."""

    name = "write"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = BuildWork(Path(self.work))
        units = work.info()["units"]
        shards = json.loads(work.layout_path.read_text(encoding="utf-8"))["shards"]
        for index in _units_for(rank, world_size, len(shards)):
            shard = shards[index]
            entry_path = work.shard_entry(shard["path"])
            if not entry_path.is_file():
                sequence = np.load(work.sequence(shard["part"]), mmap_mode="r")[shard["begin"] : shard["end"]]
                holding = [u for u, unit in enumerate(units) if shard["part"] in unit["parts"]]
                table = shard_table(gather_rows(work, holding, shard["part"], np.asarray(sequence)))
                write_json(entry_path, write_shard(table, work.shard(shard["path"]), shard["path"]))
            if self.tick:
                self.tick("write", len(shards))
        return
        yield


def gather_rows(work: BuildWork, units: list[int], part: int, sequence: np.ndarray) -> pa.Table:
    """The encoded rows of ``part`` at ranks ``sequence`` (from ``units``, those holding it), in that order."""
    needed = np.unique(sequence)
    # Contiguous stretches of needed ranks: one range filter each, pruned by row-group statistics.
    breaks = np.flatnonzero(np.diff(needed) > _WORK_ROW_GROUP) + 1
    ranges = [(int(run[0]), int(run[-1])) for run in np.split(needed, breaks)] if len(needed) else []
    filters = [[("part", "==", part), ("rank", ">=", low), ("rank", "<=", high)] for low, high in ranges]
    columns = ["rank", "input_ids", "id", "source", "domain", "quality_score"]
    tables = [pq.read_table(work.encoded(unit), columns=columns, filters=filters) for unit in units] if filters else []
    if not tables:
        return _no_rows()
    found = pa.concat_tables(tables)
    found = found.filter(pc.is_in(found.column("rank"), pa.array(needed))).sort_by("rank")
    ranks = found.column("rank").to_numpy()
    if len(ranks) != len(needed):
        raise RuntimeError(f"part {part}: {len(needed) - len(ranks)} documents missing from the encoded units")
    return found.take(pa.array(np.searchsorted(ranks, sequence), pa.int64())).combine_chunks()


def _no_rows() -> pa.Table:
    return pa.table({"input_ids": pa.array([], pa.list_(pa.uint32())), "id": pa.array([], pa.string()),
                     "source": pa.array([], pa.string()), "domain": pa.array([], pa.string()),
                     "quality_score": pa.array([], pa.float32())})  # fmt: skip


class PublishMixture(_BuildStep):
    """Stage 4 (one task): the manifest from the skeleton and the written shards; publish the version."""

    name = "publish"

    def __init__(self, work: str, final: str):
        super().__init__(work)
        self.final = final

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work, final = BuildWork(Path(self.work)), Path(self.final)
        if rank != 0 or (final / "manifest.json").is_file():
            return
        info = work.info()
        shards = json.loads(work.layout_path.read_text(encoding="utf-8"))["shards"]
        entries: dict[int, list[dict]] = {}
        for shard in shards:
            entries.setdefault(shard["part"], []).append(json.loads(work.shard_entry(shard["path"]).read_text("utf-8")))
        manifest = finish_manifest(work, info, entries)
        with publishing(final) as staging:
            for shard in shards:
                target = staging / shard["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(work.shard(shard["path"]), target)
            for name in ("spec.json", "tokenizer.json"):
                if (work.root / name).is_file():
                    shutil.copyfile(work.root / name, staging / name)
            write_json(staging / "manifest.json", manifest)
        return
        yield


def finish_manifest(work: BuildWork, info: dict, shards: dict[int, list[dict]]) -> dict:
    """The driver's manifest skeleton with each part's realized figures and shards filled in."""
    manifest = info["manifest"]
    for i, part in enumerate(info["parts"]):
        written = shards.get(i, [])
        if part["eval"]:
            if written:
                manifest["eval"][part["name"]] = {
                    key: written[0][key] for key in ("path", "sha256", "bytes", "rows", "tokens")
                }
            continue
        sequence = np.load(work.sequence(i), mmap_mode="r")
        stats = json.loads(work.stats(i).read_text(encoding="utf-8"))
        available = stats["available_tokens"]
        realized = sum(s["tokens"] for s in written)
        entry = manifest["phases"][part["phase_index"]]["components"][part["component_index"]]
        entry.update({
            "realized_tokens": realized, "docs": len(sequence), "unique_docs": len(np.unique(sequence)),
            "available_tokens": available, "epochs": round(realized / available, 6) if available else 0.0, "shards": written,
        })  # fmt: skip
        if "buckets" in stats:
            entry["buckets"] = stats["buckets"]
    for phase in manifest["phases"]:
        phase["tokens"] = sum(c["realized_tokens"] for c in phase["components"])
        phase["docs"] = sum(c["docs"] for c in phase["components"])
        for number, bucket in enumerate(phase.get("length_buckets") or []):
            bucket["realized_tokens"] = sum(c["buckets"][number]["realized_tokens"] for c in phase["components"])
    return manifest


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
