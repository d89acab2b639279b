"""The one text normalisation every fastText model here sees, in training and in prediction.

fastText predicts one line at a time and splits on whitespace; lowercasing and collapsing
whitespace make training lines and prediction lines identical for the same document.
"""

from __future__ import annotations

import re

_WHITESPACE = re.compile(r"\s+")


def fasttext_line(text: str, max_chars: int = 4000) -> str:
    """Lowercase, collapse all whitespace (newlines included) to single spaces, trim, truncate."""
    return _WHITESPACE.sub(" ", text.lower()).strip()[:max_chars].rstrip()
