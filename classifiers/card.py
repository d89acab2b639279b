"""Model cards: what a registered model is, what it was trained on and how well it does.

A card is stored beside its model as ``models/<sha256>.json``; the service lists them under
``GET /classifiers`` and curation manifests refer to models by ``sha256``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Known tasks; any other string is allowed (``external`` for models registered from a path).
KNOWN_TASKS = ("quality", "domain", "lang")


class TrainedOn(BaseModel):
    """The labelled input a model was trained from, pinned by content hash."""

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str


class ModelCard(BaseModel):
    """Metadata of one model: ``kind`` is ``fasttext`` (a file), ``stacked`` or ``transformer`` (directories).

    ``metrics`` holds the held-out evaluation: ``per_label`` ({label: {precision, recall, f1,
    support}}), ``macro_f1``, ``accuracy`` and, for binary tasks, ``roc_auc``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    kind: str = "fasttext"
    sha256: str
    labels: list[str]
    positive_label: str | None = None
    train_docs: int = 0
    eval_docs: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    trained_on: TrainedOn | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
