"""The DuckDB catalog: synced from published manifests only, rebuildable, and safe across processes."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from midmix.errors import NotFoundError
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset

SAMPLE = SAMPLE_CORPUS
SPEC = {"name": "cat", "phases": [{"name": "p", "token_budget": 20_000, "components": [
    {"name": "math", "datasets": ["latest"], "weight": 1.0, "select": {"column": "domain", "op": "==", "value": "math"}}]}]}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict, dict]:
    data_dir = tmp_path_factory.mktemp("catalog")
    dataset = write_sample_dataset(data_dir, SAMPLE, limit=400)
    mixture = materialize_mixture(parse_spec(SPEC), data_dir)
    return data_dir, dataset, mixture


def test_lists_published_datasets_and_mixtures_with_their_manifests(built):
    data_dir, dataset, mixture = built
    with Catalog(data_dir) as catalog:
        (listed,) = catalog.datasets()
        assert (listed["version"], listed["docs"], listed["tokens"]) == (dataset["version"], 400, dataset["counts"]["tokens"])
        assert listed["quality_names"] == ["edu", "fasttext_hq"]
        assert catalog.dataset(dataset["version"]) == dataset
        (mix,) = catalog.mixtures()
        assert (mix["version"], mix["name"], mix["phases"], mix["tokens"]) == (mixture["version"], "cat", ["p"], mixture["phases"][0]["tokens"])
        assert catalog.mixture(mixture["version"]) == mixture


def test_per_document_statistics_hold_no_text(built):
    data_dir, dataset, _ = built
    with Catalog(data_dir) as catalog, catalog.reading() as con:
        columns = {row[0] for row in con.execute("DESCRIBE docs").fetchall()}
        docs = con.execute("SELECT count(*), sum(n_tokens) FROM docs WHERE dataset = ?", [dataset["version"]]).fetchall()[0]
    assert "text" not in columns and {"quality", "domain", "n_tokens", "sig_n_words"} <= columns
    assert docs == (400, dataset["counts"]["tokens"])


def test_unknown_versions_are_not_found_and_name_what_exists(built):
    data_dir, dataset, _ = built
    with Catalog(data_dir) as catalog:
        with pytest.raises(NotFoundError, match=r"mixture version 'mix-nope' not found; known: mix-"):
            catalog.mixture("mix-nope")
        with pytest.raises(NotFoundError, match=rf"dataset version 'ds-nope' not found; known: {dataset['version']}"):
            catalog.dataset("ds-nope")


def test_staging_directories_are_never_listed_and_the_catalog_is_rebuildable(built, tmp_path):
    data_dir, dataset, mixture = built
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    staged = copy / "mixtures" / ".staging" / "mix-half-built"
    staged.mkdir(parents=True)
    (staged / "manifest.json").write_text(json.dumps({**mixture, "version": "mix-half-built"}))
    (copy / "catalog.duckdb").unlink()
    with Catalog(copy) as catalog:
        assert [m["version"] for m in catalog.mixtures()] == [mixture["version"]]
        assert [d["version"] for d in catalog.datasets()] == [dataset["version"]]
        assert catalog.mixture(mixture["version"]) == mixture


def test_a_catalog_with_an_old_table_layout_is_rebuilt_from_the_manifests(built, tmp_path):
    data_dir, dataset, mixture = built
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    (copy / "catalog.duckdb").unlink()
    with duckdb.connect(str(copy / "catalog.duckdb")) as con:
        con.execute("CREATE TABLE datasets (version VARCHAR, size BIGINT)")
        con.execute("INSERT INTO datasets VALUES (?, 1)", [dataset["version"]])
    with Catalog(copy) as catalog:
        assert catalog.dataset(dataset["version"]) == dataset
        assert [m["version"] for m in catalog.mixtures()] == [mixture["version"]]


def test_a_version_removed_from_disk_leaves_the_catalog_on_next_read(built, tmp_path):
    data_dir, _, mixture = built
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    with Catalog(copy) as catalog:
        assert len(catalog.mixtures()) == 1
        shutil.rmtree(copy / "mixtures" / mixture["version"])
        assert catalog.mixtures() == []


def test_sync_waits_for_another_process_holding_the_write_lock(built):
    data_dir, _, _ = built
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(1.5); c.close()",
         str(data_dir / "catalog.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(duckdb.IOException):
        duckdb.connect(str(data_dir / "catalog.duckdb"), read_only=True).close()
    start = time.monotonic()
    Catalog(data_dir).sync()
    assert time.monotonic() - start > 0.5
    assert holder.wait(timeout=10) == 0
    assert len(Catalog(data_dir).mixtures()) == 1
