"""blend_schedule: deterministic, exact totals, and every window holds the target ratio."""

from __future__ import annotations

import time

import numpy as np
import pytest

from midmix.errors import MidmixError
from midmix.trainer.blend import blend_schedule


def _max_window_deviation(schedule: np.ndarray, weights: list[float], window: int = 1000) -> float:
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    worst = 0.0
    for component, share in enumerate(shares):
        counts = np.concatenate([[0], np.cumsum(schedule == component)])
        worst = max(worst, float(np.abs(counts[window:] - counts[:-window] - window * share).max()))
    return worst


def _greedy(weights: list[float], total: int) -> np.ndarray:
    """Megatron-LM's build_blending_indices, one position at a time (the reference)."""
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    counts = np.zeros(len(shares))
    out = np.empty(total, dtype=np.int16)
    for position in range(total):
        out[position] = np.argmax(shares * (position + 1) - counts)
        counts[out[position]] += 1
    return out


@pytest.mark.parametrize("weights", [[0.7, 0.3], [5, 4, 3, 2, 1], [0.25, 0.25, 0.25, 0.25], [0.9, 0.05, 0.05]])
def test_every_1000_document_window_is_within_one_document_of_target(weights):
    schedule = blend_schedule(weights, 50_000)
    assert _max_window_deviation(schedule, weights) <= 1.0 + 1e-9


def test_component_rows_as_weights_use_every_row_exactly():
    rows = [7_001, 2_999, 1_234]
    schedule = blend_schedule(rows, sum(rows))
    assert np.bincount(schedule).tolist() == rows
    assert schedule.dtype == np.int16


def test_all_components_end_together():
    rows = [700, 300]
    schedule = blend_schedule(rows, 1000)
    last = [int(np.flatnonzero(schedule == c)[-1]) for c in range(2)]
    assert min(last) >= 1000 - 4


def test_two_components_follow_the_megatron_greedy_rule_within_a_document():
    weights = [0.7, 0.3]
    ours = np.cumsum(blend_schedule(weights, 5000) == 0)
    greedy = np.cumsum(_greedy(weights, 5000) == 0)
    assert np.abs(ours - greedy).max() <= 1


def test_schedule_is_a_prefix_of_a_longer_schedule():
    weights = [3, 2, 2]
    assert np.array_equal(blend_schedule(weights, 7_000)[:1_000], blend_schedule(weights, 1_000))


def test_zero_weight_component_is_never_chosen():
    schedule = blend_schedule([1, 0, 1], 100)
    assert set(schedule.tolist()) == {0, 2}


def test_ten_million_positions_take_well_under_two_cpu_seconds():
    # CPU time, not wall time: the CI machine's cores are shared with other test runs.
    started = time.process_time()
    schedule = blend_schedule([5, 4, 3, 2, 1], 10_000_000)
    assert time.process_time() - started < 2.0
    targets = np.array([5, 4, 3, 2, 1]) * 10_000_000 / 15
    assert np.abs(np.bincount(schedule) - targets).max() <= 1


@pytest.mark.parametrize("weights", [[], [-1, 2], [0, 0], [float("nan"), 1]])
def test_bad_weights_raise(weights):
    with pytest.raises(MidmixError, match="blend weights"):
        blend_schedule(weights, 10)
