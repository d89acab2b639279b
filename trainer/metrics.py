"""Training metrics as JSON lines: one ``step`` record per optimizer step, one ``phase_end`` per phase.

A resumed run truncates records at or after its resume step before appending, so the file of an
interrupted-and-resumed run reads exactly like the file of an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from midmix.hashing import canonical_json


class MetricsLog:
    """Append-only JSONL of training records, truncated to ``resume_step`` when a run resumes."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [record for record in read_metrics(path) if _before(record, resume_step)]
        path.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
        self._handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it, so a crash loses at most the record being written."""
        self._handle.write(canonical_json(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file (an absent file has none; a torn last line is dropped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def _before(record: dict[str, Any], resume_step: int) -> bool:
    # A phase_end record is written after its phase's last step, which is global_step - 1.
    return record["global_step"] <= resume_step if record["kind"] == "phase_end" else record["global_step"] < resume_step
