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
        lines.append(header)
        for c in phase["components"]:
            note = c.get("problem") or ", ".join(f"{k} >= {v:.4g}" for k, v in c["thresholds"].items())
            epochs = "inf" if c["epochs"] < 0 else f"{c['epochs']:.2f}"
            lines.append(
                f"  {c['name']:<16}{c['weight']:>8.4f}{c['available_docs']:>9,}{c['available_tokens']:>13,}"
                f"{c['requested_tokens']:>13,}{epochs:>8}{c['max_epochs']:>6g}  {note}"
            )
    if plan.get("eval"):
        held = ", ".join(f"{domain} {entry['docs']} docs" for domain, entry in plan["eval"].items())
        lines.append(f"eval (held out): {held}")
    return "\n".join(lines)
