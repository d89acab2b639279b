"""The training stream of one phase: token-level blend, packing, rank/worker split and cheap resume.

The phase's *global* sequence order is a function of the manifest and ``seq_len`` alone. Each
component packs its own rows, in shard order (= curriculum order), into ``seq_len`` sequences:
its documents, each followed by EOS, form the component's token stream, sequence ``k`` is the
``seq_len + 1`` stream tokens from ``k * seq_len`` (inputs the first ``seq_len``, targets the
last), and the last sequence is padded (pad tokens are never targets). The components' sequences
are then interleaved by ``blend_sequences`` (Megatron's rule on tokens, following the manifest's
weight schedule if it has one), so every stretch of training holds each component's token share.
Global step ``s`` trains on sequences ``[s*G, (s+1)*G)``; the last step is filled with padding
sequences (reported, never silently dropped). Rank ``r`` takes its contiguous ``G / world_size``
sequences in micro-batches. World size and DataLoader workers only decide who produces which
micro-batch, never what it holds, so the order survives any of them and a resume from step ``k``
reproduces the uninterrupted run (like mosaicml-streaming).

Construction reads only the small ``n_tokens`` and ``domain`` columns. Token ids are decoded once
per shard, when the stream first reaches it, into flat uncompressed arrays named by the shard's
sha256 under ``decoded_dir`` (shared by DataLoader workers, ranks and later runs; the trainer puts
it inside the shard cache, under its byte cap), then memory-mapped: decoding zstd Parquet costs
more than everything else the loader does. The components' padded streams are laid out once, end
to end, in segments named by their content (``_StreamSegments``); a sequence is then a slice of a
segment, and a block of micro-batches is whole-array work over document ends (``pack_windows``).
Shards and segments no remaining sequence needs are never read: resume is cheap.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from midmix.errors import MidmixError, NotFoundError
from midmix.mixture_schedule import Segment
from midmix.publish import atomic_path
from midmix.trainer.blend import WINDOW_SEQUENCES, WeightCurve, blend_sequences, sequence_tokens, stream_sequences
from midmix.trainer.packing import IGNORE_INDEX, pack_windows
from midmix.trainer.shard_cache import decoded_shard

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
"""glibc ``mallopt`` parameters (malloc.h)."""

_SEGMENT_TOKENS = 1 << 22
"""Stream tokens per laid-out segment file (16 MB of uint32): large enough that few sequences
straddle two segments, small enough that a resume lays out little it will not read."""

_BLOCK_TOKENS = 1 << 18
"""Tokens of micro-batches built per vectorised call: amortises numpy call overhead while
keeping a block's arrays (about 40 bytes a token) in the low tens of MB."""

_PAD = -1
"""Component code of padding: the tail of each component's last sequence and whole padding sequences."""


def phase_by_name(manifest: dict, name: str) -> dict:
    """The ``phases[]`` entry called ``name``; NotFoundError lists the phases there are."""
    phases = manifest.get("phases", [])
    for phase in phases:
        if phase["name"] == name:
            return phase
    known = ", ".join(repr(phase["name"]) for phase in phases) or "none"
    raise NotFoundError(f"mixture {manifest.get('version', '?')} has no phase {name!r}; its phases: {known}")


