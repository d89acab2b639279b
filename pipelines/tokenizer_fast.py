"""A faster encoder for byte-level BPE tokenizers in ``tokenizer.json`` form, id for id with HF tokenizers.

HF ``tokenizers`` spends most of a mixture build in ``encode_batch``. tiktoken runs the same kind of
byte-level BPE several times faster per core, so this module builds a ``tiktoken.Encoding`` from the
tokenizer's own vocabulary and merges and uses it only where it provably gives HF's ids:

- **Configuration** (``fast_path_problems``): BPE model without dropout, subword prefix/suffix or byte
  fallback; every one of the 256 byte-level characters in the vocabulary; no normalizer, or NFC (curated text
  is NFC already; any other text goes to HF); pre-tokenizer either ``ByteLevel(use_regex=true)`` (the
  GPT-2 regex, with or without ``add_prefix_space``) or ``Sequence[Split(<regex>, Isolated), ByteLevel(
  use_regex=false, add_prefix_space=false)]`` with a regex from ``SPLIT_PATTERNS`` (Llama 3 / cl100k /
  OLMo 2, Qwen2); no truncation or padding. Post-processors and decoders do not change ids without
  special tokens, so they are ignored.
- **Merges** (``merge_problems``): every merge result is a distinct vocabulary token, and tiktoken's rule
  (merge the adjacent pair whose concatenation ranks lowest) re-derives each merge from the lower-ranked
  ones. Ranks are merge indices, so on any input tiktoken then only ever performs HF's merges in HF's order
  (see ``merge_problems`` for the argument); ``ignore_merges`` changes nothing because every token
  re-derives to itself. Ranks map back to the tokenizer's ids with one table lookup.
- **Added tokens** (special or not): HF cuts them out of the text before the model runs, leftmost-longest,
  those with ``normalized: false`` first; so does ``FastBpeEncoder`` (a literal regex, longest first) and
  encodes the pieces between them. A text holding an added token with ``lstrip``, ``rstrip`` or
  ``single_word``, or (with the NFC normalizer) a text that is not already NFC, is encoded by HF whole.
- **Self-check**: ``PROBE_TEXTS`` (scripts, digits, whitespace runs, contractions, emoji, control
  characters) are encoded both ways when the encoder is built; any difference means HF for everything.

What is left is the regex engines (HF uses Oniguruma, tiktoken fancy-regex) agreeing on the supported
patterns; ``tests/test_tokenizer_fast.py`` checks that id for id on the bundled corpus (28 languages,
code, math) and on every assigned Unicode code point.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPLIT_PATTERNS = {
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""": "Llama 3 / cl100k / OLMo 2",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""": "Qwen2",
}  # fmt: skip
PROBE_TEXTS = (
    "",
    " ",
    "Hello world! It's a test: we'll see, they've done it, I'm sure you'd agree, DON'T SHOUT.",
    "   leading spaces, trailing spaces   \n\n\n tabs\t\tand\r\nwindows line ends\r\n",
    "x = [1, 22, 333, 4444, 55555]; y = 3.14159e-10 ** 2 // 7\n    return {'a': b\"c\"}\n",
    "def f(x):\n\tif x:\n\t\treturn x  # comment\n\n\n\nclass C:\n    pass\n",
    "Ünïcödé naïve café façade; Straße; ΑΒΓ αβγ; Привет, мир; שלום עולם; مرحبا بالعالم",
    "日本語のテキスト、中文文本。한국어 텍스트. ภาษาไทย हिन्दी বাংলা தமிழ்",
    "emoji 👍🏽 👨‍👩‍👧‍👦 🇩🇪 ✨ and symbols ∑∫√∞≠≤ ½ ² ③ Ⅻ ０１２",
    "combining: e\u0301 a\u0308 \u0915\u094d\u0937; zero width:\u200b\u200c\u200d; nbsp:\u00a0\u2009\u3000end",
    "control \x00\x01\x07\x1b[0m\x7f and lone high bytes \u0080\u00ff",
    "$$\\frac{a}{b} + \\sum_{i=0}^{n} x_i^2 = \\int_0^1 f(t)\\,dt$$  <|endoftext|> <eos> </s>",
    "'''''''' ''s 's's 'S 'LL 'Re ''' \"quoted\" ``` ~~~ ... !!! ??? --- ___ ***",
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer_problems(pre: dict | None) -> tuple[list[str], str | None, bool]:
    """Problems, the split regex and add_prefix_space for a pre-tokenizer configuration."""
    if pre is None:
        return ["no pre-tokenizer (not byte-level BPE)"], None, False
    if pre.get("type") == "ByteLevel":
        if not pre.get("use_regex", True):
            return ["ByteLevel pre-tokenizer without its regex (use_regex: false) and no Split"], None, False
        return [], GPT2_PATTERN, bool(pre.get("add_prefix_space"))
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2 or [s.get("type") for s in steps] != ["Split", "ByteLevel"]:
        return [f"pre-tokenizer {json.dumps(pre)[:120]} is not ByteLevel or Sequence[Split, ByteLevel]"], None, False
    split, byte_level = steps
    problems = []
    pattern = (split.get("pattern") or {}).get("Regex")
    if pattern not in SPLIT_PATTERNS:
        problems.append(
            f"Split regex {pattern!r} is not one of the verified patterns ({', '.join(SPLIT_PATTERNS.values())})"
        )
    if split.get("behavior") != "Isolated" or split.get("invert"):
        problems.append(
            f"Split behavior {split.get('behavior')} (invert {split.get('invert')}); only Isolated is supported"
        )
    if byte_level.get("use_regex", True) or byte_level.get("add_prefix_space"):
        problems.append("the ByteLevel step after Split must have use_regex: false and add_prefix_space: false")
    return problems, pattern, False


def fast_path_problems(config: dict) -> list[str]:
    """Why a ``tokenizer.json`` (parsed) cannot use the fast encoder; empty when its configuration can."""
    model = config.get("model") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model is {model.get('type')}, not BPE")
    for field in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(field):
            problems.append(f"BPE {field} is set ({model[field]!r})")
    if model.get("byte_fallback"):
        problems.append("BPE byte_fallback is on (SentencePiece-style, not byte-level)")
    normalizer = config.get("normalizer")
    if normalizer is not None and normalizer != {"type": "NFC"}:
        problems.append(f"normalizer {json.dumps(normalizer)[:120]} (only none or NFC are supported)")
    problems += _pre_tokenizer_problems(config.get("pre_tokenizer"))[0]
    for field in ("truncation", "padding"):
        if config.get(field) is not None:
            problems.append(f"{field} is configured")
    vocab = model.get("vocab") or {}
    missing = [char for char in bytes_to_unicode().values() if char not in vocab]
    if missing:
        problems.append(f"{len(missing)} of the 256 byte-level characters are not in the vocabulary")
    return problems


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    """Merges as pairs, from either serialisation (``"a b"`` strings or ``["a", "b"]`` lists)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _bpe_parts(word: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """tiktoken's merge rule on ``word`` using only ranks below ``limit``: lowest concatenation rank first, leftmost on ties."""
    parts = [word[i : i + 1] for i in range(len(word))]
    while len(parts) > 1:
        best, at = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def merge_problems(ranks: dict[bytes, int], merges: list[tuple[bytes, bytes]]) -> list[str]:
    """Merges tiktoken's rule would not re-derive; empty means tiktoken and HF agree on every input.

    Ranks: single bytes below 256, merge ``i`` at ``256 + i``. Checked: tiktoken's rule restricted to
    ranks below merge ``i``'s, run on its token's bytes, ends in exactly its two parts. Then on any word
    tiktoken only performs listed merges: when it merges pieces ``p, q`` into ``t``, the merges inside
    ``t``'s span so far are those of tiktoken's run on ``t``'s bytes alone (a merge never crossed the
    span's edges, and each chosen pair was the lowest in the span), and that run, which passes through
    the checked two parts before its final merge, reaches ``[t]`` only from them, so ``(p, q)`` is
    ``t``'s merge. HF picks the lowest-ranked listed pair, leftmost on ties, so both do the same merges.
    """
    problems = []
    for index, (left, right) in enumerate(merges):
        parts = _bpe_parts(left + right, ranks, 256 + index)
        if parts != [left, right]:
            problems.append(f"merge {index} ({left!r} + {right!r}) re-derives as {parts!r}")
            if len(problems) >= 3:
                break
    return problems


@dataclass(frozen=True)
class _Tables:
    ranks: dict[bytes, int]
    rank_to_id: np.ndarray
    problems: tuple[str, ...]


def _tables(model: dict, added: set[str]) -> _Tables:
    """tiktoken ranks, the rank -> id table and any problem with the vocabulary or merges."""
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab: dict[str, int] = model["vocab"]

    def to_bytes(token: str) -> bytes | None:
        if any(char not in byte_of for char in token):
            return None
        return bytes(byte_of[char] for char in token)

    pairs = _merge_pairs(model.get("merges") or [])
    ranks = {bytes([byte]): byte for byte in range(256)}
    rank_to_id = np.zeros(256 + len(pairs), dtype=np.uint32)
    for byte, char in bytes_to_unicode().items():
        rank_to_id[byte] = vocab[char]
    merges, problems = [], []
    for index, (left, right) in enumerate(pairs):
        token, parts = left + right, (to_bytes(left), to_bytes(right))
        if token not in vocab or left not in vocab or right not in vocab or None in parts:
            problems.append(f"merge {index} ({left!r}, {right!r}) names a token outside the byte-level vocabulary")
            break
        joined = parts[0] + parts[1]
        if joined in ranks:
            problems.append(f"merge {index} makes {token!r}, which an earlier merge or byte already makes")
            break
        ranks[joined] = 256 + index
        rank_to_id[256 + index] = vocab[token]
        merges.append(parts)
    if not problems:
        problems = merge_problems(ranks, merges)
    made = {char for char in bytes_to_unicode().values()} | {left + right for left, right in pairs}
    orphans = [token for token in vocab if token not in made and token not in added]
    if orphans and model.get("ignore_merges"):
        problems.append(
            f"ignore_merges is on and {len(orphans)} vocabulary tokens are made by no merge (e.g. {orphans[0]!r})"
        )
    return _Tables(ranks, rank_to_id, tuple(problems))


class FastBpeEncoder:
    """tiktoken over a tokenizer's own merges; the few texts it cannot vouch for go to the HF tokenizer."""

    def __init__(self, config: dict, hf_tokenizer, tables: _Tables):
        import tiktoken

        _, pattern, self._prefix_space = _pre_tokenizer_problems(config["pre_tokenizer"])
        self._nfc = config.get("normalizer") == {"type": "NFC"}
        self._hf = hf_tokenizer
        self._rank_to_id = tables.rank_to_id
        self._core = tiktoken.Encoding(
            name="midmix-bpe", pat_str=pattern, mergeable_ranks=tables.ranks, special_tokens={}
        )._core_bpe
        added = config.get("added_tokens") or []
        self._added_ids = {token["content"]: token["id"] for token in added}
        # HF extracts added tokens leftmost-longest, those matched on raw text first, then the normalized
        # ones; a literal alternation sorted longest first matches the same. lstrip/rstrip/single_word
        # change what a match swallows, so texts with such a token go to HF whole.
        self._passes = [
            _literal_pattern([token["content"] for token in added if token.get("normalized") == normalized])
            for normalized in (False, True)
        ]
        self._hf_if_found = _literal_pattern(
            [t["content"] for t in added if t.get("lstrip") or t.get("rstrip") or t.get("single_word")]
        )

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token counts (int64) and all ids concatenated (uint32), in text order."""
        chunks = [self._encode_one(text) for text in texts]
        lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
        values = np.concatenate(chunks) if chunks else np.zeros(0, np.uint32)
        return lengths, values

    def _encode_one(self, text: str) -> np.ndarray:
        if (self._nfc and not unicodedata.is_normalized("NFC", text)) or (
            self._hf_if_found is not None and self._hf_if_found.search(text)
        ):
            return np.asarray(self._hf.encode(text, add_special_tokens=False).ids, dtype=np.uint32)
        segments = [text]
        for pattern in self._passes:
            if pattern is not None:
                segments = [piece for segment in segments for piece in _split_keep(pattern, segment, self._added_ids)]
        if len(segments) == 1 and isinstance(segments[0], str):
            return self._bpe(text)
        parts = [self._bpe(s) if isinstance(s, str) else np.array([s], np.uint32) for s in segments]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint32)

    def _bpe(self, text: str) -> np.ndarray:
        """One segment without added tokens: HF's prefix space, then tiktoken, ranks mapped to ids."""
        if self._prefix_space and text and not text.startswith(" "):
            text = " " + text
        return self._rank_to_id[np.array(self._core.encode_ordinary(text), dtype=np.uint32)]


def _literal_pattern(contents: list[str]) -> re.Pattern | None:
    """A regex matching any of ``contents``, longest first (leftmost-longest, like HF's Aho-Corasick)."""
    contents = sorted(set(contents), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, contents))) if contents else None


