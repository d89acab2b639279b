"""Differences between two mixture versions, per phase and component, down to document ids."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from midmix.errors import NotFoundError


def diff_mixtures(a: dict, b: dict, data_dir: Path) -> dict:
    """Token changes and doc ids added/removed per (phase, component) from manifest ``a`` to ``b``.

    Doc ids are read from the shards' ``doc_id`` column of both versions under ``data_dir``.
    """
    root = Path(data_dir)
    phases_a, phases_b = _by_name(a["phases"]), _by_name(b["phases"])
    phases = []
    for name in list(phases_a) + [n for n in phases_b if n not in phases_a]:
        pa_, pb = phases_a.get(name), phases_b.get(name)
        comps_a = _by_name(pa_["components"]) if pa_ else {}
        comps_b = _by_name(pb["components"]) if pb else {}
        components = [
            diff_component(name, comp, comps_a.get(comp), comps_b.get(comp), root / "mixtures" / a["version"],
                           root / "mixtures" / b["version"])
            for comp in list(comps_a) + [c for c in comps_b if c not in comps_a]
        ]  # fmt: skip
        phases.append({
            "name": name, "status": _status(pa_, pb),
            "tokens_a": pa_["tokens"] if pa_ else 0, "tokens_b": pb["tokens"] if pb else 0,
            "tokens_delta": (pb["tokens"] if pb else 0) - (pa_["tokens"] if pa_ else 0),
            "components": components,
        })  # fmt: skip
    return {"a": a["version"], "b": b["version"], "phases": phases}


def diff_component(phase: str, name: str, a: dict | None, b: dict | None, dir_a: Path, dir_b: Path) -> dict:
    """One component's token change and the doc ids only in ``a`` (removed) or only in ``b`` (added)."""
    ids_a = _doc_ids(a, dir_a)
    ids_b = _doc_ids(b, dir_b)
    tokens_a = a["realized_tokens"] if a else 0
    tokens_b = b["realized_tokens"] if b else 0
    return {
        "name": name, "status": _status(a, b), "tokens_a": tokens_a, "tokens_b": tokens_b,
        "tokens_delta": tokens_b - tokens_a, "weight_a": a["weight"] if a else None, "weight_b": b["weight"] if b else None,
        "docs_added": sorted(ids_b - ids_a), "docs_removed": sorted(ids_a - ids_b),
        "unique_docs_a": len(ids_a), "unique_docs_b": len(ids_b),
    }  # fmt: skip


def _doc_ids(component: dict | None, version_dir: Path) -> set[str]:
    if component is None:
        return set()
    ids: set[str] = set()
    for shard in component["shards"]:
        path = version_dir / shard["path"]
        if not path.is_file():
            raise NotFoundError(f"shard {path} is missing; is {version_dir.parent.parent} the right data dir?")
        ids.update(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist())
    return ids


def _by_name(items: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in items}


def _status(a: dict | None, b: dict | None) -> str:
    return "added" if a is None else "removed" if b is None else "changed"
