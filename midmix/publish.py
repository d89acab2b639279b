"""Atomic writes: single files and whole version directories appear complete or not at all.

Files: write to a unique temporary name beside the target, fsync it, rename it into place, fsync
the directory (``atomic_path``, ``atomic_write_text``, ``atomic_write_bytes``, ``atomic_copy``;
streaming writers use ``temporary_sibling`` + ``commit_file``). Versions: build in a staging
directory, then one rename (``publishing``). A reader never sees a half-written file or version;
a killed build leaves only temporary names, which the next build of the same version redoes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STAGING_DIR = ".staging"


def staging_path(final_dir: Path) -> Path:
    """Where the build of ``final_dir`` is written before it is published."""
    return final_dir.parent / STAGING_DIR / final_dir.name


@contextmanager
def publishing(final_dir: Path) -> Iterator[Path]:
    """Yield a fresh staging directory; on success rename it to ``final_dir`` atomically."""
    staging = staging_path(final_dir)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    yield staging
    _fsync_tree(staging)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final_dir)
    fsync_dir(final_dir.parent)


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
