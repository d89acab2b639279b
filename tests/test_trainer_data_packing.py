"""Packing: exact tokens, targets, masks, positions and document ids on handmade documents."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.packing import IGNORE_INDEX, document_stream, documents_stream, pack_documents, pack_sequences

EOS = 0
M = IGNORE_INDEX
DOCS = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9, 10])]


def test_documents_are_joined_with_eos_and_cut_with_one_token_overlap():
    packed = pack_documents(DOCS, seq_len=4, eos_id=EOS)
    # stream: 1 2 3 E 4 5 E 6 7 8 9 10 E  (13 tokens = 3 sequences of 4, plus one target)
    assert packed.input_ids.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 10]]
    assert packed.targets.tolist() == [[2, 3, 0, M], [5, 0, M, 7], [8, 9, 10, 0]]


def test_eos_predicting_the_next_document_is_masked_but_predicting_eos_is_learned():
    packed = pack_documents(DOCS, seq_len=4, eos_id=EOS)
    masked = packed.targets == M
    assert np.array_equal(masked, packed.input_ids == EOS)
    assert packed.targets[0, 2] == EOS


def test_doc_ids_segment_each_sequence_by_document():
    packed = pack_documents(DOCS, seq_len=4, eos_id=EOS)
    assert packed.doc_ids.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2], [2, 2, 2, 2]]


def test_positions_reset_at_each_document_and_at_a_continued_document():
    packed = pack_documents(DOCS, seq_len=4, eos_id=EOS)
    # row 2 continues document 2 (started in row 1), so its positions restart at 0
    assert packed.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 2, 3]]


def test_a_document_longer_than_a_sequence_spans_several():
    packed = pack_documents([np.arange(1, 11), np.array([20])], seq_len=3, eos_id=EOS)
    # stream: 1..10 E 20 E (13 tokens -> 4 sequences)
    assert packed.input_ids.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 0, 20]]
    assert packed.targets.tolist() == [[2, 3, 4], [5, 6, 7], [8, 9, 10], [0, M, 0]]
    assert packed.doc_ids.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert packed.position_ids.tolist() == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 0]]


def test_incomplete_tail_is_dropped_and_short_streams_raise():
    packed = pack_documents(DOCS, seq_len=5, eos_id=EOS)
    assert packed.input_ids.shape == (2, 5)
    with pytest.raises(ValueError, match="needs 16 stream tokens, got 13"):
        pack_sequences(documents_stream(DOCS, EOS), seq_len=5, n_sequences=3)


def test_stream_from_flat_values_numbers_documents_from_first_doc():
    values = np.array([9, 1, 2, 3, 9, 4, 5], dtype=np.uint32)
    stream = document_stream(values, starts=np.array([1, 5]), lengths=np.array([3, 2]), eos_id=EOS, first_doc=40)
    assert stream.tokens.tolist() == [1, 2, 3, 0, 4, 5, 0]
    assert stream.doc_ids.tolist() == [40, 40, 40, 40, 41, 41, 41]
    assert stream.positions.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert stream.window(2, 5).tokens.tolist() == [3, 0, 4]


def test_empty_documents_are_just_an_eos():
    packed = pack_documents([np.array([], dtype=np.int64), np.array([7])], seq_len=2, eos_id=EOS)
    # stream: E 7 E
    assert packed.input_ids.tolist() == [[0, 7]]
    assert packed.targets.tolist() == [[M, 0]]
    assert packed.input_ids.dtype == np.int64
