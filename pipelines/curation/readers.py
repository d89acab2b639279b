"""Read corpora into datatrove ``Document``s: JSONL (plain or gzip), Parquet, HF datasets on disk.

Inputs are resolved up front into ``InputUnit``s (one readable file each, local or any fsspec
URL) so a missing file fails before anything is written. Task ``rank`` of ``world_size`` reads
units ``rank, rank + world_size, ...``; each document carries its unit index, which fixes the
output order whatever the number of tasks (parallelism is across input files). A bad line stops the run with ``file:line``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from midmix.errors import MidmixError
from midmix.hashing import text_id
from midmix.pipelines.curation.config import FieldMap
from midmix.pipelines.curation.steps.base import mark_dropped

UNIT = "_unit"
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")
_HF_MARKERS = ("state.json", "dataset_dict.json")


@dataclass(frozen=True)
class InputUnit:
    """One file to read: its URL, format (jsonl, parquet, arrow) and the source name it implies."""

    url: str
    format: str
    source_name: str


def _format_of(path: str) -> str | None:
    if path.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if path.endswith(".parquet"):
        return "parquet"
    return None


def _stem(path: str) -> str:
    name = PurePosixPath(path.rstrip("/")).name
    for suffix in (*_JSONL_SUFFIXES, ".parquet"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _hf_units(fs: Any, folder: str, url_of: Any) -> list[InputUnit]:
    """Arrow files of a folder written by ``datasets.save_to_disk`` (Dataset or DatasetDict)."""
    source = _stem(folder)
    if fs.exists(f"{folder}/dataset_dict.json"):
        with fs.open(f"{folder}/dataset_dict.json", "rt") as handle:
            splits = json.load(handle)["splits"]
        return [unit for split in splits for unit in _hf_split_units(fs, f"{folder}/{split}", url_of, source)]
    return _hf_split_units(fs, folder, url_of, source)


def _hf_split_units(fs: Any, folder: str, url_of: Any, source: str) -> list[InputUnit]:
    with fs.open(f"{folder}/state.json", "rt") as handle:
        files = [entry["filename"] for entry in json.load(handle)["_data_files"]]
    return [InputUnit(url_of(f"{folder}/{name}"), "arrow", source) for name in files]


def _folder_units(fs: Any, folder: str, url_of: Any) -> list[InputUnit]:
    if any(fs.exists(f"{folder}/{marker}") for marker in _HF_MARKERS):
        return _hf_units(fs, folder, url_of)
    found = sorted(path for path in fs.find(folder) if _format_of(path))
    return [InputUnit(url_of(path), _format_of(path) or "", _stem(path)) for path in found]


def resolve_inputs(patterns: list[str]) -> list[InputUnit]:
    """Expand paths, globs and folders into units; anything missing or unreadable is an error."""
    units: list[InputUnit] = []
    for pattern in patterns:
        fs, path = fsspec.core.url_to_fs(pattern)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        url_of = (lambda p: p) if protocol in ("file", "local") else fs.unstrip_protocol
        paths = sorted(fs.glob(path)) if any(char in path for char in "*?[") else [path]
        if not paths or not fs.exists(paths[0]):
            raise MidmixError(f"input not found: {pattern}")
        for found in paths:
            if fs.isdir(found):
                folder_units = _folder_units(fs, found.rstrip("/"), url_of)
                if not folder_units:
                    raise MidmixError(f"input folder {pattern} holds no .jsonl, .jsonl.gz, .json.gz or .parquet files")
                units.extend(folder_units)
            elif fmt := _format_of(found):
                units.append(InputUnit(url_of(found), fmt, _stem(found)))
            else:
                raise MidmixError(
                    f"input {found}: unknown format; use .jsonl, .jsonl.gz, .json.gz, .parquet or a folder"
                )
    return units


def _jsonl_records(url: str) -> Iterator[tuple[int, dict]]:
    with fsspec.open(url, "rb", compression="infer") as handle:
        lineno = 0
        try:
            for lineno, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise MidmixError(
                        f"{url}:{lineno}: not UTF-8 text ({error.reason}); re-encode the file as UTF-8"
                    ) from None
                except json.JSONDecodeError as error:
                    raise MidmixError(f"{url}:{lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
                if not isinstance(record, dict):
                    raise MidmixError(f"{url}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record
        except (gzip.BadGzipFile, EOFError, OSError) as error:
            raise MidmixError(f"{url}: corrupt or truncated after line {lineno} ({error})") from None


def _table_records(url: str, fmt: str) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    with fsspec.open(url, "rb") as handle:
        try:
            batches = pq.ParquetFile(handle).iter_batches(1024) if fmt == "parquet" else pa.ipc.open_stream(handle)
            for batch in batches:
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
        except (pa.ArrowInvalid, OSError) as error:
            raise MidmixError(f"{url}: unreadable {fmt} file after row {row} ({error})") from None


def read_records(unit: InputUnit) -> Iterator[tuple[int, dict]]:
    """(line or row number, record) pairs of one unit, in file order."""
    if unit.format == "jsonl":
        return _jsonl_records(unit.url)
    return _table_records(unit.url, unit.format)


def _meta_json(value: Any) -> str:
    if value is None:
        return "{}"
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def to_document(record: dict, fields: FieldMap, unit: InputUnit, unit_index: int, row: int) -> Document:
    """Map one input record (line or row ``row`` of ``unit``) to a Document; no text -> dropped."""
    text = record.get(fields.text)
    if text is not None and not isinstance(text, str):
        raise MidmixError(f"{unit.url}:{row}: field '{fields.text}' must be a string, got {type(text).__name__}")
    raw_id = record.get(fields.id)
    source = record.get(fields.source)
    metadata = {
        "source": str(source) if source not in (None, "") else unit.source_name,
        "meta": _meta_json(record.get(fields.meta)),
        UNIT: unit_index,
    }
    doc_id = str(raw_id) if raw_id not in (None, "") else (text_id(text) if text else f"{unit.source_name}:{row}")
    doc = Document(text=text or "", id=doc_id, metadata=metadata)
    if not (text or "").strip():
        mark_dropped(doc, "read", "empty_text")
    return doc


class CorpusReader(PipelineStep):
    """Read this task's share of the input units as Documents, in unit then row order."""

    name = "read"
    type = "📖 - READER"

    def __init__(self, units: list[InputUnit], fields: FieldMap):
        super().__init__()
        self.units = units
        self.fields = fields

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for unit_index in range(rank, len(self.units), world_size):
            unit = self.units[unit_index]
            read = empty = 0  # counted per file: datatrove's stat_update costs microseconds per call
            for row, record in read_records(unit):
                doc = to_document(record, self.fields, unit, unit_index, row)
                read += 1
                empty += "drop_reason" in doc.metadata
                yield doc
            self.stat_update("docs_in", value=read)
            self.stat_update("dropped_empty_text", value=empty)
