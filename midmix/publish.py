"""Atomic publication of a version directory: build in staging, then one rename.

A reader never sees a half-written version: either the final directory exists (complete,
with its manifest written last) or it does not. A killed build leaves only a staging
directory, which the next build of the same version removes and redoes.
"""

from __future__ import annotations

import os
import shutil
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
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable: without it a crash can lose the rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
