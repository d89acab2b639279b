"""Curation config: defaults that protect code and math, and errors that name field and file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midmix.errors import MidmixError
from midmix.pipelines.curation.config import CurationConfig, load_config, parse_config


def test_defaults_cover_the_issue() -> None:
    config = CurationConfig(inputs=["corpus.jsonl"])
    assert config.quality.classifiers == {"fasttext_hq": "default"}
    assert config.domain.labels == ["web", "code", "math", "qa", "academic", "other"]
    assert (config.dedup.ngram, config.dedup.num_bands, config.dedup.rows_per_band, config.dedup.jaccard_threshold) == (
        5,
        20,
        5,
        0.8,
    )
    assert config.decontam.ngram == 6 and config.decontam.eval_files[0].path.endswith("humaneval.jsonl.gz")
    assert config.decontam.eval_files[0].fields == ["text"]
    assert config.heuristics.for_domain("code").min_alpha_word_ratio is None
    assert config.heuristics.for_domain("web").min_alpha_word_ratio == 0.6


def test_yaml_with_nested_sections(tmp_path: Path) -> None:
    path = tmp_path / "curate.yaml"
    path.write_text(
        "inputs: [a.jsonl, 's3://bucket/*.parquet']\n"
        "executor: {kind: slurm, tasks: 8, partition: cpu}\n"
        "heuristics:\n  by_domain:\n    code: {min_words: 3}\n"
        "quality: {classifiers: {hq: default, edu: /models/edu.bin}, primary: edu, min_score: 0.2}\n"
    )
    config = load_config(path)
    assert config.executor.kind == "slurm" and config.executor.tasks == 8
    assert config.heuristics.for_domain("code").min_words == 3
    assert config.quality.primary == "edu" and config.quality.min_score == 0.2


def test_unknown_key_names_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("inputs: [a.jsonl]\ndedup: {num_band: 10}\n")
    with pytest.raises(
        MidmixError, match=rf"invalid curation config in {path}: dedup.num_band: Extra inputs are not permitted"
    ):
        load_config(path)


def test_wrong_type_names_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"inputs": ["a.jsonl"], "dedup": {"jaccard_threshold": "high"}}))
    with pytest.raises(MidmixError, match=r"dedup.jaccard_threshold: Input should be a valid number"):
        load_config(path)


def test_primary_must_be_a_listed_classifier() -> None:
    with pytest.raises(MidmixError, match="quality.primary 'edu' is not one of"):
        parse_config({"inputs": ["a"], "quality": {"primary": "edu"}}, "from test")


def test_unknown_executor_and_missing_inputs() -> None:
    with pytest.raises(MidmixError, match="executor"):
        parse_config({"inputs": ["a"], "executor": {"kind": "spark"}})
    with pytest.raises(MidmixError, match="inputs"):
        parse_config({})


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("inputs: [a.jsonl\n")
    with pytest.raises(MidmixError, match=rf"{path} is not valid YAML"):
        load_config(path)
    with pytest.raises(MidmixError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path, capsys) -> None:
    from midmix.cli import main

    path = tmp_path / "curate.yaml"
    path.write_text("inputs: [a.jsonl]\nquality: {min_score: 2}\n")
    assert main(["curate", "--config", str(path), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"midmix curate: error: invalid curation config in {path}: quality.min_score:")
    assert "\n" not in err and not (tmp_path / "data").exists()
    assert main(["curate", "--out", str(tmp_path / "data")]) == 2
    assert "give at least one INPUT or a --config" in capsys.readouterr().err


def test_unknown_language_code_in_thresholds_names_file_field_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("inputs: [a.jsonl]\nheuristics:\n  by_language:\n    jp: {words_per_english_word: 2.0}\n")
    with pytest.raises(MidmixError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid curation config in {path}: heuristics.by_language: ")
    assert "unknown language code 'jp' (did you mean 'ja'?): use an ISO 639-1 code" in message


def test_language_entries_replace_only_their_own_builtin_rules() -> None:
    config = parse_config({"inputs": ["a.jsonl"], "heuristics": {"by_language": {"ru": {"stopwords": None}}}})
    assert config.heuristics.by_language["ru"].stopwords is None
    assert config.heuristics.by_language["ru"].words_per_english_word == 1.0
    assert config.heuristics.by_language["ja"].word_length is None  # built-in rules kept
    assert config.heuristics.by_language["en"].stopwords == ["the", "be", "to", "of", "and", "that", "have", "with"]
