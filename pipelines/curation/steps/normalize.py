"""Text normalisation: NFC, one newline convention, no trailing spaces, no control characters.

Indentation is kept (code and math depend on it); only runs of three or more newlines shrink.
"""

from __future__ import annotations

import re
import unicodedata

from datatrove.data import Document

from midmix.pipelines.curation.steps.base import BatchStep

# Control characters, zero-width marks and lone surrogates (JSON "\ud800" escapes decode to
# strings that cannot be encoded as UTF-8, so Parquet and hashing would fail on them).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff\ud800-\udfff]")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
_NO_BREAK_SPACES = ("\u00a0", "\u2007", "\u202f")


def normalize_text(text: str) -> str:
    """The canonical form every later step, the dedup hash and the output see.

    Each rewrite is guarded by a cheap substring test: most documents need none of them.
    """
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for space in _NO_BREAK_SPACES:
        if space in text:
            text = text.replace(space, " ")
    text = _CONTROL.sub("", text)
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
        text = _TRAILING.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


class NormalizeText(BatchStep):
    """NFC + whitespace normalisation; a document left empty is dropped as ``empty_text``."""

    name = "normalize"

    def process_batch(self, docs: list[Document]) -> None:
        for doc in docs:
            doc.text = normalize_text(doc.text)
            if not doc.text:
                self.drop(doc, "empty_text")
