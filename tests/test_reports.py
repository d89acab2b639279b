"""The plan table: what `midmix plan` and `midmix remote plan` print from a plan's JSON."""

from __future__ import annotations

from midmix.reports import format_plan


def _component(name: str, weight: float, **extra) -> dict:
    return {"name": name, "weight": weight, "available_docs": 10, "available_tokens": 5_000, "requested_tokens": 1_000,
            "epochs": 0.2, "max_epochs": 4, "thresholds": {}, "problem": None, **extra}  # fmt: skip


def _plan(phase: dict) -> dict:
    base = {"index": 0, "token_budget": 2_000, "seq_len": 512, "rope_theta": 10_000.0, "reserved_general_ratio": 0.0}
    return {"name": "p", "tokenizer": {"kind": "bytes", "vocab_size": 257}, "datasets": ["ds-1"],
            "phases": [{**base, **phase}], "eval": {}}  # fmt: skip


def test_a_scheduled_weight_prints_its_breakpoints_and_a_constant_one_does_not() -> None:
    rising = [{"start": 0.0, "end": 1.0, "from": 0.3, "to": 0.7}]
    falling = [{"start": 0.0, "end": 1.0, "from": 0.7, "to": 0.3}]
    constant = [{"start": 0.0, "end": 1.0, "from": 0.5, "to": 0.5}]
    text = format_plan(_plan({"name": "anneal", "components": [
        _component("math", 0.5, schedule=rising), _component("web", 0.5, schedule=falling),
        _component("flat", 0.0, schedule=constant)]}))  # fmt: skip
    assert "weight over the phase: 0.3@0 -> 0.7@1" in text
    assert "weight over the phase: 0.7@0 -> 0.3@1" in text
    assert text.count("weight over the phase") == 2


def test_a_step_schedule_shows_the_jump() -> None:
    steps = [{"start": 0.0, "end": 0.5, "from": 0.2, "to": 0.2}, {"start": 0.5, "end": 1.0, "from": 0.6, "to": 0.6}]
    text = format_plan(_plan({"name": "anneal", "components": [_component("math", 0.4, schedule=steps)]}))
    assert "0.2@0 -> 0.2@0.5 -> 0.6@0.5 -> 0.6@1" in text


def test_long_context_phase_prints_rope_scaling_and_length_buckets() -> None:
    buckets = [{"min_tokens": 4096, "max_tokens": 16384, "weight": 0.25}, {"min_tokens": 16384, "max_tokens": 32768, "weight": 0.75}]
    per_component = [{**bucket, "available_docs": 3, "available_tokens": 9_000, "requested_tokens": 500, "epochs": 0.06}
                     for bucket in buckets]  # fmt: skip
    text = format_plan(_plan({"name": "long", "rope_scaling": {"kind": "yarn", "factor": 4.0, "original_seq_len": 8192},
                              "length_buckets": buckets, "components": [_component("long-web", 1.0, buckets=per_component)]}))  # fmt: skip
    assert "rope scaling yarn x4 (from 8192 tokens)" in text
    assert "length buckets: 4,096-16,384 tokens 25%, 16,384-32,768 tokens 75%" in text
    assert "bucket 16,384-32,768 tokens (75%): 3 docs, 9,000 available, 500 requested, 0.06 epochs" in text
