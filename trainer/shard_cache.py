"""Local cache of one mixture version's files: verified downloads, prefetch, LRU under a byte cap.

A training run must never read a corrupt shard: every file is checked against the manifest's
sha256 and size before it is handed out (once per process; later calls check the size), and a
file that fails is deleted and fetched again, a bounded number of times. Versions are immutable,
so a verified file stays valid; the manifest itself is cached on disk and a restarted run needs
the service only for files it does not have yet.

``decoded_shard`` keeps a second, uncompressed copy of a shard's token ids for the training
stream: decoding zstd Parquet lists costs more than all the rest of the data loading, so it is
done once per shard, shared by every DataLoader worker, rank and later run on the machine. The
trainer keeps these copies and the phase streams laid out from them in ``decoded_dir`` inside the
cache folder, so they count against the same byte cap and are evicted the same way: before a
phase starts, ``reserve`` makes room for what the phase will write there and ``hold`` keeps the
phase's own decoded files (matched by name prefix) from eviction until ``release_held``.

Files handed out by ``local_path`` are *in use* until ``release``: eviction (least recently
used first, by file mtime so concurrent processes on one cache agree) never touches them, and
``prefetch`` only fills free room, so it never pushes out what the run is reading or about to.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
import pyarrow.parquet as pq

from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import sha256_file
from midmix.publish import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

_DOWNLOAD_ATTEMPTS = 3
_MANIFEST = "manifest.json"


class VersionFiles(Protocol):
    """What the cache needs from ``midmix.service.client.MidmixClient``."""

    def manifest(self, version: str) -> dict: ...

    def download(self, version: str, path: str, dest: Path) -> Path: ...


class LocalVersions:
    """Mixture versions read straight from a midmix data directory (``DATA/mixtures/<version>``):
    the ``VersionFiles`` a host without the service trains from. The cache still checks sha256s."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "mixtures"

    def manifest(self, version: str) -> dict:
        path = self.root / version / _MANIFEST
        if not path.is_file():
            known = ", ".join(sorted(p.name for p in self.root.glob("mix-*"))) or "none"
            raise NotFoundError(f"mixture version {version!r} is not in {self.root}; known: {known}")
        return json.loads(path.read_text(encoding="utf-8"))

    def download(self, version: str, path: str, dest: Path) -> Path:
        source = self.root / version / path
        if not source.is_file():
            raise MidmixError(f"{path} of {version} is missing from {self.root / version}")
        with atomic_path(Path(dest)) as temporary:
            shutil.copyfile(source, temporary)
        return Path(dest)


