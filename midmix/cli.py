"""The ``midmix`` command: one entry point, subcommands registered by each package.

Each package owns its subcommands in a ``commands`` module exposing ``register(subparsers)``;
handlers import their heavy dependencies lazily so ``midmix --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from midmix import __version__
from midmix.errors import MidmixError
from midmix.paths import DATA_DIR_ENV, DEFAULT_DATA_DIR, default_data_dir

COMMAND_MODULES = (
    "midmix.classifiers.commands",
    "midmix.pipelines.curation.commands",
    "midmix.pipelines.commands",
    "midmix.pipelines.mixtures.commands",
    "midmix.service.commands",
    "midmix.service.remote_commands",
    "midmix.trainer.commands",
)


def add_data_dir_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """The one ``--data-dir`` option every local command shares (env ``MIDMIX_DATA_DIR`` sets its default)."""
    parser.add_argument(
        *aliases,
        "--data-dir",
        dest="data_dir",
        type=Path,
        default=default_data_dir(),
        help=f"midmix data directory (default: ${DATA_DIR_ENV} or ./{DEFAULT_DATA_DIR})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every package's subcommands attached."""
    parser = argparse.ArgumentParser(prog="midmix", description="Mid-training data: curate, mix, serve, train.")
    parser.add_argument("--version", action="version", version=f"midmix {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and exit 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except MidmixError as error:
        print(f"midmix {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"midmix {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
