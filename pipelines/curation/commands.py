"""``midmix curate``: turn a folder of JSONL (or any supported input) into a dataset version."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from midmix.cli import add_data_dir_argument


def register(subparsers: Any) -> None:
    """Attach ``curate`` to the ``midmix`` command."""
    parser = subparsers.add_parser(
        "curate",
        help="curate corpora into a versioned dataset (filters, classifiers, dedup, decontamination)",
        description="Curate INPUT files, globs or folders (JSONL, JSONL.gz, Parquet, HF datasets on disk) "
        "into DATA/datasets/<version>. Without --config the bundled default classifiers are trained or loaded.",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="files, globs, folders or fsspec URLs (override the config's inputs)"
    )
    add_data_dir_argument(parser, "--out")
    parser.add_argument("--config", help="curation config (YAML or JSON) for full control")
    parser.add_argument("--tasks", type=int, help="parallel tasks (local executor); default from the config, else 1")
    parser.set_defaults(handler=run_curate)


def _config_from_args(args: argparse.Namespace) -> Any:
    from midmix.errors import MidmixError
    from midmix.pipelines.curation.config import CurationConfig, load_config, parse_config

    if args.config:
        config = load_config(args.config)
        if args.inputs:
            config = config.model_copy(update={"inputs": list(args.inputs)})
    elif args.inputs:
        config = CurationConfig(inputs=list(args.inputs))
    else:
        raise MidmixError("give at least one INPUT or a --config with 'inputs'")
    if args.tasks is not None:
        if args.tasks < 1:
            raise MidmixError("--tasks must be at least 1")
        executor = config.executor.model_dump()
        executor["tasks"] = args.tasks
        config = parse_config({**config.model_dump(), "executor": executor}, "from --tasks")
    return config


def run_curate(args: argparse.Namespace) -> int:
    """Curate, then print the version, the counts per step and where the files are."""
    from midmix.pipelines.curation.curate import curate_corpus
    from midmix.progress import ProgressBars

    config = _config_from_args(args)
    with ProgressBars() as bars:
        manifest = curate_corpus(config, Path(args.data_dir), progress=bars)
    version = manifest["version"]
    if manifest.get("state") == "submitted":
        print(f"submitted {version}; work files in {manifest['work_dir']}")
        return 0
    print(f"dataset {version}: {manifest['counts']['docs']} docs, {manifest['counts']['tokens']} tokens")
    for step in manifest["steps"]:
        dropped = ", ".join(f"{reason} {count}" for reason, count in step["dropped"].items())
        print(f"  {step['name']:<11} {step['docs_in']:>8} -> {step['docs_out']:<8} {dropped}")
    print(f"wrote {Path(args.data_dir) / 'datasets' / version}")
    return 0
