"""Shared fixtures: the bundled sample corpus, a small subset of it, and trained default models.

The default fastText models are trained once per session (seconds on one core) and linked
into each test's data directory, so tests use real models without retraining them.

Skips are a policy, not an accident: the test command installs everything the suite needs, so
a skip whose reason is not in ``EXPECTED_SKIPS`` fails the run (``-rs`` prints every reason).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from midmix.resources import HUMANEVAL, SAMPLE_CORPUS

REPO = Path(__file__).resolve().parents[1]
SUBSET_EVERY = 10
# Reasons a test may skip without failing CI: hardware this machine cannot have.
EXPECTED_SKIPS = ("needs a CUDA GPU",)
_unexpected_skips: list[str] = []

__all__ = ["HUMANEVAL", "REPO", "SAMPLE_CORPUS"]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skip whose reason is not an expected one."""
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(expected in reason for expected in EXPECTED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that passed but skipped a test for an unexpected reason."""
    if _unexpected_skips and exitstatus == 0:
        print("\nunexpected skips (install what they name, or add the reason to EXPECTED_SKIPS):")
        for line in _unexpected_skips:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
        if model_file.is_dir():  # stacked and transformer models are directories
            shutil.copytree(model_file, root / "models" / model_file.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(model_file, root / "models" / model_file.name)
    return root


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


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
