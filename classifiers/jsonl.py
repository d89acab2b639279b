"""Read labelled JSONL inputs (plain or gzip), reporting bad lines as ``file:line``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from midmix.errors import MidmixError


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line; a bad line is a user error."""
    if not path.is_file():
        raise MidmixError(f"input file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MidmixError(f"{path}:{line_no}: invalid JSON ({error.msg}); fix or remove the line") from error
            if not isinstance(record, dict):
                raise MidmixError(f"{path}:{line_no}: expected a JSON object per line")
            yield line_no, record
