"""Paths that may be fsspec URLs (``s3://``, ``gs://``, ``file://``, ``memory://``) or plain paths.

Datasets, models and mixture artifacts can live in an object store; every read and write of
such a location goes through these few functions so the rest of the code never branches on the
scheme. Plain paths are the local filesystem. Remote backends need their fsspec driver
installed (``s3fs`` for s3://, ``gcsfs`` for gs://); a missing one is a user error that says
which package to install.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path
from typing import IO

import fsspec
from fsspec.spec import AbstractFileSystem

from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import sha256_stream
from midmix.publish import atomic_path

_CHUNK = 1 << 20
_GLOB_CHARS = frozenset("*?[")


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` locations; plain paths (even absolute ones) are local."""
    return "://" in str(location)


def resolve(location: str | Path) -> tuple[AbstractFileSystem, str]:
    """The filesystem that holds ``location`` and the path inside it."""
    try:
        return fsspec.core.url_to_fs(str(location))
    except ImportError as error:
        raise MidmixError(f"{location}: {error} (pip install it into the environment that runs midmix)") from error
    except ValueError as error:
        raise MidmixError(f"{location}: {error}; use a plain path or an fsspec URL such as s3://bucket/key") from error


def exists(location: str | Path) -> bool:
    """Whether a file or folder exists at ``location``."""
    fs, path = resolve(location)
    return fs.exists(path)


def list_files(pattern: str | Path) -> list[str]:
    """Files matching ``pattern`` (a file, a folder, or a glob), sorted, with their scheme kept.

    A folder lists every file below it; plain patterns give plain paths back, URLs give URLs
    in fsspec's canonical form (``memory:///x``, ``file:///x``).
    """
    fs, path = resolve(pattern)
    if any(char in path for char in _GLOB_CHARS):
        found = [match for match in fs.glob(path) if fs.isfile(match)]
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.isfile(path):
        found = [path]
    else:
        raise NotFoundError(f"no file or folder at {pattern}; check the path or URL")
    if not is_url(pattern):
        return sorted(found)
    return sorted(fs.unstrip_protocol(match) for match in found)


def open_file(location: str | Path, mode: str = "rb") -> IO:
    """Open ``location`` for reading or writing; a missing file raises ``NotFoundError``."""
    fs, path = resolve(location)
    if "r" in mode and not fs.isfile(path):
        raise NotFoundError(f"no file at {location}; check the path or URL")
    if "w" in mode:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, mode)


def sha256(location: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed, wherever it lives."""
    with open_file(location, "rb") as handle:
        return sha256_stream(handle)


def size(location: str | Path) -> int:
    """Bytes in the file at ``location``."""
    fs, path = resolve(location)
    if not fs.isfile(path):
        raise NotFoundError(f"no file at {location}; check the path or URL")
    return int(fs.size(path))


def put_tree(local_dir: Path, location: str | Path) -> list[str]:
    """Copy a published local version folder to ``location``; returns the written locations.

    Files are copied in sorted order with ``manifest.json`` last, so a reader that waits for
    the manifest (as every midmix reader does) never sees a half-copied version.
    """
    if not local_dir.is_dir():
        raise NotFoundError(f"no folder at {local_dir} to upload")
    files = sorted((p for p in local_dir.rglob("*") if p.is_file()), key=lambda p: (p.name == "manifest.json", p))
    written = []
    for source in files:
        target = f"{str(location).rstrip('/')}/{source.relative_to(local_dir).as_posix()}"
        with open(source, "rb") as reader, open_file(target, "wb") as writer:
            shutil.copyfileobj(reader, writer, _CHUNK)
        written.append(target)
    return written


def fetch_file(location: str | Path, dest: Path) -> Path:
    """Copy the file at ``location`` to the local path ``dest`` atomically."""
    with atomic_path(dest) as temporary, open_file(location, "rb") as reader, open(temporary, "wb") as writer:
        shutil.copyfileobj(reader, writer, _CHUNK)
    return dest


def signed_url(location: str | Path, expires_s: int = 3600) -> str | None:
    """A time-limited HTTP URL for ``location`` if its store can sign one (S3, GCS), else None.

    The service redirects shard downloads to such a URL; where there is none (local disk,
    ``memory://``) it proxies the bytes itself.
    """
    fs, path = resolve(location)
    try:
        return fs.sign(path, expiration=expires_s)
    except NotImplementedError:
        return None
