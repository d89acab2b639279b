"""Parquet writers of the curation stages: per-unit intermediate files and the final parts.

Stage 1 writes every document (kept or dropped so far) of input unit ``u`` to
``intermediate/unit-<u>.parquet`` with its dedup hash and signature. Stage 3 applies the global
dedup decisions and splits each unit into ``data/part-<u>.parquet`` (``CURATED_SCHEMA``) and
``dropped/part-<u>.parquet`` (``DROPPED_SCHEMA``). File names and row order depend only on the
inputs, never on the number of tasks, so reruns produce byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from midmix.pipelines.curation.dedup.minhash import EXACT_HASH, SIGNATURE
from midmix.pipelines.curation.readers import UNIT
from midmix.pipelines.curation.schema import CURATED_SCHEMA, DROPPED_SCHEMA
from midmix.pipelines.curation.steps.base import DROP_REASON, DROP_STEP
from midmix.progress import ProgressCallback
from midmix.publish import atomic_path, commit_file, temporary_sibling

INTERMEDIATE_SCHEMA = DROPPED_SCHEMA.append(pa.field(EXACT_HASH, pa.uint64())).append(pa.field(SIGNATURE, pa.binary()))
DECISIONS_SCHEMA = pa.schema(
    [
        pa.field("unit", pa.int32()),
        pa.field("row", pa.int64()),
        pa.field("dup_cluster", pa.string()),
        pa.field("dup_cluster_size", pa.int32()),
        pa.field(DROP_REASON, pa.string()),
    ]
)
_ROW_GROUP = 1024
_COMPRESSION = "zstd"
_INTERMEDIATE_COMPRESSION = "lz4"  # transient files: favour speed over size
# Dictionary-encode only low-cardinality columns: ids, texts and signatures are unique and
# dictionary attempts on them cost more than compressing them.
DICTIONARY_COLUMNS = ["source", "lang", "domain", "drop_step", "drop_reason"]
_METADATA_COLUMNS = tuple(
    name for name in INTERMEDIATE_SCHEMA.names if name not in ("id", "text", "dup_cluster", "dup_cluster_size")
)
_MAP_COLUMNS = ("domain_scores", "quality")


def unit_file(folder: Path | str, unit: int) -> Path:
    """Stage-1 output of input unit ``unit``."""
    return Path(folder) / f"unit-{unit:05d}.parquet"


def decisions_file(folder: Path | str, unit: int) -> Path:
    """Stage-2 dedup decisions for the live rows of input unit ``unit``."""
    return Path(folder) / f"decisions-{unit:05d}.parquet"


def part_name(unit: int) -> str:
    """File name of the final kept/dropped part of input unit ``unit``."""
    return f"part-{unit:05d}.parquet"


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a temporary name, then rename: no reader sees half a file."""
    with atomic_path(path) as temporary:
        pq.write_table(
            table,
            temporary,
            row_group_size=_ROW_GROUP,
            compression=_COMPRESSION,
            use_dictionary=[name for name in DICTIONARY_COLUMNS if name in table.column_names],
        )


def _columns(docs: list[Document]) -> pa.Table:
    """Column-wise table of documents (much faster than row dicts through ``from_pylist``)."""
    columns: dict[str, list[Any]] = {"id": [doc.id for doc in docs], "text": [doc.text for doc in docs]}
    for name in _METADATA_COLUMNS:
        values = [doc.metadata.get(name) for doc in docs]
        if name in _MAP_COLUMNS:
            values = [list(value.items()) if value is not None else None for value in values]
        columns[name] = values
    arrays = [pa.array(columns.get(field.name, [None] * len(docs)), type=field.type) for field in INTERMEDIATE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=INTERMEDIATE_SCHEMA)


