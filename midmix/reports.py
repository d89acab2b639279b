"""Plain-text tables of a mixture plan, shared by ``midmix plan`` and ``midmix remote plan``.

Both have the plan as JSON-shaped data (the remote side gets it over HTTP and must not import
the planner), so the table is drawn from that.
"""

from __future__ import annotations

from typing import Any


def format_plan(plan: dict[str, Any]) -> str:
    """The plan (``MixturePlan.model_dump()``) as one table per phase."""
    tokenizer = plan["tokenizer"]
    approximate = "" if plan.get("tokens_exact", True) else "  [token counts approximate]"
    lines = [
        f"mixture {plan['name']}  tokenizer {tokenizer['kind']} (vocab {tokenizer['vocab_size']})"
        f"  datasets {', '.join(plan['datasets'])}{approximate}"
    ]
    header = (
        f"  {'component':<16}{'weight':>8}{'docs':>9}{'avail tok':>13}{'request tok':>13}{'epochs':>8}{'cap':>6}"
        "  thresholds / problem"
    )
    for phase in plan["phases"]:
        lines.append(
            f"phase {phase['index']} '{phase['name']}': budget {phase['token_budget']:,} tokens, "
            f"seq_len {phase['seq_len']}, rope_theta {phase['rope_theta']:g}, "
            f"general share {phase['reserved_general_ratio']:g}"
        )
        lines.extend(_long_context_lines(phase))
        lines.append(header)
        for c in phase["components"]:
            note = c.get("problem") or ", ".join(f"{k} >= {v:.4g}" for k, v in c["thresholds"].items())
            epochs = "inf" if c["epochs"] < 0 else f"{c['epochs']:.2f}"
            lines.append(
                f"  {c['name']:<16}{c['weight']:>8.4f}{c['available_docs']:>9,}{c['available_tokens']:>13,}"
                f"{c['requested_tokens']:>13,}{epochs:>8}{c['max_epochs']:>6g}  {note}"
            )
            if _varies(c.get("schedule")):
                lines.append(f"  {'':<16}weight over the phase: {_schedule_text(c['schedule'])}")
            for bucket in c.get("buckets") or []:
                lines.append(
                    f"  {'':<16}bucket {bucket['min_tokens']:,}-{bucket['max_tokens']:,} tokens ({bucket['weight']:.0%}):"
                    f" {bucket['available_docs']:,} docs, {bucket['available_tokens']:,} available,"
                    f" {bucket['requested_tokens']:,} requested, {bucket['epochs']:.2f} epochs"
                )
    if plan.get("eval"):
        held = ", ".join(f"{domain} {entry['docs']} docs" for domain, entry in plan["eval"].items())
        lines.append(f"eval (held out): {held}")
    return "\n".join(lines)


def _long_context_lines(phase: dict[str, Any]) -> list[str]:
    """The phase's RoPE scaling and length-bucket targets, when it has them."""
    lines = []
    scaling = phase.get("rope_scaling")
    if scaling:
        lines.append(
            f"  rope scaling {scaling.get('kind', 'yarn')} x{scaling['factor']:g}"
            f" (from {scaling.get('original_seq_len') or 'the previous phase'} tokens)"
        )
    buckets = phase.get("length_buckets")
    if buckets:
        shares = ", ".join(f"{b['min_tokens']:,}-{b['max_tokens']:,} tokens {b['weight']:.0%}" for b in buckets)
        lines.append(f"  length buckets: {shares}")
    return lines


def _varies(segments: list[dict[str, Any]] | None) -> bool:
    """Whether a component's weight changes over the phase (a constant one needs no extra line)."""
    return bool(segments) and len({value for s in segments for value in (s["from"], s["to"])}) > 1


def _schedule_text(segments: list[dict[str, Any]]) -> str:
    """Segments (``midmix.mixture_schedule``) as ``w@x`` breakpoints, e.g. ``0.30@0 -> 0.50@1``."""
    points = [(segments[0]["start"], segments[0]["from"])]
    for segment in segments:
        if segment["from"] != points[-1][1]:  # a step
            points.append((segment["start"], segment["from"]))
        points.append((segment["end"], segment["to"]))
    return " -> ".join(f"{weight:.3g}@{at:.3g}" for at, weight in points)
