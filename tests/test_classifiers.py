"""Specification of classifiers/: real fastText training, the content-hash cache, the registry,
the id-hash split, the bundled default models and the ``midmix classifiers`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from midmix.classifiers.card import ModelCard
from midmix.classifiers.defaults import BUNDLED_CORPUS, ensure_default_models, is_heldout
from midmix.classifiers.fit import fit_in_subprocess
from midmix.classifiers.jsonl import read_jsonl
from midmix.classifiers.loading import load_model
from midmix.classifiers.model import FastTextModel
from midmix.classifiers.registry import ModelRegistry
from midmix.classifiers.text import fasttext_line
from midmix.classifiers.train import (
    FastTextParams,
    LabelledDoc,
    evaluate,
    load_labelled_jsonl,
    roc_auc_score,
    split_examples,
    train_classifier,
)
from midmix.cli import main
from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import text_id

FAST = FastTextParams(epoch=5, dim=8, bucket=0, wordNgrams=1)
FRUIT = [f"apple orchard red apple {i}" for i in range(40)] + [f"banana yellow banana peel {i}" for i in range(40)]


def fruit_docs(labels: tuple[str, str] = ("apple", "banana")) -> list[LabelledDoc]:
    """80 trivially separable documents: the first word decides the label."""
    return [LabelledDoc(text, labels[i >= 40], f"fruit-{i}") for i, text in enumerate(FRUIT)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus_records() -> list[dict]:
    return [record for _, record in read_jsonl(BUNDLED_CORPUS)]


# --- text normalisation -------------------------------------------------------------------


def test_fasttext_line_lowercases_collapses_whitespace_and_truncates() -> None:
    assert fasttext_line("  Hello\n\tWORLD \r\n  again  ") == "hello world again"
    assert fasttext_line("abc def", max_chars=4) == "abc"
    assert fasttext_line("\n\n") == ""
    assert fasttext_line("A" + " " * 9000 + "b\u00a0c\u2003d", max_chars=5) == "a b c"
    assert fasttext_line("ab\n\ncd " * 3000, max_chars=9) == "ab cd ab"


# --- split --------------------------------------------------------------------------------


def test_heldout_split_is_a_stable_hash_of_the_id(corpus_records: list[dict]) -> None:
    assert [i for i in range(20) if is_heldout(f"doc-{i}")] == [7, 10, 12, 18, 19]
    assert sum(is_heldout(record["id"]) for record in corpus_records) == 1283
    assert not any(is_heldout(f"doc-{i}", 0.0) for i in range(100))


# --- defaults -----------------------------------------------------------------------------


def test_default_models_meet_held_out_targets(default_models_dir: Path) -> None:
    models = ensure_default_models(default_models_dir)
    # The stacked domain model trades in-source fit for unseen sources (bench/RESULTS.md, "Classifiers").
    assert models.domain.kind == models.quality.kind == "stacked"
    assert models.domain.metrics["macro_f1"] >= 0.85
    assert models.quality.metrics["roc_auc"] >= 0.95
    assert models.quality.positive_label == "high"
    assert models.lang.metrics["accuracy"] >= 0.95
    assert models.domain.labels == ["academic", "code", "math", "other", "qa", "web"]


def test_default_models_train_only_on_the_train_split(default_models_dir: Path, corpus_records: list[dict]) -> None:
    quality = ensure_default_models(default_models_dir).quality
    labelled = [record for record in corpus_records if record["quality_hint"] is not None]
    assert quality.eval_docs == sum(is_heldout(record["id"]) for record in labelled) == 839
    assert quality.train_docs == len(labelled) - 839
    assert quality.trained_on is not None and quality.trained_on.path == str(BUNDLED_CORPUS)


def test_ensure_default_models_twice_trains_nothing(default_models_dir: Path) -> None:
    before = {path.name: path.stat().st_mtime_ns for path in default_models_dir.iterdir() if path.name[0] != "."}
    first = ensure_default_models(default_models_dir)
    second = ensure_default_models(default_models_dir)
    assert first == second
    assert {path.name: path.stat().st_mtime_ns for path in default_models_dir.iterdir() if path.name[0] != "."} == before
    assert len(before) == 6  # two stacked directories and a .bin, each with its card


def test_predict_scores_columns_follow_sorted_labels(default_models_dir: Path, corpus_records: list[dict]) -> None:
    registry = ModelRegistry(default_models_dir)
    model = load_model(registry.path("domain_stacked"))
    held_out = [record for record in corpus_records if is_heldout(record["id"])][:200]
    scores = model.predict_scores([record["text"] for record in held_out])
    assert scores.shape == (200, 6) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-3)
    predicted = [model.labels[i] for i in scores.argmax(axis=1)]
    assert sum(p == record["domain"] for p, record in zip(predicted, held_out)) / 200 >= 0.8
    assert model.predict_scores([]).shape == (0, 6)


# --- training and evaluation --------------------------------------------------------------


def test_retraining_the_same_data_gives_identical_bytes(tmp_path: Path) -> None:
    first, card_a = train_classifier(fruit_docs(), name="fruit", task="fruit", params=FAST, out_path=tmp_path / "a.bin")
    second, card_b = train_classifier(fruit_docs(), name="fruit", task="fruit", params=FAST, out_path=tmp_path / "b.bin")
    assert first.read_bytes() == second.read_bytes()
    assert card_a.sha256 == card_b.sha256
    assert card_a.train_docs + card_a.eval_docs == 80
    assert card_a.metrics["accuracy"] == 1.0


def test_model_cache_follows_content_not_path(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    train_classifier(fruit_docs(), name="fruit", task="fruit", params=FAST, out_path=path)
    old = FastTextModel.load(path)
    assert old.labels == ["apple", "banana"]
    assert FastTextModel.load(path) is old
    shutil.copyfile(path, tmp_path / "copy.bin")
    assert FastTextModel.load(tmp_path / "copy.bin") is old

    train_classifier(fruit_docs(("pome", "berry")), name="fruit", task="fruit", params=FAST, out_path=path)
    new = FastTextModel.load(path)
    assert new.labels == ["berry", "pome"]
    assert new.sha256 != old.sha256


def test_evaluate_counts_precision_recall_and_unseen_labels(tmp_path: Path) -> None:
    path, _ = train_classifier(fruit_docs(), name="fruit", task="fruit", params=FAST, out_path=tmp_path / "m.bin")
    examples = [("red apple", "apple", "1"), ("yellow banana", "banana", "2"), ("apple pie", "cherry", "3")]
    metrics = evaluate(FastTextModel.load(path), examples)
    assert metrics.per_label["apple"].precision == 0.5
    assert metrics.per_label["apple"].recall == 1.0
    assert metrics.per_label["cherry"].support == 1 and metrics.per_label["cherry"].f1 == 0.0
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert metrics.accuracy == pytest.approx(2 / 3)
    assert metrics.roc_auc is None  # no "high"/"hq"-like positive label among apple/banana


def test_roc_auc_averages_tied_scores() -> None:
    is_positive = np.array([True, False, True, False])
    assert roc_auc_score(is_positive, np.array([0.9, 0.1, 0.5, 0.5])) == 0.875
    assert roc_auc_score(np.array([True, True]), np.array([0.2, 0.3])) is None


def test_external_model_with_other_label_prefix_loads(tmp_path: Path) -> None:
    """Like DCLM's hq/cc classifier: trained elsewhere, its own label prefix."""
    train_file = tmp_path / "train.txt"
    lines = [f"__lbl__{'hq' if i >= 40 else 'cc'} {fasttext_line(text)}\n" for i, text in enumerate(FRUIT)]
    train_file.write_text("".join(lines), encoding="utf-8")
    fit_in_subprocess(train_file, {"label": "__lbl__", "epoch": 5, "dim": 8}, tmp_path / "dclm_like.bin")
    model = FastTextModel.load(tmp_path / "dclm_like.bin")
    assert model.labels == ["cc", "hq"]
    metrics = evaluate(model, [("banana peel", "hq", "1"), ("red apple", "cc", "2")])
    assert metrics.roc_auc == 1.0


