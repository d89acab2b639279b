"""Packing: documents become fixed-length training sequences, with no learning across documents.

The phase's documents form one *token stream*: each document's ids followed by ``eos_id``.
Sequence ``j`` is the ``seq_len + 1`` stream tokens starting at ``j * seq_len`` (inputs are
the first ``seq_len``, targets the last ``seq_len``), so consecutive sequences share one
token and every stream token after the first is a target exactly once; a document that
crosses a sequence boundary simply continues in the next sequence.

Per input token we also emit ``doc_ids`` (the document it belongs to, its EOS included) so
attention can be masked to the document, and ``position_ids`` counting from the document's
first token in this sequence (a document continued from the previous sequence restarts at 0:
it cannot attend to its earlier part anyway, and positions stay < seq_len). The target of an
EOS (the next document's first token) is ``IGNORE_INDEX``, so nothing is learned across
documents. Work is whole-array numpy plus one slice copy per document piece; no per-token loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100
"""Target value that the loss skips (torch's ``cross_entropy`` default ``ignore_index``)."""


@dataclass(frozen=True)
class PackedSequences:
    """Packed sequences; every array is int64 ``[n, seq_len]`` (``[windows, n, seq_len]`` from ``pack_pieces``)."""

    input_ids: np.ndarray
    targets: np.ndarray
    position_ids: np.ndarray
    doc_ids: np.ndarray


def pack_pieces(
    pieces: Sequence[np.ndarray],
    doc_ids: np.ndarray,
    eos_after: np.ndarray,
    seq_len: int,
    eos_id: int,
    windows: int = 1,
) -> PackedSequences:
    """Pack ``windows`` stream windows, each exactly ``n * seq_len + 1`` tokens, into ``[windows, n, seq_len]``.

    The windows are given as consecutive *pieces*: a piece is a run of one document's ids
    (``doc_ids[i]``), followed by an EOS where ``eos_after[i]``. Only a window's first piece
    may start inside a document (that is the sequence start, where positions reset anyway).
    A window's inputs are a view of its stream tokens, so only the targets are copied.
    """
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    eos_after = np.asarray(eos_after, dtype=bool)
    lengths = np.fromiter((len(piece) for piece in pieces), dtype=np.int64, count=len(pieces))
    spans = lengths + eos_after
    total = int(spans.sum())
    width = total // windows if windows else 0
    if windows < 1 or total != windows * width or width < 1 or (width - 1) % seq_len:
        raise ValueError(f"{total} tokens do not make {windows} windows of n * {seq_len} + 1 tokens")
    per_window = (width - 1) // seq_len
    starts = np.cumsum(spans) - spans
    stream = np.empty(total, dtype=np.int64)
    for piece, start, length in zip(pieces, starts.tolist(), lengths.tolist()):
        stream[start : start + length] = piece
    eos_at = (starts + lengths)[eos_after]
    stream[eos_at] = eos_id

    shape = (windows, per_window, seq_len)
    tokens = stream.reshape(windows, width)
    input_ids = tokens[:, :-1].reshape(shape)  # a view: rows of a window are consecutive
    targets = np.array(tokens[:, 1:]).reshape(shape)  # a copy: masking must not touch the inputs
    # An EOS that is an input predicts the next document's first token: mask that target.
    eos_window, eos_offset = np.divmod(eos_at, width)
    is_input = eos_offset < width - 1
    targets.reshape(-1)[eos_window[is_input] * (width - 1) + eos_offset[is_input]] = IGNORE_INDEX
    # Document ids of the inputs: every stream token but each window's last (a target only).
    input_spans = spans.copy()
    input_spans[np.searchsorted(starts, np.arange(1, windows + 1) * width - 1, side="right") - 1] -= 1
    input_doc_ids = np.repeat(doc_ids, input_spans)
    # Positions count from the latest document start or sequence start, whichever is later:
    # a running sum of ones that drops back to 0 at each such break.
    piece_window, piece_offset = np.divmod(starts, width)
    piece_starts = (piece_window * (width - 1) + piece_offset)[piece_offset < width - 1]
    inputs = windows * per_window * seq_len
    breaks = np.union1d(piece_starts, np.arange(0, inputs, seq_len))
    position_ids = np.ones(inputs, dtype=np.int64)
    position_ids[breaks] = 1 - np.diff(breaks, prepend=0)
    position_ids[0] = 0
    np.cumsum(position_ids, out=position_ids)
    return PackedSequences(
        input_ids=input_ids, targets=targets, position_ids=position_ids.reshape(shape), doc_ids=input_doc_ids.reshape(shape)
    )


def pack_windows(tokens: np.ndarray, begins: np.ndarray, doc_ends: np.ndarray, seq_len: int) -> PackedSequences:
    """Pack stream windows already laid out as ``tokens[w] = stream[begins[w] : begins[w] + width]``.

    ``doc_ends`` is every document's stream end (cumulative ``n_tokens + 1``, its EOS last), so
    document boundaries come from a binary search per window rather than from the tokens:
    the work is a few whole-array passes over the ``[windows, width]`` block, no per-document
    copy. ``tokens`` must be int64 with ``width = n * seq_len + 1``; ``input_ids`` is a view of it.
    Gives exactly what ``pack_pieces`` gives for the same windows.
    """
    windows, width = tokens.shape
    if width < 2 or (width - 1) % seq_len:
        raise ValueError(f"windows of {width} tokens are not n * {seq_len} + 1 tokens")
    per_window, inputs = (width - 1) // seq_len, width - 1
    begins = np.asarray(begins, dtype=np.int64)
    first = np.searchsorted(doc_ends, begins, side="right")  # the document each window starts in
    counts = np.searchsorted(doc_ends, begins + width, side="right") - first
    # Every document end inside a window (begin < end <= begin + width), as (window, offset).
    ended = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    window_of = np.repeat(np.arange(windows), counts)
    offset = doc_ends[ended] - begins[window_of]  # the EOS is at offset - 1, the next document starts at offset
    shape = (windows, per_window, seq_len)
    input_ids = np.lib.stride_tricks.as_strided(
        tokens, shape, (tokens.strides[0], seq_len * tokens.strides[1], tokens.strides[1])
    )
    targets = np.array(tokens[:, 1:])
    # An EOS that is an input predicts the next document's first token: mask that target.
    is_input = offset - 1 < inputs
    targets[window_of[is_input], offset[is_input] - 1] = IGNORE_INDEX
    # Document starts that are inputs (offset 0 is the window's own start, never in this list).
    starts_input = offset < inputs
    starts_window, starts_offset = window_of[starts_input], offset[starts_input]
    # Document ids: one run per (window, document), written by a single repeat.
    per_window_starts = np.bincount(starts_window, minlength=windows)
    run_window = np.repeat(np.arange(windows), per_window_starts + 1)
    run_first = np.cumsum(per_window_starts + 1) - per_window_starts - 1  # each window's first run
    run_begin = np.zeros(len(run_window), dtype=np.int64)
    run_begin[np.delete(np.arange(len(run_window)), run_first)] = starts_offset
    run_end = np.append(run_begin[1:], 0)
    run_end[np.append(run_first[1:], len(run_window)) - 1] = inputs
    run_docs = first[run_window] + np.arange(len(run_window)) - run_first[run_window]
    doc_ids = np.repeat(run_docs, run_end - run_begin)
    # Positions count from the latest document start or sequence start, whichever is later:
    # ones, cumulated along each sequence, dropping back to 0 at each document start inside it.
    sequence, column = np.divmod(starts_window * inputs + starts_offset, seq_len)
    sequence, column = sequence[column > 0], column[column > 0]  # column 0 restarts anyway
    same_sequence = np.append(False, sequence[1:] == sequence[:-1])
    previous = np.where(same_sequence, np.append(0, column[:-1]), 0)
    position_ids = np.ones((windows * per_window, seq_len), dtype=np.int64)
    position_ids[:, 0] = 0
    position_ids[sequence, column] = 1 - (column - previous)
    np.cumsum(position_ids, axis=1, out=position_ids)
    return PackedSequences(
        input_ids=input_ids, targets=targets.reshape(shape), position_ids=position_ids.reshape(shape),
        doc_ids=doc_ids.reshape(shape),
    )


def pack_documents(documents: Sequence[np.ndarray], seq_len: int, eos_id: int, first_doc: int = 0) -> PackedSequences:
    """Pack whole documents into all complete sequences; the incomplete tail is dropped.

    Documents are numbered ``first_doc, first_doc + 1, ...`` in ``doc_ids``.
    """
    lengths = np.fromiter((len(doc) for doc in documents), dtype=np.int64, count=len(documents))
    ends = np.cumsum(lengths + 1)
    sequences = (int(ends[-1]) - 1) // seq_len if len(ends) else 0
    if sequences == 0:
        empty = np.empty((0, seq_len), dtype=np.int64)
        return PackedSequences(empty, empty, empty, empty)
    width = sequences * seq_len + 1
    last = int(np.searchsorted(ends, width - 1, side="right"))
    keep = width - int(ends[last] - lengths[last] - 1)  # stream tokens of the last document that fit
    pieces = [*documents[:last], documents[last][: min(keep, int(lengths[last]))]]
    eos_after = np.ones(last + 1, dtype=bool)
    eos_after[-1] = keep > lengths[last]
    doc_ids = np.arange(first_doc, first_doc + last + 1)
    packed = pack_pieces(pieces, doc_ids, eos_after, seq_len, eos_id)
    return PackedSequences(packed.input_ids[0], packed.targets[0], packed.position_ids[0], packed.doc_ids[0])