class ShardCache:
    """Files of mixture ``version`` under ``cache_dir/version``, at most ``max_bytes`` in ``cache_dir``."""

    def __init__(self, client: VersionFiles, version: str, cache_dir: Path, max_bytes: int):
        if max_bytes <= 0:
            raise MidmixError(f"cache max_bytes must be > 0, got {max_bytes}")
        self.client = client
        self.version = version
        self.cache_dir = Path(cache_dir)
        self.root = self.cache_dir / version
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file_locks: dict[Path, threading.Lock] = {}
        self._verified: set[Path] = set()
        self._in_use: set[Path] = set()
        self._prefetched: set[Path] = set()
        self._held_prefixes: set[str] = set()
        self._closing = threading.Event()

    @property
    def decoded_dir(self) -> Path:
        """Where decoded shards and laid-out phase streams go (shared by every version in the cache)."""
        return self.cache_dir / "decoded"

    def manifest(self) -> dict:
        """The version's manifest, from disk when cached (versions never change), else the service."""
        path = self.root / _MANIFEST
        if path.is_file():
            return json.loads(path.read_text())
        manifest = self.client.manifest(self.version)
        atomic_write_text(path, json.dumps(manifest))
        return manifest

    def local_path(self, entry: dict) -> Path:
        """The verified local copy of a file entry (``path``, ``sha256``, ``bytes``), now in use."""
        path = self._fetch(entry, evict_prefetched=True)
        with self._lock:
            self._in_use.add(path)
            self._prefetched.discard(path)
        return path

    def release(self, entries: Iterable[dict]) -> None:
        """Mark files no longer in use, so eviction may remove them (e.g. after their phase)."""
        with self._lock:
            for entry in entries:
                self._in_use.discard(self._path_of(entry))

    def hold(self, prefixes: Iterable[str]) -> None:
        """Keep files under ``decoded_dir`` whose names start with one of ``prefixes`` from eviction."""
        with self._lock:
            self._held_prefixes.update(prefixes)

    def release_held(self, prefixes: Iterable[str]) -> None:
        """Let eviction take the decoded files held by ``hold`` again."""
        with self._lock:
            self._held_prefixes.difference_update(prefixes)

    def reserve(self, incoming: int) -> None:
        """Evict least recently used files not in use or held until ``incoming`` more bytes fit under the cap."""
        self._make_room(incoming, None, evict_prefetched=True)

    def prefetch(self, entries: Iterable[dict]) -> Future:
        """Download ``entries`` in order in a background thread while there is free room.

        Returns a Future of the paths fetched; a failure is logged and left for ``local_path``
        to retry and report, so a flaky prefetch never kills a run. The thread is a daemon, so
        it never holds up the end of a run (the client resumes a cut download next time).
        """
        future: Future = Future()
        wanted = list(entries)

        def run() -> None:
            try:
                future.set_result(self._prefetch(wanted))
            except Exception as error:  # noqa: BLE001 - handed to the caller through the Future
                future.set_exception(error)

        threading.Thread(target=run, name="midmix-prefetch", daemon=True).start()
        return future

    def close(self) -> None:
        """Stop prefetching after the file being downloaded now."""
        self._closing.set()

    def _prefetch(self, entries: list[dict]) -> list[Path]:
        fetched = []
        for entry in entries:
            if self._closing.is_set():
                break
            try:
                path = self._fetch(entry, evict_prefetched=False)
            except _NoRoom:
                break
            except MidmixError as error:
                log.warning("prefetch of %s failed: %s", entry.get("path"), error)
                continue
            with self._lock:
                if path not in self._in_use:
                    self._prefetched.add(path)
            fetched.append(path)
        return fetched

    def _fetch(self, entry: dict, evict_prefetched: bool) -> Path:
        path = self._path_of(entry)
        with self._file_lock(path):
            if self._is_valid(path, entry):
                os.utime(path)
                return path
            self._make_room(int(entry["bytes"]), path, evict_prefetched)
            for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
                error = self._download(entry, path)
                if error is None and self._is_valid(path, entry):
                    return path
                log.warning("download %d of %s failed: %s", attempt, entry["path"], error or "bad sha256 or size")
                path.unlink(missing_ok=True)
        problem = error or "its sha256 or size does not match the manifest; rebuild or re-publish the mixture"
        raise MidmixError(f"{entry['path']} of {self.version} failed after {_DOWNLOAD_ATTEMPTS} downloads: {problem}")

    def _download(self, entry: dict, path: Path) -> str | None:
        """One download attempt; returns why it failed, or None."""
        try:
            self.client.download(self.version, entry["path"], path)
        except MidmixError as error:
            return str(error)
        return None

    def _is_valid(self, path: Path, entry: dict) -> bool:
        """Size always, sha256 once per process: a file that fails is deleted."""
        if not path.is_file():
            return False
        if path.stat().st_size == int(entry["bytes"]) and (path in self._verified or sha256_file(path) == entry["sha256"]):
            self._verified.add(path)
            return True
        log.warning("%s is corrupt or truncated; fetching it again", path)
        self._verified.discard(path)
        path.unlink()
        return False

    def _make_room(self, incoming: int, target: Path | None, evict_prefetched: bool) -> None:
        """Evict least recently used files not in use until ``incoming`` bytes fit under the cap."""
        with self._lock:
            files = sorted(self._cached_files(), key=lambda item: item[2])
            used = sum(size for _, size, _ in files)
            protected = self._in_use | ({target} if evict_prefetched else self._prefetched | {target})
            for candidate, size, _ in files:
                if used + incoming <= self.max_bytes:
                    return
                if candidate in protected or self._is_held(candidate):
                    continue
                used -= size
                candidate.unlink(missing_ok=True)
                self._verified.discard(candidate)
                self._prefetched.discard(candidate)
            if used + incoming <= self.max_bytes:
                return
            if not evict_prefetched:
                raise _NoRoom()
            log.warning(
                "cache %s holds %d bytes in use; %s (%d bytes) goes over max_bytes %d",
                self.cache_dir, used, target.name if target else "decoded data", incoming, self.max_bytes,
            )

    def _is_held(self, path: Path) -> bool:
        return path.parent == self.decoded_dir and any(path.name.startswith(p) for p in self._held_prefixes)

    def _cached_files(self) -> list[tuple[Path, int, int]]:
        """(path, bytes, mtime) of every finished file in the cache; other processes may be changing it."""
        found = []
        for path in self.cache_dir.rglob("*"):
            if path.name == _MANIFEST or path.suffix in (".part", ".tmp", ".lock"):  # in flight, or tiny locks
                continue
            try:
                status = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file():
                found.append((path, status.st_size, status.st_mtime_ns))
        return found

    def _path_of(self, entry: dict) -> Path:
        relative = PurePosixPath(entry["path"])
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise MidmixError(f"manifest file path {entry['path']!r} must be relative and inside the version")
        return self.root / relative

    def _file_lock(self, path: Path) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault(path, threading.Lock())