def test_plain_text_label_pairs_split_by_text_hash() -> None:
    pairs = [(f"text {i}", "x") for i in range(50)]
    train, held_out = split_examples(pairs, 0.2)
    assert len(train) + len(held_out) == 50 and not set(train) & set(held_out)
    assert split_examples(list(reversed(pairs)), 0.2)[1] == list(reversed(held_out))


def test_training_needs_two_labels() -> None:
    with pytest.raises(MidmixError, match="at least 2 labels"):
        train_classifier([("a b", "x", "1"), ("c d", "x", "2")], name="one", task="t", params=FAST)


def test_load_rejects_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(MidmixError, match="nope.bin"):
        FastTextModel.load(tmp_path / "nope.bin")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(MidmixError, match="junk.bin"):
        FastTextModel.load(junk)


def test_load_labelled_jsonl_skips_null_labels_and_hashes_missing_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "text": "one", "label": "x"},
        {"id": "b", "text": "two", "label": None},
        {"text": "three", "label": "y"},
    ])
    docs = load_labelled_jsonl(path)
    assert [(doc.text, doc.label) for doc in docs] == [("one", "x"), ("three", "y")]
    assert docs[0].doc_id == "a" and docs[1].doc_id == text_id("three")  # curation's id for an id-less doc


# --- registry -----------------------------------------------------------------------------


