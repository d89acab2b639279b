"""The one text normalisation every fastText model here sees, in training and in prediction.

fastText predicts one line at a time and splits on whitespace; lowercasing and collapsing
whitespace make training lines and prediction lines identical for the same document.
"""

from __future__ import annotations


def fasttext_line(text: str, max_chars: int = 4000) -> str:
    """Lowercase, collapse all whitespace (newlines included) to single spaces, trim, truncate.

    Only a prefix of a long document is normalised: a window of raw text is widened until its
    collapsed form reaches ``max_chars``, which gives exactly the prefix of the whole document.
    ``str.split()`` splits on the same Unicode whitespace as ``re``'s ``\\s``, and is faster.
    """
    window = 2 * max_chars + 2
    while True:
        line = " ".join(text[:window].lower().split())
        if len(line) >= max_chars or window >= len(text):
            return line[:max_chars].rstrip()
        window *= 2
