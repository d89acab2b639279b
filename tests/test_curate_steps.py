"""Curation steps on hand-made documents: exact signal values, per-domain filtering, word hashing."""

from __future__ import annotations

import json

import numpy as np
from datatrove.data import Document

from midmix.pipelines.curation.config import HeuristicsConfig
from midmix.pipelines.curation.dedup.minhash import signatures
from midmix.pipelines.curation.steps.heuristics import HeuristicFilter, failed_rule
from midmix.pipelines.curation.steps.normalize import NormalizeText, normalize_text
from midmix.pipelines.curation.steps.signals import compute_signals
from midmix.pipelines.curation.steps.words import concat_words, hash_words, ngram_hashes, split_words


def test_normalize_nfc_whitespace_and_controls() -> None:
    decomposed = "Cafe\u0301 \u00a0ok  \r\n\r\n\r\n\r\n\tindented\t\n\x07end  "
    assert normalize_text(decomposed) == "Caf\u00e9  ok\n\n\tindented\nend"


def test_normalize_removes_lone_surrogates_that_utf8_cannot_encode() -> None:
    text = json.loads('"caf\\u00e9 \\ud800broken"')
    assert normalize_text(text) == "caf\u00e9 broken"
    assert normalize_text(text).encode("utf-8")


def test_normalize_step_drops_documents_left_empty() -> None:
    docs = [Document(text=" \n\x00 ", id="a", metadata={}), Document(text="x", id="b", metadata={})]
    out = list(NormalizeText().run(iter(docs)))
    assert [(doc.id, doc.metadata.get("drop_reason")) for doc in out] == [("a", "empty_text"), ("b", None)]


def test_signals_exact_values() -> None:
    text = "The cat and the dog sat with me. The cat and the dog.\n- a list item\n- a list item\nWait..."
    (signals,), _ = compute_signals([text])
    assert signals["sig_n_words"] == 20
    assert signals["sig_stopword_ratio"] == 7 / 20  # the x4, and x2, with x1
    assert signals["sig_bullet_line_ratio"] == 2 / 4
    assert signals["sig_ellipsis_line_ratio"] == 1 / 4
    assert signals["sig_duplicate_line_ratio"] == 1 / 4
    assert signals["sig_symbol_ratio"] == 1 / 20
    assert signals["sig_alpha_word_ratio"] == 1.0
    assert signals["sig_non_ascii_ratio"] == 0.0
    # every repeated bigram occurs twice; "list item" covers the most: 2 x 8 of 61 word bytes
    assert abs(signals["sig_top_2gram_ratio"] - 16 / 61) < 1e-9


def test_words_are_case_insensitive_and_hash_the_same_everywhere() -> None:
    batch = split_words(["Hello, WORLD 42", "", "world héllo"])
    assert batch.offsets.tolist() == [0, 3, 3, 5]
    assert batch.lengths.tolist() == [5, 5, 2, 5, 6]
    assert batch.has_letter.tolist() == [True, True, False, True, True]
    assert batch.hashes[1] == batch.hashes[3] == hash_words(["world"])[0]


def test_ngrams_stay_inside_one_document() -> None:
    words, offsets = concat_words([hash_words(list("abcdef")), hash_words(list("xy")), hash_words([])])
    hashes, owners = ngram_hashes(words, offsets, 5)
    assert owners.tolist() == [0, 0, 1]  # two 5-grams in doc 0, one short-doc n-gram for doc 1
    assert len(set(hashes.tolist())) == 3


def test_heuristics_judge_code_by_code_rules() -> None:
    code = "\n".join(f"def f{i}(x):\n    return x[{i}] + x[{i + 1}]  # pair {i}" for i in range(4))
    (signals,), _ = compute_signals([code])
    config = HeuristicsConfig()
    assert failed_rule(signals, config.for_domain("web"), "en") is not None
    assert failed_rule(signals, config.for_domain("code"), "en") is None
    doc_web = Document(text=code, id="w", metadata={**signals, "domain": "web", "lang": "en"})
    doc_code = Document(text=code, id="c", metadata={**signals, "domain": "code", "lang": "en"})
    out = list(HeuristicFilter(config).run(iter([doc_web, doc_code])))
    assert [doc.metadata.get("drop_step") for doc in out] == ["heuristics", None]


def test_stopword_rule_applies_to_english_only() -> None:
    config = HeuristicsConfig()
    german = "Dies ist ein deutscher Text ohne englische Wörter. Er hat genug Wörter, damit die Regel über die Länge greift und nichts anderes stört."
    (signals,), _ = compute_signals([german])
    assert failed_rule(signals, config.default, "de") is None
    assert failed_rule(signals, config.default, "en") == "min_stopword_ratio"


def test_minhash_estimates_jaccard() -> None:
    rng = np.random.default_rng(0)
    base = [f"w{i}" for i in rng.integers(0, 10_000, size=400)]
    edited = list(base)
    for position in range(0, 400, 40):
        edited[position] = "changed"
    words, offsets = concat_words([hash_words(base), hash_words(edited), hash_words(base)])
    sigs, present = signatures(words, offsets, 5, 100)
    assert present.all() and (sigs[0] == sigs[2]).all()
    shingles = [set(ngram_hashes(*concat_words([hash_words(doc)]), 5)[0].tolist()) for doc in (base, edited)]
    true = len(shingles[0] & shingles[1]) / len(shingles[0] | shingles[1])
    assert abs((sigs[0] == sigs[1]).mean() - true) < 0.12