class PhaseStream(IterableDataset):
    """Micro-batches of one phase for one rank, in the global order (see module docstring).

    Yields dicts with int64 tensors ``input_ids``, ``targets`` (-100 where masked: after each EOS
    and on padding), ``position_ids`` and ``doc_ids``, all ``[micro_batch_size, seq_len]``, plus
    ints ``step`` and ``micro_step``. Use ``DataLoader(stream, batch_size=None, num_workers=k)``.
    ``decoded_dir`` keeps the decoded shards and the laid-out streams; give a folder inside the
    shard cache so the cache's byte cap covers them (``decoded_bytes`` says how much they take).
    """

    def __init__(
        self,
        phase: dict,
        shard_path: Callable[[dict], Path],
        seq_len: int,
        eos_id: int,
        global_batch_size: int,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        *,
        decoded_dir: Path,
    ):
        super().__init__()
        _check_batching(global_batch_size, micro_batch_size, rank, world_size, seq_len)
        self.name: str = phase["name"]
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.rank_batch_size = global_batch_size // world_size
        self.micro_batches_per_step = self.rank_batch_size // micro_batch_size
        self.decoded_dir = Path(decoded_dir)

        components = phase.get("components", [])
        if not components:
            raise MidmixError(f"phase {self.name!r} has no components; rebuild the mixture")
        self.component_names = [component["name"] for component in components]
        self._shards = [[_local_shard(self.name, shard_path, entry) for entry in c["shards"]] for c in components]
        n_tokens, domains = zip(*(_token_counts([path for path, _ in shards]) for shards in self._shards))
        self._component_tokens: list[np.ndarray] = list(n_tokens)
        if sum(len(counts) for counts in n_tokens) == 0:
            raise MidmixError(f"phase {self.name!r} has no documents; rebuild the mixture")
        self.domain_names = sorted(set().union(*(set(names) for names, _ in domains)))
        self.bucket_names, bucket_edges = _length_buckets(phase)  # empty names and None without buckets
        self._lay_out(n_tokens, domains, bucket_edges)

        sizes = [sequence_tokens(counts, seq_len) if len(counts) else np.empty(0, np.int64) for counts in n_tokens]
        self._schedules = _schedules(phase, components)
        self._seq_component, self._seq_index = self._blend_order(sizes)
        self._seq_begin = self._base[self._seq_component] + self._seq_index * seq_len
        seq_tokens = np.concatenate(sizes)[np.concatenate([[0], np.cumsum([len(x) for x in sizes])[:-1]])[
            self._seq_component] + self._seq_index]
        self._consumed = np.concatenate([[0], np.cumsum(seq_tokens)])  # document tokens before each sequence
        self._own_tokens = np.array([int(size.sum()) for size in sizes], dtype=np.int64)
        is_last = self._seq_index == np.array([len(size) for size in sizes])[self._seq_component] - 1
        self._seq_padding = np.where(is_last, np.maximum(self._tail_padding - 1, 0)[self._seq_component], 0)
        self._seq_padded = is_last & (self._tail_padding[self._seq_component] > 0)  # rows that need a padding mask

        if start_step > self.steps_in_phase():
            raise MidmixError(
                f"phase {self.name!r} has {self.steps_in_phase()} steps; cannot resume at step {start_step}"
            )

    def _blend_order(self, sizes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``blend_sequences`` of the phase, kept under ``decoded_dir`` (named by everything it depends
        on) so ranks, workers and later runs compute it once: it is a loop over every sequence."""
        schedules = [[vars(s) for s in segments] for segments in self._schedules] if self._schedules else None
        key = hashlib.sha256(json.dumps({"layout": self.layout_key(), "schedules": schedules,
                                         "window": WINDOW_SEQUENCES, "format": 1}).encode()).hexdigest()  # fmt: skip
        path = self.decoded_dir / f"order-{key}.npy"
        self._order_prefix = path.stem
        try:
            order = np.load(path)
            if order.shape == (2, sum(len(size) for size in sizes)):
                os.utime(path)
                return order[0].astype(np.int16), order[1]
        except (OSError, ValueError):
            pass
        component, index = blend_sequences(sizes, self._schedules)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, np.stack([component.astype(np.int64), index]))
        return component, index

    def _lay_out(self, n_tokens: tuple[np.ndarray, ...], domains: tuple, bucket_edges: np.ndarray | None) -> None:
        """Per document of the components' padded streams, end to end: component, row, tokens,
        domain, length bucket, stream end; plus each component's start and the padding sequence's."""
        component, row, tokens, domain, padding = [], [], [], [], []
        self._base = np.zeros(len(n_tokens), dtype=np.int64)
        position = 0
        for index, (counts, (names, codes)) in enumerate(zip(n_tokens, domains)):
            self._base[index] = position
            stream = int(counts.sum()) + len(counts)
            region = stream_sequences(stream, self.seq_len) * self.seq_len + 1 if stream else 0
            remap = np.array([self.domain_names.index(name) for name in names], dtype=np.int32)
            component.append(np.full(len(counts), index, dtype=np.int16))
            row.append(np.arange(len(counts), dtype=np.int64))
            tokens.append(np.asarray(counts, dtype=np.int64))
            domain.append(remap[codes] if len(remap) else np.zeros(len(counts), dtype=np.int32))
            padding.append(max(region - stream, 0))
            if region > stream:  # the last sequence's tail: one pseudo-document of padding
                component.append(np.array([_PAD], dtype=np.int16))
                row.append(np.array([-1]))
                tokens.append(np.array([region - stream - 1]))
                domain.append(np.array([-1], dtype=np.int32))
            position += region
        self._pad_begin = position  # one padding sequence, for the final global batch
        component.append(np.array([_PAD], dtype=np.int16))
        row.append(np.array([-1]))
        tokens.append(np.array([self.seq_len]))
        domain.append(np.array([-1], dtype=np.int32))
        self._component = np.concatenate(component)
        self._row = np.concatenate(row)
        self._n_tokens = np.concatenate(tokens)
        self._domain = np.concatenate(domain)
        self._ends = np.cumsum(self._n_tokens + 1)
        self._tail_padding = np.array(padding, dtype=np.int64)  # pad tokens after each component's stream
        self._bucket = _bucket_codes(bucket_edges, self._n_tokens) if bucket_edges is not None else None

    @property
    def sequences(self) -> int:
        """Sequences of the phase's components (padding sequences of the last step not counted)."""
        return len(self._seq_component)

    def steps_in_phase(self) -> int:
        """Global steps the phase's sequences make; the last one is completed with padding sequences."""
        return -(-self.sequences // self.global_batch_size)

    def padding(self, steps: int) -> dict:
        """Padding among the inputs of the first ``steps`` steps: whole padding sequences, and tokens in all."""
        end = min(steps, self.steps_in_phase()) * self.global_batch_size
        real = min(end, self.sequences)
        return {"sequences": end - real, "tokens": int(self._seq_padding[:real].sum()) + (end - real) * self.seq_len}

    def realized_shares(self, first_step: int, last_step: int) -> dict:
        """Document tokens (EOS and padding excluded) trained in steps ``[first_step, last_step)``, by
        component, domain and length bucket, with each component's target for that window: the
        manifest's share, or the schedule's mean weight over the window."""
        begin = min(first_step, self.steps_in_phase()) * self.global_batch_size
        end = min(last_step, self.steps_in_phase()) * self.global_batch_size
        begin, end = min(begin, self.sequences), min(end, self.sequences)
        docs, tokens = self._input_tokens(self._seq_begin[begin:end])
        real = self._component[docs] != _PAD
        docs, tokens = docs[real], tokens[real]
        total = int(tokens.sum())
        by_component = np.bincount(self._component[docs], weights=tokens, minlength=len(self.component_names))
        components = _shares(self.component_names, by_component, total)
        for name, target in zip(self.component_names, self._targets(begin, end)):
            components[name]["target"] = float(target)
        shares = {
            "steps": [first_step, max(first_step, min(last_step, self.steps_in_phase()))],
            "tokens": total,
            "components": components,
            "domains": _shares(self.domain_names, np.bincount(self._domain[docs], weights=tokens,
                                                              minlength=len(self.domain_names)), total),
        }  # fmt: skip
        if self._bucket is not None:
            counts = np.bincount(self._bucket[docs], weights=tokens, minlength=len(self.bucket_names) + 1)
            shares["buckets"] = _shares(self.bucket_names, counts[: len(self.bucket_names)], total)
        return shares

    def _targets(self, begin: int, end: int) -> np.ndarray:
        """Each component's target share of the document tokens of sequences ``[begin, end)``."""
        own = self._own_tokens / max(1, int(self._own_tokens.sum()))
        if self._schedules is None or end <= begin:
            return own
        total = float(self._consumed[-1])
        start, stop = self._consumed[begin] / total, self._consumed[end] / total
        due = np.array([WeightCurve(segments).cumulative(stop) - WeightCurve(segments).cumulative(start)
                        for segments in self._schedules])  # fmt: skip
        return own * due / max(stop - start, 1e-12)

    def _input_tokens(self, begins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For sequences starting at ``begins``: every (document, its tokens among the inputs, EOS excluded)."""
        if len(begins) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        first = np.searchsorted(self._ends, begins, side="right")
        counts = np.searchsorted(self._ends, begins + self.seq_len - 1, side="right") - first + 1
        docs = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        window = np.repeat(begins, counts)
        start = self._ends[docs] - self._n_tokens[docs] - 1
        overlap = np.minimum(start + self._n_tokens[docs], window + self.seq_len) - np.maximum(start, window)
        return docs, np.maximum(overlap, 0)

    def decoded_bytes(self) -> int:
        """Bytes this phase puts under ``decoded_dir`` when read to the end: decoded shards and laid-out streams."""
        rows = sum(len(counts) for counts in self._component_tokens)
        shards = sum(len(shards) for shards in self._shards)
        ids = sum(int(counts.sum()) for counts in self._component_tokens)
        return 4 * ids + 8 * (rows + shards) + 4 * int(self._ends[-1]) + 16 * self.sequences

    def cache_prefixes(self) -> list[str]:
        """File-name prefixes of everything this phase reads under ``decoded_dir`` (to keep them from eviction)."""
        shards = [sha256 for component in self._shards for _, sha256 in component]
        return shards + [f"stream-{self.layout_key()}", self._order_prefix]

    def __iter__(self) -> Iterator[dict]:
        retain_freed_memory()
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        readers = [
            _ComponentReader(shards, counts, self.decoded_dir, f"phase {self.name!r}, component {name!r}")
            for shards, counts, name in zip(self._shards, self._component_tokens, self.component_names)
        ]
        try:
            yield from self._micro_batches(_StreamSegments(self, readers), worker_id, workers)
        finally:
            for reader in readers:
                reader.close()

    def _micro_batches(self, segments: _StreamSegments, worker_id: int, workers: int) -> Iterator[dict]:
        per_step, size, length = self.micro_batches_per_step, self.micro_batch_size, self.seq_len
        items = (self.steps_in_phase() - self.start_step) * per_step
        # Item-level round robin matches the DataLoader's in-order fetching from its workers.
        mine = np.arange(worker_id, items, workers)
        per_block = max(1, _BLOCK_TOKENS // (size * length))
        for block in np.array_split(mine, -(-len(mine) // per_block)) if len(mine) else []:
            steps, micro_steps = np.divmod(block, per_step)
            steps += self.start_step
            first = steps * self.global_batch_size + self.rank * self.rank_batch_size + micro_steps * size
            sequences = (first[:, None] + np.arange(size)).reshape(-1)
            inside = sequences < self.sequences
            begins = np.where(inside, self._seq_begin[np.minimum(sequences, self.sequences - 1)], self._pad_begin)
            packed = pack_windows(segments.gather(begins, length + 1), begins, self._ends, length)
            targets = packed.targets.reshape(-1, length)
            doc_ids = packed.doc_ids.reshape(-1, length)
            padded = np.flatnonzero(~inside | self._seq_padded[np.minimum(sequences, self.sequences - 1)])
            if len(padded):  # only each component's last sequence and the padding sequences hold padding
                targets[padded] = np.where(self._component[doc_ids[padded]] == _PAD, IGNORE_INDEX, targets[padded])
            shape = (len(block), size, length)
            inputs, positions = packed.input_ids.reshape(shape), packed.position_ids.reshape(shape)
            targets, doc_ids = targets.reshape(shape), doc_ids.reshape(shape)
            for number, (step, micro_step) in enumerate(zip(steps.tolist(), micro_steps.tolist())):
                yield {
                    "input_ids": torch.from_numpy(inputs[number]),
                    "targets": torch.from_numpy(targets[number]),
                    "position_ids": torch.from_numpy(positions[number]),
                    "doc_ids": torch.from_numpy(doc_ids[number]),
                    "step": step,
                    "micro_step": micro_step,
                }

    def _stream_tokens(self, readers: list[_ComponentReader], begin: int, end: int) -> np.ndarray:
        """Laid-out tokens ``[begin, end)`` (uint32, EOS after each document, padding as EOS) from the decoded shards.

        One slice copy per document the range touches; a long document is never copied whole.
        """
        first = int(np.searchsorted(self._ends, begin, side="right"))
        last = int(np.searchsorted(self._ends, end - 1, side="right"))
        docs = np.arange(first, last + 1)
        lengths, doc_end = self._n_tokens[docs], self._ends[docs]
        doc_start = doc_end - lengths - 1
        skip = np.maximum(begin - doc_start, 0)
        stops = np.minimum(np.minimum(doc_end, end) - doc_start, lengths)
        out_at = np.maximum(doc_start - begin, 0)
        out = np.full(end - begin, self.eos_id, dtype=np.uint32)
        components = self._component[docs]
        for index in np.unique(components[components != _PAD]):
            chosen = np.flatnonzero(components == index)
            for values, members, offsets in readers[index].locate(self._row[docs[chosen]]):
                for entry, offset in zip(chosen[members].tolist(), offsets.tolist()):
                    piece = values[offset + skip[entry] : offset + stops[entry]]
                    out[out_at[entry] : out_at[entry] + len(piece)] = piece
        return out

    def layout_key(self) -> str:
        """Names the laid-out streams by everything they depend on: shard contents, the documents'
        places (which follow from seq_len through the padding), EOS id and segment size."""
        shards = [[sha256 for _, sha256 in component] for component in self._shards]
        spec = json.dumps({"shards": shards, "eos_id": self.eos_id, "segment_tokens": _SEGMENT_TOKENS,
                           "seq_len": self.seq_len, "format": 2})  # fmt: skip
        digest = hashlib.sha256(spec.encode())
        digest.update(self._n_tokens.tobytes())
        digest.update(self._component.tobytes())
        return digest.hexdigest()


class _StreamSegments:
    """The components' padded streams laid out once, end to end, in ``_SEGMENT_TOKENS`` segments of uint32 ``.npy``.

    The layout never changes, so EOS separators and padding are paid for once per machine:
    segment ``k`` is gathered from the decoded shards on first use (under a file lock, so workers
    and ranks lay it out once), named by ``PhaseStream.layout_key``, then memory-mapped. A sequence
    is then a slice of it. Only segments the run reads are laid out: resume stays cheap.
    """

    def __init__(self, stream: PhaseStream, readers: list[_ComponentReader]):
        self._stream = stream
        self._readers = readers
        self._total = int(stream._ends[-1])
        self._prefix = stream.decoded_dir / f"stream-{stream.layout_key()}"
        self._mapped: OrderedDict[int, np.ndarray] = OrderedDict()
        self._keep = 2 * len(readers) + 2  # components are read side by side, each in its own segments

    def gather(self, begins: np.ndarray, width: int) -> np.ndarray:
        """Rows ``tokens[i] = stream[begins[i] : begins[i] + width]`` as int64: one slice copy per row
        (cheaper than a fancy take over a strided view, which copies twice)."""
        out = np.empty((len(begins), width), dtype=np.int64)
        segments, offsets = np.divmod(begins, _SEGMENT_TOKENS)
        for row, (number, offset) in enumerate(zip(segments.tolist(), offsets.tolist())):
            if offset + width <= _SEGMENT_TOKENS:
                out[row] = self._segment(number)[offset : offset + width]
                continue
            done = 0  # straddles two segments
            while done < width:
                number, offset = divmod(int(begins[row]) + done, _SEGMENT_TOKENS)
                values = self._segment(number)[offset : offset + width - done]
                out[row, done : done + len(values)] = values
                done += len(values)
        return out

    def _segment(self, segment: int) -> np.ndarray:
        if segment in self._mapped:
            if segment != next(reversed(self._mapped)):
                self._mapped.move_to_end(segment)
        else:
            self._mapped[segment] = self._load_or_build(segment)
            while len(self._mapped) > self._keep:
                self._mapped.popitem(last=False)
        return self._mapped[segment]

    def _load_or_build(self, segment: int) -> np.ndarray:
        begin = segment * _SEGMENT_TOKENS
        end = min(begin + _SEGMENT_TOKENS, self._total)
        path = Path(f"{self._prefix}-{segment:06d}.npy")
        self._stream.decoded_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            if attempt or not path.exists():
                with open(f"{path}.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    if attempt or not path.exists():
                        tokens = self._stream._stream_tokens(self._readers, begin, end)
                        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
                            np.save(handle, tokens)
            try:
                values = np.asarray(np.load(path, mmap_mode="r"))  # a plain view: slicing a np.memmap is slow
                os.utime(path)  # recently used, for the cache's eviction order
            except (OSError, ValueError):
                continue
            if len(values) == end - begin:
                return values
        raise MidmixError(f"cannot lay out segment {segment} of phase {self._stream.name!r} at {path}; check the disk")


class _ComponentReader:
    """One component's shards as memory-mapped decoded arrays, decoding each on first use and
    the next one ahead in a background thread (pyarrow decodes without holding the GIL)."""

    def __init__(self, shards: list[tuple[Path, str]], n_tokens: np.ndarray, decoded_dir: Path, where: str):
        self._shards = shards
        self._n_tokens = n_tokens
        self._decoded_dir = decoded_dir
        self._where = where
        rows = [pq.ParquetFile(path).metadata.num_rows for path, _ in shards]
        self._shard_starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        self._mapped: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="midmix-decode")
        self._pending: dict[int, Future] = {}

    def locate(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For component ``rows``: (ids of a shard, which of ``rows`` it holds, where each starts in the ids)."""
        owners = np.searchsorted(self._shard_starts, rows, side="right") - 1
        for shard in np.unique(owners):
            members = np.flatnonzero(owners == shard)
            values, offsets = self._shard(int(shard))
            yield values, members, offsets[rows[members] - self._shard_starts[shard]]

    def close(self) -> None:
        """Stop decoding ahead."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._mapped:
            self._mapped = {shard: self._decoding(shard).result()}  # keep one mapping per component
            del self._pending[shard]
            if shard + 1 < len(self._shards):
                self._decoding(shard + 1)
        return self._mapped[shard]

    def _decoding(self, shard: int) -> Future:
        if shard not in self._pending:
            path, sha256 = self._shards[shard]
            start, stop = self._shard_starts[shard], self._shard_starts[shard + 1]
            self._pending[shard] = self._pool.submit(
                decoded_shard, path, sha256, self._n_tokens[start:stop], self._decoded_dir, self._where
            )
        return self._pending[shard]


@functools.cache
def retain_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse rather than hand it back to the OS (per process).

    Each block of micro-batches allocates a few MB of fresh arrays. With glibc's defaults they
    come from new mmaps (or a heap that is trimmed right after), so every page faults again on
    every block; in a VM with free page reporting that made packing 20x slower (14 ms instead
    of 0.7 ms per 262k tokens). Keeping up to 256 MB of freed heap costs a training process
    nothing. A no-op where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def _local_shard(phase: str, shard_path: Callable[[dict], Path], entry: dict) -> tuple[Path, str]:
    """The shard's local file and sha256, or MidmixError naming it."""
    path = Path(shard_path(entry))
    if not path.is_file():
        raise MidmixError(f"phase {phase!r}: shard {entry.get('path', entry)} is missing at {path}; fetch it again")
    return path, str(entry["sha256"])


def _schedules(phase: dict, components: list[dict]) -> list[list[Segment]] | None:
    """The components' weight segments when the phase's weights change over it, else None."""
    if not any(component.get("schedule") for component in components):
        return None
    missing = [component["name"] for component in components if not component.get("schedule")]
    if missing:
        raise MidmixError(f"phase {phase['name']!r}: components {missing} have no weight schedule while others do; rebuild the mixture")
    return [[Segment.from_json(segment) for segment in component["schedule"]] for component in components]


def _length_buckets(phase: dict) -> tuple[list[str], np.ndarray | None]:
    """Names ("4096-16384") and [min, max) edges of the phase's length buckets, if it has any."""
    buckets = phase.get("length_buckets") or []
    if not buckets:
        return [], None
    edges = np.array([[int(b["min_tokens"]), int(b["max_tokens"])] for b in buckets], dtype=np.int64)
    return [f"{low}-{high}" for low, high in edges.tolist()], edges


def _bucket_codes(edges: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """Each document's length bucket (index into ``edges``), or ``len(edges)`` when it is in none."""
    order = np.argsort(edges[:, 0], kind="stable")
    lows, highs = edges[order, 0], edges[order, 1]
    at = np.searchsorted(lows, n_tokens, side="right") - 1
    inside = (at >= 0) & (n_tokens < highs[np.maximum(at, 0)])
    return np.where(inside, order[np.maximum(at, 0)], len(edges)).astype(np.int64)


def _token_counts(shards: list[Path]) -> tuple[np.ndarray, tuple[list[str], np.ndarray]]:
    """A component's per-row ``n_tokens`` and its domains as (names, codes), from all its shards."""
    if not shards:
        return np.empty(0, dtype=np.int64), ([], np.empty(0, dtype=np.int32))
    table = pa.concat_tables(pq.read_table(path, columns=["n_tokens", "domain"]) for path in shards)
    domains = table.column("domain").fill_null("").combine_chunks().dictionary_encode()
    names = [str(name) for name in domains.dictionary.to_pylist()]
    return table.column("n_tokens").to_numpy().astype(np.int64), (names, domains.indices.to_numpy())


def _shares(names: list[str], tokens: np.ndarray, total: int) -> dict:
    return {
        name: {"tokens": int(count), "share": float(count) / total if total else 0.0}
        for name, count in zip(names, tokens)
    }


def _check_batching(global_batch: int, micro_batch: int, rank: int, world_size: int, seq_len: int) -> None:
    if seq_len < 1 or global_batch < 1 or micro_batch < 1 or world_size < 1:
        raise MidmixError("seq_len, global_batch_size, micro_batch_size and world_size must be >= 1")
    if global_batch % world_size:
        raise MidmixError(f"global_batch_size {global_batch} is not divisible by world_size {world_size}")
    if (global_batch // world_size) % micro_batch:
        raise MidmixError(
            f"each rank's share of the global batch ({global_batch // world_size} sequences) "
            f"is not divisible by micro_batch_size {micro_batch}"
        )
    if not 0 <= rank < world_size:
        raise MidmixError(f"rank {rank} is outside world_size {world_size}")
