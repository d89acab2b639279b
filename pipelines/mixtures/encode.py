"""Texts to an Arrow ``list<uint32>`` column of token ids, without Python lists where avoidable.

HF tokenizer files go through ``Tokenizer.encode_ids`` (the fast tiktoken path where it applies).

The byte tokenizer needs no encoding at all: a UTF-8 string array's data buffer *is* the ids and
its offsets are the list offsets, so the column is built with two numpy views.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from midmix.pipelines.tokenizer import Tokenizer

ENCODE_BATCH_DOCS = 1024


def encode_arrow(tokenizer: Tokenizer, texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Token ids per text as ``list<uint32>`` (no end-of-document id; the packer adds it)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    texts = texts.cast(pa.string())
    if tokenizer.spec.kind == "bytes":
        return _bytes_ids(texts)
    return _hf_ids(tokenizer, texts)


def _bytes_ids(texts: pa.StringArray) -> pa.ListArray:
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets - start), pa.array(values[start:end].astype(np.uint32)))


def _hf_ids(tokenizer: Tokenizer, texts: pa.StringArray) -> pa.ListArray:
    strings = texts.to_pylist()
    batches = [tokenizer.encode_ids(strings[begin : begin + ENCODE_BATCH_DOCS]) for begin in range(0, len(strings), ENCODE_BATCH_DOCS)]
    lengths = np.concatenate([lengths for lengths, _ in batches]) if batches else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
    values = np.concatenate([values for _, values in batches]) if batches else np.zeros(0, np.uint32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
