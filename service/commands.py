"""``midmix serve``: run the HTTP service over a data directory (``midmix remote`` is the client side)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from midmix.paths import DATA_DIR_ENV, DEFAULT_DATA_DIR


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach ``serve`` to the ``midmix`` command."""
    serve = subparsers.add_parser("serve", help="run the HTTP service over a data directory")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (beyond loopback, tokens are required)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_DIR_ENV} or ./{DEFAULT_DATA_DIR}")
    serve.add_argument("--config", type=Path, default=None, help="YAML/JSON settings (tokens, input_roots, ...)")
    serve.add_argument("--workers", type=int, default=1, help="HTTP worker processes")
    serve.add_argument("--job-workers", type=int, default=None, help="jobs run at once (default 1)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="listen beyond loopback without write or read tokens (anyone who reaches the port may use it)",
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from midmix.service.jobs.processes import SETTINGS_ENV
    from midmix.service.settings import check_exposure, load_settings

    settings = load_settings(args.config, data_dir=args.data_dir, job_workers=args.job_workers)
    for risk in check_exposure(settings, args.host, args.insecure):
        banner = f"midmix serve: WARNING (--insecure): {risk}"
        print("!" * 100 + "\n" + banner + "\n" + "!" * 100, file=sys.stderr)
        logging.getLogger("midmix.service").warning(banner)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    # Each worker process builds its own app from these settings (uvicorn factory mode) and removes
    # them from its environment at once (they hold the tokens).
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    print(f"midmix serve: {settings.data_dir} on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(
        "midmix.service.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0
