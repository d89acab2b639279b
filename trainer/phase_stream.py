"""The training stream of one phase: exact blend, packing, rank/worker split and cheap resume.

The phase's *global* sequence order is a function of the manifest alone: documents are blended
across components by ``blend_schedule`` (weights = component rows, so every component ends
together and token shares equal the manifest's), each component's rows are read in shard order
(= curriculum order), and the resulting token stream is packed into ``seq_len`` sequences.
Global step ``s`` trains on sequences ``[s*G, (s+1)*G)``; rank ``r`` takes its contiguous
``G / world_size`` of them in micro-batches. World size and DataLoader workers only decide
who produces which micro-batch, never what it holds, so the order survives any of them and a
resume from step ``k`` reproduces the uninterrupted run (like mosaicml-streaming).

Construction reads only the small ``n_tokens`` and ``domain`` columns. Token ids are decoded
once per shard, when the stream first reaches it, into flat uncompressed arrays named by the
shard's sha256 under ``decoded_dir`` (shared by DataLoader workers, ranks and later runs), which
are then memory-mapped; decoding zstd Parquet costs more than everything else the loader does,
so paying it once matters. Since the global order is fixed, the blended, EOS-separated token
stream itself is then laid out once, in segments named by the phase's content (``_StreamSegments``),
and a micro-batch is a slice of it plus whole-array work over document ends (``pack_windows``),
not a gather from documents. Shards and segments before ``start_step`` are never read: resume is cheap.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from midmix.errors import MidmixError, NotFoundError
from midmix.publish import atomic_path
from midmix.trainer.blend import blend_schedule
from midmix.trainer.packing import pack_windows
from midmix.trainer.shard_cache import decoded_shard

DEFAULT_DECODED_DIR = Path(tempfile.gettempdir()) / f"midmix-decoded-{os.getuid()}"
"""Where decoded shards go unless ``decoded_dir`` is given (pass the shard cache's folder so
its byte cap covers them)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
"""glibc ``mallopt`` parameters (malloc.h)."""

_SEGMENT_TOKENS = 1 << 22
"""Stream tokens per laid-out segment file (16 MB of uint32): large enough that few windows
straddle two segments, small enough that a resume lays out little it will not read."""

