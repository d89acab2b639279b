"""Read-only view of published versions in the data directory, with manifests cached.

Published versions are immutable (atomic rename, manifest written last), so a manifest read
once can be served from memory; the cache is keyed on the file's inode and mtime so a version
rebuilt after deletion is picked up. Listing reads the directories, never the DuckDB catalog,
so reads never contend with a build holding the catalog.

Async routes never touch the disk or the store on the event loop: ``recent_manifest`` and
``recent_file`` answer from memory (a local manifest checked within the last ``_FRESH_S``
seconds), and a miss goes through the thread pool (``manifest_async``, ``servable_file_async``).

With a ``shard_store`` (an fsspec URL that ``midmix mixtures push`` mirrors versions to), a
version missing locally is looked up at ``<store>/<kind>/<version>/manifest.json``; its files
are then ``MirroredFile`` locations the routes redirect to or proxy. A mirrored manifest is
cached without a stamp: pushed versions are immutable and the manifest is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from threading import Lock
from time import monotonic

from starlette.concurrency import run_in_threadpool

from midmix import storage
from midmix.errors import MidmixError, NotFoundError
from midmix.mixture_manifest import listed_files
from midmix.pipelines.mixtures.diff import diff_mixtures
from midmix.service.composition import phase_composition

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION_NAME = re.compile(VERSION_PATTERN)
# A local manifest is re-checked on disk (stat) at most this often; versions are immutable, so this
# only delays noticing a version deleted by hand.
_FRESH_S = 2.0
_DIFFS_KEPT = 8


@dataclass(frozen=True)
class ServedFile:
    """A file a client may download: where it is and its content hash (the ETag)."""

    path: Path
    sha256: str
    stat: os.stat_result


@dataclass(frozen=True)
class MirroredFile:
    """A listed file that lives only in the object-store mirror: its URL, content hash and size."""

    location: str
    sha256: str
    size: int


@dataclass(frozen=True)
class CachedManifest:
    """A parsed manifest, its JSON bytes as served, and the files it lists by relative path."""

    data: dict
    body: bytes
    etag: str
    files: dict[str, str]


class VersionStore:
    """Datasets and mixtures under ``data_dir``: list, read manifests, resolve servable files."""

    def __init__(self, data_dir: Path, shard_store: str | None = None):
        self.data_dir = data_dir.resolve()
        self.shard_store = shard_store.rstrip("/") if shard_store else None
        # (kind, version) -> (inode/mtime/size stamp, when last checked, manifest)
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int], float, CachedManifest]] = {}
        self._served: dict[tuple[str, str, str], ServedFile | MirroredFile] = {}
        self._diffs: dict[tuple[str, str, str, str], dict] = {}
        self._mirrored: dict[tuple[str, str], CachedManifest] = {}
        self._derived: dict[tuple[str, str, str], dict] = {}
        self._lock = Lock()

    def manifest(self, kind: str, version: str) -> CachedManifest:
        """The manifest of ``kind`` (``datasets`` or ``mixtures``) version ``version`` (may read the disk)."""
        path = self.version_dir(kind, version) / "manifest.json"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return self._mirrored_manifest(kind, version)
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            hit = self._cache.get((kind, version))
        if hit is not None and hit[0] == stamp:
            cached = hit[2]
        else:
            body = path.read_bytes()
            data = json.loads(body)
            cached = CachedManifest(data=data, body=body, etag=sha256_bytes_etag(body), files=listed_files(data))
        with self._lock:
            self._cache[(kind, version)] = (stamp, monotonic(), cached)
        return cached

    def recent_manifest(self, kind: str, version: str) -> CachedManifest | None:
        """The manifest from memory if it was read or checked within ``_FRESH_S``; no I/O."""
        with self._lock:
            local = self._cache.get((kind, version))
            mirrored = self._mirrored.get((kind, version))
        if local is not None:
            return local[2] if monotonic() - local[1] < _FRESH_S else None
        return mirrored

    async def manifest_async(self, kind: str, version: str) -> CachedManifest:
        """``manifest`` for async routes: from memory, else read in the thread pool."""
        return self.recent_manifest(kind, version) or await run_in_threadpool(self.manifest, kind, version)

    def is_mirrored(self, kind: str, version: str) -> bool:
        """True when ``version`` is served from the shard store (it is not in the data directory)."""
        return self.shard_store is not None and not (self.version_dir(kind, version) / "manifest.json").is_file()

    def mirror_location(self, kind: str, version: str) -> str:
        """The URL of a version's folder in the shard store."""
        if self.shard_store is None:
            raise NotFoundError(self._missing(kind, version))
        return f"{self.shard_store}/{kind}/{self.version_dir(kind, version).name}"

    def created_at(self, kind: str, version: str) -> str:
        """ISO time the version's manifest was published (locally, or in the mirror when it has a time)."""
        manifest_path = self.version_dir(kind, version) / "manifest.json"
        if manifest_path.is_file():
            return datetime.fromtimestamp(manifest_path.stat().st_mtime, UTC).isoformat()
        fs, path = storage.resolve(f"{self.mirror_location(kind, version)}/manifest.json")
        try:
            stamp = fs.modified(path)
        except (NotImplementedError, FileNotFoundError):
            return ""
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).isoformat()

    def composition(self, version: str) -> dict[str, dict[str, dict[str, int]]]:
        """Tokens per phase by domain and source; computed once per version (versions are immutable)."""
        cached = self.manifest("mixtures", version)
        if self.is_mirrored("mixtures", version):
            raise MidmixError(f"mixture {version} is only in the shard store; composition reads local shards")
        key = ("composition", version, cached.etag)
        with self._lock:
            hit = self._derived.get(key)
        if hit is None:
            hit = phase_composition(self.version_dir("mixtures", version), cached.data)
            with self._lock:
                self._derived[key] = hit
        return hit

    def diff(self, a: str, b: str) -> dict:
        """Per phase and component token changes and doc ids from ``a`` to ``b`` (a few recent ones kept)."""
        cached_a, cached_b = self.manifest("mixtures", a), self.manifest("mixtures", b)
        mirrored = [version for version in (a, b) if self.is_mirrored("mixtures", version)]
        if mirrored:
            raise MidmixError(
                f"mixture {mirrored[0]} is only in the shard store; a diff reads doc ids from local shards"
            )
        key = (a, b, cached_a.etag, cached_b.etag)
        with self._lock:
            hit = self._diffs.get(key)
        if hit is None:
            hit = diff_mixtures(cached_a.data, cached_b.data, self.data_dir)
            with self._lock:
                self._diffs[key] = hit
                while len(self._diffs) > _DIFFS_KEPT:
                    self._diffs.pop(next(iter(self._diffs)))
        return hit

    def versions(self, kind: str) -> list[str]:
        """Published versions of ``kind``, newest first (by publication time)."""
        root = self.data_dir / kind
        scanned = list(os.scandir(root)) if root.is_dir() else []
        entries = [entry for entry in scanned if _VERSION_NAME.match(entry.name) and entry.is_dir()]
        entries = [entry for entry in entries if os.path.exists(os.path.join(entry.path, "manifest.json"))]
        entries.sort(key=lambda entry: entry.stat().st_mtime_ns, reverse=True)
        local = [entry.name for entry in entries]
        return local + [version for version in self._mirrored_versions(kind) if version not in local]

    def _mirrored_versions(self, kind: str) -> list[str]:
        """Versions in the shard store with a manifest (pushed completely), sorted by name."""
        if self.shard_store is None:
            return []
        fs, root = storage.resolve(f"{self.shard_store}/{kind}")
        if not fs.isdir(root):
            return []
        names = sorted(PurePosixPath(path).name for path in fs.ls(root, detail=False))
        return [name for name in names if _VERSION_NAME.match(name) and fs.isfile(f"{root}/{name}/manifest.json")]

    def _mirrored_manifest(self, kind: str, version: str) -> CachedManifest:
        """A version's manifest from the shard store (cached: pushed versions never change)."""
        key = (kind, version)
        with self._lock:
            hit = self._mirrored.get(key)
        if hit is not None:
            return hit
        location = f"{self.mirror_location(kind, version)}/manifest.json"
        if not storage.exists(location):
            raise NotFoundError(self._missing(kind, version))
        with storage.open_file(location) as handle:
            body = handle.read()
        data = json.loads(body)
        cached = CachedManifest(data=data, body=body, etag=sha256_bytes_etag(body), files=listed_files(data))
        with self._lock:
            self._mirrored[key] = cached
        return cached

    def version_dir(self, kind: str, version: str) -> Path:
        """The directory of one version; names that could escape ``kind/`` are not found."""
        if not _VERSION_NAME.match(version) or version.startswith("."):
            raise NotFoundError(self._missing(kind, version))
        return self.data_dir / kind / version

    async def servable_file_async(self, version: str, relative: str) -> ServedFile | MirroredFile:
        """``servable_file`` for async routes: from memory when the manifest is fresh, else in the thread pool."""
        cached = self.recent_manifest("mixtures", version)
        if cached is not None:
            with self._lock:
                served = self._served.get((version, relative, cached.etag))
            if served is not None:
                return served
        return await run_in_threadpool(self.servable_file, version, relative)

    def servable_file(self, version: str, relative: str) -> ServedFile | MirroredFile:
        """A mixture file listed in its manifest, resolved inside the version directory or its mirror."""
        cached = self.manifest("mixtures", version)
        key = (version, relative, cached.etag)
        served = self._resolve_file(version, relative, cached)
        with self._lock:
            self._served[key] = served  # shards are immutable: size and hash never change
        return served

    def _resolve_file(self, version: str, relative: str, cached: CachedManifest) -> ServedFile | MirroredFile:
        sha256 = cached.files.get(relative)
        if sha256 is None:
            raise NotFoundError(
                f"mixture {version} lists no file {relative!r}; see its manifest for shard, eval and tokenizer paths"
            )
        if self.is_mirrored("mixtures", version):
            return self._mirrored_file(version, relative, sha256)
        path = self._contained(version, relative)
        stat = path.stat() if path is not None and path.exists() else None
        if stat is None or not S_ISREG(stat.st_mode):
            raise NotFoundError(f"mixture {version} has no servable file {relative!r}")
        return ServedFile(path=path, sha256=sha256, stat=stat)

    def _mirrored_file(self, version: str, relative: str, sha256: str) -> MirroredFile:
        parts = PurePosixPath(relative).parts
        if relative.startswith("/") or ".." in parts or "" in parts:
            raise NotFoundError(f"mixture {version} has no servable file {relative!r}")
        location = f"{self.mirror_location('mixtures', version)}/{relative}"
        return MirroredFile(location=location, sha256=sha256, size=storage.size(location))

    def _contained(self, version: str, relative: str) -> Path | None:
        """The resolved path of a listed file, or None if symlinks or '..' lead outside the version."""
        root = self.version_dir("mixtures", version).resolve()
        path = (root / relative).resolve()
        return path if path.is_relative_to(root) else None

    def _missing(self, kind: str, version: str) -> str:
        noun = "dataset" if kind == "datasets" else "mixture"
        return f"no {noun} version {version!r}; list them with GET /{kind}"


def sha256_bytes_etag(body: bytes) -> str:
    """A strong ETag for an in-memory body."""
    return f'"{hashlib.sha256(body).hexdigest()}"'
