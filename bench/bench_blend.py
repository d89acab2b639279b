"""Sequence blending: how far a window of training strays from the token shares, ours vs Megatron's rule.

Peer: Megatron-LM's ``build_blending_indices`` rule (take the component furthest behind its target
over the whole prefix) applied to the same sequences with token sizes. Ours:
``trainer.blend.blend_sequences`` (the same rule plus the deficit over the last 64 sequences).
Mixes: log-normal document lengths per component packed into 512-token sequences, a few seeds
each, for a 70/30, a length-ordered 50/50 and two 5-way mixes. Reported: the largest deviation of
any component's token share from its target over windows of 16, 64, 128 and 512 sequences (windows
start every 8 sequences, a global batch), in pp, and CPU seconds per million sequences.

    python bench/bench_blend.py [--seeds 8] [--tokens 4000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from midmix.trainer.blend import blend_sequences, sequence_tokens

SEQ_LEN = 512
MIXES = {
    "70/30 shuffled": ([0.7, 0.3], [600, 3000], False),
    "50/50 length-ordered": ([0.5, 0.5], [100, 3000], True),
    "5-way 45/20/15/10/10": ([0.45, 0.2, 0.15, 0.1, 0.1], [300, 900, 120, 1500, 60], False),
    "5-way 30/25/20/15/10": ([0.3, 0.25, 0.2, 0.15, 0.1], [200, 400, 800, 100, 1000], False),
}
WINDOWS = (16, 64, 128, 512)


def prefix_rule(sizes: list[np.ndarray]) -> np.ndarray:
    """Megatron's rule on tokens: at each position the component furthest behind its share of the prefix."""
    lists = [size.tolist() for size in sizes]
    own = [sum(values) for values in lists]
    total, count = sum(own), sum(len(values) for values in lists)
    ahead, taken, consumed, position = total / count, [0] * len(lists), 0, [0] * len(lists)
    order = np.empty(count, dtype=np.int16)
    for slot in range(count):
        deficits = [own[c] / total * (consumed + ahead) - taken[c] if position[c] < len(lists[c]) else -np.inf
                    for c in range(len(lists))]  # fmt: skip
        pick = int(np.argmax(deficits))
        tokens = lists[pick][position[pick]]
        position[pick] += 1
        taken[pick] += tokens
        consumed += tokens
        order[slot] = pick
    return order


def deviation(order: np.ndarray, sizes: list[np.ndarray], window: int) -> float:
    """Largest |token share - target| (pp) of any component over windows of ``window`` sequences."""
    position = np.zeros(len(sizes), dtype=np.int64)
    tokens = np.empty(len(order))
    for slot, component in enumerate(order.tolist()):
        tokens[slot] = sizes[component][position[component]]
        position[component] += 1
    targets = np.array([size.sum() for size in sizes], dtype=np.float64) / tokens.sum()
    per = np.zeros((len(order), len(sizes)))
    per[np.arange(len(order)), order] = tokens
    prefix = np.vstack([np.zeros(len(sizes)), np.cumsum(per, axis=0)])
    starts = np.arange(0, len(order) - window + 1, 8)
    sums = prefix[starts + window] - prefix[starts]
    return 100 * float(np.abs(sums / sums.sum(axis=1, keepdims=True) - targets).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4_000_000, help="tokens per mix")
    args = parser.parse_args()
    print(f"worst window deviation over {args.seeds} seeds, pp (ours / Megatron prefix rule); seq_len {SEQ_LEN}")
    print(f"{'mix':24s} " + " ".join(f"{f'{w} seq':>15s}" for w in WINDOWS))
    for name, (shares, means, ordered) in MIXES.items():
        worst = {window: [0.0, 0.0] for window in WINDOWS}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            sizes = []
            for share, mean in zip(shares, means):
                lengths = np.maximum(1, rng.lognormal(np.log(mean), 1.2, int(3 * args.tokens * share / mean) + 10))
                lengths = lengths.astype(np.int64)[np.cumsum(lengths.astype(np.int64)) <= args.tokens * share]
                sizes.append(sequence_tokens(np.sort(lengths) if ordered else lengths, SEQ_LEN))
            ours, peer = blend_sequences(sizes)[0], prefix_rule(sizes)
            for window in WINDOWS:
                worst[window][0] = max(worst[window][0], deviation(ours, sizes, window))
                worst[window][1] = max(worst[window][1], deviation(peer, sizes, window))
        print(f"{name:24s} " + " ".join(f"{o:6.2f} / {p:6.2f}" for o, p in (worst[w] for w in WINDOWS)))
    rng = np.random.default_rng(0)
    sizes = [rng.integers(500, SEQ_LEN + 1, n) for n in (450_000, 200_000, 150_000, 100_000, 100_000)]
    started = time.process_time()
    blend_sequences(sizes)
    print(f"ours: {time.process_time() - started:.2f} CPU-s for 1,000,000 sequences of 5 components")


if __name__ == "__main__":
    main()
