"""Shard I/O for a build: document texts in (storage order), tokenized ``SHARD_SCHEMA`` Parquet out.

Writer options are fixed (and no timestamps are written), so the same rows always give the same
bytes; shards are named ``<stem>-NNNNN.parquet`` with row groups of ``SHARD_ROW_GROUP_ROWS``.
Every file is written under a temporary name and renamed, so a killed task leaves no partial file.
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
from midmix.publish import atomic_path, atomic_write_text

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


def read_texts(path: Path, rows: np.ndarray) -> pa.Array:
    """The ``text`` of rows ``rows`` (sorted, unique) of a Parquet file, reading only their row groups."""
    parquet = pq.ParquetFile(path)
    sizes = np.array([parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
    texts = parquet.read_row_groups(groups.tolist(), columns=["text"]).column("text")
    # Row r sits at r - starts[g] within group g, and group g at offset[g] in the groups read.
    offset = np.zeros(len(sizes), dtype=np.int64)
    offset[groups] = np.concatenate([[0], np.cumsum(sizes[groups])[:-1]])
    group_of = np.searchsorted(starts, rows, side="right") - 1
    positions = rows - starts[group_of] + offset[group_of]
    return texts.take(pa.array(positions, pa.int64())).combine_chunks().cast(pa.string())


def shard_table(columns: pa.Table) -> pa.Table:
    """Shard rows from encoded columns (input_ids, id, source, domain, quality_score), in their order."""
    input_ids = columns.column("input_ids")
    return pa.Table.from_arrays(
        [
            input_ids,
            columns.column("id").cast(pa.string()),
            columns.column("source").cast(pa.string()),
            columns.column("domain").cast(pa.string()),
            columns.column("quality_score").cast(pa.float32()),
            pc.list_value_length(input_ids).cast(pa.int32()),
        ],
        schema=SHARD_SCHEMA,
    )


def write_shard(table: pa.Table, path: Path, relative: str) -> dict:
    """Write one shard atomically; its manifest entry (path relative to the version)."""
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, **PARQUET_OPTIONS)
    return {
        "path": relative, "sha256": sha256_file(path), "bytes": path.stat().st_size,
        "rows": table.num_rows, "tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0),
    }  # fmt: skip


def write_json(path: Path, value: dict) -> None:
    """Deterministic JSON (sorted keys), written atomically: spec.json, manifest.json, build work files."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
