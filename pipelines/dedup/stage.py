"""Stage 2 of curation: one task reads every unit's dedup columns and writes the decisions.

Holds ids, exact hashes, signatures and scores for the corpus (about 420 bytes per document
with 100 permutations), never the texts; those are re-read only for LSH candidate pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from midmix.errors import MidmixError
from pipelines.config import DedupConfig
from pipelines.curated_writer import (
    DECISIONS_SCHEMA,
    INTERMEDIATE_SCHEMA,
    unit_file,
    write_table_atomic,
)
from pipelines.dedup.cluster import DedupInput, cluster_documents
from pipelines.dedup.minhash import EXACT_HASH, SIGNATURE
from pipelines.steps.base import DROP_REASON, DROP_STEP

_COLUMNS = ["id", DROP_STEP, "quality_score", EXACT_HASH, SIGNATURE]


class DedupClusters(PipelineStep):
    """Global exact + near-duplicate clustering over all intermediate units (run with 1 task)."""

    name = "dedup"
    type = "🫂 - DEDUP"

    def __init__(
        self,
        intermediate_dir: str,
        decisions_path: str,
        n_units: int,
        config: DedupConfig,
        inputs: list[str],
        progress: Callable[[str, int, int | None], None] | None = None,
    ):
        super().__init__()
        self.intermediate_dir = intermediate_dir
        self.decisions_path = decisions_path
        self.n_units = n_units
        self.config = config
        self.inputs = inputs
        self.progress = progress

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank != 0:
            return
        units, rows, ids, hashes, sigs, quality = [], [], [], [], [], []
        with_text = 0
        for unit in range(self.n_units):
            table = pq.read_table(unit_file(self.intermediate_dir, unit), columns=_COLUMNS, schema=INTERMEDIATE_SCHEMA)
            steps = table.column(DROP_STEP).to_pylist()
            with_text += sum(step != "read" for step in steps)
            live = np.array([index for index, step in enumerate(steps) if step is None], dtype=np.int64)
            table = table.take(live)
            units.append(np.full(len(live), unit, dtype=np.int32))
            rows.append(live)
            ids.extend(table.column("id").to_pylist())
            hashes.append(table.column(EXACT_HASH).to_numpy(zero_copy_only=False).astype(np.uint64))
            quality.append(table.column("quality_score").to_numpy(zero_copy_only=False).astype(np.float64))
            sigs.extend(table.column(SIGNATURE).to_pylist())
        if with_text == 0:
            raise MidmixError(f"no documents with text in inputs {', '.join(self.inputs)}; nothing to curate")
        all_units, all_rows = np.concatenate(units), np.concatenate(rows)
        num_perm = self.config.num_bands * self.config.rows_per_band
        has_signature = np.array([sig is not None for sig in sigs], dtype=bool)
        blank = bytes(4 * num_perm)
        matrix = np.frombuffer(b"".join(sig or blank for sig in sigs), dtype=np.uint32).reshape(len(sigs), num_perm)
        data_in = DedupInput(np.concatenate(hashes), matrix, has_signature, np.concatenate(quality))
        if self.progress is not None:
            self.progress("dedup", 0, len(ids))
        result = cluster_documents(data_in, self.config, lambda indices: self._texts(all_units, all_rows, indices))
        decisions = pa.table(
            {
                "unit": all_units,
                "row": all_rows.astype(np.int64),
                "dup_cluster": [ids[keeper] for keeper in result.keeper.tolist()],
                "dup_cluster_size": result.size.astype(np.int32),
                DROP_REASON: result.reason,
            },
            schema=DECISIONS_SCHEMA,
        )
        write_table_atomic(decisions, Path(self.decisions_path))
        self.stat_update("clustered", value=len(ids))
        self.stat_update("duplicates", value=sum(reason is not None for reason in result.reason))
        if self.progress is not None:
            self.progress("dedup", len(ids), len(ids))
        return
        yield

    def _texts(self, units: np.ndarray, rows: np.ndarray, indices: np.ndarray) -> list[str]:
        """Texts of the given global indices, reading only the row groups that hold them."""
        texts: dict[int, str] = {}
        for unit in np.unique(units[indices]).tolist():
            chosen = indices[units[indices] == unit]
            parquet = pq.ParquetFile(unit_file(self.intermediate_dir, unit))
            sizes = [parquet.metadata.row_group(group).num_rows for group in range(parquet.num_row_groups)]
            group_starts = np.concatenate([[0], np.cumsum(sizes)])
            groups = np.unique(np.searchsorted(group_starts, rows[chosen], side="right") - 1)
            column = parquet.read_row_groups(groups.tolist(), columns=["text"]).column("text")
            # rows of the selected groups are contiguous per group: map each row to its position
            local_starts = np.concatenate([[0], np.cumsum(np.array(sizes)[groups])])
            for index, row in zip(chosen.tolist(), rows[chosen].tolist()):
                group = int(np.searchsorted(group_starts, row, side="right") - 1)
                position = local_starts[np.searchsorted(groups, group)] + row - group_starts[group]
                texts[index] = column[int(position)].as_py()
        return [texts[index] for index in indices.tolist()]
