"""Token shares of each phase by domain and source, read from the shards themselves.

The manifest records tokens per component, but a component may draw from several domains and
sources; the browse page shows what the trainer will actually see, so this sums the shards'
``n_tokens`` (repeated rows included) grouped by their ``domain`` and ``source`` columns.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from midmix.mixture_manifest import phase_shards


def phase_composition(version_dir: Path, manifest: dict) -> dict[str, dict[str, dict[str, int]]]:
    """``{phase: {"domain": {name: tokens}, "source": {name: tokens}}}``, largest first."""
    composition = {}
    for phase in manifest.get("phases") or []:
        by_domain: Counter[str] = Counter()
        by_source: Counter[str] = Counter()
        for _, shard in phase_shards(phase):
            table = pq.read_table(version_dir / shard["path"], columns=["domain", "source", "n_tokens"])
            for column, counter in (("domain", by_domain), ("source", by_source)):
                grouped = table.group_by(column).aggregate([("n_tokens", "sum")])
                for name, tokens in zip(grouped[column].to_pylist(), grouped["n_tokens_sum"].to_pylist()):
                    counter[name or "unknown"] += int(tokens or 0)
        composition[phase["name"]] = {"domain": dict(by_domain.most_common()), "source": dict(by_source.most_common())}
    return composition
