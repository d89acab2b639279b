"""Byte-level BPE tokenizers in the configurations of public model families, trained here (no hub).

Shared by ``tests/test_tokenizer_fast.py`` and ``bench/bench_tokenizer.py``: the pre-tokenizer,
normalizer, merge and added-token settings are those of the named family; the vocabulary is
learned from the texts given.
"""

from __future__ import annotations

import json

from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from midmix.pipelines.tokenizer_fast import SPLIT_PATTERNS

LLAMA3, QWEN2 = list(SPLIT_PATTERNS)
STYLES = ("gpt2", "roberta", "llama3", "qwen2", "neox")
"""GPT-2 (ByteLevel regex); RoBERTa (the same with a prefix space); Llama 3 (Split regex, ignore_merges,
reserved special tokens); Qwen2 (NFC, one-digit numbers, chat special tokens); GPT-NeoX / OLMo 1 (NFC,
non-special whitespace added tokens)."""


def train_style(style: str, texts: list[str], vocab_size: int, special_tokens: int = 8) -> HFTokenizer:
    """A byte-level BPE configured like ``style`` and trained on ``texts``."""
    tokenizer = HFTokenizer(BPE())
    split = {"llama3": LLAMA3, "qwen2": QWEN2}.get(style)
    if split:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])  # fmt: skip
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=style == "roberta")
    if style in ("qwen2", "neox"):
        tokenizer.normalizer = normalizers.NFC()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if style == "llama3":
        config = json.loads(tokenizer.to_str())
        config["model"]["ignore_merges"] = True
        tokenizer = HFTokenizer.from_str(json.dumps(config))
        tokenizer.add_special_tokens(
            [f"<|reserved_special_token_{i}|>" for i in range(special_tokens)] + ["<|eot_id|>"]
        )
    if style == "qwen2":
        tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    if style == "neox":
        tokenizer.add_tokens(
            [AddedToken(" " * n, normalized=True) for n in (2, 4, 8, 16, 24)] + [AddedToken("|||EMAIL|||")]
        )
    return tokenizer
