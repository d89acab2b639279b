"""``midmix plan|build|mixtures|tokenizer``: mixture subcommands (registered by ``midmix.cli``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from midmix.cli import add_data_dir_argument
from midmix.pipelines.commands import add_push_parser

STORE_ENV = "MIDMIX_SHARD_STORE"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach the mixture subcommands to the ``midmix`` parser."""
    plan = subparsers.add_parser("plan", help="check a mixture spec against the catalog and print the plan")
    plan.add_argument("spec", type=Path, help="mixture spec (YAML or JSON)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_data_dir_argument(plan)
    plan.set_defaults(handler=plan_command)

    build = subparsers.add_parser("build", help="materialise a mixture spec into a published mixture version")
    build.add_argument("spec", type=Path, help="mixture spec (YAML or JSON)")
    build.add_argument("--tasks", type=int, help="parallel build tasks (same bytes for any count); default 1")
    build.add_argument("--executor", type=Path, help="executor config, e.g. {kind: ray, tasks: 64} (docs/SCALE.md)")
    build.add_argument("--store", default=os.environ.get(STORE_ENV),
                       help=f"object store to pull dataset versions missing here from (default: ${STORE_ENV})")  # fmt: skip
    add_data_dir_argument(build)
    build.set_defaults(handler=build_command)

    mixtures = subparsers.add_parser("mixtures", help="list, show and diff mixture versions")
    actions = mixtures.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="published mixture versions, newest first")
    add_data_dir_argument(listing)
    listing.set_defaults(handler=list_command)
    show = actions.add_parser("show", help="one version's manifest as JSON")
    show.add_argument("version")
    add_data_dir_argument(show)
    show.set_defaults(handler=show_command)
    diff = actions.add_parser("diff", help="per phase and component changes from version A to B")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument("--json", action="store_true", help="print the full diff (with doc ids) as JSON")
    add_data_dir_argument(diff)
    diff.set_defaults(handler=diff_command)
    add_push_parser(actions, "mixtures")

    tokenizer = subparsers.add_parser("tokenizer", help="train and check tokenizers")
    tok_actions = tokenizer.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = tok_actions.add_parser("train", help="train a byte-level BPE tokenizer on a curated dataset")
    train.add_argument("--dataset", required=True, help='curated dataset version, or "latest"')
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", type=Path, required=True, help="tokenizer JSON file to write")
    add_data_dir_argument(train)
    train.set_defaults(handler=tokenizer_train_command)
    check = tok_actions.add_parser("check", help="say which encoder a tokenizer gets; with --dataset, compare ids with HF")
    check.add_argument("path", type=Path, help="tokenizer JSON file")
    check.add_argument("--dataset", help='curated dataset version (or "latest") whose texts to encode both ways')
    add_data_dir_argument(check)
    check.set_defaults(handler=tokenizer_check_command)


def plan_command(args: argparse.Namespace) -> int:
    """Print the plan; exit 2 with the problems when it is infeasible."""
    from midmix.errors import MidmixError
    from midmix.pipelines.catalog import Catalog
    from midmix.pipelines.mixtures.plan import plan_mixture
    from midmix.pipelines.mixtures.spec import load_spec
    from midmix.reports import format_plan

    with Catalog(args.data_dir) as catalog:
        plan = plan_mixture(load_spec(args.spec), catalog, strict=False)
    if args.json:
        print(json.dumps(plan.model_dump(), indent=2))
    else:
        print(format_plan(plan.model_dump()))
    if plan.problems:
        raise MidmixError("; ".join(plan.problems))
    return 0


