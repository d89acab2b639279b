"""``run.json``: a small read-only summary of a training run, for the service's run view.

Written by rank 0 into the run's output folder at every phase end (atomically, so a reader never
sees half a file), from ``metrics.jsonl`` and the manifest alone, so a resumed run rewrites the
same summary. Per trained phase: steps, last loss, held-out loss per domain, padding, each
component's manifest share beside its realized share over the whole phase, and the realized
shares of every logging window with their targets. ``midmix serve`` lists the runs whose output
folder is under its data directory (``DATA/runs/<name>/run.json``, where the demo trains).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from midmix.publish import atomic_write_text
from midmix.trainer.metrics import read_metrics

RUN_SUMMARY = "run.json"


def run_summary(metrics_path: Path, manifest: dict, phases: list[dict]) -> dict[str, Any]:
    """The summary of the run whose metrics are at ``metrics_path``, trained on ``phases`` of ``manifest``."""
    records = read_metrics(metrics_path)
    steps = [record for record in records if record["kind"] == "step"]
    ends = {record["phase"]: record for record in records if record["kind"] == "phase_end"}
    summary_phases = []
    for phase in phases:
        mine = [record for record in steps if record["phase"] == phase["name"]]
        if not mine:
            continue
        total = sum(c["realized_tokens"] for c in phase["components"]) or 1
        end = ends.get(phase["name"])
        summary_phases.append({
            "name": phase["name"], "seq_len": phase["seq_len"], "steps_trained": len(mine),
            "complete": end is not None, "loss": mine[-1]["loss"],
            "eval": end["eval"] if end else {}, "padding": end.get("padding") if end else None,
            "manifest": {c["name"]: c["realized_tokens"] / total for c in phase["components"]},
            "scheduled": any(c.get("schedule") for c in phase["components"]),
            "realized": end["shares"]["components"] if end else None,
            "windows": [
                {"steps": record["shares"]["steps"], "global_step": record["global_step"],
                 "components": {name: {"share": e["share"], "target": e["target"]}
                                for name, e in record["shares"]["components"].items()}}
                for record in mine if "shares" in record
            ],
        })  # fmt: skip
    return {
        "kind": "run", "mixture": manifest["version"], "mixture_name": manifest.get("name"),
        "global_steps": len(steps), "phases": summary_phases,
    }  # fmt: skip


def write_run_summary(out_dir: Path, manifest: dict, phases: list[dict]) -> Path:
    """Write ``out_dir/run.json`` from ``out_dir/metrics.jsonl``."""
    path = Path(out_dir) / RUN_SUMMARY
    atomic_write_text(path, json.dumps(run_summary(Path(out_dir) / "metrics.jsonl", manifest, phases), indent=1))
    return path
