"""Token counts with the configured tokenizer, batched (HF tokenizers encode batches in Rust)."""

from __future__ import annotations

from datatrove.data import Document

from midmix.pipelines.curation.steps.base import BatchStep
from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec


class TokenCounter(BatchStep):
    """Set ``n_tokens`` and ``n_chars`` on every live document."""

    name = "tokens"

    def __init__(self, spec: TokenizerSpec, batch_size: int = 256):
        super().__init__(batch_size)
        self.spec = spec
        self._tokenizer: Tokenizer | None = None

    def process_batch(self, docs: list[Document]) -> None:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.spec)
        counts = self._tokenizer.count_batch([doc.text for doc in docs])
        for doc, count in zip(docs, counts):
            doc.metadata["n_tokens"] = count
            doc.metadata["n_chars"] = len(doc.text)
            self.stat_update("tokens", value=count)
