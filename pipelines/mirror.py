"""Mirror published versions to an object store and back: ``midmix datasets|mixtures push``, ``datasets pull``.

The store's layout is the data directory's: ``<url>/<kind>/<version>/...`` with ``kind`` ``datasets``
or ``mixtures``, so a service whose ``shard_store`` is ``<url>`` lists and serves what was pushed.
Pushing uploads every file of the version with ``manifest.json`` last, so a reader that sees the
manifest sees every file it lists; a push that fails half-way leaves no manifest and nothing that
lists or serves it. Pulling downloads the files a manifest lists, checks each one's sha256, and
publishes the version locally in one rename (``midmix.publish.publishing``), manifest last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from midmix import storage
from midmix.errors import MidmixError, NotFoundError
from midmix.mixture_manifest import listed_files
from midmix.publish import publishing

Kind = Literal["datasets", "mixtures"]
_NOUNS = {"datasets": "dataset", "mixtures": "mixture"}


def store_location(url: str, kind: Kind, version: str) -> str:
    """Where ``version`` of ``kind`` lives in the store rooted at ``url``."""
    return f"{str(url).rstrip('/')}/{kind}/{version}"


def push_version(data_dir: Path, kind: Kind, version: str, url: str) -> list[str]:
    """Upload ``data_dir/<kind>/<version>`` to ``<url>/<kind>/<version>``, manifest last; the written URLs."""
    root = Path(data_dir) / kind
    version_dir = root / version
    if Path(version).name != version or not (version_dir / "manifest.json").is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []
        raise NotFoundError(
            f"no published {_NOUNS[kind]} {version!r} in {root}; published: {', '.join(known) or 'none'} "
            f"(see `midmix {kind} list`)"
        )
    storage.resolve(url)  # a missing fsspec driver is a one-line error before anything is written
    try:
        return storage.put_tree(version_dir, store_location(url, kind, version))
    except OSError as error:
        raise MidmixError(
            f"push of {_NOUNS[kind]} {version} to {url} failed ({error}); nothing is published there "
            "(the manifest goes last); run the same push again"
        ) from error


def version_files(manifest: dict) -> dict[str, str]:
    """Relative path -> sha256 of every file a dataset or mixture manifest lists."""
    if manifest.get("kind") == "dataset":
        return {entry["path"]: entry["sha256"] for entry in manifest.get("files") or []}
    return listed_files(manifest)


def pull_version(data_dir: Path, kind: Kind, version: str, url: str) -> dict:
    """Download ``<url>/<kind>/<version>`` into the data directory (checked, published atomically); its manifest.

    An already published local version is returned as it is.
    """
    final = Path(data_dir) / kind / version
    if (final / "manifest.json").is_file():
        return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
    if Path(version).name != version or version.startswith("."):
        raise NotFoundError(f"{version!r} is not a version name")
    location = store_location(url, kind, version)
    if not storage.exists(f"{location}/manifest.json"):
        raise NotFoundError(
            f"no {_NOUNS[kind]} {version!r} in {url} (no {location}/manifest.json); push it with `midmix {kind} push`"
        )
    with storage.open_file(f"{location}/manifest.json") as handle:
        body = handle.read()
    manifest = json.loads(body)
    with publishing(final) as staging:
        for relative, sha256 in sorted(version_files(manifest).items()):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.fetch_file(f"{location}/{relative}", target)
            if storage.sha256(target) != sha256:
                raise MidmixError(
                    f"{location}/{relative} does not match its manifest's sha256; the store copy is damaged"
                )
        (staging / "manifest.json").write_bytes(body)
    return manifest
