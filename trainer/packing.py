"""Packing: documents become fixed-length training sequences, with no learning across documents.

The phase's documents form one *token stream*: each document's ids followed by ``eos_id``.
Sequence ``j`` is the ``seq_len + 1`` stream tokens starting at ``j * seq_len`` (inputs are
the first ``seq_len``, targets the last ``seq_len``), so consecutive sequences share one
token and every stream token after the first is a target exactly once; a document that
crosses a sequence boundary simply continues in the next sequence.

Per input token we also emit ``doc_ids`` (the stream index of the document it belongs to, its
EOS included) so attention can be masked to the document, and ``position_ids`` counting from
the document's first token in this sequence (a document continued from the previous sequence
restarts at 0: it cannot attend to its earlier part anyway, and positions stay < seq_len).
A target whose document differs from its input's (the EOS predicting the next document's
first token) is ``IGNORE_INDEX``. Everything is whole-array numpy; no per-token Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

IGNORE_INDEX = -100
"""Target value that the loss skips (torch's ``cross_entropy`` default ``ignore_index``)."""


@dataclass(frozen=True)
class TokenStream:
    """A run of consecutive stream tokens: ids, their document index and position in it."""

    tokens: np.ndarray
    doc_ids: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    def window(self, start: int, stop: int) -> "TokenStream":
        """Stream tokens ``[start, stop)`` (views, no copy)."""
        return TokenStream(self.tokens[start:stop], self.doc_ids[start:stop], self.positions[start:stop])


@dataclass(frozen=True)
class PackedSequences:
    """``n`` packed sequences; every array is int64 ``[n, seq_len]`` (inputs may be views of the stream)."""

    input_ids: np.ndarray
    targets: np.ndarray
    position_ids: np.ndarray
    doc_ids: np.ndarray


def document_stream(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, eos_id: int, first_doc: int = 0
) -> TokenStream:
    """The stream of documents ``values[starts[i] : starts[i] + lengths[i]]``, each plus EOS.

    Documents are numbered ``first_doc, first_doc + 1, ...`` in ``doc_ids``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    spans = lengths + 1
    ends = np.cumsum(spans)
    offsets = ends - spans
    total = int(ends[-1]) if len(ends) else 0
    doc_index = np.repeat(np.arange(len(spans), dtype=np.int64), spans)
    positions = np.arange(total, dtype=np.int64) - offsets[doc_index]
    is_eos = positions == lengths[doc_index]
    # One gather: the EOS id is appended to the values and EOS positions point at it.
    padded = np.append(np.asarray(values, dtype=np.int64), np.int64(eos_id))
    tokens = padded[np.where(is_eos, len(padded) - 1, starts[doc_index] + positions)]
    return TokenStream(tokens=tokens, doc_ids=doc_index + first_doc, positions=positions)


def documents_stream(documents: Sequence[np.ndarray], eos_id: int, first_doc: int = 0) -> TokenStream:
    """``document_stream`` over a list of token arrays (convenient for small inputs)."""
    lengths = np.array([len(doc) for doc in documents], dtype=np.int64)
    values = np.concatenate([np.asarray(doc, dtype=np.int64) for doc in documents] + [np.empty(0, np.int64)])
    starts = np.cumsum(lengths) - lengths
    return document_stream(values, starts, lengths, eos_id, first_doc)


def pack_sequences(stream: TokenStream, seq_len: int, n_sequences: int | None = None) -> PackedSequences:
    """Cut ``stream`` into ``n_sequences`` sequences (default: all complete ones) from its start.

    Needs ``n_sequences * seq_len + 1`` stream tokens.
    """
    if n_sequences is None:
        n_sequences = max(len(stream) - 1, 0) // seq_len
    needed = n_sequences * seq_len + 1
    if len(stream) < needed:
        raise ValueError(f"packing {n_sequences} x {seq_len} needs {needed} stream tokens, got {len(stream)}")
    window = stream.window(0, needed)
    return pack_windows(TokenStream(window.tokens[None], window.doc_ids[None], window.positions[None]), seq_len)


def pack_windows(windows: TokenStream, seq_len: int) -> PackedSequences:
    """Pack a ``[W, n * seq_len + 1]`` stack of independent stream windows into ``W * n`` sequences.

    Sequence ``j`` of a window is its tokens ``[j*L, j*L + L + 1)``: inputs and targets are the
    window shifted by one, reshaped.
    """
    count, width = windows.tokens.shape
    per_window = (width - 1) // seq_len
    shape = (count * per_window, seq_len)
    input_ids = windows.tokens[:, :-1].reshape(shape)
    doc_ids = windows.doc_ids[:, :-1].reshape(shape)
    same_doc = windows.doc_ids[:, 1:].reshape(shape) == doc_ids
    targets = np.where(same_doc, windows.tokens[:, 1:].reshape(shape), IGNORE_INDEX)
    positions = windows.positions[:, :-1].reshape(shape)
    continued = doc_ids == doc_ids[:, :1]
    position_ids = np.where(continued, positions - positions[:, :1], positions)
    return PackedSequences(input_ids=input_ids, targets=targets, position_ids=position_ids, doc_ids=doc_ids)


def pack_documents(documents: Sequence[np.ndarray], seq_len: int, eos_id: int) -> PackedSequences:
    """Pack whole documents into all complete sequences; the incomplete tail is dropped."""
    return pack_sequences(documents_stream(documents, eos_id), seq_len)
