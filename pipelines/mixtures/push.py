"""Mirror a published mixture version to an object store, where the service can serve it from.

The layout in the store is the data directory's: ``<url>/mixtures/<version>/...``, so a service
whose ``shard_store`` is ``<url>`` finds the version by its name. The manifest is uploaded last,
so a reader that sees it sees every file it lists.
"""

from __future__ import annotations

from pathlib import Path

from midmix import storage
from midmix.errors import NotFoundError


def push_mixture(data_dir: Path, version: str, url: str) -> list[str]:
    """Upload ``data_dir/mixtures/<version>`` to ``<url>/mixtures/<version>``; returns the written URLs."""
    root = Path(data_dir) / "mixtures"
    version_dir = root / version
    if Path(version).name != version or not (version_dir / "manifest.json").is_file():
        known = (
            sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file())
            if root.is_dir()
            else []
        )
        raise NotFoundError(
            f"no published mixture {version!r} in {root}; published: {', '.join(known) or 'none'} "
            "(see `midmix mixtures list`)"
        )
    return storage.put_tree(version_dir, f"{str(url).rstrip('/')}/mixtures/{version}")
