"""``midmix datasets``: list curated dataset versions, push them to an object store, pull them back."""

from __future__ import annotations

import argparse

from midmix.cli import add_data_dir_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach the ``datasets`` group to the ``midmix`` parser."""
    datasets = subparsers.add_parser(
        "datasets", help="list curated dataset versions, push them to a store, pull them back"
    )
    actions = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="published dataset versions, newest first")
    add_data_dir_argument(listing)
    listing.set_defaults(handler=list_command)
    add_push_parser(actions, "datasets")
    pull = actions.add_parser("pull", help="download a pushed version into the data directory (sha256 checked)")
    pull.add_argument("version")
    pull.add_argument("url", help="store root the version was pushed to")
    add_data_dir_argument(pull)
    pull.set_defaults(handler=pull_command)


def list_command(args: argparse.Namespace) -> int:
    """One line per published dataset version."""
    from midmix.pipelines.catalog import Catalog

    with Catalog(args.data_dir) as catalog:
        for dataset in catalog.datasets():
            print(f"{dataset['version']}  {dataset['docs']:>12,} docs  {dataset['tokens']:>14,} tokens")
    return 0


def add_push_parser(actions: argparse._SubParsersAction, kind: str) -> None:
    """``push VERSION URL`` for ``midmix datasets`` and ``midmix mixtures`` (``kind``: datasets or mixtures)."""
    push = actions.add_parser("push", help="mirror a published version to an object store (manifest last)")
    push.add_argument("version")
    push.add_argument("url", help=f"store root, e.g. s3://bucket/prefix; the version goes to URL/{kind}/VERSION")
    add_data_dir_argument(push)
    push.set_defaults(handler=push_command, kind=kind)


def push_command(args: argparse.Namespace) -> int:
    """Upload a published version to ``URL/<kind>/VERSION`` and print where it went."""
    from midmix.pipelines.mirror import push_version

    written = push_version(args.data_dir, args.kind, args.version, args.url)
    print(f"{args.kind.removesuffix('s')} {args.version}: {len(written)} files in {written[-1].rsplit('/', 1)[0]}")
    return 0


def pull_command(args: argparse.Namespace) -> int:
    """Download ``URL/datasets/VERSION`` into DATA/datasets/VERSION."""
    from midmix.pipelines.mirror import pull_version

    manifest = pull_version(args.data_dir, "datasets", args.version, args.url)
    print(
        f"dataset {args.version}: {len(manifest.get('files') or [])} files in {args.data_dir / 'datasets' / args.version}"
    )
    return 0