def test_registry_resolves_name_sha_prefix_and_path(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    bin_a, card_a = train_classifier(fruit_docs(), name="fruit", task="t", params=FAST, out_path=tmp_path / "a.bin")
    first = registry.add(bin_a, card_a)
    bin_b, card_b = train_classifier(
        fruit_docs(("pome", "berry")), name="fruit", task="t", params=FAST, out_path=tmp_path / "b.bin"
    )
    latest = registry.add(bin_b, card_b)

    assert registry.card("fruit").sha256 == latest.sha256
    assert registry.card(first.sha256).labels == ["apple", "banana"]
    assert registry.card(first.sha256[:10]) == first
    assert registry.path(first.sha256) == tmp_path / "models" / f"{first.sha256}.bin"
    assert (tmp_path / "models" / f"{first.sha256}.json").is_file()
    assert [card.sha256 for card in registry.cards()] == [first.sha256, latest.sha256]

    external = tmp_path / "elsewhere.bin"
    shutil.copyfile(bin_a, external)
    assert registry.card(external) == first  # same bytes: the registered card
    bin_c, _ = train_classifier(fruit_docs(("c1", "c2")), name="x", task="t", params=FAST, out_path=tmp_path / "c.bin")
    registered = registry.card(bin_c)
    assert (registered.name, registered.task) == ("c", "external")
    assert registry.path("c") == tmp_path / "models" / f"{registered.sha256}.bin"

    with pytest.raises(NotFoundError, match="known names: c, fruit"):
        registry.card("missing")
    with pytest.raises(NotFoundError, match="model file not found"):
        registry.card(tmp_path / "gone.bin")


def test_model_card_forbids_unknown_fields() -> None:
    with pytest.raises(ValueError):
        ModelCard(name="x", task="t", sha256="0" * 64, labels=["a"], colour="red")


# --- CLI ----------------------------------------------------------------------------------


def test_cli_train_list_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [{"id": doc.doc_id, "text": doc.text, "fruit": doc.label} for doc in fruit_docs()]
    path = write_jsonl(tmp_path / "fruit.jsonl", records)
    data = str(tmp_path / "data")
    common = ["--input", str(path), "--label-field", "fruit", "--data-dir", data]
    assert main(["classifiers", "train", "--task", "fruit", "--epoch", "5", "--dim", "8", *common]) == 0
    assert "registered fasttext_fruit" in capsys.readouterr().out
    assert main(["classifiers", "list", "--data-dir", data]) == 0
    assert "fasttext_fruit" in capsys.readouterr().out
    assert main(["classifiers", "eval", "fasttext_fruit", *common]) == 0
    table = capsys.readouterr().out
    held_out = sum(is_heldout(record["id"]) for record in records)
    assert f"on {held_out} held-out documents" in table
    assert "macro-F1 1.0000" in table


def test_cli_defaults_reuses_registered_models(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(path.name for path in (data_dir / "models").iterdir())
    assert main(["classifiers", "defaults", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "fasttext_hq" in out and "ROC-AUC" in out and "fasttext_lang" in out
    assert sorted(path.name for path in (data_dir / "models").iterdir()) == before


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (None, [], "input file not found"),
        (['{"id": "1", "text": "a", "label": "x"}', "{oops"], [], "bad.jsonl:2: invalid JSON"),
        (['{"id": "1", "text": "a", "kind": "x"}'], [], "no record has the label field 'label'"),
        (['{"id": "1", "text": "a b", "label": "x"}', '{"id": "2", "text": "c", "label": "x"}'], [],
         "at least 2 labels"),
        (['{"id": "1", "text": "a", "label": "x"}'], ["--eval-fraction", "1.5"], "--eval-fraction"),
    ],
)
def test_cli_train_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str] | None, extra: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    if lines is not None:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["classifiers", "train", "--task", "t", "--input", str(path), "--data-dir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
