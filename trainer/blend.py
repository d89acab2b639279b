"""Token-level blending: which component supplies each training sequence of a phase.

Each component packs its own documents, in curriculum order, into ``seq_len`` sequences
(``sequence_tokens`` counts the document tokens each one holds), and the phase interleaves those
sequences, so a stretch of training holds each component in proportion to its *tokens*, whatever
its documents' lengths (the request of Megatron-Energon #212; blending documents by count, as
Megatron's ``BlendedDataset`` does with samples, lets long documents crowd out short ones).

The interleaving is Megatron-LM's rule (``build_blending_indices``: at each position take the
component furthest behind its target after this position) on tokens, plus the same deficit over
the last ``WINDOW_SEQUENCES`` sequences: the target of component
``c`` once ``T`` of the phase's ``R`` document tokens are trained is ``R_c * G_c(T / R)``, with
``R_c`` its tokens in the manifest and ``G_c`` its normalised cumulative weight: ``x`` for a
constant weight, the integral of its schedule (``midmix.mixture_schedule``) otherwise. So every
component ends with the phase, whole-phase shares equal the manifest's, and a schedule is
followed step by step. With two components any window holds each within about one sequence of
its target. With five, windows stray further: on
realistic 5-way mixes the prefix rule alone let 64-sequence windows drift up to 2.1 pp (1.3
sequences), the window term holds them to 1.6 pp, for up to 0.1 pp more drift in 512-sequence
windows (``bench/bench_blend.py``). A closed-form merge by due time, which this module used
before, is vectorised but drifts further with five components, so the rule runs as a plain loop:
0.84 CPU-s per million sequences, once per phase (then kept beside the laid-out stream).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from midmix.errors import MidmixError
from midmix.mixture_schedule import Segment

WINDOW_SEQUENCES = 64
"""The rule also keeps each component on target over the last this many sequences (see the module docstring)."""


def sequence_tokens(n_tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Document tokens (EOS excluded) among the inputs of each of a component's sequences.

    The component's stream is its documents each followed by EOS; sequence ``k`` has the inputs
    ``stream[k * seq_len : (k + 1) * seq_len]``, the last one padded (``stream_sequences``).
    """
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    ends = np.cumsum(n_tokens + 1)
    total = int(ends[-1]) if len(ends) else 0
    sequences = stream_sequences(total, seq_len)
    inputs = np.minimum(seq_len, total - seq_len * np.arange(sequences, dtype=np.int64))
    eos = np.bincount((ends - 1) // seq_len, minlength=sequences)[:sequences]
    return inputs - eos


def stream_sequences(stream_tokens: int, seq_len: int) -> int:
    """Sequences a component stream of ``stream_tokens`` makes: every token after the first is a target once."""
    return max(1, -(-(stream_tokens - 1) // seq_len)) if stream_tokens else 0


def blend_sequences(
    sizes: Sequence[np.ndarray], schedules: Sequence[list[Segment]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The phase's sequence order: (component int16, sequence index within it int64) per position.

    ``sizes[c][k]`` is the document tokens of component ``c``'s sequence ``k``; ``schedules[c]``
    its weight segments (None: constant weights, i.e. shares equal to the components' tokens).
    """
    if schedules is not None and len(schedules) != len(sizes):
        raise MidmixError(f"{len(sizes)} components but {len(schedules)} weight schedules")
    if len(sizes) > np.iinfo(np.int16).max:
        raise MidmixError(f"at most {np.iinfo(np.int16).max} components can be blended, got {len(sizes)}")
    lists = [np.asarray(size, dtype=np.int64).tolist() for size in sizes]
    lengths = [len(values) for values in lists]
    own = [sum(values) for values in lists]
    total, count = sum(own), sum(lengths)
    component = np.empty(count, dtype=np.int16)
    index = np.empty(count, dtype=np.int64)
    if count == 0:
        return component, index
    if total <= 0:  # no document tokens at all: plain round robin by sequence counts
        own, lists = lengths, [[1] * length for length in lengths]
    if schedules is None:
        _blend_constant(lists, own, component, index)
    else:
        _blend_scheduled(lists, [float(value) for value in own], [WeightCurve(s) for s in schedules], component, index)
    return component, index


def _blend_constant(lists: list[list[int]], own: list[int], component: np.ndarray, index: np.ndarray) -> None:
    """Constant weights (each component's share of the tokens), the deficits in exact integers so that
    ties go to the lower component index on every machine: scaled by ``total * count``, the prefix
    deficit is ``own_c * (consumed * count + total) - taken_c * total * count``, the window's alike.
    Written for speed: a plain loop over ints, no calls inside."""
    total, count, width = sum(own), len(component), len(lists)
    lengths, scale = [len(values) for values in lists], total * count
    # The deficit of c is own_c * (consumed + window) * count + 2 * own_c * total - (taken_c + in_window_c) * scale.
    both = [0] * width  # taken_c + in_window_c, times scale
    constant = [2 * value * total for value in own]
    position = [0] * width
    recent_component, recent_tokens = [0] * WINDOW_SEQUENCES, [0] * WINDOW_SEQUENCES
    consumed_and_window = 0  # consumed + window tokens
    picks, indices = [0] * count, [0] * count
    for slot in range(count):
        best, pick = None, 0
        ahead = consumed_and_window * count
        for c in range(width):
            if position[c] < lengths[c]:
                deficit = own[c] * ahead + constant[c] - both[c]
                if best is None or deficit > best:
                    best, pick = deficit, c
        k = position[pick]
        position[pick] = k + 1
        tokens = lists[pick][k]
        both[pick] += 2 * tokens * scale
        consumed_and_window += 2 * tokens
        picks[slot], indices[slot] = pick, k
        # The window holds the last WINDOW_SEQUENCES - 1 sequences: drop the one that falls out.
        ring = slot % WINDOW_SEQUENCES
        recent_component[ring], recent_tokens[ring] = pick, tokens
        if slot >= WINDOW_SEQUENCES - 1:
            old = (slot + 1) % WINDOW_SEQUENCES  # slot - (WINDOW_SEQUENCES - 1)
            both[recent_component[old]] -= recent_tokens[old] * scale
            consumed_and_window -= recent_tokens[old]
    component[:] = picks
    index[:] = indices


def _blend_scheduled(
    lists: list[list[int]], own: list[float], curves: list[WeightCurve], component: np.ndarray, index: np.ndarray
) -> None:
    """Scheduled weights: component ``c``'s target after ``T`` tokens is ``own_c * G_c(T / total)``."""
    total, count = sum(own), len(component)
    lengths, ahead = [len(values) for values in lists], total / count  # the mean sequence: Megatron's "i + 1"
    taken, consumed, position = [0.0] * len(lists), 0.0, [0] * len(lists)
    recent, in_window, window_tokens = deque(), [0] * len(lists), 0
    for slot in range(count):
        progress, window_start = (consumed + ahead) / total, (consumed - window_tokens) / total
        best, pick = -math.inf, -1
        for c, curve in enumerate(curves):
            if position[c] < lengths[c]:
                due = curve.cumulative(progress)
                deficit = own[c] * due - taken[c] + own[c] * (due - curve.cumulative(window_start)) - in_window[c]
                if deficit > best:
                    best, pick = deficit, c
        k = position[pick]
        position[pick] = k + 1
        tokens = lists[pick][k]
        taken[pick] += tokens
        consumed += tokens
        component[slot], index[slot] = pick, k
        window_tokens = _slide(recent, in_window, pick, tokens, window_tokens)


def _slide(recent: deque, in_window: list[int], pick: int, tokens: int, window_tokens: int) -> int:
    """Add the sequence just placed to the window of the last ``WINDOW_SEQUENCES - 1``; returns its tokens."""
    recent.append((pick, tokens))
    in_window[pick] += tokens
    window_tokens += tokens
    if len(recent) >= WINDOW_SEQUENCES:
        dropped, dropped_tokens = recent.popleft()
        in_window[dropped] -= dropped_tokens
        window_tokens -= dropped_tokens
    return window_tokens


class WeightCurve:
    """``G(x)``: the fraction of a component's tokens due by phase progress ``x``, from its weight segments."""

    def __init__(self, segments: list[Segment]):
        if not segments:
            raise MidmixError("a weight schedule needs at least one segment")
        self._rows = [(s.start, s.end, s.begin, s.finish) for s in segments]
        self._ends = [s.end for s in segments]
        self._levels = [0.0]
        for segment in segments:
            self._levels.append(self._levels[-1] + segment.integral())

    def cumulative(self, progress: float) -> float:
        """G at ``progress`` (clipped to [0, 1]); a schedule that is zero throughout counts as constant."""
        progress = min(max(progress, 0.0), 1.0)
        if self._levels[-1] <= 0:
            return progress
        at = min(bisect.bisect_left(self._ends, progress), len(self._rows) - 1)
        start, end, begin, finish = self._rows[at]
        offset = progress - start
        slope = (finish - begin) / (2 * (end - start)) if end > start else 0.0
        return (self._levels[at] + begin * offset + slope * offset * offset) / self._levels[-1]
