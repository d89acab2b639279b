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
    (signals,), _, _ = compute_signals([text], ["en"])
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
    assert batch.lengths.tolist() == [5, 5, 2, 5, 5]  # characters, not UTF-8 bytes
    assert batch.has_letter.tolist() == [True, True, False, True, True]
    assert batch.hashes[1] == batch.hashes[3] == hash_words(["world"])[0]


def test_ngrams_stay_inside_one_document() -> None:
    words, offsets = concat_words([hash_words(list("abcdef")), hash_words(list("xy")), hash_words([])])
    hashes, owners = ngram_hashes(words, offsets, 5)
    assert owners.tolist() == [0, 0, 1]  # two 5-grams in doc 0, one short-doc n-gram for doc 1
    assert len(set(hashes.tolist())) == 3


def test_heuristics_judge_code_by_code_rules() -> None:
    code = "\n".join(f"def f{i}(x):\n    return x[{i}] + x[{i + 1}]  # pair {i}" for i in range(4))
    (signals,), _, _ = compute_signals([code], ["en"])
    config = HeuristicsConfig()
    english = config.for_language("en", unspaced=False)
    assert failed_rule(signals, config.for_domain("web"), english) is not None
    assert failed_rule(signals, config.for_domain("code"), english) is None
    doc_web = Document(text=code, id="w", metadata={**signals, "domain": "web", "lang": "en"})
    doc_code = Document(text=code, id="c", metadata={**signals, "domain": "code", "lang": "en"})
    out = list(HeuristicFilter(config).run(iter([doc_web, doc_code])))
    assert [doc.metadata.get("drop_step") for doc in out] == ["heuristics", None]


def test_stopword_rule_reads_the_list_of_the_documents_language() -> None:
    config = HeuristicsConfig()
    german = "Dies ist ein deutscher Text ohne englische Wörter. Er hat genug Wörter, damit die Regel über die Länge greift und nichts anderes stört."
    (as_german, as_english, as_swahili), _, _ = compute_signals([german] * 3, ["de", "en", "sw"])
    assert as_german["sig_stopword_ratio"] == 4 / 23  # ist, die, die, und
    assert as_english["sig_stopword_ratio"] == 0.0
    assert as_swahili["sig_stopword_ratio"] is None  # no list for Swahili: no signal, no rule
    assert failed_rule(as_german, config.default, config.for_language("de", unspaced=False)) is None
    assert failed_rule(as_english, config.default, config.for_language("en", unspaced=False)) == "min_stopword_ratio"
    assert failed_rule(as_swahili, config.default, config.for_language("sw", unspaced=False)) is None


def test_stopword_list_is_not_applied_to_text_in_another_script() -> None:
    hindi = "यह एक हिंदी वाक्य है जिसमें फ़ारसी सूची का कोई शब्द नहीं है और यह काफ़ी लंबा है ताकि लंबाई का नियम लागू न हो।"
    (tagged_persian,), _, _ = compute_signals([hindi], ["fa"])
    assert HeuristicsConfig().by_language["fa"].stopwords is None or tagged_persian["sig_stopword_ratio"] is None
    (tagged_english,), _, _ = compute_signals([hindi], ["en"])
    assert tagged_english["sig_stopword_ratio"] is None  # English words cannot occur in Devanagari text


def test_no_space_scripts_split_into_characters_and_skip_word_length() -> None:
    batch = split_words(["日本語のテキストです。Debianパッケージ", "กินข้าว", "हिंदी भाषा", "한국어 텍스트"])
    words_per_doc = np.diff(batch.offsets).tolist()
    assert words_per_doc == [16, 5, 2, 2]  # 15 kana/kanji + "debian"; Thai by character with its marks
    assert batch.lengths[batch.offsets[2] : batch.offsets[3]].tolist() == [5, 4]  # Devanagari with its vowel signs
    japanese = "これはテストの文章です。" * 10
    (signals,), _, scripts = compute_signals([japanese], ["ja"])
    config = HeuristicsConfig()
    rules = config.for_language("ja", unspaced=True)
    assert rules.word_length is None and signals["sig_mean_word_length"] == 1.0
    assert failed_rule(signals, config.default, rules) is None
    assert config.for_language("en", unspaced=True).word_length is None  # script wins over a wrong tag


def test_word_counts_and_lengths_are_taken_in_english_equivalents() -> None:
    config = HeuristicsConfig()
    russian = config.for_language("ru", unspaced=False)
    signals = {"sig_n_words": 17.0, "sig_mean_word_length": 13.0}
    assert failed_rule(signals, config.default, config.for_language("en", unspaced=False)) == "min_words"
    assert failed_rule(signals, config.default, russian) is None  # 17 >= 20 x 0.8; 13 <= 12 x 1.25


def test_one_line_ending_in_an_ellipsis_is_not_truncation() -> None:
    body = (
        "The company has grown and the time has come to plan the information system for the year ahead, "
        "with the directors, so the administrator chooses a free system that is known to be stable."
    )
    text = f"Chapter 2. A case study\n\nLet us see what is in store for you...\n\n{body}"
    (signals,), _, _ = compute_signals([text], ["en"])
    assert signals["sig_ellipsis_line_ratio"] == 1 / 3
    config = HeuristicsConfig()
    english = config.for_language("en", unspaced=False)
    assert failed_rule(signals, config.default, english) is None
    strict = config.default.model_copy(update={"min_ellipsis_lines": 1})
    assert failed_rule(signals, strict, english) == "max_ellipsis_line_ratio"


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
