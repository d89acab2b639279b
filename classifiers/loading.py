"""Load any model kind from a path, cached by the content hash of its bytes.

Kinds: ``fasttext`` (a ``.bin``/``.ftz`` file), ``stacked`` (a directory with ``stacked.json``, see
``midmix.classifiers.stacked``) and ``transformer`` (a Hugging Face model directory with
``config.json``, see ``midmix.classifiers.transformer``). Each loaded model has ``labels``,
``sha256`` and ``predict_scores(texts) -> (docs, labels) float32``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Any, Protocol

import numpy as np

from midmix.classifiers.model import FastTextModel
from midmix.errors import MidmixError
from midmix.hashing import sha256_dir

MODEL_KINDS = ("fasttext", "stacked", "transformer")
MAX_CACHED_MODELS = 8
_models: OrderedDict[str, Any] = OrderedDict()
_digests: dict[tuple, str] = {}
_lock = Lock()


class ScoringModel(Protocol):
    """What curation needs from a model of any kind."""

    labels: list[str]
    sha256: str

    def predict_scores(self, texts: list[str]) -> np.ndarray: ...


def model_kind(path: Path) -> str:
    """The kind of the model at ``path``; a one-line error says what a directory lacks."""
    path = Path(path)
    if path.is_file():
        return "fasttext"
    if not path.is_dir():
        raise MidmixError(f"model not found: {path}")
    from midmix.classifiers.stacked import STACKED_FILE

    if (path / STACKED_FILE).is_file():
        return "stacked"
    if (path / "config.json").is_file():
        return "transformer"
    raise MidmixError(
        f"{path}: not a model directory: it has neither {STACKED_FILE} (a midmix stacked model) nor config.json "
        "(a Hugging Face transformers model); point at the directory that holds them"
    )


def load_model(path: str | Path) -> ScoringModel:
    """Load the model at ``path`` (file or directory), or return the cached one with the same content."""
    path = Path(path)
    kind = model_kind(path)
    if kind == "fasttext":
        return FastTextModel.load(path)
    digest = directory_digest(path)
    with _lock:
        cached = _models.get(digest)
    if cached is None:
        if kind == "stacked":
            from midmix.classifiers.stacked import StackedModel

            cached = StackedModel(path, digest)
        else:
            from midmix.classifiers.transformer import TransformerClassifier

            cached = TransformerClassifier(path, digest)
        with _lock:
            _models[digest] = cached
            while len(_models) > MAX_CACHED_MODELS:
                _models.popitem(last=False)
    with _lock:
        _models.move_to_end(digest)
    return cached


def directory_digest(path: Path) -> str:
    """``sha256_dir`` of a model directory, memoised by the (inode, size, mtime, ctime) of its files."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    key = tuple((str(file), *_stat_key(file)) for file in files)
    with _lock:
        digest = _digests.get(key)
    if digest is None:
        digest = sha256_dir(path)
        with _lock:
            _digests[key] = digest
    return digest


def model_digest(path: Path) -> str:
    """Content hash of a model file or directory."""
    path = Path(path)
    return FastTextModel.load(path).sha256 if model_kind(path) == "fasttext" else directory_digest(path)


def _stat_key(path: Path) -> tuple[int, int, int, int, int]:
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