class _NoRoom(Exception):
    """Prefetch stops: the next file fits only by evicting files in use or prefetched."""


def decoded_shard(
    path: Path, sha256: str, n_tokens: np.ndarray, decoded_dir: Path, where: str = "shard"
) -> tuple[np.ndarray, np.ndarray]:
    """A shard's ``input_ids`` as (flat uint32 ids, memory-mapped; int64 row offsets).

    Kept in ``decoded_dir/<sha256>.{ids,offsets}.npy``, named by content so any run may reuse
    them, and decoded under a file lock so concurrent workers and ranks decode a shard once.
    The offsets are checked against the shard's ``n_tokens`` on every open; a bad decoded copy
    is decoded again once, a shard that still disagrees raises.
    """
    decoded_dir.mkdir(parents=True, exist_ok=True)
    ids_path, offsets_path = decoded_dir / f"{sha256}.ids.npy", decoded_dir / f"{sha256}.offsets.npy"
    for attempt in range(2):
        if attempt or not ids_path.exists():
            with open(decoded_dir / f"{sha256}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if attempt or not ids_path.exists():
                    _decode(path, offsets_path, ids_path)
        decoded = _load_decoded(ids_path, offsets_path, n_tokens)
        if decoded is not None:
            for used in (ids_path, offsets_path):  # recently used, for the cache's eviction order
                os.utime(used)
            return decoded
    ids_path.unlink(missing_ok=True)
    raise MidmixError(
        f"{where}: input_ids of {path} disagree with its n_tokens column; the shard is corrupt, "
        "delete it from the cache and fetch it again"
    )


def _load_decoded(ids_path: Path, offsets_path: Path, n_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The decoded arrays if readable and consistent with ``n_tokens``, else None."""
    try:
        offsets = np.load(offsets_path)
        ids = np.asarray(np.load(ids_path, mmap_mode="r"))  # a plain view: slicing a np.memmap is slow
    except (OSError, ValueError):
        return None
    consistent = len(offsets) == len(n_tokens) + 1 and offsets[-1] == len(ids)
    return (ids, offsets) if consistent and np.array_equal(np.diff(offsets), n_tokens) else None


def _decode(path: Path, offsets_path: Path, ids_path: Path) -> None:
    """Write the shard's ids and offsets as .npy files; the ids file lands last (it marks completion)."""
    column = pq.read_table(path, columns=["input_ids"]).column(0).combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    ids = column.values.to_numpy()[offsets[0] : offsets[-1]]
    for target, array in ((offsets_path, offsets - offsets[0]), (ids_path, ids)):
        with atomic_path(target) as temporary, open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
