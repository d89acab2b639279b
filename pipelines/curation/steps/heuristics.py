"""Heuristic filter: apply the per-domain thresholds of ``HeuristicsConfig`` to the signals.

It runs after domain tagging so code and math are judged by their own limits, not prose rules,
and reads each document's language rules so thresholds keep their English meaning in every
language: word counts are taken in English-word equivalents, word-length limits scale with the
language's typical word length (and are off for no-space scripts, where a word is a character),
and the stopword rule applies where the signal exists (a list for the language, in its script).
"""

from __future__ import annotations

from datatrove.data import Document

from midmix.pipelines.curation.config import HeuristicsConfig, HeuristicThresholds, LanguageRules
from midmix.pipelines.curation.languages import NO_SPACE_SCRIPTS
from midmix.pipelines.curation.steps.base import BatchStep
from midmix.pipelines.curation.steps.signals import ELLIPSIS_LINES, SCRIPT

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


def _scaled_limit(field: str, limit: float, rules: LanguageRules) -> float | None:
    """The threshold in the language's own units; None when the rule means nothing there."""
    if field.endswith("_words"):
        return limit * rules.words_per_english_word
    if field.endswith("mean_word_length"):
        return None if rules.word_length is None else limit * rules.word_length
    return limit


def failed_rule(signals: dict, thresholds: HeuristicThresholds, rules: LanguageRules) -> str | None:
    """The first threshold a document breaks (its drop reason), or None."""
    for field, signal, is_min in _RULES:
        limit = getattr(thresholds, field)
        value = signals.get(signal)
        if limit is None or value is None:
            continue
        if field == "max_ellipsis_line_ratio" and signals.get(ELLIPSIS_LINES, 0) < thresholds.min_ellipsis_lines:
            continue
        limit = _scaled_limit(field, limit, rules)
        if limit is not None and ((value < limit) if is_min else (value > limit)):
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
            unspaced = doc.metadata.get(SCRIPT) in NO_SPACE_SCRIPTS
            rules = self.config.for_language(doc.metadata.get("lang"), unspaced)
            if reason := failed_rule(doc.metadata, thresholds, rules):
                self.drop(doc, reason)
