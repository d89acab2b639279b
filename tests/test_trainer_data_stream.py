"""PhaseStream: the global order is fixed by the manifest; ranks, workers and resume only split it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import sha256_file
from midmix.pipelines.curation.schema import SHARD_SCHEMA
from midmix.trainer import phase_stream
from midmix.trainer.blend import blend_sequences, sequence_tokens
from midmix.trainer.packing import IGNORE_INDEX
from midmix.trainer.phase_stream import PhaseStream, phase_by_name

EOS = 256
SEQ_LEN = 32
KEYS = ("input_ids", "targets", "position_ids", "doc_ids")


def _documents(component: int, rows: int, seed: int) -> list[np.ndarray]:
    """Random-length documents whose ids say which component and row they came from."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 90, size=rows)
    return [((component * 1000 + row + np.arange(n)) % EOS).astype(np.uint32) for row, n in enumerate(lengths)]


def _write_shard(path: Path, docs: list[np.ndarray], domain: str) -> dict:
    table = pa.table(
        {
            "input_ids": pa.array([doc.tolist() for doc in docs], type=pa.list_(pa.uint32())),
            "doc_id": [f"{path.stem}-{i}" for i in range(len(docs))],
            "source": ["fixture"] * len(docs),
            "domain": [domain] * len(docs),
            "quality": pa.array(np.linspace(0, 1, len(docs)), type=pa.float32()),
            "n_tokens": pa.array([len(doc) for doc in docs], type=pa.int32()),
        },
        schema=SHARD_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=16)
    return {
        "path": str(path.relative_to(path.parents[2])),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "rows": len(docs),
        "tokens": int(sum(len(doc) for doc in docs)),
    }


# component name, domain, rows per shard
COMPONENTS = (("web", "web", (70, 50)), ("code", "code", (60,)), ("math", "math", (30,)))


