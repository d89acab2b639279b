"""End-to-end curation of a 650-document slice of the sample corpus with the real default models."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from midmix.cli import main
from midmix.errors import MidmixError
from midmix.hashing import sha256_file
from midmix.pipelines.curation.config import CurationConfig, LocalExecutor
from midmix.pipelines.curation.curate import curate_corpus
from midmix.pipelines.curation.schema import CURATED_SCHEMA, DROPPED_SCHEMA
from midmix.pipelines.curation.writer import CuratedWriter
from tests.conftest import make_data_dir


def corpus_with_duplicates(subset: Path, target: Path) -> tuple[Path, dict[str, str]]:
    """The subset plus an exact copy and a lightly edited copy of two long handbook pages."""
    lines = subset.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    long_pages = [
        r for r in records if r["source"] == "debian-handbook" and r["lang"] == "en" and len(r["text"]) > 3000
    ]
    exact = {**long_pages[0], "id": "copy-exact"}
    words = long_pages[1]["text"].split(" ")
    words[len(words) // 2] = "EDITED"
    near = {**long_pages[1], "id": "copy-near", "text": " ".join(words)}
    target.write_text("\n".join(lines + [json.dumps(exact), json.dumps(near)]) + "\n", encoding="utf-8")
    return target, {"copy-exact": long_pages[0]["id"], "copy-near": long_pages[1]["id"]}


@pytest.fixture(scope="module")
def curated(tmp_path_factory, default_models_dir, corpus_subset):
    root = tmp_path_factory.mktemp("curated")
    corpus, copies = corpus_with_duplicates(corpus_subset, root / "corpus.jsonl")
    data_dir = make_data_dir(root / "data", default_models_dir)
    events = []
    manifest = curate_corpus(CurationConfig(inputs=[str(corpus)]), data_dir, lambda *event: events.append(event))
    return manifest, data_dir, corpus, copies, events


def version_dir(data_dir: Path, manifest: dict) -> Path:
    return data_dir / "datasets" / manifest["version"]


def read(data_dir: Path, manifest: dict, folder: str):
    return pq.read_table(version_dir(data_dir, manifest) / folder / "part-00000.parquet")


def test_parts_follow_the_fixed_schemas(curated) -> None:
    manifest, data_dir, *_ = curated
    assert read(data_dir, manifest, "data").schema.equals(CURATED_SCHEMA)
    assert read(data_dir, manifest, "dropped").schema.equals(DROPPED_SCHEMA)
    assert manifest["kind"] == "dataset" and manifest["version"].startswith("ds-")


def test_step_counts_add_up(curated) -> None:
    manifest, data_dir, *_ = curated
    steps = {step["name"]: step for step in manifest["steps"]}
    assert [step["name"] for step in manifest["steps"]] == [
        "read",
        "normalize",
        "language",
        "decontam",
        "heuristics",
        "quality",
        "dedup",
    ]
    assert steps["read"]["docs_in"] == 649
    assert steps["decontam"]["dropped"] == {"decontam:humaneval": 3}
    assert steps["dedup"]["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}
    for before, after in zip(manifest["steps"], manifest["steps"][1:]):
        assert after["docs_in"] == before["docs_out"] == before["docs_in"] - sum(before["dropped"].values())
    kept, dropped = read(data_dir, manifest, "data"), read(data_dir, manifest, "dropped")
    assert manifest["counts"]["docs"] == len(kept) == manifest["steps"][-1]["docs_out"]
    assert manifest["counts"]["dropped"] == len(dropped) == 649 - len(kept)


def test_planted_humaneval_problems_are_dropped_by_decontam(curated) -> None:
    manifest, data_dir, corpus, *_ = curated
    planted = {
        json.loads(line)["id"] for line in corpus.read_text().splitlines() if json.loads(line)["source"] == "humaneval"
    }
    dropped = read(data_dir, manifest, "dropped").to_pylist()
    assert {row["id"] for row in dropped if row["drop_step"] == "decontam"} == planted


def test_duplicates_share_a_cluster_and_the_best_quality_is_kept(curated) -> None:
    manifest, data_dir, _, copies, _ = curated
    kept = {row["id"]: row for row in read(data_dir, manifest, "data").to_pylist()}
    dropped = {row["id"]: row for row in read(data_dir, manifest, "dropped").to_pylist() if row["drop_step"] == "dedup"}
    assert set(dropped) | {copies["copy-exact"]} >= {"copy-exact"}
    for copy, original in copies.items():
        pair = {copy, original}
        (keeper,) = pair & set(kept)
        (loser,) = pair & set(dropped)
        assert kept[keeper]["dup_cluster"] == dropped[loser]["dup_cluster"] == keeper
        assert kept[keeper]["dup_cluster_size"] == 2
        assert kept[keeper]["quality_score"] >= dropped[loser]["quality_score"]
    assert dropped["copy-exact"]["drop_reason"] == "exact_duplicate"


def test_rows_carry_scores_tokens_and_input_order(curated) -> None:
    manifest, data_dir, corpus, *_ = curated
    rows = read(data_dir, manifest, "data").to_pylist()
    order = [json.loads(line)["id"] for line in corpus.read_text().splitlines()]
    positions = [order.index(row["id"]) for row in rows]
    assert positions == sorted(positions)
    for row in rows:
        assert dict(row["quality"])["fasttext_hq"] == row["quality_score"]
        assert row["domain"] in dict(row["domain_scores"]) and abs(sum(dict(row["domain_scores"]).values()) - 1) < 1e-4
        assert row["n_tokens"] == len(row["text"].encode("utf-8")) and row["n_chars"] == len(row["text"])
    assert (
        sum(manifest["tokens_by"]["domain"].values())
        == manifest["counts"]["tokens"]
        == sum(r["n_tokens"] for r in rows)
    )
    assert sum(manifest["docs_by"]["source"].values()) == len(rows)
    assert sum(manifest["quality_histograms"]["fasttext_hq"]["counts"]) == len(rows)


def test_manifest_lists_files_with_hashes_and_leaves_no_staging(curated) -> None:
    manifest, data_dir, *_ = curated
    root = version_dir(data_dir, manifest)
    for entry in manifest["files"]:
        assert sha256_file(root / entry["path"]) == entry["sha256"]
        assert pq.ParquetFile(root / entry["path"]).metadata.num_rows == entry["rows"]
    assert set(manifest["models"]) == {"lang", "domain", "fasttext_hq"}
    assert not list((data_dir / ".staging").glob("curate-*"))
    assert {event[0] for event in curated[4]} >= {"annotate", "dedup", "publish"}


def test_existing_version_is_returned_without_work(curated) -> None:
    manifest, data_dir, corpus, *_ = curated
    stamp = (version_dir(data_dir, manifest) / "manifest.json").stat().st_mtime_ns
    events = []
    again = curate_corpus(CurationConfig(inputs=[str(corpus)]), data_dir, lambda *event: events.append(event))
    assert again == manifest and events == []
    assert (version_dir(data_dir, manifest) / "manifest.json").stat().st_mtime_ns == stamp


def test_interrupted_run_publishes_nothing_and_rerun_is_identical(
    curated, tmp_path, default_models_dir, monkeypatch
) -> None:
    manifest, _, corpus, *_ = curated
    data_dir = make_data_dir(tmp_path / "data", default_models_dir)

    def crash(self, data=None, rank=0, world_size=1):
        raise RuntimeError("killed while writing")
        yield

    monkeypatch.setattr(CuratedWriter, "run", crash)
    with pytest.raises(RuntimeError, match="killed while writing"):
        curate_corpus(CurationConfig(inputs=[str(corpus)]), data_dir)
    assert not (data_dir / "datasets" / manifest["version"]).exists()
    monkeypatch.undo()
    again = curate_corpus(CurationConfig(inputs=[str(corpus)]), data_dir)
    assert again["version"] == manifest["version"]
    for entry in manifest["files"]:
        assert sha256_file(version_dir(data_dir, again) / entry["path"]) == entry["sha256"]


def test_task_count_changes_neither_version_nor_bytes(tmp_path, default_models_dir, corpus_subset) -> None:
    lines = corpus_subset.read_text(encoding="utf-8").splitlines()[:120]
    inputs = []
    for index in range(3):
        path = tmp_path / f"part{index}.jsonl"
        path.write_text("\n".join(lines[index::3]) + "\n", encoding="utf-8")
        inputs.append(str(path))
    (tmp_path / "part3.jsonl").write_text("")  # an empty input file is read as zero documents
    inputs.append(str(tmp_path / "part3.jsonl"))
    results = []
    for tasks in (1, 2):
        data_dir = make_data_dir(tmp_path / f"data{tasks}", default_models_dir)
        config = CurationConfig(inputs=inputs, executor=LocalExecutor(tasks=tasks, workers=1))
        results.append(curate_corpus(config, data_dir))
    assert results[0]["version"] == results[1]["version"]
    assert results[0]["files"] == results[1]["files"]
    assert [entry["path"] for entry in results[0]["files"]][:3] == [f"data/part-0000{i}.parquet" for i in range(3)]


def test_empty_corpus_is_an_error_and_writes_nothing(tmp_path, data_dir) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text('{"id": "a", "text": ""}\n{"id": "b", "text": "   "}\n')
    with pytest.raises(MidmixError, match="no documents with text in inputs"):
        curate_corpus(CurationConfig(inputs=[str(path)]), data_dir)
    assert not (data_dir / "datasets").exists()


def test_corrupt_line_is_an_error_and_writes_nothing(tmp_path, data_dir, corpus_subset) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(corpus_subset.read_text().splitlines()[:5]) + '\n{"id": "x", "text": "unterminated\n')
    with pytest.raises(MidmixError, match=rf"{path}:6: invalid JSON"):
        curate_corpus(CurationConfig(inputs=[str(path)]), data_dir)
    assert not (data_dir / "datasets").exists()


def test_cli_curates_a_folder_of_jsonl(tmp_path, data_dir, corpus_subset, capsys) -> None:
    folder = tmp_path / "jsonl"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(corpus_subset.read_text().splitlines()[:40]) + "\n")
    assert main(["curate", str(folder), "--out", str(data_dir), "--tasks", "1"]) == 0
    out = capsys.readouterr().out
    version = out.split()[1].rstrip(":")
    assert (data_dir / "datasets" / version / "manifest.json").is_file()
    assert "read" in out and "dedup" in out and f"wrote {data_dir / 'datasets' / version}" in out
    assert main(["curate", str(tmp_path / "missing.jsonl"), "--out", str(data_dir)]) == 2
    assert capsys.readouterr().err.strip() == f"midmix curate: error: input not found: {tmp_path / 'missing.jsonl'}"


def test_language_keep_and_quality_cut_drop_with_their_reasons(tmp_path, data_dir, corpus_subset) -> None:
    path = tmp_path / "slice.parquet"
    records = [json.loads(line) for line in corpus_subset.read_text(encoding="utf-8").splitlines()[:150]]
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("id", "text", "source")} for r in records]), path)
    config = CurationConfig(inputs=[str(path)], language={"keep": ["en"]}, quality={"min_score": 0.5})
    manifest = curate_corpus(config, data_dir)
    steps = {step["name"]: step["dropped"] for step in manifest["steps"]}
    kept = read(data_dir, manifest, "data").to_pylist()
    dropped = read(data_dir, manifest, "dropped").to_pylist()
    assert steps["language"]["language_not_kept"] == sum(r["drop_reason"] == "language_not_kept" for r in dropped) > 0
    assert steps["quality"]["below_min_quality"] == sum(r["drop_reason"] == "below_min_quality" for r in dropped) > 0
    assert all(row["lang"] == "en" and row["quality_score"] >= 0.5 for row in kept)
    assert manifest["inputs"][0]["path"] == str(path) and len(kept) + len(dropped) == 150
