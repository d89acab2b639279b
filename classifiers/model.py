"""Load and apply a fastText supervised model, cached by the content hash of its file.

Caching by content (not by path) means a model retrained to the same path is reloaded:
datatrove's ``FastTextClassifierFilter`` caches by path and keeps serving the stale model.
"""

from __future__ import annotations

import os
import re
import struct
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from midmix.classifiers.text import fasttext_line
from midmix.errors import MidmixError
from midmix.hashing import sha256_file

# A fastText .bin starts with this int32 magic number, then the int32 format version.
_FASTTEXT_MAGIC = 793712314
_SUPERVISED = "supervised"
_PREFIX = re.compile(r"__[A-Za-z0-9]+__")

# Loaded models by content hash, least recently used first; a long-running service that
# retrains models keeps only the most recent few in memory.
MAX_CACHED_MODELS = 8
_models: OrderedDict[str, "FastTextModel"] = OrderedDict()
# File digests memoised per (device, inode, size, mtime, ctime): any rewrite changes ctime,
# so a retrained file is always re-hashed, while repeated loads of a large model are cheap.
_digests: dict[tuple[int, int, int, int, int], str] = {}
_lock = Lock()


class FastTextModel:
    """A loaded fastText supervised model with its labels in a fixed, sorted order."""

    def __init__(self, path: Path, sha256: str, native: Any):
        self.path = path
        self.sha256 = sha256
        self._native = native
        raw = native.get_labels()
        prefix = _label_prefix(raw)
        self.labels: list[str] = sorted(label[len(prefix) :] for label in raw)
        self._column = {prefix + label: index for index, label in enumerate(self.labels)}

    @classmethod
    def load(cls, path: str | Path) -> "FastTextModel":
        """Load ``path`` (or return the cached model with the same content hash)."""
        path = Path(path)
        digest = _content_digest(path)
        with _lock:
            cached = _models.get(digest)
            if cached is None:
                cached = cls(path, digest, _load_native(path))
                _models[digest] = cached
                while len(_models) > MAX_CACHED_MODELS:
                    _models.popitem(last=False)
            _models.move_to_end(digest)
        return cached

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        """Probabilities, shape (len(texts), len(labels)), float32, columns in ``labels`` order."""
        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return scores
        lines = [fasttext_line(text) for text in texts]
        all_labels, all_probs = self._native.predict(lines, k=-1, threshold=0.0)
        for row, (labels, probs) in enumerate(zip(all_labels, all_probs)):
            for label, prob in zip(labels, probs):
                scores[row, self._column[label]] = prob
        return scores

    def __repr__(self) -> str:
        return f"FastTextModel(path={str(self.path)!r}, sha256={self.sha256[:12]!r}, labels={self.labels!r})"


def _label_prefix(raw_labels: list[str]) -> str:
    """The label prefix shared by every label (``__label__`` unless trained with ``-label``).

    fastText does not save its ``-label`` argument in the .bin, so it is read off the labels.
    """
    match = _PREFIX.match(raw_labels[0]) if raw_labels else None
    if match and all(label.startswith(match.group(0)) for label in raw_labels):
        return match.group(0)
    return ""


def _content_digest(path: Path) -> str:
    try:
        stat = os.stat(path)
    except OSError as error:
        raise MidmixError(f"fastText model not found: {path} ({error.strerror})") from error
    if not path.is_file():
        raise MidmixError(f"fastText model path is not a file: {path}")
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _lock:
        digest = _digests.get(key)
    if digest is None:
        digest = sha256_file(path)
        with _lock:
            _digests[key] = digest
    return digest


def _load_native(path: Path) -> Any:
    with open(path, "rb") as handle:
        header = handle.read(8)
    if len(header) < 8 or struct.unpack("<i", header[:4])[0] != _FASTTEXT_MAGIC:
        raise MidmixError(f"not a fastText model file: {path} (bad header); pass a fastText supervised .bin")
    import fasttext

    try:
        native = fasttext.FastText._FastText(model_path=str(path))
    except (ValueError, RuntimeError, MemoryError) as error:
        raise MidmixError(f"cannot load fastText model {path}: {error}") from error
    if str(native.f.getArgs().model).rsplit(".", 1)[-1] != _SUPERVISED:
        raise MidmixError(f"fastText model {path} is not a supervised classifier (it is a word-vector model)")
    return native
