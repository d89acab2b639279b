"""``midmix remote ...``: drive a running service over HTTP.

Client side only: it imports the core and ``midmix.service.client``, never server or pipelines
code, so it works from an install that only talks to a service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from midmix.errors import MidmixError

DEFAULT_URL = "http://127.0.0.1:8000"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach ``remote`` to the ``midmix`` command."""
    remote = subparsers.add_parser("remote", help="talk to a running midmix service")
    remote_commands = remote.add_subparsers(dest="remote_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("MIDMIX_URL", DEFAULT_URL))
    common.add_argument("--token", default=os.environ.get("MIDMIX_TOKEN"))

    build = remote_commands.add_parser("build", parents=[common], help="build a mixture from a spec file")
    build.add_argument("spec", type=Path, help="mixture spec, YAML or JSON")
    build.add_argument("--wait", action="store_true", help="wait for the build, showing its progress")
    build.add_argument("--print-version", action="store_true", help="print only the built version (with --wait)")
    build.set_defaults(handler=_remote_build)

    plan = remote_commands.add_parser("plan", parents=[common], help="dry-run a mixture spec")
    plan.add_argument("spec", type=Path)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=_remote_plan)

    status = remote_commands.add_parser("status", parents=[common], help="show a job")
    status.add_argument("job")
    status.set_defaults(handler=_remote_status)

    listing = remote_commands.add_parser("list", parents=[common], help="list mixture versions")
    listing.set_defaults(handler=_remote_list)

    show = remote_commands.add_parser("show", parents=[common], help="show a mixture version")
    show.add_argument("version")
    show.add_argument("--json", action="store_true", help="print the raw manifest")
    show.set_defaults(handler=_remote_show)


def _client(args: argparse.Namespace):
    from midmix.service.client import MidmixClient

    return MidmixClient(args.url, token=args.token)


def _read_spec(path: Path) -> dict:
    from midmix.config_files import read_mapping_file

    return read_mapping_file(path, "mixture spec")


def _remote_build(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.build(_read_spec(args.spec))
        if not args.wait:
            print(json.dumps(job, indent=2))
            return 0
        job = _wait_with_bar(client, job["id"])
    if job["state"] != "succeeded":
        raise MidmixError(f"build job {job['id']} {job['state']}: {job.get('error') or 'no error recorded'}")
    print(job["result"] if args.print_version else f"built {job['result']} (job {job['id']})")
    return 0


def _wait_with_bar(client, job_id: str) -> dict:
    from tqdm import tqdm

    with tqdm(
        total=100, unit="%", desc=job_id, file=sys.stderr, bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}"
    ) as bar:

        def show(job: dict) -> None:
            bar.n = round(job.get("progress") or 0.0, 1)
            eta = f" eta {job['eta_s']:.0f}s" if job.get("eta_s") is not None else ""
            bar.set_postfix_str(f"{job['state']} {job.get('step') or ''} {job.get('docs_done', 0)} docs{eta}")

        return client.wait(job_id, poll=0.5, on_progress=show)


def _remote_plan(args: argparse.Namespace) -> int:
    from midmix.reports import format_plan

    with _client(args) as client:
        plan = client.plan(_read_spec(args.spec))
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


def _remote_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.job(args.job), indent=2))
    return 0


def _remote_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for mixture in client.mixtures():
            phases = ", ".join(f"{phase['name']}={phase.get('tokens') or 0:,}" for phase in mixture["phases"])
            print(f"{mixture['version']}  {mixture.get('name') or '':<20} {mixture['created_at'][:19]}  {phases}")
    return 0


def _remote_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        manifest = client.manifest(args.version)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"{manifest['version']}  {manifest.get('name', '')}  tokenizer={manifest['tokenizer']['kind']}")
    for phase in manifest["phases"]:
        print(
            f"  phase {phase['name']}: {phase.get('tokens', 0):,} / {phase.get('token_budget', 0):,} tokens, "
            f"seq_len {phase.get('seq_len')}"
        )
        for component in phase["components"]:
            print(
                f"    {component['name']:<16} weight {component.get('weight', 0):.3f}  "
                f"{component.get('realized_tokens', 0):>12,} tokens  epochs {component.get('epochs', 0):.2f}  "
                f"{len(component.get('shards', []))} shard(s)"
            )
    for name, entry in (manifest.get("eval") or {}).items():
        print(f"  eval {name}: {entry['path']} ({entry.get('rows', 0)} rows)")
    return 0
