"""A mixture build as parallel tasks: the same version and bytes for 1 and 4 tasks, in process or in a pool."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from midmix.pipelines.executors import LocalExecutor
from midmix.pipelines.mixtures import build, tasks
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("curated")
    write_sample_dataset(data_dir, SAMPLE_CORPUS, limit=1200)
    return data_dir


def _copy(curated: Path, target: Path) -> Path:
    shutil.copytree(curated / "datasets", target / "datasets")
    return target


def _spec() -> dict:
    """Two phases; math repeated 2.4 epochs in quality order, web partial, code shuffled; an eval split."""
    return {
        "name": "parallel", "eval": {"count": 4},
        "phases": [
            {"name": "stable", "token_budget": 400_000, "curriculum": {"key": "none", "seed": 3},
             "components": [
                 {"name": "web", "datasets": ["latest"], "weight": 0.6, "select": {"column": "domain", "op": "==", "value": "web"}},
                 {"name": "code", "datasets": ["latest"], "weight": 0.4, "select": {"column": "domain", "op": "in", "value": ["code", "qa"]}}]},
            {"name": "anneal", "token_budget": 1_900_000, "curriculum": {"key": "quality.fasttext_hq", "direction": "desc"},
             "components": [
                 {"name": "math", "datasets": ["latest"], "weight": 0.5, "max_epochs": 3,
                  "select": {"column": "domain", "op": "==", "value": "math"}},
                 {"name": "web-hq", "datasets": ["latest"], "weight": 0.5,
                  "select": {"all": [{"column": "domain", "op": "==", "value": "web"}, {"column": "quality.fasttext_hq", "op": "top_percent", "value": 60}]}}]},
        ],
    }  # fmt: skip


def _files(version_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(version_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(version_dir.rglob("*"))
        if p.is_file()
    }


def _build(data_dir: Path, executor: LocalExecutor) -> tuple[dict, dict[str, str]]:
    manifest = materialize_mixture(parse_spec(_spec()), data_dir, executor=executor)
    assert not list((data_dir / ".staging").glob("build-*")), "work folder left behind"
    return manifest, _files(data_dir / "mixtures" / manifest["version"])


@pytest.fixture
def small_units(monkeypatch):
    """Units of 100 documents, so every stage has more units than tasks (units never change the bytes)."""
    monkeypatch.setattr(build, "MIN_UNIT_DOCS", 100)


@pytest.fixture(scope="module")
def one_task(curated, tmp_path_factory) -> tuple[dict, dict[str, str]]:
    return _build(_copy(curated, tmp_path_factory.mktemp("one")), LocalExecutor(tasks=1))


def test_four_tasks_in_process_give_the_same_bytes_as_one(curated, tmp_path, small_units, one_task):
    manifest, files = _build(_copy(curated, tmp_path / "four"), LocalExecutor(tasks=4, workers=1))
    assert manifest == one_task[0]
    assert files == one_task[1]
    math = manifest["phases"][1]["components"][0]
    assert 2 < math["epochs"] < 3 and math["docs"] > math["unique_docs"]
    assert len(manifest["eval"]) >= 4


@pytest.mark.slow
def test_four_tasks_on_a_process_pool_give_the_same_bytes_as_one(curated, tmp_path, small_units, one_task):
    manifest, files = _build(_copy(curated, tmp_path / "pool"), LocalExecutor(tasks=4, workers=2))
    assert files == one_task[1] and manifest == one_task[0]


def test_a_rerun_resumes_from_the_work_folder(curated, tmp_path, small_units, one_task, monkeypatch):
    """A build whose write stage fails keeps its encoded units; the rerun (other task count) finishes the same version."""
    data_dir = _copy(curated, tmp_path / "resume")
    real_write = build.WriteShards.run

    def failing(self, data=None, rank=0, world_size=1):
        raise OSError("disk went away")
        yield

    monkeypatch.setattr(build.WriteShards, "run", failing)
    with pytest.raises(Exception, match="stage 3-write: 2 of 2 tasks still failing after 2 retries"):
        materialize_mixture(parse_spec(_spec()), data_dir, executor=LocalExecutor(tasks=2, workers=1))
    (work,) = (data_dir / ".staging").glob("build-*")
    assert len(list((work / "encoded").iterdir())) > 4 and not (data_dir / "mixtures").exists()
    monkeypatch.setattr(build.WriteShards, "run", real_write)
    encoded_again = []
    monkeypatch.setattr(tasks, "encode_unit", lambda *args: encoded_again.append(args))
    manifest, files = _build(data_dir, LocalExecutor(tasks=3, workers=1))
    assert files == one_task[1] and manifest == one_task[0]
    assert encoded_again == []  # every unit was encoded by the failed run