def _split_keep(pattern: re.Pattern, segment: str | int, ids: dict[str, int]) -> list[str | int]:
    """``segment`` cut at the added tokens ``pattern`` finds: text pieces (non-empty) and token ids."""
    if not isinstance(segment, str):
        return [segment]
    pieces: list[str | int] = []
    at = 0
    for match in pattern.finditer(segment):
        if match.start() > at:
            pieces.append(segment[at : match.start()])
        pieces.append(ids[match.group()])
        at = match.end()
    if at < len(segment):
        pieces.append(segment[at:])
    return pieces


@dataclass(frozen=True)
class FastPath:
    """The fast encoder for a tokenizer, or why there is none (then HF tokenizers encode everything)."""

    encoder: FastBpeEncoder | None
    reason: str


@lru_cache(maxsize=8)
def fast_path(tokenizer_json: str) -> FastPath:
    """Build and self-check the fast encoder for a serialised HF tokenizer (cached: the merge check takes seconds)."""
    from tokenizers import Tokenizer as HFTokenizer

    config = json.loads(tokenizer_json)
    problems = fast_path_problems(config)
    if problems:
        return FastPath(None, "; ".join(problems))
    added = {token["content"] for token in config.get("added_tokens") or []}
    tables = _tables(config["model"], added)
    if tables.problems:
        return FastPath(None, "; ".join(tables.problems))
    hf = HFTokenizer.from_str(tokenizer_json)
    encoder = FastBpeEncoder(config, hf, tables)
    expected = [e.ids for e in hf.encode_batch(list(PROBE_TEXTS), add_special_tokens=False)]
    lengths, values = encoder.encode(list(PROBE_TEXTS))
    got = [ids.tolist() for ids in np.split(values, np.cumsum(lengths)[:-1])]
    for text, want, have in zip(PROBE_TEXTS, expected, got):
        if want != have:
            return FastPath(None, f"self-check: ids differ from HF tokenizers on {text[:40]!r}")
    pattern = _pre_tokenizer_problems(config["pre_tokenizer"])[1]
    style = "GPT-2" if pattern == GPT2_PATTERN else SPLIT_PATTERNS[pattern]
    return FastPath(
        encoder,
        f"tiktoken: byte-level BPE, {style} regex, {len(tables.rank_to_id) - 256:,} merges re-derived, self-check passed",
    )


