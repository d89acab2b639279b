"""Bring your own transformer classifier: Hugging Face sequence classification or regression models
from a local directory, run batched with torch (CPU in float32, CUDA in bfloat16 when present).

A model directory holds ``config.json``, weights (``model.safetensors`` or ``pytorch_model.bin``,
possibly sharded with an index) and a tokenizer (``tokenizer.json``, or ``vocab.txt`` /
sentencepiece files with ``tokenizer_config.json``), as ``save_pretrained`` writes them; FineWeb-Edu's
edu scorer and NeMo Curator's domain classifiers are such directories. Nothing is downloaded:
every load is ``local_files_only``.

Scores: a classification model gives the softmax probability of each ``id2label`` label (sigmoid
for ``multi_label_classification``); a regression model (one output or ``problem_type:
regression``) gives its raw output under the label ``score``, the way FineWeb-Edu's 0-5 edu score is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from midmix.errors import MidmixError

REGRESSION_LABEL = "score"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_TOKENS = 512


def import_transformers() -> Any:
    """Import ``transformers`` for text models, hiding a torchvision that cannot load.

    transformers imports torchvision whenever it is installed, even for text models; a torchvision
    built for another torch (a CUDA wheel beside the CPU torch, as in this project's environment)
    fails inside that import. Text classification needs no torchvision, so a broken one is
    marked absent (``sys.modules[name] = None``), which transformers reads as not installed.
    """
    import importlib
    import sys

    if "torchvision" not in sys.modules:
        try:
            importlib.import_module("torchvision")
        except Exception:  # any failure inside torchvision's own import means it is unusable
            for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
                del sys.modules[name]
            sys.modules["torchvision"] = None  # type: ignore[assignment]
    transformers = importlib.import_module("transformers")
    transformers.logging.set_verbosity_error()  # load reports and notes are for notebooks, not curation logs
    transformers.logging.disable_progress_bar()
    return transformers


def read_model_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a transformer directory, checked for what scoring needs; errors name the file."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise MidmixError(f"{config_path} is missing: a transformers model directory needs config.json (save_pretrained writes it)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise MidmixError(f"{config_path}: not valid JSON ({error}); fix or rewrite it with save_pretrained") from error
    if not isinstance(config, dict):
        raise MidmixError(f"{config_path}: expected a JSON object")
    if not any((Path(path) / name).is_file() for name in WEIGHT_FILES):
        raise MidmixError(
            f"{path}: no model weights; add one of {', '.join(WEIGHT_FILES)} (save_pretrained writes model.safetensors)"
        )
    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise MidmixError(
            f"{path}: no tokenizer files; add tokenizer.json (or vocab.txt / sentencepiece model) with "
            "tokenizer.save_pretrained into the model directory"
        )
    model_labels(config, config_path)
    return config


def model_labels(config: dict[str, Any], config_path: Path) -> list[str]:
    """The output labels in column order: ``id2label`` by id, or ``["score"]`` for a regression model."""
    num_labels = config.get("num_labels")
    id2label = config.get("id2label") or {}
    if num_labels is None:
        num_labels = len(id2label) if id2label else 2
    if config.get("problem_type") == "regression" or num_labels == 1:
        if num_labels != 1:
            raise MidmixError(f"{config_path}: problem_type is regression but num_labels is {num_labels}; set num_labels to 1")
        return [REGRESSION_LABEL]
    if len(id2label) != num_labels:
        raise MidmixError(
            f"{config_path}: id2label names {len(id2label)} labels but num_labels is {num_labels}; "
            "make id2label list one label per output"
        )
    try:
        by_id = {int(key): str(value) for key, value in id2label.items()}
    except ValueError as error:
        raise MidmixError(f"{config_path}: id2label keys must be integers 0..{num_labels - 1}") from error
    if sorted(by_id) != list(range(num_labels)):
        raise MidmixError(f"{config_path}: id2label keys must be 0..{num_labels - 1}, got {sorted(by_id)}")
    labels = [by_id[index] for index in range(num_labels)]
    if len(set(labels)) != len(labels):
        raise MidmixError(f"{config_path}: id2label repeats a label ({labels}); give each output its own name")
    return labels


def pick_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformerClassifier:
    """A loaded transformers sequence classifier; ``predict_scores`` on raw text, batched."""

    kind = "transformer"

    def __init__(self, path: Path, sha256: str, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        import torch

        transformers = import_transformers()
        self.path = Path(path)
        self.sha256 = sha256
        config = read_model_config(self.path)
        self.labels = model_labels(config, self.path / "config.json")
        self.multi_label = config.get("problem_type") == "multi_label_classification"
        self.regression = self.labels == [REGRESSION_LABEL]
        self.device = device or pick_device()
        self.batch_size = batch_size
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = transformers.AutoModelForSequenceClassification.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise MidmixError(f"cannot load the transformers model in {self.path}: {error}") from error
        if model.config.num_labels != len(self.labels):
            raise MidmixError(
                f"{self.path / 'config.json'}: the weights have {model.config.num_labels} outputs but the labels are "
                f"{self.labels}; fix id2label/num_labels"
            )
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = model.to(device=self.device, dtype=dtype).eval()
        limit = getattr(model.config, "max_position_embeddings", DEFAULT_MAX_TOKENS) or DEFAULT_MAX_TOKENS
        self.max_tokens = int(min(limit, DEFAULT_MAX_TOKENS, self.tokenizer.model_max_length or DEFAULT_MAX_TOKENS))

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        """Scores, shape (len(texts), len(labels)), float32: probabilities, or the raw regression output."""
        import torch

        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths; results go back to input order.
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = self.tokenizer(
                    [texts[index] for index in batch],
                    truncation=True,
                    max_length=self.max_tokens,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**encoded).logits.float()
                scores[batch] = self._activate(logits).cpu().numpy()
        return scores

    def _activate(self, logits: Any) -> Any:
        if self.regression:
            return logits
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
