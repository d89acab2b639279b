"""Specification of bring-your-own transformer classifiers: a tiny BERT built and fine-tuned here
(nothing is downloaded), loaded by content hash, scored in batches, used by curation and by a
mixture selection, and refused with a one-line error when its directory is incomplete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from midmix.classifiers.loading import load_model
from midmix.classifiers.registry import ModelRegistry
from midmix.classifiers.train import LabelledDoc
from midmix.classifiers.transformer import TransformerClassifier, import_transformers
from midmix.classifiers.transformer_train import TransformerParams, fine_tune, init_encoder
from midmix.cli import main
from midmix.errors import MidmixError
from midmix.hashing import sha256_dir

FRUIT = [LabelledDoc(f"apple orchard red apple pie {i}", "apple", f"a{i}") for i in range(40)] + [
    LabelledDoc(f"banana yellow banana peel split {i}", "banana", f"b{i}") for i in range(40)
]
FAST = TransformerParams(epochs=4, lr=3e-3, batch_size=8, max_tokens=32)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-layer BERT with a WordPiece vocabulary learned from the fruit documents."""
    return init_encoder(tmp_path_factory.mktemp("base") / "bert", [doc.text for doc in FRUIT], vocab_size=120)


@pytest.fixture(scope="module")
def fruit_model(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("fruit") / "model"
    return fine_tune(FRUIT, base=base, out_dir=out, name="fruit", task="fruit", params=FAST)


def test_fine_tuned_encoder_separates_the_labels_and_names_itself_by_content(fruit_model) -> None:
    path, card = fruit_model
    assert card.kind == "transformer" and card.labels == ["apple", "banana"]
    assert card.metrics["macro_f1"] == 1.0 and card.eval_docs == 19
    assert card.sha256 == sha256_dir(path)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_scores_do_not_depend_on_the_batch_size(fruit_model) -> None:
    path, _ = fruit_model
    texts = [doc.text for doc in FRUIT[::7]] + ["a much longer text about apples " * 20]
    one = TransformerClassifier(path, "x", device="cpu", batch_size=1).predict_scores(texts)
    many = TransformerClassifier(path, "x", device="cpu", batch_size=64).predict_scores(texts)
    assert one.shape == (len(texts), 2) and one.dtype == np.float32
    np.testing.assert_allclose(one, many, atol=1e-5)
    np.testing.assert_allclose(one.sum(axis=1), 1.0, atol=1e-5)


def test_registry_stores_the_directory_under_its_hash(fruit_model, tmp_path: Path) -> None:
    path, card = fruit_model
    registry = ModelRegistry(tmp_path / "models")
    registered = registry.card(str(path))
    assert registered.sha256 == card.sha256 and registered.kind == "transformer"
    assert registry.path(registered.sha256) == tmp_path / "models" / card.sha256
    assert load_model(registry.path(registered.sha256)).labels == ["apple", "banana"]


def test_regression_model_reports_its_raw_output_as_score(base: Path, tmp_path: Path) -> None:
    transformers = import_transformers()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, problem_type="regression", local_files_only=True
    )
    model.save_pretrained(tmp_path / "edu")
    shutil.copy(base / "tokenizer.json", tmp_path / "edu")
    shutil.copy(base / "tokenizer_config.json", tmp_path / "edu")
    scorer = load_model(tmp_path / "edu")
    scores = scorer.predict_scores(["apple pie", "banana split"])
    assert scorer.labels == ["score"] and scores.shape == (2, 1)
    with torch.inference_mode():
        encoded = scorer.tokenizer(["apple pie"], return_tensors="pt")
        assert scores[0, 0] == pytest.approx(float(scorer.model(**encoded).logits[0, 0]), abs=1e-5)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "no model weights; add one of model.safetensors"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer files; add tokenizer.json"),
        (lambda d: (d / "config.json").unlink(), "neither stacked.json .* nor config.json"),
        (lambda d: _edit_config(d, id2label={"0": "apple", "1": "banana", "2": "cherry"}),
         "config.json: id2label names 3 labels but num_labels is 2"),
        (lambda d: _edit_config(d, id2label={"0": "apple", "1": "apple"}), "id2label repeats a label"),
    ],
)
def test_incomplete_model_directories_are_refused_and_nothing_is_registered(
    fruit_model, tmp_path: Path, damage, message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(fruit_model[0], broken)
    damage(broken)
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(MidmixError, match=message):
        registry.card(str(broken))
    assert registry.cards() == [] and not any((tmp_path / "models").glob("*"))


def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    config["num_labels"] = 2
    (directory / "config.json").write_text(json.dumps(config))


def test_cli_fine_tunes_from_a_local_checkpoint(base: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "fruit.jsonl"
    path.write_text("".join(json.dumps({"id": d.doc_id, "text": d.text, "label": d.label}) + "\n" for d in FRUIT))
    data = str(tmp_path / "data")
    argv = ["classifiers", "train", "--task", "fruit", "--kind", "transformer", "--base", str(base), "--input",
            str(path), "--epoch", "4", "--lr", "0.003", "--batch-size", "8", "--max-tokens", "32", "--data-dir", data]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "registered transformer_fruit (transformer)" in out and "macro-F1 1.0000" in out
    assert main(["classifiers", "eval", "transformer_fruit", "--input", str(path), "--data-dir", data]) == 0
    assert "truth \\ predicted" in capsys.readouterr().out
    assert main(["classifiers", "train", "--task", "fruit", "--kind", "transformer", "--input", str(path),
                 "--data-dir", data]) == 2
    assert "--kind transformer needs --base DIR" in capsys.readouterr().err


def test_curation_stores_transformer_scores_and_mixtures_select_on_them(
    fruit_model, tmp_path: Path, data_dir: Path, corpus_subset: Path
) -> None:
    import pyarrow.parquet as pq

    from midmix.pipelines.curation.config import CurationConfig
    from midmix.pipelines.curation.curate import curate_corpus

    path, card = fruit_model
    ModelRegistry(data_dir / "models").add(path, card.model_copy(update={"positive_label": "apple"}))
    subset = tmp_path / "slice.jsonl"
    subset.write_text("".join(corpus_subset.read_text(encoding="utf-8").splitlines(keepends=True)[:60]))
    config = CurationConfig(
        inputs=[str(subset)],
        quality={"classifiers": {"fasttext_hq": "default", "fruit": "fruit"}, "primary": "fasttext_hq"},
    )
    manifest = curate_corpus(config, data_dir)
    assert manifest["models"]["fruit"] == card.sha256
    rows = pq.read_table(data_dir / "datasets" / manifest["version"] / "data" / "part-00000.parquet").to_pylist()
    scores = [dict(row["quality"])["fruit"] for row in rows]
    assert rows and all(0.0 <= score <= 1.0 for score in scores) and len(set(scores)) > 1
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: fruity\ntokenizer: {kind: bytes}\nphases:\n  - name: p\n    token_budget: 2000\n    seq_len: 64\n"
        "    components:\n      - {name: c, datasets: [latest], weight: 1.0, "
        "select: {column: quality.fruit, op: top_percent, value: 50}}\n"
    )
    assert main(["plan", str(spec), "--data-dir", str(data_dir)]) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_in_bfloat16_and_agrees_with_cpu(fruit_model) -> None:
    path, _ = fruit_model
    texts = [doc.text for doc in FRUIT[::5]]
    gpu = TransformerClassifier(path, "x", device="cuda")
    assert next(gpu.model.parameters()).dtype == torch.bfloat16
    cpu = TransformerClassifier(path, "x", device="cpu")
    np.testing.assert_allclose(gpu.predict_scores(texts), cpu.predict_scores(texts), atol=0.05)
