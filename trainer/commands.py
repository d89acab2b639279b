"""``midmix train CONFIG``: train on a served mixture, with a progress bar and per-phase reports."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a small model on a mixture version served by `midmix serve`",
        description="Train phase by phase on a mixture version; resumes from the newest checkpoint. "
        "Run under torchrun for several processes (DDP).",
    )
    parser.add_argument("config", help="training config, YAML or JSON (see examples/train-demo.yaml)")
    parser.add_argument("--url", help="service URL (overrides service.url)")
    parser.add_argument("--mixture", help="mixture version to train on (overrides mixture)")
    parser.add_argument("--out", type=Path, help="output directory for metrics, plot, checkpoints (overrides out_dir)")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Load the config, train, and print each phase's loss, eval loss per domain and realized shares."""
    from tqdm import tqdm

    from midmix.trainer.config import load_train_config
    from midmix.trainer.train import train

    config = load_train_config(args.config).with_overrides(args.url, args.mixture, args.out)
    show = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    bar: tqdm | None = None

    def on_event(event: dict[str, Any]) -> None:
        nonlocal bar
        if not show:
            return
        if event["event"] == "phase_start":
            bar = tqdm(total=event["steps"], initial=event["start_step"], desc=f"phase {event['phase']}", unit="step")
        elif event["event"] == "step" and bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
        elif event["event"] == "phase_end":
            if bar is not None:
                bar.close()
            tqdm.write(format_phase_end(event))

    summary = train(config, on_event)
    if show:
        print(
            f"done: {summary['global_steps']} steps, data wait {100 * summary['data_wait_fraction']:.2f}% of step time; "
            f"metrics {summary['metrics']}, plot {summary.get('plot')}"
        )
    return 0


def format_phase_end(event: dict[str, Any]) -> str:
    """Phase report: mean loss of its last steps, held-out loss per domain, realized shares."""
    loss = "n/a" if event["loss"] is None else f"{event['loss']:.4f}"
    evals = ", ".join(f"{domain} {value:.4f}" for domain, value in event["eval"].items()) or "none"
    shares = event.get("shares") or {}
    padding = event.get("padding") or {}
    padded = (
        f" (last step completed with {padding['sequences']} padding sequences; {padding['tokens']} padding tokens in all)"
        if padding.get("tokens") else ""
    )
    return (
        f"phase {event['phase']}: {event['steps']} steps, train loss {loss}{padded}\n"
        f"  eval loss by domain: {evals}\n"
        f"  realized shares by component (manifest): {_format_shares(shares.get('components', {}))}\n"
        f"  realized shares by domain: {_format_shares(shares.get('domains', {}))}"
    )


def _format_shares(shares: dict[str, dict]) -> str:
    def one(name: str, entry: dict) -> str:
        target = f" ({entry['target']:.3f})" if "target" in entry else ""
        return f"{name} {entry['share']:.3f}{target}"

    return ", ".join(one(name, entry) for name, entry in shares.items()) or "n/a"
