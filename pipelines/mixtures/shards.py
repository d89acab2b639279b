"""Shard I/O for a build: document texts in, tokenized ``SHARD_SCHEMA`` Parquet out.

Writer options are fixed (and no timestamps are written), so the same rows always give the same
bytes; shards are named ``<stem>-NNNNN.parquet`` with row groups of ``SHARD_ROW_GROUP_ROWS``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import SHARD_ROW_GROUP_ROWS, SHARD_SCHEMA
from midmix.pipelines.mixtures.encode import encode_arrow
from midmix.pipelines.tokenizer import Tokenizer
from midmix.progress import ProgressCallback

SHARD_MAX_ROWS = 32 * SHARD_ROW_GROUP_ROWS
PARQUET_OPTIONS = {
    "row_group_size": SHARD_ROW_GROUP_ROWS,
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["doc_id", "source", "domain"],
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
}


class TextReader:
    """Document texts by (dataset, file, row), each file's text column read once per build."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._columns: dict[tuple[str, str], pa.ChunkedArray] = {}

    def take(self, docs: pa.Table) -> pa.Array:
        """The texts of ``docs`` (columns dataset, file, row_index), in their row order."""
        if docs.num_rows == 0:
            return pa.array([], pa.string())
        keys = pc.binary_join_element_wise(docs.column("dataset"), docs.column("file"), "\x00").to_numpy(zero_copy_only=False)
        rows = docs.column("row_index").to_numpy()
        positions, parts = [], []
        for key in sorted(set(keys)):
            mask = keys == key
            dataset, file = key.split("\x00")
            parts.append(self._column(dataset, file).take(pa.array(rows[mask])))
            positions.append(np.flatnonzero(mask))
        merged = pa.chunked_array([chunk for part in parts for chunk in part.chunks], pa.string())
        return merged.take(pa.array(np.argsort(np.concatenate(positions), kind="stable"))).combine_chunks()

    def _column(self, dataset: str, file: str) -> pa.ChunkedArray:
        if (dataset, file) not in self._columns:
            table = pq.read_table(self.data_dir / "datasets" / dataset / file, columns=["text"])
            self._columns[(dataset, file)] = table.column("text")
        return self._columns[(dataset, file)]


def shard_table(docs: pa.Table, tokenizer: Tokenizer, texts: TextReader) -> pa.Table:
    """Shard rows for ``docs`` (catalog rows), tokenized with the mixture's tokenizer."""
    input_ids = encode_arrow(tokenizer, texts.take(docs))
    return pa.Table.from_arrays(
        [
            input_ids,
            docs.column("id").cast(pa.string()),
            docs.column("source").cast(pa.string()),
            docs.column("domain").cast(pa.string()),
            docs.column("quality_score").cast(pa.float32()),
            pc.list_value_length(input_ids).cast(pa.int32()),
        ],
        schema=SHARD_SCHEMA,
    )


def take_rows(table: pa.Table, indices: np.ndarray) -> pa.Table:
    """``table.take(indices)``, skipping the copy when the indices are every row in order (one epoch)."""
    if len(indices) == table.num_rows and np.array_equal(indices, np.arange(table.num_rows)):
        return table
    return table.take(pa.array(indices, pa.int64()))


def write_shards(table: pa.Table, staging: Path, stem: str, step: str, report: ProgressCallback) -> list[dict]:
    """Write ``table`` as ``<stem>-NNNNN.parquet`` shards of at most SHARD_MAX_ROWS rows; their manifest entries."""
    shards = []
    for index, begin in enumerate(range(0, table.num_rows, SHARD_MAX_ROWS)):
        part = table.slice(begin, SHARD_MAX_ROWS)
        relative = f"{stem}-{index:05d}.parquet"
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, **PARQUET_OPTIONS)
        shards.append({
            "path": relative, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "rows": part.num_rows, "tokens": int(pc.sum(part.column("n_tokens")).as_py() or 0),
        })  # fmt: skip
        report(step, begin + part.num_rows, table.num_rows)
    return shards


def write_json(path: Path, value: dict) -> None:
    """Deterministic JSON (sorted keys) for spec.json and manifest.json."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")

