"""The fast BPE encoder gives HF tokenizers' ids, id for id, or steps aside with a reason.

Tokenizers in the styles of GPT-2, RoBERTa (prefix space), Llama 3 (Split regex, ignore_merges,
reserved special tokens), Qwen2 (NFC, its digit rule) and GPT-NeoX / OLMo 1 (NFC, non-special
whitespace added tokens) are trained here on the bundled corpus (no hub) and compared with HF on
every language and domain of the corpus, on every assigned Unicode code point, and on texts with
added tokens inside words.
"""

from __future__ import annotations

import gzip
import json
import unicodedata
from collections import defaultdict

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import pre_tokenizers
from tokenizers.models import BPE, WordPiece

from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec
from midmix.pipelines.tokenizer_fast import fast_path
from midmix.pipelines.tokenizer_train import train_tokenizer
from midmix.resources import SAMPLE_CORPUS
from tests.tokenizer_styles import STYLES, train_style


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    with gzip.open(SAMPLE_CORPUS, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def stratified(corpus) -> list[str]:
    """Two whole documents of every (language, domain) pair of the corpus: all 28 languages, code, math."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for doc in corpus:
        groups[(doc["lang"], doc["domain"])].append(doc["text"])
    assert len({lang for lang, _ in groups}) == 28
    return [text for texts in groups.values() for text in texts[:2]]


@pytest.fixture(scope="module")
def code_points() -> list[str]:
    """Every assigned code point, inside words, doubled, between digits and before a contraction."""
    chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cs", "Cn", "Co")]
    return ["".join(f"a{c}b {c}{c}1{c}2{c}'s\n" for c in chars[i : i + 256]) for i in range(0, len(chars), 256)]


def _compare(hf: HFTokenizer, texts: list[str]) -> list[int]:
    """Indices of texts whose fast ids differ from HF's."""
    path = fast_path(hf.to_str())
    assert path.encoder is not None, path.reason
    expected = [encoding.ids for encoding in hf.encode_batch(texts, add_special_tokens=False)]
    lengths, values = path.encoder.encode(texts)
    got = np.split(values, np.cumsum(lengths)[:-1])
    return [i for i, (want, have) in enumerate(zip(expected, got)) if want != have.tolist()]


@pytest.fixture(scope="module")
def trained(corpus) -> dict[str, HFTokenizer]:
    texts = [doc["text"][:2000] for doc in corpus[::8]]
    return {style: train_style(style, texts, 2000) for style in STYLES}


@pytest.mark.parametrize("style", STYLES)
def test_fast_ids_equal_hf_on_every_language_and_domain(trained, stratified, style):
    with_added = [text[:300] + "<|endoftext|>x" + text[300:600] + "  |||EMAIL|||<|im_end|>" for text in stratified[::5]]
    assert _compare(trained[style], stratified + with_added) == []


@pytest.mark.parametrize("style", ("gpt2", "llama3", "qwen2"))
def test_fast_ids_equal_hf_on_every_unicode_code_point(trained, code_points, style):
    assert _compare(trained[style], code_points) == []


def test_the_reason_names_the_style_and_the_checks(trained):
    assert fast_path(trained["llama3"].to_str()).reason.startswith("tiktoken: byte-level BPE, Llama 3")
    assert "merges re-derived, self-check passed" in fast_path(trained["gpt2"].to_str()).reason


def _with(hf: HFTokenizer, **changes) -> HFTokenizer:
    config = json.loads(hf.to_str())
    for dotted, value in changes.items():
        target = config
        *path, last = dotted.split("__")
        for key in path:
            target = target[key]
        target[last] = value
    return HFTokenizer.from_str(json.dumps(config))


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"pre_tokenizer__pretokenizers": None}, "is not ByteLevel or Sequence"),
        ({"model__byte_fallback": True}, "byte_fallback"),
        ({"normalizer": {"type": "NFKC"}}, "normalizer"),
        ({"model__dropout": 0.1}, "dropout"),
    ],
)
def test_unsupported_configurations_fall_back_to_hf_with_a_reason(trained, stratified, change, reason):
    base = trained["llama3"] if "pre_tokenizer__pretokenizers" in change else trained["gpt2"]
    if "pre_tokenizer__pretokenizers" in change:
        change = {"pre_tokenizer__pretokenizers": [{"type": "Split", "pattern": {"Regex": r"\w+|\W"}, "behavior": "Isolated", "invert": False}, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}  # fmt: skip
        reason = "not one of the verified patterns"
    hf = _with(base, **change)
    assert fast_path(hf.to_str()).encoder is None
    assert reason in fast_path(hf.to_str()).reason


def test_a_merge_tiktoken_would_not_rederive_means_hf(tmp_path):
    """a+b, b+c, then a+bc: tiktoken would turn "abc" into one token by its rank, HF stops at [ab, c]."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    for token in ("ab", "bc", "abc"):
        vocab[token] = len(vocab)
    hf = HFTokenizer(BPE(vocab=vocab, merges=[("a", "b"), ("b", "c"), ("a", "bc")]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    path = fast_path(hf.to_str())
    assert path.encoder is None and "merge 2" in path.reason and "re-derives" in path.reason
    file = tmp_path / "tokenizer.json"
    hf.save(str(file))
    tokenizer = Tokenizer(TokenizerSpec(kind="hf", path=str(file)))
    assert tokenizer.encode_batch(["abc xabc"]) == [hf.encode("abc xabc", add_special_tokens=False).ids]


def test_wordpiece_is_not_byte_level_bpe():
    hf = HFTokenizer(WordPiece(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    assert "model is WordPiece, not BPE" in fast_path(hf.to_str()).reason


def test_midmix_tokenizer_uses_the_fast_path_and_agrees_with_hf(tmp_path, corpus, stratified):
    out = tmp_path / "tok.json"
    train_tokenizer(iter([[doc["text"] for doc in corpus[::10]]]), 1000, out)
    tokenizer = Tokenizer(TokenizerSpec(kind="hf", path=str(out)))
    hf = HFTokenizer.from_file(str(out))
    assert tokenizer.fast_path.encoder is not None, tokenizer.fast_path.reason
    expected = [encoding.ids for encoding in hf.encode_batch(stratified, add_special_tokens=False)]
    assert tokenizer.encode_batch(stratified) == expected
    assert tokenizer.count_batch(stratified) == [len(ids) for ids in expected]


@pytest.mark.slow
def test_fast_ids_equal_hf_on_every_document_of_the_bundled_corpus(trained, corpus):
    """All 6,461 documents, their first 1,000 characters (whole documents at 32k: bench/bench_tokenizer.py)."""
    assert _compare(trained["qwen2"], [doc["text"][:1000] for doc in corpus]) == []
