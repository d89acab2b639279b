"""The held-out rule: which documents are evaluation documents, decided by a hash of their id.

Hashing the id makes the split stable (the same document is always on the same side, whatever
else is in the file) and disjoint, so curation and benchmarks can score on documents that no
default model was trained on.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

_HASH_SPACE = float(1 << 64)


class SplitRule(BaseModel):
    """Documents whose id hash falls below ``eval_fraction`` of the hash space are held out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = "id"
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)

    def is_heldout(self, doc_id: str) -> bool:
        """True when the document with this id belongs to the evaluation split."""
        return is_heldout(doc_id, self.eval_fraction)


DEFAULT_SPLIT = SplitRule()


def is_heldout(doc_id: str, fraction: float = DEFAULT_SPLIT.eval_fraction) -> bool:
    """True when ``doc_id`` is in the held-out fraction (sha256 of the id, first 8 bytes)."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPACE < fraction