class _UnitWriter:
    """Streams one unit's documents to Parquet in row groups, renamed into place on close."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = temporary_sibling(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(
            self.tmp, INTERMEDIATE_SCHEMA, compression=_INTERMEDIATE_COMPRESSION, use_dictionary=DICTIONARY_COLUMNS
        )
        self.docs: list[Document] = []

    def add(self, doc: Document) -> None:
        self.docs.append(doc)
        if len(self.docs) >= _ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.docs:
            self.writer.write_table(_columns(self.docs))
            self.docs = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        commit_file(self.tmp, self.path)


class IntermediateWriter(PipelineStep):
    """End of stage 1: every document of each unit, in order, to ``unit-<u>.parquet``."""

    name = "intermediate"
    type = "💽 - WRITER"

    def __init__(self, folder: str, n_units: int, progress: ProgressCallback | None = None):
        super().__init__()
        self.folder = folder
        self.n_units = n_units
        self.progress = progress

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        writer: _UnitWriter | None = None
        unit = None
        done = dropped = 0
        for doc in data:
            if doc.metadata[UNIT] != unit:
                if writer is not None:
                    writer.close()
                unit = doc.metadata[UNIT]
                writer = _UnitWriter(unit_file(self.folder, unit))
            writer.add(doc)
            done += 1
            dropped += DROP_STEP in doc.metadata
            if self.progress is not None and done % 256 == 0:
                self.progress("annotate", done, None)
        if writer is not None:
            writer.close()
        self.stat_update("kept", value=done - dropped)
        self.stat_update("dropped", value=dropped)
        for empty_unit in range(rank, self.n_units, world_size):  # inputs without a single record
            if not unit_file(self.folder, empty_unit).exists():
                _UnitWriter(unit_file(self.folder, empty_unit)).close()
        if self.progress is not None:
            self.progress("annotate", done, None)
        return
        yield


def finalize_unit(intermediate: pa.Table, decisions: pa.Table, first_row: int = 0) -> tuple[pa.Table, pa.Table]:
    """Apply dedup decisions to rows ``first_row...`` of a unit; return (kept, dropped) in input order."""
    ids = intermediate.column("id").to_pylist()
    drop_steps = intermediate.column(DROP_STEP).to_pylist()
    drop_reasons = intermediate.column(DROP_REASON).to_pylist()
    clusters: list[str | None] = [doc_id if step is None else None for doc_id, step in zip(ids, drop_steps)]
    sizes: list[int | None] = [1 if step is None else None for step in drop_steps]
    for row, cluster, size, reason in zip(
        *(decisions.column(name).to_pylist() for name in ("row", "dup_cluster", "dup_cluster_size", DROP_REASON))
    ):
        row -= first_row
        clusters[row], sizes[row] = cluster, size
        if reason is not None:
            drop_steps[row], drop_reasons[row] = "dedup", reason
    table = intermediate
    for name, values, kind in (
        ("dup_cluster", clusters, pa.string()),
        ("dup_cluster_size", sizes, pa.int32()),
        (DROP_STEP, drop_steps, pa.string()),
        (DROP_REASON, drop_reasons, pa.string()),
    ):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, kind))
    kept_mask = pc.is_null(table.column(DROP_STEP))
    kept = table.filter(kept_mask).select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)
    dropped = table.filter(pc.invert(kept_mask)).select(DROPPED_SCHEMA.names).cast(DROPPED_SCHEMA)
    return kept, dropped


class _PartWriter:
    """A final part written row group by row group; created only if it gets rows, renamed on close."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.tmp = temporary_sibling(path)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if not len(table):
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(
                self.tmp,
                self.schema,
                compression=_COMPRESSION,
                use_dictionary=DICTIONARY_COLUMNS,
            )
        self.writer.write_table(table, row_group_size=_ROW_GROUP)
        self.rows += len(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            commit_file(self.tmp, self.path)


def write_unit(intermediate_path: Path, decisions: pa.Table, out_dir: Path, unit: int) -> tuple[int, int]:
    """Stream one intermediate unit into its kept and dropped parts; returns their row counts."""
    kept_part = _PartWriter(out_dir / "data" / part_name(unit), CURATED_SCHEMA)
    dropped_part = _PartWriter(out_dir / "dropped" / part_name(unit), DROPPED_SCHEMA)
    rows = decisions.column("row").to_numpy()
    first_row = 0
    for batch in pq.ParquetFile(intermediate_path).iter_batches(batch_size=_ROW_GROUP):
        end_row = first_row + batch.num_rows
        lo, hi = np.searchsorted(rows, [first_row, end_row])
        kept, dropped = finalize_unit(
            pa.Table.from_batches([batch]).cast(INTERMEDIATE_SCHEMA), decisions.slice(lo, hi - lo), first_row
        )
        kept_part.write(kept)
        dropped_part.write(dropped)
        first_row = end_row
    kept_part.close()
    dropped_part.close()
    return kept_part.rows, dropped_part.rows


class CuratedWriter(PipelineStep):
    """Stage 3: for each of this task's units, write its kept and dropped parts."""

    name = "write"
    type = "💽 - WRITER"

    def __init__(self, intermediate_dir: str, decisions_dir: str, out_dir: str, n_units: int):
        super().__init__()
        self.intermediate_dir = intermediate_dir
        self.decisions_dir = decisions_dir
        self.out_dir = out_dir
        self.n_units = n_units

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for unit in range(rank, self.n_units, world_size):
            decisions = pq.read_table(decisions_file(self.decisions_dir, unit))
            kept, dropped = write_unit(unit_file(self.intermediate_dir, unit), decisions, Path(self.out_dir), unit)
            self.stat_update("kept", value=kept)
            self.stat_update("dropped", value=dropped)
        return
        yield
