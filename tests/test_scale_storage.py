"""Object-store paths: the same calls work on plain paths, file:// and memory:// URLs."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import fsspec
import pytest

from midmix import storage
from midmix.errors import MidmixError, NotFoundError


@pytest.fixture
def memory_root():
    """A fresh memory:/// folder (canonical form, as listings return it), removed afterwards."""
    root = f"memory:///midmix-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root.removeprefix("memory://")
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_is_url_tells_urls_from_plain_paths():
    assert storage.is_url("s3://bucket/key")
    assert storage.is_url("file:///tmp/x")
    assert not storage.is_url("/tmp/x")
    assert not storage.is_url(Path("relative/x"))


def test_write_then_read_round_trips_on_memory(memory_root):
    with storage.open_file(f"{memory_root}/a/b.txt", "wb") as handle:
        handle.write(b"hello")
    with storage.open_file(f"{memory_root}/a/b.txt") as handle:
        assert handle.read() == b"hello"
    assert storage.exists(f"{memory_root}/a/b.txt")
    assert storage.size(f"{memory_root}/a/b.txt") == 5
    assert storage.sha256(f"{memory_root}/a/b.txt") == hashlib.sha256(b"hello").hexdigest()


def test_list_files_expands_globs_and_folders_keeping_the_scheme(memory_root):
    for name in ("x/2.jsonl", "x/1.jsonl", "x/skip.txt", "x/sub/3.jsonl"):
        with storage.open_file(f"{memory_root}/{name}", "wb") as handle:
            handle.write(b"{}\n")
    assert storage.list_files(f"{memory_root}/x/*.jsonl") == [f"{memory_root}/x/1.jsonl", f"{memory_root}/x/2.jsonl"]
    assert storage.list_files(f"{memory_root}/x") == [
        f"{memory_root}/x/1.jsonl",
        f"{memory_root}/x/2.jsonl",
        f"{memory_root}/x/skip.txt",
        f"{memory_root}/x/sub/3.jsonl",
    ]


def test_file_urls_and_plain_paths_name_the_same_files(tmp_path):
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "a.jsonl").write_text("{}\n")
    assert storage.list_files(f"file://{tmp_path}/*.jsonl") == [
        f"file://{tmp_path}/a.jsonl",
        f"file://{tmp_path}/b.jsonl",
    ]
    assert storage.list_files(str(tmp_path / "*.jsonl")) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert storage.sha256(f"file://{tmp_path}/a.jsonl") == storage.sha256(tmp_path / "a.jsonl")


def test_put_tree_copies_a_version_with_the_manifest_last(tmp_path, memory_root):
    version = tmp_path / "mix-1"
    (version / "phases" / "stable").mkdir(parents=True)
    (version / "manifest.json").write_text('{"kind": "mixture"}')
    (version / "phases" / "stable" / "web-00000.parquet").write_bytes(b"PAR1")
    (version / "spec.json").write_text("{}")
    written = storage.put_tree(version, f"{memory_root}/mixtures/mix-1/")
    assert written == [
        f"{memory_root}/mixtures/mix-1/phases/stable/web-00000.parquet",
        f"{memory_root}/mixtures/mix-1/spec.json",
        f"{memory_root}/mixtures/mix-1/manifest.json",
    ]
    fetched = storage.fetch_file(written[0], tmp_path / "cache" / "web.parquet")
    assert fetched.read_bytes() == b"PAR1"
    assert list((tmp_path / "cache").iterdir()) == [fetched]  # no temporary file left behind


def test_missing_files_raise_not_found_naming_the_url(memory_root):
    with pytest.raises(NotFoundError, match=f"{memory_root}/nope.jsonl"):
        storage.open_file(f"{memory_root}/nope.jsonl")
    with pytest.raises(NotFoundError, match="no file or folder"):
        storage.list_files(f"{memory_root}/nothing-here")


def test_unknown_scheme_or_missing_driver_is_a_user_error():
    with pytest.raises(MidmixError, match="Protocol not known: nosuch"):
        storage.exists("nosuch://bucket/key")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(MidmixError, match="s3fs"):
            storage.exists("s3://bucket/key")


def test_signed_url_is_none_where_the_store_cannot_sign(memory_root, tmp_path):
    assert storage.signed_url(f"{memory_root}/a.parquet") is None
    assert storage.signed_url(tmp_path / "a.parquet") is None


def test_curation_reads_inputs_from_memory_and_file_urls(tmp_path, memory_root, default_models_dir, corpus_subset):
    """The same corpus at a plain path, a file:// URL and a memory:// URL curates to one version."""
    from midmix.pipelines.curation.config import CurationConfig, LocalExecutor
    from midmix.pipelines.curation.curate import curate_corpus
    from tests.conftest import make_data_dir

    corpus = tmp_path / "small.jsonl"
    corpus.write_bytes(b"".join(corpus_subset.read_bytes().splitlines(keepends=True)[::3]))
    with storage.open_file(f"{memory_root}/small.jsonl", "wb") as handle:
        handle.write(corpus.read_bytes())
    locations = {"path": str(corpus), "file": f"file://{corpus}", "memory": f"{memory_root}/small.jsonl"}
    results = {}
    for name, location in locations.items():
        data_dir = make_data_dir(tmp_path / name, default_models_dir)
        manifest = curate_corpus(
            CurationConfig(inputs=[location], executor=LocalExecutor(tasks=1, workers=1)), data_dir
        )
        parts = sorted((data_dir / "datasets" / manifest["version"] / "data").glob("*.parquet"))
        results[name] = (manifest["version"], manifest["counts"], [storage.sha256(part) for part in parts])
        assert manifest["inputs"][0]["sha256"] == storage.sha256(corpus)
    assert results["file"] == results["path"]
    assert results["memory"] == results["path"]
    assert results["path"][1]["docs"] > 100
