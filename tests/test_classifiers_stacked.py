"""Specification of stacked models: structural signals, the sign-constrained combiner, the stacked
default domain and quality models, directory models in the registry, and what bad input says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from midmix.classifiers.combiner import fit_combiner
from midmix.classifiers.defaults import ensure_default_models
from midmix.classifiers.domain_signals import FEATURE_NAMES, SIGNAL_PRIORS, signal_features
from midmix.classifiers.jsonl import read_jsonl
from midmix.classifiers.loading import load_model
from midmix.classifiers.registry import ModelRegistry
from midmix.classifiers.stacked import FASTTEXT_FILE, STACKED_FILE, StackedParams, train_stacked
from midmix.classifiers.train import FastTextParams, LabelledDoc
from midmix.cli import main
from midmix.errors import MidmixError
from midmix.hashing import sha256_dir
from midmix.resources import SAMPLE_CORPUS

CHAT = (
    "User: Can you explain what a hash table is?\nAssistant: A hash table stores key-value pairs. It uses a hash "
    "function to turn each key into an index in an array, so lookups take constant time on average.\nUser: What "
    "happens when two keys collide?\nAssistant: Collisions are handled by chaining, where each slot holds a list, "
    "or by open addressing, where the table probes for the next free slot."
)
FORUM = (
    "How can I keep my sourdough starter alive while on vacation?\n\nI'm leaving for two weeks and nobody can feed "
    "it. Will it die?\n\nAnswer: Feed it once, let it sit for an hour, then put it in the fridge in a closed jar. "
    "It will be fine for two or three weeks."
)
WORKED_PROBLEM = (
    "Question: A bakery makes 120 cupcakes. It sells 3/4 of them in the morning and 12 more in the afternoon. "
    "How many cupcakes are left?\nAnswer: In the morning it sells 120 * 3/4 = 90 cupcakes. In the afternoon 12 "
    "more, so 90 + 12 = 102 are sold. 120 - 102 = 18 cupcakes are left. The answer is 18."
)
ABSTRACT = (
    "Abstract. We propose a method for estimating the parameters of sparse graphical models from incomplete data. "
    "Our approach combines an expectation-maximization algorithm with an L1 penalty. Experiments on three "
    "benchmark datasets show that the proposed estimator outperforms existing methods (Smith et al., 2019) [3, 4]."
)
GO_CODE = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tfmt.Println(i)\n\t}\n}'


def feature(row: np.ndarray, name: str) -> float:
    return float(row[FEATURE_NAMES.index(name)])


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    return [record["text"] for _, record in read_jsonl(SAMPLE_CORPUS)][::25]


# --- signals ------------------------------------------------------------------------------


def test_signals_of_a_document_do_not_depend_on_its_batch(corpus_texts: list[str]) -> None:
    texts = [*corpus_texts, "İstanbul İİ? x\x00y", "", "？ 这是问题吗？\n答：是的。"]
    whole = signal_features(texts)
    pieces = np.vstack([signal_features(texts[start : start + 7]) for start in range(0, len(texts), 7)])
    alone = np.vstack([signal_features([text]) for text in texts[-20:]])
    assert whole.shape == (len(texts), len(FEATURE_NAMES)) and whole.dtype == np.float32
    np.testing.assert_array_equal(whole, pieces)
    np.testing.assert_array_equal(whole[-20:], alone)


def test_signals_see_code_arithmetic_dialogue_and_citations() -> None:
    code, arithmetic, chat, cited, chinese = signal_features(
        ["def f(x):\n    return x + 1\n", "3 + 4 = 7 and 2*5=10", CHAT, ABSTRACT, "这是问题吗？\n答：是的。"]
    )
    assert feature(code, "lines_code_lines") == 1.0 and feature(code, "line_end_colon") == 0.5
    # "3 + 4", "4 = 7", "2*5", "5=10" over 7 words ("3", "+", "4", "=", "7", "and", "2*5=10")
    assert feature(arithmetic, "pair_digit_op_digit") == pytest.approx(4 / 7)
    assert feature(chat, "lines_dialogue_markers") == 1.0 and feature(chat, "opens_with_question") == 1.0
    assert feature(cited, "words_numbered_citations") > 0 and feature(cited, "words_author_year") > 0
    # Full-width punctuation counts as its ASCII form: a CJK question and a "答：" answer line.
    assert feature(chinese, "opens_with_question") == 1.0 and feature(chinese, "lines_dialogue_markers") == 0.5
    assert feature(code, "lines_dialogue_markers") == feature(arithmetic, "opens_with_question") == 0.0


# --- combiner -----------------------------------------------------------------------------


def test_combiner_weights_follow_the_sign_priors() -> None:
    rng = np.random.default_rng(0)
    labels = sorted(SIGNAL_PRIORS)
    features = rng.random((300, len(FEATURE_NAMES))).astype(np.float32) / 10
    truth = [labels[i % len(labels)] for i in range(300)]
    fasttext = rng.dirichlet(np.ones(len(labels)), size=300).astype(np.float32)
    combiner = fit_combiner(features, fasttext, truth, np.ones(300), labels, FEATURE_NAMES, SIGNAL_PRIORS)
    weights = np.asarray(combiner.weights)
    for column, label in enumerate(labels):
        raises, lowers = SIGNAL_PRIORS[label]
        for row, name in enumerate(FEATURE_NAMES):
            value = weights[row, column]
            assert value >= 0 if name in raises else value <= 0 if name in lowers else value == 0
    assert min(combiner.fasttext_trust) >= 0
    probabilities = combiner.predict_proba(features[:5], fasttext[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# --- the default stacked models -----------------------------------------------------------


def test_default_domain_model_tags_kinds_of_text_the_corpus_lacks(default_models_dir: Path) -> None:
    """Chat transcripts and forum Q&A were tagged web/other by the bag-of-words model (issue 10)."""
    registry = ModelRegistry(default_models_dir)
    model = load_model(registry.path("domain_stacked"))
    scores = model.predict_scores([CHAT, FORUM, WORKED_PROBLEM, ABSTRACT, GO_CODE])
    assert [model.labels[i] for i in scores.argmax(axis=1)] == ["qa", "qa", "math", "academic", "code"]


def test_default_quality_scores_spread_over_the_unit_interval(default_models_dir: Path, corpus_texts) -> None:
    registry = ModelRegistry(default_models_dir)
    quality = load_model(registry.path("fasttext_hq"))
    high = quality.predict_scores(corpus_texts)[:, quality.labels.index("high")]
    counts, _ = np.histogram(high, bins=10, range=(0.0, 1.0))
    # The plain fastText model put most documents in the top bin; the stacked one does not.
    assert counts[-1] < 0.5 * len(high) and np.count_nonzero(counts) >= 6


def test_stacked_models_are_directories_registered_by_content(default_models_dir: Path) -> None:
    registry = ModelRegistry(default_models_dir)
    card = registry.card("domain_stacked")
    path = registry.path("domain_stacked")
    assert card.kind == "stacked" and path.is_dir() and path.name == card.sha256 == sha256_dir(path)
    assert sorted(child.name for child in path.iterdir()) == [FASTTEXT_FILE, STACKED_FILE]
    assert registry.card(str(path)) == card  # a directory given by path resolves to its registered card


def test_training_a_stacked_model_twice_gives_identical_bytes(tmp_path: Path) -> None:
    docs = [
        LabelledDoc(f"{word} {word} text number {i} {'?' if label == 'qa' else '.'}", label, f"{source}-{i}", source)
        for source, label, word in (("a", "qa", "why"), ("b", "qa", "how"), ("c", "web", "news"), ("d", "web", "city"))
        for i in range(12)
    ]
    params = StackedParams(fasttext=FastTextParams(epoch=3, dim=4, bucket=0, wordNgrams=1), source_folds=2)
    first = train_stacked(docs, params, tmp_path / "first")
    second = train_stacked(docs, params, tmp_path / "second")
    assert sha256_dir(first) == sha256_dir(second)
    assert load_model(first).labels == ["qa", "web"]


# --- bad input ----------------------------------------------------------------------------


def test_a_model_directory_missing_its_files_is_a_one_line_error(tmp_path: Path, default_models_dir: Path) -> None:
    registry = ModelRegistry(default_models_dir)
    broken = tmp_path / "broken"
    shutil.copytree(registry.path("domain_stacked"), broken)
    (broken / FASTTEXT_FILE).unlink()
    with pytest.raises(MidmixError, match=f"fastText model not found: {broken / FASTTEXT_FILE}"):
        load_model(broken)
    (broken / STACKED_FILE).unlink()
    with pytest.raises(MidmixError, match="neither stacked.json .* nor config.json"):
        load_model(broken)


def test_a_stacked_spec_whose_labels_differ_from_its_fasttext_part_is_refused(tmp_path, default_models_dir) -> None:
    broken = tmp_path / "relabelled"
    shutil.copytree(ModelRegistry(default_models_dir).path("domain_stacked"), broken)
    spec = json.loads((broken / STACKED_FILE).read_text())
    spec["combiner"]["labels"][0] = "poetry"
    (broken / STACKED_FILE).write_text(json.dumps(spec))
    with pytest.raises(MidmixError, match="do not match"):
        load_model(broken)


def test_curation_refuses_domain_labels_its_model_lacks_and_writes_nothing(tmp_path, data_dir, corpus_subset) -> None:
    from midmix.pipelines.curation.config import CurationConfig
    from midmix.pipelines.curation.curate import curate_corpus

    config = CurationConfig(inputs=[str(corpus_subset)], domain={"labels": ["web", "poetry"]})
    with pytest.raises(MidmixError, match=r"domain.labels \['poetry'\] are not labels of model domain_stacked"):
        curate_corpus(config, data_dir)
    assert not (data_dir / "datasets").exists()


def test_cli_rejects_an_unknown_classifier_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["classifiers", "train", "--task", "t", "--kind", "forest", "--input", "x.jsonl", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'forest'" in err and "fasttext" in err and not (tmp_path / "models").exists()


def test_cli_eval_leaves_each_source_out_and_reports_languages(tmp_path: Path, capsys) -> None:
    records = [
        {"id": f"{source}-{i}", "text": f"{word} {word} words {i}", "label": label, "source": source, "lang": lang}
        for source, label, word, lang in (
            ("s1", "fruit", "apple", "en"), ("s2", "fruit", "apple", "de"),
            ("s3", "tool", "hammer", "en"), ("s4", "tool", "hammer", "de"),
        )
        for i in range(20)
    ]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    data = str(tmp_path / "data")
    common = ["--input", str(path), "--data-dir", data]
    assert main(["classifiers", "train", "--task", "thing", "--epoch", "5", "--dim", "4", "--bucket", "0", "--word-ngrams", "1", *common]) == 0
    capsys.readouterr()
    assert main(["classifiers", "eval", "fasttext_thing", "--split", "source", *common]) == 0
    out = capsys.readouterr().out
    assert "on 80 leave-source-out (pooled over held-out sources) documents" in out
    assert "macro-F1 1.0000" in out and "truth \\ predicted" in out
    assert "\nde               40    1.0000    1.0000" in out and "\nen               40" in out
