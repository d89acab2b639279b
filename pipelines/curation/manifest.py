"""The manifest of a curated dataset version, computed from the files actually written.

Counts come from the Parquet parts (not from task logs), so the manifest always agrees with the
data: per step, docs in and out and drops by reason; tokens and docs by domain, lang and source;
histograms of each quality classifier over kept documents; every file with its sha256.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import CURATED_SCHEMA, DROPPED_SCHEMA

HISTOGRAM_BINS = 20


def _read(paths: list[Path], columns: list[str], schema: Any) -> dict[str, list]:
    merged: dict[str, list] = {name: [] for name in columns}
    for path in paths:
        table = pq.read_table(path, columns=columns, schema=schema)
        for name in columns:
            merged[name].extend(table.column(name).to_pylist())
    return merged


def step_counts(step_names: list[str], total: int, dropped_steps: list[str], dropped_reasons: list[str]) -> list[dict]:
    """Docs in/out per step in pipeline order, with drops by reason."""
    by_step: dict[str, Counter] = defaultdict(Counter)
    for step, reason in zip(dropped_steps, dropped_reasons):
        by_step[step][reason] += 1
    unknown = set(by_step) - set(step_names)
    if unknown:
        raise ValueError(f"drops from steps outside the pipeline: {sorted(unknown)}")
    steps, remaining = [], total
    for name in step_names:
        dropped = dict(sorted(by_step[name].items()))
        out = remaining - sum(dropped.values())
        steps.append({"name": name, "docs_in": remaining, "docs_out": out, "dropped": dropped})
        remaining = out
    return steps


def _histogram(values: list[float]) -> dict[str, list]:
    # fastText probabilities can exceed 1 by rounding (1.00001); clip so every doc is counted.
    clipped = np.clip(np.array(values, dtype=np.float64), 0.0, 1.0)
    counts, edges = np.histogram(clipped, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"edges": [round(float(edge), 6) for edge in edges], "counts": counts.tolist()}


def _file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "rows": pq.ParquetFile(path).metadata.num_rows,
    }


def build_manifest(
    version_dir: Path, header: dict[str, Any], step_names: list[str], quality_names: list[str]
) -> dict[str, Any]:
    """The full manifest of the files under ``version_dir``; ``header`` holds version, inputs, config, models."""
    kept_paths = sorted((version_dir / "data").glob("part-*.parquet"))
    dropped_paths = sorted((version_dir / "dropped").glob("part-*.parquet"))
    kept = _read(kept_paths, ["domain", "lang", "source", "n_tokens", "quality"], CURATED_SCHEMA)
    dropped = _read(dropped_paths, ["drop_step", "drop_reason"], DROPPED_SCHEMA)
    total = len(kept["n_tokens"]) + len(dropped["drop_step"])
    tokens_by: dict[str, Counter] = {}
    docs_by: dict[str, Counter] = {}
    for key in ("domain", "lang", "source"):
        tokens_by[key], docs_by[key] = Counter(), Counter(kept[key])
        for value, tokens in zip(kept[key], kept["n_tokens"]):
            tokens_by[key][value] += tokens
    scores: dict[str, list[float]] = {name: [] for name in quality_names}
    for entries in kept["quality"]:
        for name, value in entries:
            scores[name].append(value)
    return {
        **header,
        "kind": "dataset",
        "steps": step_counts(step_names, total, dropped["drop_step"], dropped["drop_reason"]),
        "counts": {
            "docs": len(kept["n_tokens"]),
            "tokens": int(sum(kept["n_tokens"])),
            "dropped": len(dropped["drop_step"]),
        },
        "tokens_by": {key: dict(sorted(counter.items())) for key, counter in tokens_by.items()},
        "docs_by": {key: dict(sorted(counter.items())) for key, counter in docs_by.items()},
        "quality_histograms": {name: _histogram(values) for name, values in scores.items()},
        "files": [_file_entry(version_dir, path) for path in kept_paths + dropped_paths],
    }
