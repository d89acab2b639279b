"""Readers: every supported format yields the same Documents; every bad input names file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from midmix.errors import MidmixError
from midmix.pipelines.curation.config import FieldMap
from midmix.pipelines.curation.readers import CorpusReader, resolve_inputs

RECORDS = [
    {"id": "a", "text": "First document.", "source": "web-crawl", "meta": {"url": "http://x"}},
    {"id": "b", "text": "Second one.", "source": None, "meta": None},
    {"id": "c", "text": "", "source": "web-crawl", "meta": {}},
]


DEFAULT_FIELDS = FieldMap()


def read_all(*inputs: str | Path, fields: FieldMap = DEFAULT_FIELDS, world_size: int = 1) -> list:
    units = resolve_inputs([str(path) for path in inputs])
    reader = CorpusReader(units, fields)
    return [doc for rank in range(world_size) for doc in reader.run(None, rank, world_size)]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def summary(docs: list) -> list[tuple]:
    return [
        (doc.id, doc.text, doc.metadata["source"], doc.metadata["meta"], doc.metadata.get("drop_reason"))
        for doc in docs
    ]


EXPECTED = [
    ("a", "First document.", "web-crawl", '{"url": "http://x"}', None),
    ("b", "Second one.", "corpus", "{}", None),
    ("c", "", "web-crawl", "{}", "empty_text"),
]


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz", "corpus.json.gz"])
def test_jsonl_plain_and_gzip(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, [json.dumps(record) for record in RECORDS])
    assert summary(read_all(path)) == EXPECTED


def test_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    # A Parquet struct column gives every row every key, so row c's meta has url: null.
    assert summary(read_all(path)) == EXPECTED[:2] + [("c", "", "web-crawl", '{"url": null}', "empty_text")]


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [{"id": r["id"], "text": r["text"], "source": r["source"]} for r in RECORDS]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "corpus"))
    assert [(doc.id, doc.text, doc.metadata["source"]) for doc in read_all(tmp_path / "corpus")] == [
        ("a", "First document.", "web-crawl"),
        ("b", "Second one.", "corpus"),
        ("c", "", "web-crawl"),
    ]


def test_folder_and_glob_are_read_in_sorted_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [json.dumps({"id": "2", "text": "two"})])
    write_jsonl(tmp_path / "a.jsonl.gz", [json.dumps({"id": "1", "text": "one"})])
    assert [doc.id for doc in read_all(tmp_path)] == ["1", "2"]
    assert [doc.id for doc in read_all(tmp_path / "*.jsonl")] == ["2"]


def test_tasks_split_files_not_documents(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_jsonl(tmp_path / f"{name}.jsonl", [json.dumps({"id": f"{name}{i}", "text": "x"}) for i in range(2)])
    units = resolve_inputs([str(tmp_path)])
    reader = CorpusReader(units, FieldMap())
    assert [doc.id for doc in reader.run(None, 1, 2)] == ["b0", "b1"]
    assert [doc.metadata["_unit"] for doc in reader.run(None, 0, 2)] == [0, 0, 2, 2]


def test_custom_fields_and_text_hash_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [json.dumps({"body": "Hello there", "origin": "forum"})])
    (doc,) = read_all(path, fields=FieldMap(text="body", source="origin"))
    assert doc.text == "Hello there" and doc.metadata["source"] == "forum"
    assert len(doc.id) == 20 and doc.id == read_all(path, fields=FieldMap(text="body"))[0].id


def test_corrupt_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [json.dumps(RECORDS[0]), json.dumps(RECORDS[1]), '{"id": "x", "text": '])
    with pytest.raises(MidmixError, match=rf"{path}:3: invalid JSON"):
        read_all(path)


def test_non_utf8_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(MidmixError, match=rf"{path}:2: not UTF-8"):
        read_all(path)


def test_non_string_text_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [json.dumps({"id": "1", "text": 42})])
    with pytest.raises(MidmixError, match=rf"{path}:1: field 'text' must be a string, got int"):
        read_all(path)


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "l.jsonl", ["[1, 2]"])
    with pytest.raises(MidmixError, match=rf"{path}:1: expected a JSON object, got list"):
        read_all(path)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "full.jsonl.gz", [json.dumps({"id": str(i), "text": "x" * 50}) for i in range(200)])
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(MidmixError, match=rf"{path}: corrupt or truncated"):
        read_all(path)


def test_missing_input_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(MidmixError, match="input not found: .*nope.jsonl"):
        resolve_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(MidmixError, match="input not found"):
        resolve_inputs([str(tmp_path / "*.jsonl")])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MidmixError, match="unknown format"):
        resolve_inputs([str(tmp_path / "notes.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MidmixError, match="holds no .jsonl"):
        resolve_inputs([str(tmp_path / "empty")])


def test_fsspec_urls_with_globs_and_compression() -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    with memory.open("/readers-test/a.jsonl", "w") as handle:
        handle.write(json.dumps({"id": "1", "text": "one"}) + "\n")
    with memory.open("/readers-test/b.jsonl.gz", "wb") as handle:
        handle.write(gzip.compress(json.dumps({"id": "2", "text": "two"}).encode() + b"\n"))
    docs = read_all("memory://readers-test/*.jsonl*")
    assert [(doc.id, doc.text, doc.metadata["source"]) for doc in docs] == [("1", "one", "a"), ("2", "two", "b")]
    memory.rm("/readers-test", recursive=True)
