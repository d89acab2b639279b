"""Vectorised word splitting and hashing for a batch of texts (no per-word Python loops).

datatrove splits words with spaCy (140-220 docs/CPU-s) and FineWeb-2 with a tokenizer per
language; here a batch is one lowercased array of Unicode code points and one lookup table says
what each code point is, so every script is handled in the same numpy passes:

- letters, marks, digits and ``_`` form words; whitespace, punctuation and symbols separate them;
- scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan)
  make one word per character (a base character with its combining marks), the usual fallback
  when no segmenter is at hand; Hangul is written with spaces and keeps its words;
- lengths count characters (code points), never UTF-8 bytes, so a Cyrillic word is as long as
  the same Latin one.

Each word is hashed by a polynomial over its code points computed with prefix sums. Signals,
decontamination and MinHash all read the same word hashes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from midmix.pipelines.curation.languages import script_table

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_BASE_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))

WORD, SINGLE, MARK, LETTER = 1, 2, 4, 8
# Blocks of scripts written without spaces between words: each character is a word.
_SINGLE_BLOCKS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x1980, 0x1AAF),  # New Tai Lue, Khmer symbols, Buginese, Tai Tham
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # iteration mark, closing mark, ideographic zero
    (0x3040, 0x31FF),  # Hiragana, Katakana, Bopomofo, Kanbun, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0x1B000, 0x1B16F),  # Kana supplement and extended
    (0x20000, 0x3FFFF),  # CJK extensions B-H (planes 2 and 3)
)
_CLASSIFIED_PLANES = 0x20000  # categories read from unicodedata; planes 2-3 are ideographs, 4+ separators


@lru_cache(maxsize=1)
def char_table() -> np.ndarray:
    """Flags (WORD, SINGLE, MARK, LETTER) per code point; built once per process (~30 ms)."""
    table = np.zeros(0x110000, dtype=np.uint8)
    for code in range(_CLASSIFIED_PLANES):
        major = unicodedata.category(chr(code))[0]
        if major == "L":
            table[code] = WORD | LETTER
        elif major == "N":
            table[code] = WORD
        elif major == "M":
            table[code] = WORD | MARK
    table[ord("_")] = WORD
    for low, high in _SINGLE_BLOCKS:
        span = table[low : high + 1]
        if low >= _CLASSIFIED_PLANES:
            span[:] = WORD | LETTER
        span[(span & WORD) > 0] |= SINGLE
    return table


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
    lengths: np.ndarray  # int64 characters per word
    has_letter: np.ndarray  # bool per word
    scripts: np.ndarray  # uint8 script id (``languages``) of each word's first character
    offsets: np.ndarray  # int64, len n_docs + 1

    def doc_hashes(self, index: int) -> np.ndarray:
        """Word hashes of document ``index`` (a view, no copy)."""
        return self.hashes[self.offsets[index] : self.offsets[index + 1]]


def _code_points(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lowercased texts as one uint32 array joined by NUL (one more at the end), and doc starts."""
    parts = [text.lower() for text in texts]
    blob = ("\x00".join(parts) + "\x00").encode("utf-32-le", "replace")
    doc_starts = np.cumsum([0] + [len(part) + 1 for part in parts], dtype=np.int64)
    return np.frombuffer(blob, dtype="<u4"), doc_starts


def split_words(texts: list[str]) -> WordBatch:
    """Split and hash the words of every text in one pass over a concatenated code-point array."""
    points, doc_starts = _code_points(texts)
    flags = char_table()[points]
    word = (flags & WORD) > 0
    single = (flags & SINGLE) > 0
    mark = (flags & MARK) > 0
    before_word = np.concatenate([[False], word[:-1]])
    before_single = np.concatenate([[False], single[:-1]])
    # A word starts after a separator, and at every non-mark character next to a no-space script.
    starts_here = word & (~before_word | ((single | before_single) & ~mark))
    ends_here = word & np.concatenate([~word[1:] | starts_here[1:], [True]])
    starts = np.flatnonzero(starts_here)
    ends = np.flatnonzero(ends_here) + 1  # exclusive; the trailing NUL closes the last word
    forward, inverse = _POWERS.upto(len(points))
    prefix = np.cumsum(points.astype(np.uint64) * inverse, dtype=np.uint64)
    before = np.where(starts > 0, prefix[np.maximum(starts - 1, 0)], np.uint64(0))
    hashes = mix64((prefix[ends - 1] - before) * forward[ends - 1])
    letters = np.cumsum((flags & LETTER) > 0, dtype=np.int32)
    letter_before = np.where(starts > 0, letters[np.maximum(starts - 1, 0)], 0)
    return WordBatch(
        hashes=hashes,
        lengths=ends - starts,
        has_letter=letters[ends - 1] > letter_before,
        scripts=script_table()[points[starts]],
        offsets=np.searchsorted(starts, doc_starts),
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
