"""Packing: exact tokens, targets, masks, positions and document ids on handmade documents."""

from __future__ import annotations

import numpy as np
import pytest

from midmix.trainer.packing import IGNORE_INDEX, pack_documents, pack_pieces, pack_windows

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
    assert np.array_equal(packed.targets == M, packed.input_ids == EOS)
    assert packed.targets[0, 2] == EOS


def test_doc_ids_segment_each_sequence_by_document():
    packed = pack_documents(DOCS, seq_len=4, eos_id=EOS, first_doc=40)
    assert packed.doc_ids.tolist() == [[40, 40, 40, 40], [41, 41, 41, 42], [42, 42, 42, 42]]


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


def test_incomplete_tail_is_dropped():
    packed = pack_documents(DOCS, seq_len=5, eos_id=EOS)
    # 13 stream tokens make 2 sequences of 5 (11 tokens); "9 10 E" is dropped
    assert packed.input_ids.tolist() == [[1, 2, 3, 0, 4], [5, 0, 6, 7, 8]]
    assert packed.targets.tolist() == [[2, 3, 0, M, 5], [0, M, 7, 8, 9]]
    assert pack_documents([np.array([1])], seq_len=5, eos_id=EOS).input_ids.shape == (0, 5)


def test_empty_documents_are_just_an_eos():
    packed = pack_documents([np.array([], dtype=np.int64), np.array([7])], seq_len=2, eos_id=EOS)
    # stream: E 7 E
    assert packed.input_ids.tolist() == [[0, 7]]
    assert packed.targets.tolist() == [[M, 0]]
    assert packed.input_ids.dtype == np.int64


def test_windows_pack_independently_and_may_start_inside_a_document():
    # window 0: doc 5 = [1 2] E, doc 6 = [3] E (5 tokens); window 1 starts inside doc 9: [7 8] E [9] (no EOS yet)
    pieces = [np.array([1, 2]), np.array([3]), np.array([7, 8]), np.array([9, 9])]
    packed = pack_pieces(pieces, np.array([5, 6, 9, 10]), np.array([True, True, True, False]), seq_len=2, eos_id=EOS, windows=2)
    assert packed.input_ids.tolist() == [[[1, 2], [0, 3]], [[7, 8], [0, 9]]]
    assert packed.targets.tolist() == [[[2, 0], [M, 0]], [[8, 0], [M, 9]]]
    assert packed.doc_ids.tolist() == [[[5, 5], [5, 6]], [[9, 9], [9, 10]]]
    assert packed.position_ids.tolist() == [[[0, 1], [0, 0]], [[0, 1], [0, 0]]]


def test_pieces_that_do_not_fill_whole_windows_raise():
    with pytest.raises(ValueError, match="do not make 1 windows of n \\* 4 \\+ 1 tokens"):
        pack_pieces([np.array([1, 2, 3])], np.array([0]), np.array([True]), seq_len=4, eos_id=EOS)


def test_windows_of_a_laid_out_stream_take_boundaries_from_document_ends():
    # stream: [1 2] E [3] E [4 5 6 7 8] E [9 9 9] E; windows of 5 tokens at 0 and 7 (strided, as ranks take them)
    stream = np.array([1, 2, 0, 3, 0, 4, 5, 6, 7, 8, 0, 9, 9, 9, 0])
    begins = np.array([0, 7])
    packed = pack_windows(np.stack([stream[b : b + 5] for b in begins]), begins, np.array([3, 5, 11, 15]), seq_len=2)
    assert packed.input_ids.tolist() == [[[1, 2], [0, 3]], [[6, 7], [8, 0]]]
    assert packed.targets.tolist() == [[[2, 0], [M, 0]], [[7, 8], [0, M]]]
    assert packed.doc_ids.tolist() == [[[0, 0], [0, 1]], [[2, 2], [2, 2]]]
    assert packed.position_ids.tolist() == [[[0, 1], [0, 0]], [[0, 1], [0, 1]]]


def test_pack_windows_equals_pack_documents():
    rng = np.random.default_rng(3)
    documents = [rng.integers(1, 200, size=n) for n in rng.integers(0, 30, size=200)]  # empty ones too
    expected = pack_documents(documents, seq_len=8, eos_id=EOS)
    stream = np.concatenate([np.append(doc, EOS) for doc in documents])
    ends = np.cumsum([len(doc) + 1 for doc in documents])
    begins = np.arange(len(expected.input_ids) // 3) * 24  # windows of 3 sequences
    packed = pack_windows(np.stack([stream[b : b + 25] for b in begins]), begins, ends, seq_len=8)
    for key in ("input_ids", "targets", "position_ids", "doc_ids"):
        assert np.array_equal(getattr(packed, key).reshape(-1, 8), getattr(expected, key)[: len(begins) * 3]), key
