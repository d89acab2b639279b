"""Reading a mixture manifest: its phases, each phase's shards, every file it lists.

The manifest (``docs/ARCHITECTURE.md``, "Mixture version") is the contract between the build,
the service and the trainer; these are the only walks over it, so all three agree on what a
phase's shards are and in which order.
"""

from __future__ import annotations

from midmix.errors import NotFoundError


def find_phase(manifest: dict, name: str) -> dict:
    """The phase called ``name``; an unknown name lists the phases there are."""
    for phase in manifest.get("phases") or []:
        if phase["name"] == name:
            return phase
    known = ", ".join(phase["name"] for phase in manifest.get("phases") or [])
    raise NotFoundError(f"mixture {manifest.get('version')} has no phase {name!r}; its phases are: {known}")


def phase_shards(phase: dict) -> list[tuple[str, dict]]:
    """``(component name, shard entry)`` for every shard of a phase, components in manifest order."""
    return [
        (component["name"], shard)
        for component in phase.get("components") or []
        for shard in component.get("shards") or []
    ]


def listed_files(manifest: dict) -> dict[str, str]:
    """Relative path -> sha256 of every file a mixture manifest lists (shards, eval, tokenizer)."""
    files = {shard["path"]: shard["sha256"] for phase in manifest.get("phases") or [] for _, shard in phase_shards(phase)}
    for entry in (manifest.get("eval") or {}).values():
        files[entry["path"]] = entry["sha256"]
    tokenizer = manifest.get("tokenizer") or {}
    if tokenizer.get("path"):
        files[tokenizer["path"]] = tokenizer["sha256"]
    return files
