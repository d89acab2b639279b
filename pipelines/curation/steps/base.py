"""Batching base for curation steps: dropped documents flow through untouched, in order.

A step never removes a document from the stream; it marks it dropped (step and reason) so the
final writer can put it in ``dropped/`` and the manifest can count drops per step and reason.
Live documents are processed in batches because fastText and numpy pay per call, not per doc.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

DROP_STEP = "drop_step"
DROP_REASON = "drop_reason"


def is_dropped(doc: Document) -> bool:
    """Whether an earlier step already removed this document."""
    return DROP_STEP in doc.metadata


def mark_dropped(doc: Document, step: str, reason: str) -> None:
    """Record why a document leaves the dataset; later steps skip it."""
    doc.metadata[DROP_STEP] = step
    doc.metadata[DROP_REASON] = reason


class BatchStep(PipelineStep):
    """A step that sees live documents ``batch_size`` at a time and annotates or drops them."""

    type = "🧮 - CURATE"

    def __init__(self, batch_size: int = 256):
        super().__init__()
        self.batch_size = batch_size

    @abstractmethod
    def process_batch(self, docs: list[Document]) -> None:
        """Annotate ``docs`` in place; call ``self.drop`` for the ones to remove."""

    def drop(self, doc: Document, reason: str) -> None:
        mark_dropped(doc, self.name, reason)
        self.stat_update(f"dropped_{reason}")

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        pending: list[Document] = []
        live: list[Document] = []
        for doc in data:
            pending.append(doc)
            if not is_dropped(doc):
                live.append(doc)
            if len(live) >= self.batch_size:
                yield from self._flush(pending, live)
                pending, live = [], []
        yield from self._flush(pending, live)

    def _flush(self, pending: list[Document], live: list[Document]) -> Iterator[Document]:
        if live:
            with self.track_time(unit="batch"):
                self.process_batch(live)
            self.stat_update("docs_in", value=len(live))
        yield from pending
