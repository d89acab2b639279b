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
from midmix.trainer.blend import blend_schedule
from midmix.trainer.packing import IGNORE_INDEX, pack_documents
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


@pytest.mark.parametrize(("block_tokens", "segment_tokens"), [(1 << 18, 1 << 22), (100, 1 << 22), (1 << 18, 100)])
def test_stream_is_the_blend_of_components_packed(phase_dir, monkeypatch, tmp_path, block_tokens, segment_tokens):
    monkeypatch.setattr(phase_stream, "_BLOCK_TOKENS", block_tokens)  # 100: one micro-batch per block
    monkeypatch.setattr(phase_stream, "_SEGMENT_TOKENS", segment_tokens)  # 100: windows straddle segments
    _, _, docs = phase_dir
    stream = _stream(phase_dir, decoded_dir=tmp_path)
    names = [name for name, _, _ in COMPONENTS]
    schedule = blend_schedule([len(docs[name]) for name in names], sum(len(docs[n]) for n in names))
    taken = {name: iter(docs[name]) for name in names}
    ordered = [next(taken[names[c]]) for c in schedule]
    sequences = stream.steps_in_phase() * 8
    expected = pack_documents(ordered, SEQ_LEN, EOS)
    got = _cat(_collect(stream))
    for key in KEYS:
        assert np.array_equal(got[key].numpy(), getattr(expected, key)[:sequences]), key


def test_steps_in_phase_drops_the_incomplete_tail(phase_dir):
    _, _, docs = phase_dir
    stream_tokens = sum(len(doc) + 1 for name in docs for doc in docs[name])
    stream = _stream(phase_dir)
    assert stream.steps_in_phase() == (stream_tokens - 1) // SEQ_LEN // 8
    batches = _collect(stream)
    assert len(batches) == stream.steps_in_phase() * 4
    assert [(b["step"], b["micro_step"]) for b in batches[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert batches[0]["input_ids"].shape == (2, SEQ_LEN) and batches[0]["input_ids"].dtype == torch.long


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
def test_resume_from_step_k_equals_the_uninterrupted_tail(phase_dir, workers):
    full = _collect(_stream(phase_dir))
    resumed = _collect(_stream(phase_dir, start_step=3), workers=workers)
    tail = [b for b in full if b["step"] >= 3]
    assert [(b["step"], b["micro_step"]) for b in resumed] == [(b["step"], b["micro_step"]) for b in tail]
    for key in KEYS:
        assert torch.equal(_cat(resumed)[key], _cat(tail)[key]), key


def test_targets_never_cross_documents(phase_dir):
    got = _cat(_collect(_stream(phase_dir)))
    eos_inputs = got["input_ids"] == EOS
    assert torch.all(got["targets"][eos_inputs] == IGNORE_INDEX)
    assert torch.all(got["targets"][~eos_inputs] != IGNORE_INDEX)
    assert int(got["position_ids"].max()) < SEQ_LEN


def test_realized_shares_count_consumed_document_tokens(phase_dir):
    _, phase, docs = phase_dir
    stream = _stream(phase_dir)
    steps = stream.steps_in_phase()
    got = _cat(_collect(stream))
    inputs, doc_ids = got["input_ids"].flatten(), got["doc_ids"].flatten()
    shares = stream.realized_shares(steps)
    assert shares["tokens"] == int((inputs != EOS).sum())
    names = [name for name, _, _ in COMPONENTS]
    schedule = blend_schedule([len(docs[name]) for name in names], sum(len(docs[name]) for name in names))
    per_component = np.bincount(schedule[doc_ids[inputs != EOS].numpy()], minlength=len(names))
    assert [shares["components"][name]["tokens"] for name in names] == per_component.tolist()
    assert shares["domains"]["math"]["tokens"] == shares["components"]["math"]["tokens"]
    assert stream.realized_shares(steps + 5) == shares
    manifest_total = sum(c["realized_tokens"] for c in phase["components"])
    for component in phase["components"]:
        share = component["realized_tokens"] / manifest_total
        assert shares["components"][component["name"]]["share"] == pytest.approx(share, abs=0.01)
        assert shares["components"][component["name"]]["target"] == pytest.approx(share, abs=1e-9)
    assert stream.realized_shares(0)["tokens"] == 0


def test_phase_by_name_and_missing_shard_raise_midmix_errors(phase_dir, tmp_path):
    _, phase, _ = phase_dir
    assert phase_by_name({"phases": [phase]}, "stable") is phase
    with pytest.raises(NotFoundError, match="no phase 'anneal'; its phases: 'stable'"):
        phase_by_name({"version": "mix-1", "phases": [phase]}, "anneal")
    with pytest.raises(MidmixError, match="is missing at"):
        PhaseStream(phase, lambda entry: tmp_path / entry["path"], SEQ_LEN, EOS, 8, 2)
    with pytest.raises(MidmixError, match="not divisible by micro_batch_size 3"):
        _stream(phase_dir, micro_batch_size=3)
    with pytest.raises(MidmixError, match="cannot resume at step"):
        _stream(phase_dir, start_step=10**6)


def test_resume_decodes_and_lays_out_only_what_it_reads(phase_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(phase_stream, "_SEGMENT_TOKENS", 256)  # one step's sequences span 257 stream tokens
    _, phase, _ = phase_dir
    web = phase["components"][0]["shards"]
    last_step = _stream(phase_dir).steps_in_phase() - 1
    _collect(_stream(phase_dir, start_step=last_step, decoded_dir=tmp_path))
    assert not (tmp_path / f"{web[0]['sha256']}.ids.npy").exists()
    assert (tmp_path / f"{web[1]['sha256']}.ids.npy").exists()
    segments = sorted(int(path.stem.rsplit("-", 1)[1]) for path in tmp_path.glob("stream-*.npy"))
    assert segments == [last_step, last_step + 1]


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
