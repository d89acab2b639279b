"""Stage 2 of curation: one task reads every unit's dedup columns and writes the decisions.

Holds ids, exact hashes, signatures and scores for the corpus (about 420 bytes per document
with 100 permutations), never the texts; those are re-read only for LSH candidate pairs, a chunk
of pairs at a time. Decisions are written per unit, so each write task reads only its own.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from midmix.errors import MidmixError
from midmix.pipelines.curation.config import DedupConfig
from midmix.pipelines.curation.dedup.cluster import DedupInput, cluster_documents
from midmix.pipelines.curation.dedup.minhash import EXACT_HASH, SIGNATURE
from midmix.pipelines.curation.steps.base import DROP_REASON, DROP_STEP
from midmix.pipelines.curation.writer import (
    DECISIONS_SCHEMA,
    decisions_file,
    unit_file,
    write_table_atomic,
)
from midmix.progress import ProgressCallback

_COLUMNS = ["id", DROP_STEP, "quality_score", EXACT_HASH, SIGNATURE]
_BATCH_ROWS = 4096


def signature_matrix(column: pa.BinaryArray, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, num_perm) uint32 signatures straight from the Arrow buffers (no Python bytes objects)."""
    present = column.is_valid().to_numpy(zero_copy_only=False)
    matrix = np.full((len(column), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if present.any():
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
        values = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        matrix[present] = values.view(np.uint32).reshape(-1, num_perm)
    return matrix, present


class DedupClusters(PipelineStep):
    """Global exact + near-duplicate clustering over all intermediate units (run with 1 task)."""

    name = "dedup"
    type = "🫂 - DEDUP"

    def __init__(
        self,
        intermediate_dir: str,
        decisions_dir: str,
        n_units: int,
        config: DedupConfig,
        inputs: list[str],
        progress: ProgressCallback | None = None,
    ):
        super().__init__()
        self.intermediate_dir = intermediate_dir
        self.decisions_dir = decisions_dir
        self.n_units = n_units
        self.config = config
        self.inputs = inputs
        self.progress = progress

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank != 0:
            return
        num_perm = self.config.num_bands * self.config.rows_per_band
        units, rows, ids, hashes, quality, matrices, present = [], [], [], [], [], [], []
        with_text = 0
        for unit in range(self.n_units):
            first_row = 0
            batches = pq.ParquetFile(unit_file(self.intermediate_dir, unit)).iter_batches(_BATCH_ROWS, columns=_COLUMNS)
            for batch in batches:  # one row group at a time keeps the read buffers small
                steps = batch.column(DROP_STEP)
                with_text += len(batch) - (pc.sum(pc.equal(steps, "read")).as_py() or 0)
                live_mask = pc.is_null(steps)
                rows.append(first_row + np.flatnonzero(live_mask.to_numpy(zero_copy_only=False)))
                first_row += len(batch)
                live = batch.filter(live_mask)
                units.append(np.full(len(live), unit, dtype=np.int32))
                ids.append(live.column("id"))
                hashes.append(live.column(EXACT_HASH).to_numpy().astype(np.uint64))
                quality.append(live.column("quality_score").to_numpy(zero_copy_only=False).astype(np.float64))
                matrix, has_signature = signature_matrix(live.column(SIGNATURE), num_perm)
                matrices.append(matrix)
                present.append(has_signature)
        if with_text == 0:
            raise MidmixError(f"no documents with text in inputs {', '.join(self.inputs)}; nothing to curate")
        all_units = np.concatenate(units) if units else np.zeros(0, np.int32)
        all_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        data_in = DedupInput(
            np.concatenate(hashes), np.concatenate(matrices), np.concatenate(present), np.concatenate(quality)
        )
        del matrices
        if self.progress is not None:
            self.progress("dedup", 0, len(all_units))
        result = cluster_documents(data_in, self.config, lambda indices: self._texts(all_units, all_rows, indices))
        clusters = pa.chunked_array(ids, type=pa.string()).take(pa.array(result.keeper))
        reasons = pa.array(result.reason, pa.string())
        bounds = np.searchsorted(all_units, np.arange(self.n_units + 1))
        for unit in range(self.n_units):
            lo, hi = int(bounds[unit]), int(bounds[unit + 1])
            decisions = pa.table(
                {
                    "unit": all_units[lo:hi],
                    "row": all_rows[lo:hi].astype(np.int64),
                    "dup_cluster": clusters.slice(lo, hi - lo),
                    "dup_cluster_size": result.size[lo:hi].astype(np.int32),
                    DROP_REASON: reasons.slice(lo, hi - lo),
                },
                schema=DECISIONS_SCHEMA,
            )
            write_table_atomic(decisions, decisions_file(self.decisions_dir, unit))
        self.stat_update("clustered", value=len(all_units))
        self.stat_update("duplicates", value=sum(reason is not None for reason in result.reason))
        if self.progress is not None:
            self.progress("dedup", len(all_units), len(all_units))
        return
        yield

    def _texts(self, units: np.ndarray, rows: np.ndarray, indices: np.ndarray) -> list[str]:
        """Texts of the given global indices, reading one row group at a time (memory: one group)."""
        texts: dict[int, str] = {}
        for unit in np.unique(units[indices]).tolist():
            chosen = indices[units[indices] == unit]
            parquet = pq.ParquetFile(unit_file(self.intermediate_dir, unit))
            sizes = [parquet.metadata.row_group(group).num_rows for group in range(parquet.num_row_groups)]
            group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            group_of = np.searchsorted(group_starts, rows[chosen], side="right") - 1
            for group in np.unique(group_of).tolist():
                mine = chosen[group_of == group]
                column = parquet.read_row_group(group, columns=["text"]).column("text")
                local = pa.array(rows[mine] - group_starts[group])
                texts.update(zip(mine.tolist(), column.take(local).to_pylist()))
        return [texts[index] for index in indices.tolist()]
