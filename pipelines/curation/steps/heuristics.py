"""Heuristic filter: apply the per-domain thresholds of ``HeuristicsConfig`` to the signals.

It runs after domain tagging so code and math are judged by their own limits, not prose rules.
The stopword rule only applies to English, the only language the Gopher stopword list covers.
"""

from __future__ import annotations

from datatrove.data import Document

from midmix.pipelines.curation.config import HeuristicsConfig, HeuristicThresholds
from midmix.pipelines.curation.steps.base import BatchStep

# (threshold field, signal, True when the signal must be >= the threshold)
_RULES: tuple[tuple[str, str, bool], ...] = (
    ("min_words", "sig_n_words", True),
    ("max_words", "sig_n_words", False),
    ("min_mean_word_length", "sig_mean_word_length", True),
    ("max_mean_word_length", "sig_mean_word_length", False),
    ("max_symbol_ratio", "sig_symbol_ratio", False),
    ("min_alpha_word_ratio", "sig_alpha_word_ratio", True),
    ("min_stopword_ratio", "sig_stopword_ratio", True),
    ("max_bullet_line_ratio", "sig_bullet_line_ratio", False),
    ("max_ellipsis_line_ratio", "sig_ellipsis_line_ratio", False),
    ("max_duplicate_line_ratio", "sig_duplicate_line_ratio", False),
    ("max_top_2gram_ratio", "sig_top_2gram_ratio", False),
    ("max_non_ascii_ratio", "sig_non_ascii_ratio", False),
)


def failed_rule(signals: dict, thresholds: HeuristicThresholds, lang: str | None) -> str | None:
    """The first threshold a document breaks (its drop reason), or None."""
    for field, signal, is_min in _RULES:
        limit = getattr(thresholds, field)
        if limit is None or (field == "min_stopword_ratio" and lang != "en"):
            continue
        value = signals[signal]
        if (value < limit) if is_min else (value > limit):
            return field
    return None


class HeuristicFilter(BatchStep):
    """Drop documents whose signals break their domain's thresholds; reason = the rule name."""

    name = "heuristics"

    def __init__(self, config: HeuristicsConfig, batch_size: int = 256):
        super().__init__(batch_size)
        self.config = config

    def process_batch(self, docs: list[Document]) -> None:
        for doc in docs:
            thresholds = self.config.for_domain(doc.metadata.get("domain", ""))
            if reason := failed_rule(doc.metadata, thresholds, doc.metadata.get("lang")):
                self.drop(doc, reason)