@pytest.fixture(scope="module")
def phase_dir(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A version directory with one phase of three components; returns (root, phase, docs)."""
    root = tmp_path_factory.mktemp("mix")
    components, docs = [], {}
    for index, (name, domain, shard_rows) in enumerate(COMPONENTS):
        all_docs = _documents(index, sum(shard_rows), seed=index)
        docs[name] = all_docs
        shards, start = [], 0
        for number, rows in enumerate(shard_rows):
            path = root / "phases" / "stable" / f"{name}-{number:05d}.parquet"
            shards.append(_write_shard(path, all_docs[start : start + rows], domain))
            start += rows
        components.append({"name": name, "shards": shards, "realized_tokens": sum(s["tokens"] for s in shards)})
    phase = {"name": "stable", "index": 0, "seq_len": SEQ_LEN, "components": components}
    return root, phase, docs


def _stream(phase_dir, **kwargs) -> PhaseStream:
    root, phase, _ = phase_dir
    options = {
        "seq_len": SEQ_LEN, "eos_id": EOS, "global_batch_size": 8, "micro_batch_size": 2, "decoded_dir": root / "decoded"
    }
    options.update(kwargs)
    return PhaseStream(phase, lambda entry: root / entry["path"], **options)


def _collect(stream: PhaseStream, workers: int = 0) -> list[dict]:
    return list(DataLoader(stream, batch_size=None, num_workers=workers))


def _cat(batches: list[dict]) -> dict:
    return {key: torch.cat([batch[key] for batch in batches]) for key in KEYS}


def _reference(docs: dict, seq_len: int = SEQ_LEN) -> dict:
    """The phase's sequences the slow way: each component's documents + EOS, padded with EOS to
    n * seq_len + 1 tokens and cut into sequences, taken in the blend's order."""
    names = [name for name, _, _ in COMPONENTS]
    per_component, sizes = [], []
    for name in names:
        stream, owner = [], []
        for row, doc in enumerate(docs[name]):
            stream += doc.tolist() + [EOS]
            owner += [row] * (len(doc) + 1)
        count = max(1, -(-(len(stream) - 1) // seq_len))
        pad = count * seq_len + 1 - len(stream)
        is_eos = [False] * len(stream)
        at = 0
        for doc in docs[name]:
            at += len(doc)
            is_eos[at] = True
            at += 1
        stream += [EOS] * pad
        owner += [-1] * pad
        is_eos += [False] * pad
        sequences = []
        for k in range(count):
            window = slice(k * seq_len, k * seq_len + seq_len)
            inputs = stream[window]
            targets = stream[k * seq_len + 1 : k * seq_len + seq_len + 1]
            owners = owner[window]
            targets = [IGNORE_INDEX if is_eos[k * seq_len + i] or owners[i] < 0 else t for i, t in enumerate(targets)]
            positions, run = [], 0
            for i in range(seq_len):
                run = 0 if i == 0 or owners[i] != owners[i - 1] else run + 1
                positions.append(run)
            sequences.append((inputs, targets, positions, owners))
        per_component.append(sequences)
        sizes.append(sequence_tokens(np.array([len(doc) for doc in docs[name]]), seq_len))
    order = blend_sequences(sizes)
    picked = [per_component[c][k] for c, k in zip(*order)]
    return {key: np.array([item[i] for item in picked]) for i, key in enumerate(("input_ids", "targets", "position_ids", "owner"))}


def _same_partition(doc_ids: np.ndarray, owners: np.ndarray) -> bool:
    """Two tokens of a row share a doc id exactly when they belong to the same document (or padding)."""
    return all(
        np.array_equal(row[:, None] == row[None, :], own[:, None] == own[None, :]) for row, own in zip(doc_ids, owners)
    )


@pytest.mark.parametrize(("block_tokens", "segment_tokens"), [(1 << 18, 1 << 22), (100, 1 << 22), (1 << 18, 100)])
def test_stream_is_each_component_packed_then_blended_by_sequence(
    phase_dir, monkeypatch, tmp_path, block_tokens, segment_tokens
):
    monkeypatch.setattr(phase_stream, "_BLOCK_TOKENS", block_tokens)  # 100: one micro-batch per block
    monkeypatch.setattr(phase_stream, "_SEGMENT_TOKENS", segment_tokens)  # 100: sequences straddle segments
    _, _, docs = phase_dir
    stream = _stream(phase_dir, decoded_dir=tmp_path)
    expected = _reference(docs)
    got = _cat(_collect(stream))
    real = stream.sequences
    for key in ("input_ids", "targets", "position_ids"):
        assert np.array_equal(got[key].numpy()[:real], expected[key]), key
    assert _same_partition(got["doc_ids"].numpy()[:real], expected["owner"])


def test_the_last_step_is_padded_not_dropped(phase_dir):
    _, _, docs = phase_dir
    stream = _stream(phase_dir)
    assert stream.sequences == sum(
        max(1, -(-(sum(len(d) + 1 for d in docs[name]) - 1) // SEQ_LEN)) for name, _, _ in COMPONENTS
    )
    assert stream.steps_in_phase() == -(-stream.sequences // 8)
    batches = _collect(stream)
    assert len(batches) == stream.steps_in_phase() * 4
    assert [(b["step"], b["micro_step"]) for b in batches[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert batches[0]["input_ids"].shape == (2, SEQ_LEN) and batches[0]["input_ids"].dtype == torch.long
    got = _cat(batches)
    padding = stream.padding(stream.steps_in_phase())
    assert padding["sequences"] == stream.steps_in_phase() * 8 - stream.sequences > 0
    assert torch.all(got["targets"][stream.sequences :] == IGNORE_INDEX)
    real_inputs = sum(len(d) + 1 for name in docs for d in docs[name]) - sum(
        1 for name in docs if (sum(len(d) + 1 for d in docs[name]) - 1) % SEQ_LEN == 0
    )
    assert padding["tokens"] == got["input_ids"].numel() - real_inputs
    assert stream.padding(1) == {"sequences": 0, "tokens": 0}


def test_two_ranks_concatenated_equal_one_rank(phase_dir):
    single = _collect(_stream(phase_dir))
    ranks = [_collect(_stream(phase_dir, rank=r, world_size=2)) for r in range(2)]
    steps = _stream(phase_dir).steps_in_phase()
    for step in range(steps):
        one = _cat([b for b in single if b["step"] == step])
        two = _cat([b for rank in ranks for b in rank if b["step"] == step])
        for key in KEYS:
            assert torch.equal(one[key], two[key]), (step, key)


def test_two_workers_yield_the_single_process_order(phase_dir):
    single = _collect(_stream(phase_dir))
    workers = _collect(_stream(phase_dir), workers=2)
    assert [(b["step"], b["micro_step"]) for b in workers] == [(b["step"], b["micro_step"]) for b in single]
    for key in KEYS:
        assert torch.equal(_cat(single)[key], _cat(workers)[key]), key


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_any_step_equals_the_uninterrupted_tail(phase_dir, workers):
    full = _collect(_stream(phase_dir))
    last = _stream(phase_dir).steps_in_phase() - 1
    for start in (1, 3, last):
        resumed = _collect(_stream(phase_dir, start_step=start), workers=workers)
        tail = [b for b in full if b["step"] >= start]
        assert [(b["step"], b["micro_step"]) for b in resumed] == [(b["step"], b["micro_step"]) for b in tail]
        for key in KEYS:
            assert torch.equal(_cat(resumed)[key], _cat(tail)[key]), (start, key)


def test_resume_on_one_rank_continues_a_two_rank_run(phase_dir):
    """World size 2 -> 1: steps 0-2 on two ranks, the rest on one, equal the single-rank run."""
    full = _cat(_collect(_stream(phase_dir)))
    rest = _collect(_stream(phase_dir, start_step=3))
    by_rank = {r: [b for b in _collect(_stream(phase_dir, rank=r, world_size=2)) if b["step"] < 3] for r in range(2)}
    joined = _cat([b for step in range(3) for r in range(2) for b in by_rank[r] if b["step"] == step] + rest)
    for key in KEYS:
        assert torch.equal(joined[key], full[key]), key


def test_targets_never_cross_documents_or_components(phase_dir):
    stream = _stream(phase_dir)
    got = _cat(_collect(stream))
    eos_inputs = got["input_ids"] == EOS
    assert torch.all(got["targets"][eos_inputs] == IGNORE_INDEX)
    assert torch.all(got["targets"][~eos_inputs] != IGNORE_INDEX)
    assert int(got["position_ids"].max()) < SEQ_LEN
    # Component c's tokens are (c * 1000 + ...) % EOS: a target is always of its input's document.
    same_doc = got["doc_ids"][:, 1:] == got["doc_ids"][:, :-1]
    predicted = got["targets"][:, :-1]
    assert torch.all((predicted == got["input_ids"][:, 1:])[predicted != IGNORE_INDEX])
    assert torch.all(same_doc[(predicted != IGNORE_INDEX) & (got["input_ids"][:, 1:] != EOS)])


def test_realized_shares_count_the_document_tokens_of_a_window(phase_dir):
    _, phase, docs = phase_dir
    stream = _stream(phase_dir)
    steps = stream.steps_in_phase()
    batches = _collect(stream)
    expected = _reference(docs)
    names = [name for name, _, _ in COMPONENTS]
    order = blend_sequences([sequence_tokens(np.array([len(d) for d in docs[n]]), SEQ_LEN) for n in names])[0]
    for first, last in ((0, steps), (2, 5), (steps - 1, steps)):
        shares = stream.realized_shares(first, last)
        window = slice(first * 8, min(last * 8, stream.sequences))
        inputs = expected["input_ids"][window]
        counted = (inputs != EOS) & (expected["owner"][window] >= 0)
        assert shares["tokens"] == int(counted.sum())
        per_component = [int(counted[order[window] == c].sum()) for c in range(len(names))]
        assert [shares["components"][name]["tokens"] for name in names] == per_component
        assert shares["domains"]["math"]["tokens"] == shares["components"]["math"]["tokens"]
        assert shares["steps"] == [first, last]
    whole = stream.realized_shares(0, steps)
    manifest_total = sum(c["realized_tokens"] for c in phase["components"])
    for component in phase["components"]:
        share = component["realized_tokens"] / manifest_total
        assert whole["components"][component["name"]]["share"] == pytest.approx(share, abs=1e-12)
        assert whole["components"][component["name"]]["target"] == pytest.approx(share, abs=1e-12)
    assert stream.realized_shares(steps, steps + 5)["tokens"] == 0
    assert sum(_cat(batches)["targets"].flatten() != IGNORE_INDEX) > 0


def test_phase_by_name_and_missing_shard_raise_midmix_errors(phase_dir, tmp_path):
    _, phase, _ = phase_dir
    assert phase_by_name({"phases": [phase]}, "stable") is phase
    with pytest.raises(NotFoundError, match="no phase 'anneal'; its phases: 'stable'"):
        phase_by_name({"version": "mix-1", "phases": [phase]}, "anneal")
    with pytest.raises(MidmixError, match="is missing at"):
        PhaseStream(phase, lambda entry: tmp_path / entry["path"], SEQ_LEN, EOS, 8, 2, decoded_dir=tmp_path)
    with pytest.raises(MidmixError, match="not divisible by micro_batch_size 3"):
        _stream(phase_dir, micro_batch_size=3)
    with pytest.raises(MidmixError, match="cannot resume at step"):
        _stream(phase_dir, start_step=10**6)


def test_resume_decodes_and_lays_out_only_what_it_reads(phase_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(phase_stream, "_SEGMENT_TOKENS", 64)  # two sequences' inputs per segment
    _, phase, _ = phase_dir
    web = phase["components"][0]["shards"]
    full = _stream(phase_dir)
    last_step = full.steps_in_phase() - 1
    _collect(_stream(phase_dir, start_step=last_step, decoded_dir=tmp_path))
    assert not (tmp_path / f"{web[0]['sha256']}.ids.npy").exists()
    decoded = {path.name.split(".")[0] for path in tmp_path.glob("*.ids.npy")}
    shards = {shard["sha256"] for component in phase["components"] for shard in component["shards"]}
    assert decoded and decoded < shards
    segments = sorted(int(path.stem.rsplit("-", 1)[1]) for path in tmp_path.glob("stream-*.npy"))
    begins = full._seq_begin[last_step * 8 :].tolist() + [full._pad_begin]
    needed = sorted({at // 64 for begin in begins for at in (begin, begin + SEQ_LEN)})
    assert segments == needed and len(segments) < int(full._ends[-1]) // 64 / 2


def test_input_ids_disagreeing_with_n_tokens_raise(tmp_path):
    docs = _documents(0, 40, seed=9)
    entry = _write_shard(tmp_path / "mix" / "phases" / "stable" / "web-00000.parquet", docs, "web")
    table = pq.read_table(tmp_path / "mix" / entry["path"])
    lying = table.set_column(5, "n_tokens", pa.array([len(doc) + 1 for doc in docs], type=pa.int32()))
    pq.write_table(lying, tmp_path / "mix" / entry["path"])
    entry["sha256"] = sha256_file(tmp_path / "mix" / entry["path"])
    bad = {"name": "stable", "components": [{"name": "web", "shards": [entry]}]}
    stream = PhaseStream(bad, lambda e: tmp_path / "mix" / e["path"], SEQ_LEN, EOS, 2, 2, decoded_dir=tmp_path / "d")
    with pytest.raises(MidmixError, match="disagree with its n_tokens column"):
        _collect(stream)


def test_a_damaged_decoded_copy_is_decoded_again(phase_dir, tmp_path):
    expected = _cat(_collect(_stream(phase_dir, decoded_dir=tmp_path)))
    damaged = list(tmp_path.glob("*.npy"))  # decoded shards and the laid-out stream
    assert any(path.name.startswith("stream-") for path in damaged)
    for path in damaged:
        os.truncate(path, path.stat().st_size // 2)
    again = _cat(_collect(_stream(phase_dir, decoded_dir=tmp_path)))
    for key in KEYS:
        assert torch.equal(again[key], expected[key]), key
