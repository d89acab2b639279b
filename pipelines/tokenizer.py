"""Tokenizers shared by curation (token counts) and mixtures (input_ids).

Two kinds: a built-in byte-level tokenizer (no training, no files; ids 0-255 are bytes and
256 is end-of-document) and any HF ``tokenizers`` JSON file. Both are identified by a content
hash so versions change when the tokenizer does. A byte-level BPE file is encoded by the
tiktoken-based encoder of ``midmix.pipelines.tokenizer_fast`` when it can vouch for HF's ids
(checked once per file and process), else by HF ``tokenizers``.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from midmix.errors import MidmixError
from midmix.hashing import sha256_file
from midmix.pipelines.tokenizer_fast import FastPath, fast_path

BYTE_EOS_ID = 256


class TokenizerSpec(BaseModel):
    """Which tokenizer to use: ``bytes`` or an HF ``tokenizers`` JSON at ``path``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["bytes", "hf"] = "bytes"
    path: str | None = None

    @model_validator(mode="after")
    def _path_matches_kind(self) -> "TokenizerSpec":
        if self.kind == "hf" and not self.path:
            raise ValueError("tokenizer kind 'hf' needs 'path' to a tokenizers JSON file")
        if self.kind == "bytes" and self.path:
            raise ValueError("tokenizer kind 'bytes' takes no 'path'")
        return self


class Tokenizer:
    """Encode text to ids and count tokens, batched; ``eos_id`` ends every document."""

    def __init__(self, spec: TokenizerSpec):
        self.spec = spec
        self._hf = None
        if spec.kind == "hf":
            path = Path(spec.path or "")
            if not path.is_file():
                raise MidmixError(f"tokenizer file not found: {path}; train one with `midmix tokenizer train`")
            from tokenizers import Tokenizer as HFTokenizer

            try:
                self._hf = HFTokenizer.from_file(str(path))
            except Exception as error:  # tokenizers raises a bare Exception on bad JSON
                raise MidmixError(f"{path} is not a tokenizers JSON file: {error}") from error

    @cached_property
    def sha256(self) -> str:
        """Content hash: of the JSON file for HF tokenizers, of the scheme name for bytes."""
        if self._hf is None:
            return hashlib.sha256(b"midmix-bytes-v1").hexdigest()
        return sha256_file(self.spec.path or "")

    @property
    def vocab_size(self) -> int:
        if self._hf is None:
            return BYTE_EOS_ID + 1
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        if self._hf is None:
            return BYTE_EOS_ID
        for name in ("<|endoftext|>", "</s>", "<eos>", "[EOS]"):
            token_id = self._hf.token_to_id(name)
            if token_id is not None:
                return token_id
        raise MidmixError(f"tokenizer {self.spec.path} has no end-of-text token (<|endoftext|>, </s> or <eos>)")

    @cached_property
    def fast_path(self) -> FastPath:
        """The fast encoder for this HF tokenizer, or why HF encodes (built on first use)."""
        if self._hf is None:
            return FastPath(None, "byte tokenizer: the UTF-8 bytes are the ids")
        return fast_path(self._hf.to_str())

    def encode_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token counts (int64) and every text's ids concatenated (uint32), without end-of-document ids."""
        if self._hf is None:
            encoded = [text.encode("utf-8") for text in texts]
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            return lengths, np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint32)
        if self.fast_path.encoder is not None:
            return self.fast_path.encoder.encode(texts)
        batch = [encoding.ids for encoding in self._hf.encode_batch(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
        return lengths, np.fromiter(chain.from_iterable(batch), dtype=np.uint32, count=int(lengths.sum()))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without the end-of-document id (packing adds it)."""
        lengths, values = self.encode_ids(texts)
        return [ids.tolist() for ids in np.split(values, np.cumsum(lengths)[:-1])] if texts else []

    def count_batch(self, texts: list[str]) -> list[int]:
        """Token counts per text; for bytes this is the UTF-8 length, no encoding needed."""
        if self._hf is None:
            return [len(text.encode("utf-8")) for text in texts]
        return self.encode_ids(texts)[0].tolist()

    def describe(self) -> dict:
        """What a manifest records about the tokenizer."""
        return {"kind": self.spec.kind, "sha256": self.sha256, "vocab_size": self.vocab_size, "eos_id": self.eos_id}
