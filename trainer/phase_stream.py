"""The training stream of one phase: exact blend, packing, rank/worker split and cheap resume.

The phase's *global* sequence order is a function of the manifest alone: documents are blended
across components by ``blend_schedule`` (weights = component rows, so every component ends
together and token shares equal the manifest's), each component's rows are read in shard order
(= curriculum order), and the resulting token stream is packed into ``seq_len`` sequences.
Global step ``s`` trains on sequences ``[s*G, (s+1)*G)``; rank ``r`` takes its contiguous
``G / world_size`` of them in micro-batches. World size and DataLoader workers only decide
who produces which micro-batch, never what it holds, so the order survives any of them and a
resume from step ``k`` reproduces the uninterrupted run (like mosaicml-streaming).

Construction reads only the small ``n_tokens`` and ``domain`` columns; token ids are read per
micro-batch, one Parquet row group at a time, so skipping to ``start_step`` costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from midmix.errors import MidmixError, NotFoundError
from trainer.blend import blend_schedule
from trainer.packing import PackedSequences, pack_pieces

_CACHED_ROW_GROUPS = 4
"""Decoded row groups kept per component: micro-batches of one step mostly share them."""

_READ_AHEAD_ROW_GROUPS = 2
"""Row groups per component decoded in the background ahead of the one being packed."""

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
        self._shards = [[_local_shard(self.name, shard_path, entry) for entry in c["shards"]] for c in components]
        n_tokens, domains = zip(*(_token_counts(shards) for shards in self._shards))
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
        return {
            "step": steps,
            "tokens": total,
            "components": _shares(self.component_names, by_component, total),
            "domains": _shares(self.domain_names, by_domain, total),
        }

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        readers = [
            _ComponentReader(shards, counts, f"phase {self.name!r}, component {name!r}")
            for shards, counts, name in zip(self._shards, self._component_tokens, self.component_names)
        ]
        try:
            yield from self._micro_batches(readers, worker_id, workers)
        finally:
            for reader in readers:
                reader.close()

    def _micro_batches(self, readers: list["_ComponentReader"], worker_id: int, workers: int) -> Iterator[dict]:
        per_step = self.micro_batches_per_step
        items = (self.steps_in_phase() - self.start_step) * per_step
        # Item-level round robin matches the DataLoader's in-order fetching from its workers.
        mine = np.arange(worker_id, items, workers)
        per_block = max(1, _BLOCK_TOKENS // (self.micro_batch_size * self.seq_len))
        for block in np.array_split(mine, -(-len(mine) // per_block)) if len(mine) else []:
            steps, micro_steps = np.divmod(block, per_step)
            steps += self.start_step
            first_sequences = (
                steps * self.global_batch_size + self.rank * self.rank_batch_size + micro_steps * self.micro_batch_size
            )
            packed = self._pack(readers, first_sequences)
            for number, (step, micro_step) in enumerate(zip(steps.tolist(), micro_steps.tolist())):
                rows = slice(number * self.micro_batch_size, (number + 1) * self.micro_batch_size)
                yield {
                    "input_ids": torch.from_numpy(packed.input_ids[rows]),
                    "targets": torch.from_numpy(packed.targets[rows]),
                    "position_ids": torch.from_numpy(packed.position_ids[rows]),
                    "doc_ids": torch.from_numpy(packed.doc_ids[rows]),
                    "step": step,
                    "micro_step": micro_step,
                }

    def _pack(self, readers: list["_ComponentReader"], first_sequences: np.ndarray) -> PackedSequences:
        """For each start, the ``micro_batch_size`` sequences from there, stacked in one array.

        Each is a window of ``micro_batch_size * seq_len + 1`` stream tokens, cut into one piece
        per document it touches; a piece is a view into a decoded row group, so only the
        window's tokens are copied (a long document is never copied whole).
        """
        width = self.micro_batch_size * self.seq_len + 1
        begins = first_sequences * self.seq_len
        ends = begins + width
        first = np.searchsorted(self._ends, begins, side="right")
        counts = np.searchsorted(self._ends, ends - 1, side="right") - first + 1
        # The documents each window touches, concatenated (a document can be in two windows).
        docs = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        window_of = np.repeat(np.arange(len(begins)), counts)
        lengths, doc_end = self._n_tokens[docs], self._ends[docs]
        doc_start = doc_end - lengths - 1
        skip = np.maximum(begins[window_of] - doc_start, 0)
        spans = np.minimum(doc_end, ends[window_of]) - doc_start - skip
        eos_after = skip + spans == lengths + 1
        stops = np.minimum(skip + spans, lengths)

        pieces: list[np.ndarray] = [np.empty(0, dtype=np.uint32)] * len(docs)
        components = self._component[docs]
        for index in np.unique(components):
            chosen = np.flatnonzero(components == index)
            for values, members, offsets in readers[index].locate(self._row[docs[chosen]]):
                for entry, offset in zip(chosen[members].tolist(), offsets.tolist()):
                    pieces[entry] = values[offset + skip[entry] : offset + stops[entry]]
        return pack_pieces(pieces, docs, eos_after, self.seq_len, self.eos_id, windows=len(begins))


class _ComponentReader:
    """Decodes one component's shards a row group at a time, keeping the last few decoded
    and reading the next ones ahead while the caller packs."""

    def __init__(self, shards: list[Path], n_tokens: np.ndarray, where: str):
        self._paths = shards
        self._files = [pq.ParquetFile(path) for path in shards]
        self._n_tokens = n_tokens
        self._where = where
        # (shard, row group) for each row group, and the component row where each starts.
        groups, starts = [], [0]
        for shard, handle in enumerate(self._files):
            for group in range(handle.metadata.num_row_groups):
                groups.append((shard, group))
                starts.append(starts[-1] + handle.metadata.row_group(group).num_rows)
        self._groups = groups
        self._group_starts = np.array(starts, dtype=np.int64)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # One thread decodes every group, so a ParquetFile is never read from two threads.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="midmix-decode")
        self._pending: dict[int, Future] = {}

    def locate(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For non-decreasing component ``rows``: (decoded ids of a row group, which of ``rows``
        it holds, where each of those starts in the ids)."""
        owners = np.searchsorted(self._group_starts, rows, side="right") - 1
        for group in np.unique(owners):
            members = np.flatnonzero(owners == group)
            values, offsets = self._row_group(int(group))
            yield values, members, offsets[rows[members] - self._group_starts[group]]

    def close(self) -> None:
        """Stop reading ahead."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _row_group(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded group; the next ones start decoding in the background (pyarrow frees the GIL)."""
        if group in self._cache:
            self._cache.move_to_end(group)
            return self._cache[group]
        decoded = self._decoding(group).result()
        del self._pending[group]
        self._cache[group] = decoded
        if len(self._cache) > _CACHED_ROW_GROUPS:
            self._cache.popitem(last=False)
        for ahead in range(group + 1, min(group + 1 + _READ_AHEAD_ROW_GROUPS, len(self._groups))):
            if ahead not in self._cache:
                self._decoding(ahead)
        return decoded

    def _decoding(self, group: int) -> Future:
        if group not in self._pending:
            self._pending[group] = self._pool.submit(self._decode, group)
        return self._pending[group]

    def _decode(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat ids and row offsets of one row group, checked against the n_tokens column."""
        shard, index = self._groups[group]
        column = self._files[shard].read_row_group(index, columns=["input_ids"]).column(0)
        ids = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        offsets = ids.offsets.to_numpy().astype(np.int64)
        start, stop = self._group_starts[group], self._group_starts[group + 1]
        if not np.array_equal(np.diff(offsets), self._n_tokens[start:stop]):
            raise MidmixError(
                f"{self._where}: input_ids lengths disagree with n_tokens in {self._paths[shard]}; "
                "the shard is corrupt, delete it from the cache and fetch it again"
            )
        return ids.values.to_numpy()[offsets[0] : offsets[-1]], offsets - offsets[0]


def _local_shard(phase: str, shard_path: Callable[[dict], Path], entry: dict) -> Path:
    """The shard's local file, or MidmixError naming it."""
    path = Path(shard_path(entry))
    if not path.is_file():
        raise MidmixError(f"phase {phase!r}: shard {entry.get('path', entry)} is missing at {path}; fetch it again")
    return path


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