_BLOCK_TOKENS = 1 << 18
"""Tokens of micro-batches built per vectorised call: amortises numpy call overhead while
keeping a block's arrays (about 40 bytes a token) in the low tens of MB."""


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

    Yields dicts with int64 tensors ``input_ids``, ``targets`` (-100 where masked),
    ``position_ids`` and ``doc_ids``, all ``[micro_batch_size, seq_len]``, plus ints
    ``step`` and ``micro_step``. Use ``DataLoader(stream, batch_size=None, num_workers=k)``.
    ``decoded_dir`` keeps the decoded shards (default ``DEFAULT_DECODED_DIR``); give it a
    folder inside the shard cache so the cache's byte cap covers them.
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
        decoded_dir: Path | None = None,
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

        components = phase.get("components", [])
        if not components:
            raise MidmixError(f"phase {self.name!r} has no components; rebuild the mixture")
        self.component_names = [component["name"] for component in components]
        self.decoded_dir = Path(decoded_dir) if decoded_dir is not None else DEFAULT_DECODED_DIR
        self._shards = [[_local_shard(self.name, shard_path, entry) for entry in c["shards"]] for c in components]
        n_tokens, domains = zip(*(_token_counts([path for path, _ in shards]) for shards in self._shards))
        self._component_tokens: list[np.ndarray] = list(n_tokens)
        self.domain_names = sorted(set().union(*(set(names) for names, _ in domains)))
        rows = [len(counts) for counts in n_tokens]
        if sum(rows) == 0:
            raise MidmixError(f"phase {self.name!r} has no documents; rebuild the mixture")

        # Per global document: component, row within the component, tokens, domain, stream end.
        self._component = blend_schedule(rows, sum(rows))
        self._row = np.empty(len(self._component), dtype=np.int64)
        self._n_tokens = np.empty(len(self._component), dtype=np.int64)
        self._domain = np.empty(len(self._component), dtype=np.int32)
        for index, (counts, (names, codes)) in enumerate(zip(n_tokens, domains)):
            mine = np.flatnonzero(self._component == index)
            self._row[mine] = np.arange(len(mine))
            self._n_tokens[mine] = counts
            remap = np.array([self.domain_names.index(name) for name in names], dtype=np.int32)
            self._domain[mine] = remap[codes] if len(remap) else 0
        self._ends = np.cumsum(self._n_tokens + 1)

        if start_step > self.steps_in_phase():
            raise MidmixError(
                f"phase {self.name!r} has {self.steps_in_phase()} steps; cannot resume at step {start_step}"
            )

    def steps_in_phase(self) -> int:
        """Full global steps the phase's tokens make; the incomplete tail is dropped."""
        sequences = (int(self._ends[-1]) - 1) // self.seq_len
        return sequences // self.global_batch_size

    def realized_shares(self, steps: int) -> dict:
        """Document tokens (EOS excluded) trained on in the first ``steps`` steps, by component and domain."""
        steps = min(steps, self.steps_in_phase())
        consumed_prefix = steps * self.global_batch_size * self.seq_len
        starts = self._ends - self._n_tokens - 1
        consumed = np.clip(consumed_prefix - starts, 0, self._n_tokens)
        total = int(consumed.sum())
        by_component = np.bincount(self._component, weights=consumed, minlength=len(self.component_names))
        by_domain = np.bincount(self._domain, weights=consumed, minlength=len(self.domain_names))
        components = _shares(self.component_names, by_component, total)
        # The whole phase's share is the manifest's: a prefix drifts from it when document lengths vary.
        whole = np.bincount(self._component, weights=self._n_tokens, minlength=len(self.component_names))
        for name, target in zip(self.component_names, whole / max(1, int(whole.sum()))):
            components[name]["target"] = float(target)
        return {
            "step": steps,
            "tokens": total,
            "components": components,
            "domains": _shares(self.domain_names, by_domain, total),
        }

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
        per_step = self.micro_batches_per_step
        items = (self.steps_in_phase() - self.start_step) * per_step
        # Item-level round robin matches the DataLoader's in-order fetching from its workers.
        mine = np.arange(worker_id, items, workers)
        width = self.micro_batch_size * self.seq_len + 1
        per_block = max(1, _BLOCK_TOKENS // (self.micro_batch_size * self.seq_len))
        for block in np.array_split(mine, -(-len(mine) // per_block)) if len(mine) else []:
            steps, micro_steps = np.divmod(block, per_step)
            steps += self.start_step
            first_sequences = (
                steps * self.global_batch_size + self.rank * self.rank_batch_size + micro_steps * self.micro_batch_size
            )
            begins = first_sequences * self.seq_len
            tokens = np.empty((len(begins), width), dtype=np.int64)
            for row, begin in zip(tokens, begins.tolist()):
                segments.copy_to(row, begin)
            packed = pack_windows(tokens, begins, self._ends, self.seq_len)
            for number, (step, micro_step) in enumerate(zip(steps.tolist(), micro_steps.tolist())):
                yield {
                    "input_ids": torch.from_numpy(packed.input_ids[number]),
                    "targets": torch.from_numpy(packed.targets[number]),
                    "position_ids": torch.from_numpy(packed.position_ids[number]),
                    "doc_ids": torch.from_numpy(packed.doc_ids[number]),
                    "step": step,
                    "micro_step": micro_step,
                }

    def _stream_tokens(self, readers: list[_ComponentReader], begin: int, end: int) -> np.ndarray:
        """Stream tokens ``[begin, end)`` (uint32, EOS after each document) gathered from the decoded shards.

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
        out = np.empty(end - begin, dtype=np.uint32)
        components = self._component[docs]
        for index in np.unique(components):
            chosen = np.flatnonzero(components == index)
            for values, members, offsets in readers[index].locate(self._row[docs[chosen]]):
                for entry, offset in zip(chosen[members].tolist(), offsets.tolist()):
                    piece = values[offset + skip[entry] : offset + stops[entry]]
                    out[out_at[entry] : out_at[entry] + len(piece)] = piece
        eos_at = doc_end - 1 - begin
        out[eos_at[(eos_at >= 0) & (eos_at < end - begin)]] = self.eos_id
        return out

    def layout_key(self) -> str:
        """Names the phase's laid-out token stream by everything it depends on: shard contents,
        the blend schedule itself (so a change to ``blend_schedule`` can never reuse a stale layout),
        EOS id and segment size."""
        shards = [[sha256 for _, sha256 in component] for component in self._shards]
        spec = json.dumps({"shards": shards, "eos_id": self.eos_id, "segment_tokens": _SEGMENT_TOKENS})
        digest = hashlib.sha256(spec.encode())
        digest.update(self._component.tobytes())
        return digest.hexdigest()


class _StreamSegments:
    """The phase's token stream laid out once, in ``_SEGMENT_TOKENS`` segments, as uint32 ``.npy`` files.

    The global order never changes, so the blend and the EOS separators are paid for once per
    machine: segment ``k`` is gathered from the decoded shards on first use (under a file lock,
    so workers and ranks lay it out once), named by ``PhaseStream.layout_key``, then memory-mapped.
    A micro-batch is then a slice of it. Only segments the run reads are laid out: resume stays cheap.
    """

    def __init__(self, stream: PhaseStream, readers: list[_ComponentReader]):
        self._stream = stream
        self._readers = readers
        self._total = int(stream._ends[-1])
        self._prefix = stream.decoded_dir / f"stream-{stream.layout_key()}"
        self._mapped: dict[int, np.ndarray] = {}

    def copy_to(self, row: np.ndarray, begin: int) -> None:
        """Fill ``row`` with the stream tokens from ``begin`` on (a window may straddle two segments)."""
        done = 0
        while done < len(row):
            segment, at = divmod(begin + done, _SEGMENT_TOKENS)
            values = self._segment(segment)[at : at + len(row) - done]
            row[done : done + len(values)] = values
            done += len(values)

    def _segment(self, segment: int) -> np.ndarray:
        if segment not in self._mapped:
            self._mapped = {segment - 1: self._mapped[segment - 1]} if segment - 1 in self._mapped else {}
            self._mapped[segment] = self._load_or_build(segment)
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
