"""Ratio control in every training window, measured on what the loader yields.

Each component's documents use their own range of token ids, so a window's token share per
component is counted from the ``input_ids`` the DataLoader delivers (EOS and padding excluded),
not from the stream's own bookkeeping. Three phases as the issue asks: a 50/50 phase whose
components are both ordered by length (one of short documents, one of long), a shuffled 70/30,
and a 5-way; plus a linear 70/30 -> 30/70 schedule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import SHARD_SCHEMA
from midmix.trainer.packing import IGNORE_INDEX
from midmix.trainer.phase_stream import PhaseStream

EOS = 256
SEQ_LEN = 128
GLOBAL_BATCH = 8  # so 8 global batches are 64 sequences, 64 batches 512
ID_RANGE = 40  # component c's tokens are c * 40 ... c * 40 + 39


def _lengths(rng: np.random.Generator, tokens: int, mean: float, ordered: bool) -> np.ndarray:
    """Log-normal document lengths adding up to about ``tokens``, sorted when the curriculum is by length."""
    lengths = np.maximum(1, rng.lognormal(np.log(mean), 1.0, size=int(4 * tokens / mean) + 10)).astype(np.int64)
    lengths = lengths[np.cumsum(lengths) <= tokens]
    return np.sort(lengths) if ordered else lengths


def _write_phase(root: Path, name: str, components: list[tuple[str, np.ndarray]], schedules=None) -> dict:
    rng = np.random.default_rng(len(name))
    entries = []
    for number, (component, lengths) in enumerate(components):
        ids = [rng.integers(number * ID_RANGE, (number + 1) * ID_RANGE, n).astype(np.uint32) for n in lengths]
        table = pa.table(
            {
                "input_ids": pa.array([doc.tolist() for doc in ids], type=pa.list_(pa.uint32())),
                "doc_id": [f"{component}-{i}" for i in range(len(ids))],
                "source": [component] * len(ids),
                "domain": [component] * len(ids),
                "quality": pa.array(np.zeros(len(ids)), type=pa.float32()),
                "n_tokens": pa.array(lengths, type=pa.int32()),
            },
            schema=SHARD_SCHEMA,
        )
        path = root / name / f"{component}-00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=256)
        shard = {"path": str(path.relative_to(root)), "sha256": sha256_file(path), "bytes": path.stat().st_size,
                 "rows": len(ids), "tokens": int(lengths.sum())}  # fmt: skip
        entry = {"name": component, "shards": [shard], "realized_tokens": int(lengths.sum())}
        if schedules is not None:
            entry["schedule"] = schedules[number]
        entries.append(entry)
    return {"name": name, "components": entries}


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("windows")
    rng = np.random.default_rng(13)
    budget = 400_000
    made = {
        "ordered-50-50": _write_phase(root, "ordered-50-50", [
            ("short", _lengths(rng, budget // 2, 40, ordered=True)),
            ("long", _lengths(rng, budget // 2, 600, ordered=True)),
        ]),
        "shuffled-70-30": _write_phase(root, "shuffled-70-30", [
            ("web", _lengths(rng, int(budget * 0.7), 150, ordered=False)),
            ("code", _lengths(rng, int(budget * 0.3), 700, ordered=False)),
        ]),
        "five-way": _write_phase(root, "five-way", [
            (name, _lengths(rng, int(budget * share), mean, ordered=False))
            for name, share, mean in (("web", 0.45, 300), ("code", 0.20, 900), ("math", 0.15, 120),
                                      ("academic", 0.10, 1500), ("qa", 0.10, 60))
        ]),
        "linear-70-30-to-30-70": _write_phase(root, "linear-70-30-to-30-70", [
            ("general", _lengths(rng, budget // 2, 200, ordered=False)),
            ("math", _lengths(rng, budget // 2, 200, ordered=True)),
        ], schedules=[[{"start": 0.0, "end": 1.0, "from": 0.7, "to": 0.3}],
                      [{"start": 0.0, "end": 1.0, "from": 0.3, "to": 0.7}]]),
    }  # fmt: skip
    return root, made


def _stream(root: Path, phase: dict, **kwargs) -> PhaseStream:
    return PhaseStream(phase, lambda entry: root / entry["path"], SEQ_LEN, EOS, GLOBAL_BATCH, 4,
                       decoded_dir=root / "decoded", **kwargs)  # fmt: skip


def _tokens_per_step(stream: PhaseStream, workers: int = 0) -> tuple[np.ndarray, list[dict]]:
    """[steps, components] document tokens per step, counted from the yielded input ids."""
    batches = list(DataLoader(stream, batch_size=None, num_workers=workers))
    counts = np.zeros((stream.steps_in_phase(), len(stream.component_names)), dtype=np.int64)
    for batch in batches:
        ids = batch["input_ids"].flatten()
        real = ids != EOS
        counts[batch["step"]] += np.bincount((ids[real] // ID_RANGE).numpy(), minlength=counts.shape[1])
    return counts, batches


def _window_deviation(counts: np.ndarray, targets: np.ndarray, window: int) -> float:
    """Largest |share - target| of any component in any window of ``window`` steps (in steps of one)."""
    prefix = np.vstack([np.zeros(counts.shape[1]), np.cumsum(counts, axis=0)])
    sums = prefix[window:] - prefix[:-window]
    return float(np.abs(sums / sums.sum(axis=1, keepdims=True) - targets).max())


@pytest.mark.parametrize("name", ["ordered-50-50", "shuffled-70-30", "five-way"])
def test_every_window_holds_the_token_shares(phases, name):
    root, made = phases
    phase = made[name]
    stream = _stream(root, phase)
    counts, batches = _tokens_per_step(stream)
    targets = np.array([c["realized_tokens"] for c in phase["components"]], dtype=np.float64)
    targets /= targets.sum()
    assert stream.steps_in_phase() >= 300  # several 64-batch windows
    assert np.array_equal(counts.sum(axis=0), [c["realized_tokens"] for c in phase["components"]])  # all of it
    assert _window_deviation(counts, targets, 8) < 0.02  # 8 global batches = 64 sequences
    assert _window_deviation(counts, targets, 64) < 0.005  # 64 global batches = 512 sequences
    # The shares the trainer logs are these windows' shares.
    logged = stream.realized_shares(40, 48)
    window = counts[40:48].sum(axis=0)
    assert [logged["components"][c]["tokens"] for c in stream.component_names] == window.tolist()
    # No target across documents: a target is padding-masked, after an EOS, or of its input's component.
    got = {key: torch.cat([b[key] for b in batches]) for key in ("input_ids", "targets")}
    learned = got["targets"] != IGNORE_INDEX
    assert not torch.any(learned[got["input_ids"] == EOS])  # after an EOS (or on padding) nothing is learned
    target_component = got["targets"][learned] // ID_RANGE
    same = (target_component == got["input_ids"][learned] // ID_RANGE) | (got["targets"][learned] == EOS)
    assert torch.all(same)


def test_documents_stay_whole_where_they_can(phases):
    """A document is cut only at sequence boundaries: each sequence holds one component."""
    root, made = phases
    stream = _stream(root, made["five-way"])
    _, batches = _tokens_per_step(stream)
    for batch in batches:
        ids = batch["input_ids"]
        for row in ids:
            components = torch.unique(row[row != EOS] // ID_RANGE)
            assert len(components) <= 1


def test_a_linear_schedule_is_realized_in_every_64_batch_window(phases):
    root, made = phases
    stream = _stream(root, made["linear-70-30-to-30-70"])
    counts, _ = _tokens_per_step(stream)
    prefix = np.vstack([np.zeros(2), np.cumsum(counts, axis=0)])
    progress = prefix.sum(axis=1) / prefix[-1].sum()  # fraction of the phase's tokens trained
    window = 64
    realized = (prefix[window:, 0] - prefix[:-window, 0]) / (prefix[window:].sum(1) - prefix[:-window].sum(1))
    start, stop = progress[:-window], progress[window:]
    interpolated = 0.7 - 0.4 * (start + stop) / 2  # the mean of the linear weight over the window
    assert np.abs(realized - interpolated).max() < 0.01
    assert realized[0] > 0.6 and realized[-1] < 0.4
    logged = stream.realized_shares(0, window)
    assert logged["components"]["general"]["target"] == pytest.approx(interpolated[0], abs=1e-3)


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_five_way_stream_is_the_tail_of_the_uninterrupted_one(phases, workers):
    root, made = phases
    full = list(DataLoader(_stream(root, made["five-way"]), batch_size=None))
    start = 123
    resumed = list(DataLoader(_stream(root, made["five-way"], start_step=start), batch_size=None, num_workers=workers))
    tail = [b for b in full if b["step"] >= start]
    assert len(resumed) == len(tail)
    for key in ("input_ids", "targets", "position_ids", "doc_ids"):
        assert torch.equal(torch.cat([b[key] for b in resumed]), torch.cat([b[key] for b in tail])), key
