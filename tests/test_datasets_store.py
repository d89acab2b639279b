"""Curated datasets in an object store: push (manifest last), pull (checked), build from a store-only
version, the service listing and serving it; a store URL without its driver is a one-line error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import httpx
import pytest

from midmix import storage
from midmix.cli import main
from midmix.hashing import sha256_file
from midmix.pipelines.catalog import Catalog
from midmix.resources import SAMPLE_CORPUS
from midmix.service.client import MidmixClient
from midmix.service.versions import VersionStore
from tests.sample_dataset import write_sample_dataset
from tests.service_fixtures import start_service

SPEC = {"name": "from-store", "phases": [{"name": "stable", "token_budget": 60_000, "components": [
    {"name": "web", "datasets": ["DATASET"], "weight": 0.5, "select": {"column": "domain", "op": "==", "value": "web"}},
    {"name": "code", "datasets": ["DATASET"], "weight": 0.5, "select": {"column": "domain", "op": "==", "value": "code"}}]}]}  # fmt: skip


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("curated")
    return data_dir, write_sample_dataset(data_dir, SAMPLE_CORPUS, limit=500)["version"]


@pytest.fixture
def memory_store():
    root = f"memory:///store-{uuid.uuid4().hex}"
    yield root
    memory = fsspec.filesystem("memory")
    if memory.exists(root.removeprefix("memory://")):
        memory.rm(root.removeprefix("memory://"), recursive=True)


def _spec_file(path: Path, version: str) -> Path:
    path.write_text(json.dumps(SPEC).replace("DATASET", version))
    return path


def test_push_copies_every_file_and_pull_restores_the_same_bytes(curated, memory_store, tmp_path, capsys):
    data_dir, version = curated
    assert main(["datasets", "push", version, memory_store, "--data-dir", str(data_dir)]) == 0
    assert f"dataset {version}: 2 files in memory:///" in capsys.readouterr().out
    assert main(["datasets", "pull", version, memory_store, "--data-dir", str(tmp_path / "fresh")]) == 0
    local, pulled = data_dir / "datasets" / version, tmp_path / "fresh" / "datasets" / version
    assert sorted(p.name for p in pulled.rglob("*") if p.is_file()) == ["manifest.json", "part-00000.parquet"]
    for path in local.rglob("*"):
        if path.is_file():
            assert sha256_file(pulled / path.relative_to(local)) == sha256_file(path)
    with Catalog(tmp_path / "fresh") as catalog:
        assert [d["version"] for d in catalog.datasets()] == [version]


def test_an_unknown_version_names_the_published_ones(curated, memory_store, capsys):
    data_dir, version = curated
    assert main(["datasets", "push", "ds-nope", memory_store, "--data-dir", str(data_dir)]) == 2
    assert f"no published dataset 'ds-nope' in {data_dir / 'datasets'}; published: {version}" in capsys.readouterr().err
    assert main(["datasets", "pull", "ds-nope", memory_store, "--data-dir", str(data_dir)]) == 2
    assert "no dataset 'ds-nope' in memory:///" in capsys.readouterr().err


@pytest.mark.parametrize("url, package", [("s3://bucket/prefix", "s3fs"), ("gs://bucket/prefix", "gcsfs")])
def test_a_store_url_without_its_driver_is_one_line_naming_the_package(curated, url, package, tmp_path, capsys):
    data_dir, version = curated
    for command, where in ((["datasets", "push", version], data_dir), (["datasets", "pull", version], tmp_path)):
        assert main([*command, url, "--data-dir", str(where)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and package in err and "Traceback" not in err, err


def test_a_push_that_fails_half_way_is_neither_listed_nor_pulled(curated, memory_store, tmp_path, monkeypatch, capsys):
    data_dir, version = curated
    real_open = storage.open_file

    def failing_open(location, mode="rb"):
        if "w" in mode and str(location).endswith("manifest.json"):
            raise OSError("connection reset")
        return real_open(location, mode)

    monkeypatch.setattr(storage, "open_file", failing_open)
    assert main(["datasets", "push", version, memory_store, "--data-dir", str(data_dir)]) == 2
    assert "nothing is published" in capsys.readouterr().err
    monkeypatch.setattr(storage, "open_file", real_open)
    assert storage.exists(f"{memory_store}/datasets/{version}/data/part-00000.parquet")
    assert not storage.exists(f"{memory_store}/datasets/{version}/manifest.json")
    assert VersionStore(tmp_path / "empty", memory_store).versions("datasets") == []
    assert main(["datasets", "pull", version, memory_store, "--data-dir", str(tmp_path / "fresh")]) == 2
    assert not (tmp_path / "fresh" / "datasets" / version).exists()


def test_a_damaged_store_copy_is_not_published_by_pull(curated, memory_store, tmp_path, capsys):
    data_dir, version = curated
    assert main(["datasets", "push", version, memory_store, "--data-dir", str(data_dir)]) == 0
    with storage.open_file(f"{memory_store}/datasets/{version}/data/part-00000.parquet", "wb") as handle:
        handle.write(b"not parquet")
    capsys.readouterr()
    assert main(["datasets", "pull", version, memory_store, "--data-dir", str(tmp_path / "fresh")]) == 2
    assert "does not match its manifest's sha256" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "datasets" / version).exists()


def test_build_pulls_a_dataset_that_is_only_in_the_store(curated, memory_store, tmp_path, capsys):
    data_dir, version = curated
    assert main(["datasets", "push", version, memory_store, "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    spec = _spec_file(tmp_path / "spec.json", version)
    assert main(["build", str(spec), "--data-dir", str(data_dir)]) == 0
    local_version = capsys.readouterr().out.split()[1]
    fresh = tmp_path / "fresh"
    assert main(["build", str(spec), "--data-dir", str(fresh)]) == 2
    assert version in capsys.readouterr().err
    assert main(["build", str(spec), "--data-dir", str(fresh), "--store", memory_store]) == 0
    assert capsys.readouterr().out.split()[1] == local_version
    built, reference = fresh / "mixtures" / local_version, data_dir / "mixtures" / local_version
    assert (built / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()


@pytest.mark.slow
def test_the_service_lists_serves_and_builds_from_a_store_only_dataset(curated, tmp_path):
    """Across processes: a file:// store from MIDMIX_SHARD_STORE; the job worker pulls the dataset."""
    data_dir, version = curated
    store = f"file://{tmp_path / 'bucket'}"
    assert main(["datasets", "push", version, store, "--data-dir", str(data_dir)]) == 0
    service = start_service(tmp_path / "empty", env={"MIDMIX_SHARD_STORE": store})
    try:
        assert [d["version"] for d in httpx.get(f"{service.url}/datasets").json()] == [version]
        served = httpx.get(f"{service.url}/datasets/{version}")
        assert served.status_code == 200 and served.json() == json.loads(
            (data_dir / "datasets" / version / "manifest.json").read_text()
        )
        with MidmixClient(service.url, retries=0) as client:
            job = client.wait(
                client.build(json.loads(json.dumps(SPEC).replace("DATASET", version)))["id"], poll=0.2, timeout=120
            )
        assert job["state"] == "succeeded", job
        assert (tmp_path / "empty" / "datasets" / version / "manifest.json").is_file()
        assert (tmp_path / "empty" / "mixtures" / job["result"] / "manifest.json").is_file()
    finally:
        service.stop()
