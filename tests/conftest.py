"""Shared fixtures: the bundled sample corpus, a small subset of it, and trained default models.

The default fastText models are trained once per session (seconds on one core) and linked
into each test's data directory, so tests use real models without retraining them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS = REPO / "data" / "sample-corpus" / "corpus.jsonl.gz"
HUMANEVAL = REPO / "data" / "sample-corpus" / "humaneval.jsonl.gz"
SUBSET_EVERY = 10


@pytest.fixture(scope="session")
def default_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the three bundled default models."""
    from midmix.classifiers.defaults import ensure_default_models

    models_dir = tmp_path_factory.mktemp("default-models") / "models"
    ensure_default_models(models_dir)
    return models_dir


def make_data_dir(root: Path, models_dir: Path) -> Path:
    """A fresh data directory at ``root`` holding the models of ``models_dir`` (hard links)."""
    (root / "models").mkdir(parents=True)
    for model_file in models_dir.iterdir():
        try:
            os.link(model_file, root / "models" / model_file.name)
        except OSError:
            shutil.copyfile(model_file, root / "models" / model_file.name)
    return root


@pytest.fixture
def data_dir(tmp_path: Path, default_models_dir: Path) -> Path:
    """A fresh data directory that already has the default models."""
    return make_data_dir(tmp_path / "data", default_models_dir)


@pytest.fixture(scope="session")
def corpus_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tenth sample-corpus document (647 docs, 3 of them HumanEval plants), as plain JSONL."""
    path = tmp_path_factory.mktemp("subset") / "subset.jsonl"
    with gzip.open(SAMPLE_CORPUS, "rb") as source, open(path, "wb") as target:
        for index, line in enumerate(source):
            if index % SUBSET_EVERY == 0:
                target.write(line)
    return path