def compare_with_hf(tokenizer_json: str, batches: Iterable[list[str]]) -> dict:
    """Encode every batch with HF ``encode_batch`` and with the fast encoder: ids compared, CPU seconds of each.

    CPU seconds are the process's (every thread's: HF encodes a batch on all cores), so tokens per
    CPU-second compare the two fairly on a shared machine.
    """
    from tokenizers import Tokenizer as HFTokenizer

    path = fast_path(tokenizer_json)
    hf = HFTokenizer.from_str(tokenizer_json)
    result = {"encoder": "tiktoken" if path.encoder else "hf", "reason": path.reason, "docs": 0, "tokens": 0,
              "mismatched_docs": 0, "first_mismatch": None, "hf_cpu_s": 0.0, "fast_cpu_s": 0.0}  # fmt: skip
    for texts in batches:
        start = time.process_time()
        expected = [encoding.ids for encoding in hf.encode_batch(texts, add_special_tokens=False)]
        result["hf_cpu_s"] += time.process_time() - start
        if path.encoder is None:
            got = expected
        else:
            start = time.process_time()
            lengths, values = path.encoder.encode(texts)
            result["fast_cpu_s"] += time.process_time() - start
            got = [ids.tolist() for ids in np.split(values, np.cumsum(lengths)[:-1])]
        for text, want, have in zip(texts, expected, got):
            if want != have:
                result["mismatched_docs"] += 1
                result["first_mismatch"] = result["first_mismatch"] or text[:80]
        result["docs"] += len(texts)
        result["tokens"] += sum(map(len, expected))
    return result
