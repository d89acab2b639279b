"""Files that ship inside the package: the bundled sample corpus and HumanEval.

They are package data of ``midmix.data`` (the repository's ``data/`` folder), so the same code
finds them in a source checkout, an editable install and an installed wheel.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled_file(name: str) -> Path:
    """Path of ``data/sample-corpus/<name>`` wherever midmix is installed (wheels install unzipped)."""
    return Path(str(files("midmix.data").joinpath("sample-corpus", name)))


SAMPLE_CORPUS = bundled_file("corpus.jsonl.gz")
HUMANEVAL = bundled_file("humaneval.jsonl.gz")
