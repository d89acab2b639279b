"""Content hashes: versions are hashes of everything that determines the bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

_CHUNK = 1 << 20


def sha256_stream(handle: BinaryIO) -> str:
    """Hex sha256 of everything left in a binary file object, read in chunks so shards never sit in memory."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a local file's bytes."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def sha256_dir(path: str | Path) -> str:
    """Hex sha256 of a directory's files: their relative paths and contents, in sorted order.

    Hidden files (names starting with ".") are left out, so an editor's or a copy's temporary
    files do not change a model's identity.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        digest.update(f"{relative}\0{sha256_file(file)}\n".encode("utf-8"))
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values always hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(value: Any) -> str:
    """Hex sha256 of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def version_id(prefix: str, value: Any) -> str:
    """A short, readable version id such as ``ds-1a2b3c4d5e6f7a8b`` derived from content."""
    return f"{prefix}-{sha256_json(value)[:16]}"


def text_id(text: str) -> str:
    """The id of a document that has none: a hash of its raw text (lone surrogates allowed).

    Curation, classifier training and splits all use this one rule, so the same id-less document
    gets the same id (and lands on the same side of a train/eval split) everywhere.
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]
