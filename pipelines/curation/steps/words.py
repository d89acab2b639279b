"""Vectorised word splitting and hashing for a batch of texts (no per-word Python loops).

datatrove splits words with spaCy (140-220 docs/CPU-s); here a batch is one lowercased UTF-8
byte array, words are runs of ASCII letters, digits, ``_`` or non-ASCII bytes, and each word
is hashed by a polynomial over its bytes computed with prefix sums. Signals, decontamination
and MinHash all read the same word hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_BASE_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))

_WORD_BYTE = np.zeros(256, dtype=bool)
for _low, _high in ((ord("a"), ord("z")), (ord("A"), ord("Z")), (ord("0"), ord("9")), (0x80, 0xFF)):
    _WORD_BYTE[_low : _high + 1] = True
_WORD_BYTE[ord("_")] = True
_LETTER_BYTE = _WORD_BYTE.copy()
_LETTER_BYTE[ord("0") : ord("9") + 1] = False
_LETTER_BYTE[ord("_")] = False


class _Powers:
    """Cached powers of the base and of its inverse modulo 2**64, grown on demand."""

    def __init__(self) -> None:
        self.forward = np.ones(1, dtype=np.uint64)
        self.inverse = np.ones(1, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.forward) < n:
            size = max(n, 2 * len(self.forward))
            self.forward = np.cumprod(np.full(size, _BASE, dtype=np.uint64)) * _BASE_INV
            self.inverse = np.cumprod(np.full(size, _BASE_INV, dtype=np.uint64)) * _BASE
        return self.forward[:n], self.inverse[:n]


_POWERS = _Powers()


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class WordBatch:
    """Words of a batch of texts, flattened; doc ``i`` owns words ``offsets[i]:offsets[i+1]``."""

    hashes: np.ndarray  # uint64 per word
    lengths: np.ndarray  # int64 bytes per word
    has_letter: np.ndarray  # bool per word
    offsets: np.ndarray  # int64, len n_docs + 1

    def doc_hashes(self, index: int) -> np.ndarray:
        """Word hashes of document ``index`` (a view, no copy)."""
        return self.hashes[self.offsets[index] : self.offsets[index + 1]]


def split_words(texts: list[str]) -> WordBatch:
    """Split and hash the words of every text in one pass over a concatenated byte array."""
    parts = [text.lower().encode("utf-8", "replace") for text in texts]
    blob = np.frombuffer(b"\x00".join(parts) + b"\x00", dtype=np.uint8)
    is_word = _WORD_BYTE[blob]
    edges = np.diff(is_word.view(np.int8), prepend=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive; the trailing NUL closes the last word
    forward, inverse = _POWERS.upto(len(blob))
    prefix = np.cumsum(blob.astype(np.uint64) * inverse, dtype=np.uint64)
    before = np.where(starts > 0, prefix[np.maximum(starts - 1, 0)], np.uint64(0))
    hashes = mix64((prefix[ends - 1] - before) * forward[ends - 1])
    letters = np.cumsum(_LETTER_BYTE[blob], dtype=np.int32)
    letter_before = np.where(starts > 0, letters[np.maximum(starts - 1, 0)], 0)
    doc_starts = np.cumsum([0] + [len(part) + 1 for part in parts], dtype=np.int64)
    offsets = np.searchsorted(starts, doc_starts)
    return WordBatch(
        hashes=hashes, lengths=ends - starts, has_letter=letters[ends - 1] > letter_before, offsets=offsets
    )


def hash_words(words: list[str]) -> np.ndarray:
    """Hashes of single words, identical to what ``split_words`` gives them inside a text."""
    return split_words([" ".join(words)]).hashes


def concat_words(per_doc: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-document word hashes into (hashes, offsets) for ``ngram_hashes``."""
    offsets = np.cumsum([0] + [len(words) for words in per_doc], dtype=np.int64)
    hashes = np.concatenate(per_doc) if per_doc else np.zeros(0, np.uint64)
    return hashes.astype(np.uint64, copy=False), offsets


def ngram_hashes(words: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of ``n`` consecutive words inside one doc, and the doc of each.

    A doc with fewer than ``n`` words (but at least one) gets a single n-gram of all its words,
    so short documents still take part in near-dedup.
    """
    counts = np.diff(offsets)
    doc_of_word = np.repeat(np.arange(len(counts)), counts)
    total = len(words)
    if total == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    # Window i hashes to sum_j words[i+j] * BASE**(n-1-j), from prefix sums in 4 passes.
    forward, inverse = _POWERS.upto(total + 1)
    prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(words * inverse[:total], dtype=np.uint64)])
    windows = max(total - n + 1, 0)
    combined = np.zeros(total, dtype=np.uint64)
    combined[:windows] = (prefix[n : n + windows] - prefix[:windows]) * forward[n - 1 : n - 1 + windows]
    starts = np.arange(windows)
    valid = np.zeros(total, dtype=bool)
    valid[:windows] = doc_of_word[starts + n - 1] == doc_of_word[starts]
    hashes, owners = mix64(combined[valid]), doc_of_word[valid]
    short = np.flatnonzero((counts > 0) & (counts < n))
    if len(short) == 0:
        return hashes, owners
    short_hashes = mix64(np.array([_fold(words[offsets[i] : offsets[i + 1]]) for i in short], dtype=np.uint64))
    owners = np.concatenate([owners, short])
    order = np.argsort(owners, kind="stable")
    return np.concatenate([hashes, short_hashes])[order], owners[order]


def _fold(hashes: np.ndarray) -> int:
    value = 0
    for item in hashes.tolist():
        value = (value * int(_BASE) + item) & 0xFFFFFFFFFFFFFFFF
    return value
