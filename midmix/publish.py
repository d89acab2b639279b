"""Atomic writes: single files and whole version directories appear complete or not at all.

Files: write to a unique temporary name beside the target, fsync it, rename it into place, fsync
the directory (``atomic_path``, ``atomic_write_text``, ``atomic_write_bytes``, ``atomic_copy``;
streaming writers use ``temporary_sibling`` + ``commit_file``). Versions: build in a staging
directory, then one rename (``publishing``, which also serialises builds of one version). A reader
never sees a half-written file or version; a killed build leaves only temporary names, which the
next build of the same version removes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from midmix.errors import MidmixError

STAGING_DIR = ".staging"
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def publishing(final_dir: Path) -> Iterator[Path]:
    """Yield a fresh staging directory; on success rename it to ``final_dir`` atomically.

    Builds of one version hold a lock for the whole build, so two of them never share or replace
    each other's staging; the staging name is unique, and leftovers of a killed build of the version
    are removed by the next one. On failure the staging directory is removed (a full disk becomes a
    one-line ``MidmixError``). If ``final_dir`` appeared meanwhile, it is the same version (same
    bytes) published by another builder: it is kept and this build's staging is dropped.
    """
    staging_root = final_dir.parent / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    with _locked(staging_root / f"{final_dir.name}.lock"):
        for stale in staging_root.glob(f"{final_dir.name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        staging = staging_root / f"{final_dir.name}.{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir()
            yield staging
            _fsync_tree(staging)
            if final_dir.exists():
                shutil.rmtree(staging)
            else:
                os.replace(staging, final_dir)
                fsync_dir(final_dir.parent)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if is_out_of_space(error):
                raise MidmixError(
                    f"no space left on the device holding {final_dir.parent} while publishing {final_dir.name} "
                    f"({error}); nothing was published: free space there and run again"
                ) from error
            raise


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock``, released if the holder dies); the file goes with it.

    The holder removes the lock file before releasing it, so a waiter that then gets the lock on the
    removed file sees that the path no longer names it and takes the lock again on a fresh file.
    """
    while True:
        handle = open(lock_file, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.stat(lock_file).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        lock_file.unlink(missing_ok=True)
        handle.close()  # closing releases the lock


def is_out_of_space(error: BaseException) -> bool:
    """A full disk or quota, however the writer reports it (pyarrow's errors carry no errno)."""
    return isinstance(error, OSError) and (error.errno in _NO_SPACE or "No space left on device" in str(error))


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            fsync_file(path)
    fsync_dir(root)


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path``: concurrent writers of one target never share a temp file."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def commit_file(temporary: Path, path: Path) -> None:
    """Make a fully written ``temporary`` durable and rename it to ``path`` (replacing any old file)."""
    fsync_file(temporary)
    os.replace(temporary, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        commit_file(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` atomically and durably."""
    with atomic_path(path) as temporary:
        shutil.copyfile(source, temporary)


def fsync_file(path: Path) -> None:
    """Flush a file's bytes to disk, so a rename of it cannot outlive its content in a crash."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable: without it a crash can lose the rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
