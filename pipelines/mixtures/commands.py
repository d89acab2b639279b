"""``midmix plan|build|mixtures|tokenizer``: mixture subcommands (registered by ``midmix.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from midmix.cli import add_data_dir_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach the mixture subcommands to the ``midmix`` parser."""
    plan = subparsers.add_parser("plan", help="check a mixture spec against the catalog and print the plan")
    plan.add_argument("spec", type=Path, help="mixture spec (YAML or JSON)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_data_dir_argument(plan)
    plan.set_defaults(handler=plan_command)

    build = subparsers.add_parser("build", help="materialise a mixture spec into a published mixture version")
    build.add_argument("spec", type=Path, help="mixture spec (YAML or JSON)")
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
    push = actions.add_parser("push", help="mirror a published version to an object store (manifest last)")
    push.add_argument("version")
    push.add_argument("url", help="store root, e.g. s3://bucket/prefix; the version goes to URL/mixtures/VERSION")
    add_data_dir_argument(push)
    push.set_defaults(handler=push_command)

    tokenizer = subparsers.add_parser("tokenizer", help="train tokenizers")
    tok_actions = tokenizer.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = tok_actions.add_parser("train", help="train a byte-level BPE tokenizer on a curated dataset")
    train.add_argument("--dataset", required=True, help='curated dataset version, or "latest"')
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", type=Path, required=True, help="tokenizer JSON file to write")
    add_data_dir_argument(train)
    train.set_defaults(handler=tokenizer_train_command)


def plan_command(args: argparse.Namespace) -> int:
    """Print the plan; exit 2 with the problems when it is infeasible."""
    from midmix.errors import MidmixError
    from midmix.pipelines.catalog import Catalog
    from midmix.pipelines.mixtures.plan import plan_mixture
    from midmix.pipelines.mixtures.spec import load_spec

    with Catalog(args.data_dir) as catalog:
        plan = plan_mixture(load_spec(args.spec), catalog, strict=False)
    if args.json:
        print(json.dumps(plan.model_dump(), indent=2))
    else:
        print(format_plan(plan))
    if plan.problems:
        raise MidmixError("; ".join(plan.problems))
    return 0


def format_plan(plan) -> str:
    """The plan as one table per phase."""
    lines = [f"mixture {plan.name}  tokenizer {plan.tokenizer['kind']} (vocab {plan.tokenizer['vocab_size']})"
             f"  datasets {', '.join(plan.datasets)}" + ("" if plan.tokens_exact else "  [token counts approximate]")]
    header = f"  {'component':<16}{'weight':>8}{'docs':>9}{'avail tok':>13}{'request tok':>13}{'epochs':>8}{'cap':>6}  thresholds / problem"
    for phase in plan.phases:
        lines.append(f"phase {phase.index} '{phase.name}': budget {phase.token_budget:,} tokens, seq_len {phase.seq_len}, "
                     f"rope_theta {phase.rope_theta:g}, general share {phase.reserved_general_ratio:g}")
        lines.append(header)
        for c in phase.components:
            note = c.problem or ", ".join(f"{k} >= {v:.4g}" for k, v in c.thresholds.items())
            epochs = "inf" if c.epochs < 0 else f"{c.epochs:.2f}"
            lines.append(f"  {c.name:<16}{c.weight:>8.4f}{c.available_docs:>9,}{c.available_tokens:>13,}"
                         f"{c.requested_tokens:>13,}{epochs:>8}{c.max_epochs:>6g}  {note}")
    if plan.eval:
        held = ", ".join(f"{domain} {e.docs} docs" for domain, e in plan.eval.items())
        lines.append(f"eval (held out): {held}")
    return "\n".join(lines)  # fmt: skip


def build_command(args: argparse.Namespace) -> int:
    """Build with progress bars; print the version and per-phase figures."""
    from tqdm import tqdm

    from midmix.pipelines.mixtures.build import materialize_mixture
    from midmix.pipelines.mixtures.spec import load_spec

    bar: tqdm | None = None

    def progress(step: str, done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None or bar.desc != step:
            if bar is not None:
                bar.close()
            bar = tqdm(desc=step, total=total, unit="doc", file=sys.stderr, leave=False)
        bar.total = total
        bar.update(done - bar.n)

    manifest = materialize_mixture(load_spec(args.spec), args.data_dir, progress)
    if bar is not None:
        bar.close()
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


def push_command(args: argparse.Namespace) -> int:
    """Upload a published mixture version to ``URL/mixtures/VERSION`` and print where it went."""
    from midmix.pipelines.mixtures.push import push_mixture

    written = push_mixture(args.data_dir, args.version, args.url)
    print(f"mixture {args.version}: {len(written)} files in {written[-1].rsplit('/', 1)[0]}")
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