def build_command(args: argparse.Namespace) -> int:
    """Build with progress bars; print the version and per-phase figures."""
    from midmix.pipelines.executors import load_executor
    from midmix.pipelines.mixtures.build import materialize_mixture
    from midmix.pipelines.mixtures.spec import load_spec
    from midmix.progress import ProgressBars

    spec, executor = load_spec(args.spec), load_executor(args.executor, args.tasks)
    with ProgressBars() as bars:
        manifest = materialize_mixture(spec, args.data_dir, bars, executor, store=args.store)
    if manifest.get("state") == "submitted":
        print(f"mixture {manifest['version']}: submitted to Slurm; the last job publishes it (work in {manifest['work_dir']})")
        return 0
    print(f"mixture {manifest['version']} ({manifest['name']}) in {args.data_dir / 'mixtures' / manifest['version']}")
    for phase in manifest["phases"]:
        parts = ", ".join(f"{c['name']} {c['realized_tokens']:,} ({c['epochs']:.2f} ep)" for c in phase["components"])
        print(f"  {phase['name']}: {phase['tokens']:,} / {phase['token_budget']:,} tokens, {phase['docs']:,} docs: {parts}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    """One line per published mixture version."""
    from midmix.pipelines.catalog import Catalog

    with Catalog(args.data_dir) as catalog:
        for mixture in catalog.mixtures():
            print(f"{mixture['version']}  {mixture['name']:<24}{mixture['tokens']:>14,} tokens  phases: {', '.join(mixture['phases'])}")
    return 0


def show_command(args: argparse.Namespace) -> int:
    """Print one version's manifest."""
    from midmix.pipelines.catalog import Catalog

    with Catalog(args.data_dir) as catalog:
        print(json.dumps(catalog.mixture(args.version), indent=2))
    return 0


def diff_command(args: argparse.Namespace) -> int:
    """Print per phase and component token changes and doc counts added/removed."""
    from midmix.pipelines.catalog import Catalog

    with Catalog(args.data_dir) as catalog:
        diff = catalog.diff(args.a, args.b)
    if args.json:
        print(json.dumps(diff, indent=2))
        return 0
    print(f"{diff['a']} -> {diff['b']}")
    for phase in diff["phases"]:
        print(f"phase '{phase['name']}' ({phase['status']}): {phase['tokens_a']:,} -> {phase['tokens_b']:,} tokens ({phase['tokens_delta']:+,})")
        for c in phase["components"]:
            print(f"  {c['name']:<16}{c['status']:<9}{c['tokens_delta']:>+14,} tokens  "
                  f"+{len(c['docs_added'])} / -{len(c['docs_removed'])} docs")  # fmt: skip
    return 0


def tokenizer_train_command(args: argparse.Namespace) -> int:
    """Train byte-level BPE on a curated dataset and report the file written."""
    from midmix.pipelines.catalog import Catalog
    from midmix.pipelines.tokenizer_train import dataset_texts, train_tokenizer

    with Catalog(args.data_dir) as catalog:
        version = catalog.resolve_dataset(args.dataset)
        manifest = catalog.dataset(version)
    files = [f["path"] for f in manifest["files"] if f["path"].startswith("data/")]
    result = train_tokenizer(dataset_texts(args.data_dir / "datasets" / version, files), args.vocab_size, args.out)
    print(f"tokenizer {result['path']}: vocab {result['vocab_size']}, eos_id {result['eos_id']} (trained on {version})")
    return 0


def tokenizer_check_command(args: argparse.Namespace) -> int:
    """Print the encoder choice; with --dataset, encode it with HF and the fast encoder and compare."""
    from midmix.errors import MidmixError
    from midmix.pipelines.catalog import Catalog
    from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec
    from midmix.pipelines.tokenizer_fast import compare_with_hf
    from midmix.pipelines.tokenizer_train import dataset_texts

    tokenizer = Tokenizer(TokenizerSpec(kind="hf", path=str(args.path)))
    print(f"{args.path}: {tokenizer.fast_path.reason}")
    if not args.dataset:
        return 0
    with Catalog(args.data_dir) as catalog:
        version = catalog.resolve_dataset(args.dataset)
        manifest = catalog.dataset(version)
    files = [f["path"] for f in manifest["files"] if f["path"].startswith("data/")]
    result = compare_with_hf(args.path.read_text(encoding="utf-8"), dataset_texts(args.data_dir / "datasets" / version, files))
    rates = f"HF encode_batch {result['tokens'] / max(result['hf_cpu_s'], 1e-9):,.0f} tokens/CPU-s"
    if result["encoder"] == "tiktoken":
        rates += f", fast {result['tokens'] / max(result['fast_cpu_s'], 1e-9):,.0f} tokens/CPU-s"
    print(f"{version}: {result['docs']:,} docs, {result['tokens']:,} tokens, {result['mismatched_docs']} docs with other ids; {rates}")
    if result["mismatched_docs"]:
        raise MidmixError(f"the fast encoder differs from HF on {result['mismatched_docs']} docs, e.g. {result['first_mismatch']!r}")
    return 0
