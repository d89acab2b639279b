"""blend_sequences: Megatron's rule on tokens, exact totals, schedules followed; sequence_tokens."""

from __future__ import annotations

import time

import numpy as np
import pytest

from midmix.errors import MidmixError
from midmix.mixture_schedule import Segment
from midmix.trainer.blend import WINDOW_SEQUENCES, WeightCurve, blend_sequences, sequence_tokens


def _greedy(rows: list[int], total: int) -> np.ndarray:
    """Megatron-LM's build_blending_indices, one position at a time, in exact integers (the reference):
    take the first component with the largest ``weight * (position + 1) - count``."""
    counts = [0] * len(rows)
    out = np.empty(total, dtype=np.int16)
    for position in range(total):
        deficits = [row * (position + 1) - count * sum(rows) for row, count in zip(rows, counts)]
        out[position] = deficits.index(max(deficits))
        counts[out[position]] += 1
    return out


def _max_window_deviation(order: np.ndarray, weights: list[float], window: int) -> float:
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    worst = 0.0
    for component, share in enumerate(shares):
        counts = np.concatenate([[0], np.cumsum(order == component)])
        worst = max(worst, float(np.abs(counts[window:] - counts[:-window] - window * share).max()))
    return worst


@pytest.mark.parametrize("rows", [[700, 300], [500, 400, 300, 200, 100], [250, 250, 250, 250]])
def test_equal_sequences_start_with_the_megatron_greedy_order(rows):
    """Until the window is full its deficit is the prefix's, so the order is Megatron's exactly."""
    order, index = blend_sequences([np.full(n, 512) for n in rows])
    assert np.array_equal(order[:WINDOW_SEQUENCES], _greedy(rows, sum(rows))[:WINDOW_SEQUENCES])
    for component, n in enumerate(rows):
        assert np.array_equal(index[order == component], np.arange(n))  # each component in its own order


@pytest.mark.parametrize("rows", [[450, 200, 150, 100, 100], [300, 250, 200, 150, 100], [7, 5, 3, 2, 1]])
def test_five_way_windows_stay_closer_than_the_prefix_rule_alone(rows):
    rows = [r * 40 if r < 100 else r * 4 for r in rows]
    order, _ = blend_sequences([np.full(n, 512) for n in rows])
    ours = _max_window_deviation(order, rows, WINDOW_SEQUENCES)
    megatron = _max_window_deviation(_greedy(rows, sum(rows)), rows, WINDOW_SEQUENCES)
    assert ours <= 1.0 + 1e-9 and ours <= megatron
    assert _max_window_deviation(order, rows, 512) < 1.5


@pytest.mark.parametrize("weights", [[0.7, 0.3], [0.5, 0.5], [0.9, 0.1]])
def test_two_components_hold_every_window_within_one_sequence(weights):
    rows = [int(w * 20_000) for w in weights]
    order, _ = blend_sequences([np.full(n, 100) for n in rows])
    for window in (8, 64, 1000):
        assert _max_window_deviation(order, weights, window) <= 1.0 + 1e-9


def test_shares_are_of_tokens_not_sequences():
    """A component whose sequences hold half as many document tokens (short documents, many EOS)
    gets twice the sequences, so tokens, not sequences, follow the weights."""
    dense, sparse = np.full(3000, 500), np.full(6000, 250)
    order, index = blend_sequences([dense, sparse])
    tokens = np.where(order == 0, 500, 250)
    for begin in range(0, len(order) - 64, 8):
        window = slice(begin, begin + 64)
        share = tokens[window][order[window] == 0].sum() / tokens[window].sum()
        assert abs(share - 0.5) < 1 / 64 + 1e-9


def test_every_prefix_holds_each_component_within_one_sequence_of_tokens():
    """So components also end together: none runs out more than a sequence's tokens early."""
    rng = np.random.default_rng(0)
    sizes = [rng.integers(300, 513, n) for n in (700, 300, 90)]
    order, index = blend_sequences(sizes)
    tokens = np.array([sizes[c][k] for c, k in zip(order, index)])
    consumed = np.cumsum(tokens)
    shares = np.array([s.sum() for s in sizes]) / tokens.sum()
    for c in range(3):
        taken = np.cumsum(np.where(order == c, tokens, 0))
        assert np.abs(taken - shares[c] * consumed).max() <= 512


def test_a_linear_schedule_is_followed_sequence_by_sequence():
    """70/30 -> 30/70 over the phase: the prefix of component 0 tracks the integral of its weight."""
    sizes = [np.full(5000, 512), np.full(5000, 512)]
    schedules = [[Segment(0.0, 1.0, 0.7, 0.3)], [Segment(0.0, 1.0, 0.3, 0.7)]]
    order, _ = blend_sequences(sizes, schedules)
    progress = np.arange(1, len(order) + 1) / len(order)
    taken = np.cumsum(order == 0)
    expected = len(order) * (0.7 * progress - 0.2 * progress**2)
    assert np.abs(taken - expected).max() < 1.5
    first, last = order[:1000], order[-1000:]
    assert abs((first == 0).mean() - 0.68) < 0.01 and abs((last == 0).mean() - 0.32) < 0.01


def test_weight_curve_integrates_linear_and_step_segments():
    curve = WeightCurve([Segment(0.0, 0.5, 0.2, 0.2), Segment(0.5, 1.0, 0.6, 0.6)])  # a step at half way
    assert curve.cumulative(0.5) == pytest.approx(0.25)
    assert curve.cumulative(1.0) == pytest.approx(1.0)
    linear = WeightCurve([Segment(0.0, 1.0, 0.0, 1.0)])
    assert linear.cumulative(0.5) == pytest.approx(0.25)
    assert linear.cumulative(2.0) == 1.0 and linear.cumulative(-1) == 0.0


def test_sequence_tokens_counts_document_tokens_of_each_sequences_inputs():
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 40, 200)
    stream = np.concatenate([np.r_[np.ones(n), 0] for n in lengths])  # 1 = document token, 0 = EOS
    seq_len = 16
    got = sequence_tokens(lengths, seq_len)
    count = -(-(len(stream) - 1) // seq_len)
    assert len(got) == count
    expected = [int(stream[k * seq_len : (k + 1) * seq_len].sum()) for k in range(count)]
    assert got.tolist() == expected
    assert got.sum() == lengths.sum()


def test_a_million_sequences_take_under_two_cpu_seconds():
    # CPU time, not wall time: the CI machine's cores are shared with other test runs.
    rng = np.random.default_rng(0)
    sizes = [rng.integers(500, 513, n) for n in (450_000, 200_000, 150_000, 100_000, 100_000)]
    started = time.process_time()
    order, _ = blend_sequences(sizes)
    assert time.process_time() - started < 2.0
    assert np.bincount(order).tolist() == [450_000, 200_000, 150_000, 100_000, 100_000]


def test_mismatched_schedules_raise():
    with pytest.raises(MidmixError, match="2 components but 1 weight schedules"):
        blend_sequences([np.ones(3), np.ones(3)], [[Segment(0, 1, 1, 1)]])
