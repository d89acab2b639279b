"""End to end with the real parts: sample dataset -> real mixture build -> real service -> `midmix train`."""

from __future__ import annotations

import pytest
from test_trainer_loop import ServedMixture

from midmix.cli import main
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from midmix.trainer.metrics import read_metrics
from tests.sample_dataset import write_sample_dataset

SAMPLE = SAMPLE_CORPUS

SPEC = {
    "name": "trainer-e2e",
    "eval": {"count": 4},
    "phases": [
        {"name": "stable", "token_budget": 60_000, "seq_len": 64, "rope_theta": 10000.0,
         "curriculum": {"key": "none", "seed": 1}, "lr": {"warmup": 0.25, "stable": 0.75, "decay": 0.0},
         "components": [
             {"name": "web", "datasets": ["latest"], "weight": {"shape": "linear", "points": [[0, 0.8], [1, 0.6]]},
              "select": {"column": "domain", "op": "==", "value": "web"}},
             {"name": "code", "datasets": ["latest"], "weight": {"shape": "linear", "points": [[0, 0.2], [1, 0.4]]},
              "select": {"column": "domain", "op": "==", "value": "code"}},
         ]},
        {"name": "long", "token_budget": 30_000, "seq_len": 128, "rope_theta": 10000.0, "rope_scaling": {"factor": 2},
         "length_buckets": [{"min_tokens": 600, "max_tokens": 100_000, "weight": 0.75},
                            {"min_tokens": 0, "max_tokens": 600, "weight": 0.25}],
         "lr": {"warmup": 0.0, "stable": 0.0, "decay": 1.0, "shape": "cosine", "final_lr_ratio": 0.0},
         "components": [{"name": "math", "datasets": ["latest"], "weight": 1.0, "max_epochs": 4,
                         "select": {"column": "domain", "op": "==", "value": "math"}}]},
    ],
}  # fmt: skip

CONFIG = """\
service: {retries: 1}
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq_len: 128}
peak_lr: 0.003
global_batch_size: 8
micro_batch_size: 4
num_workers: 1
max_steps_per_phase: 4
eval_sequences: 2
log_every: 2
checkpoint: {every: 3}
device: cpu
cpu_threads: 1
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    write_sample_dataset(data_dir, SAMPLE, limit=800)
    manifest = materialize_mixture(parse_spec(SPEC), data_dir)
    with ServedMixture(data_dir) as server:
        yield server, manifest


def test_midmix_train_on_a_built_and_served_mixture(built, tmp_path, capsys):
    server, manifest = built
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "run"
    code = main(["train", str(config), "--url", server.url, "--mixture", manifest["version"], "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "phase stable: 4 steps" in printed and "phase long: 4 steps" in printed
    assert printed.count("eval loss by domain: academic ") == 2  # domains in name order, at both phase ends
    assert "realized shares by component (manifest): math 1.000 (1.000)" in printed
    records = read_metrics(out / "metrics.jsonl")
    assert [r["phase"] for r in records if r["kind"] == "step"] == ["stable"] * 4 + ["long"] * 4
    stable_end, _ = [r for r in records if r["kind"] == "phase_end"]
    assert sorted(stable_end["eval"]) == sorted(manifest["eval"])
    shares = stable_end["shares"]["components"]
    assert sorted(shares) == ["code", "web"] and sum(entry["share"] for entry in shares.values()) == pytest.approx(1.0)
    # 4 steps x 8 sequences x 64 tokens, less the EOS tokens of the documents they cover.
    assert 4 * 8 * 64 - 20 < stable_end["shares"]["tokens"] <= 4 * 8 * 64
    assert (out / "training.png").is_file()
    # The schedule drives the stable phase (web 80% -> 60%): the first window's target is about 80%.
    first_window = next(r for r in records if r["kind"] == "step" and "shares" in r)["shares"]["components"]
    assert first_window["web"]["target"] > 0.75
    # The long phase trained with YaRN tables and reports its length buckets.
    _, long_end = [r for r in records if r["kind"] == "phase_end"]
    assert sorted(long_end["shares"]["buckets"]) == ["0-600", "600-100000"]
    # Every 3 steps and at both phase ends (3, 4, 6, 8); the newest 3 are kept.
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == [
        "step-00000004.pt", "step-00000006.pt", "step-00000008.pt",
    ]


def test_midmix_train_reports_service_down_in_one_line(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    code = main(["train", str(config), "--url", "http://127.0.0.1:9", "--mixture", "mix-x", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("midmix train: error: the midmix service at http://127.0.0.1:9 is unreachable after 2 attempts")
    assert "Traceback" not in error


def test_midmix_train_without_mixture_says_how_to_set_it(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    assert main(["train", str(config)]) == 2
    assert "set `mixture:` in the config or pass --mixture" in capsys.readouterr().err


def test_bad_config_names_the_field(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG + "global_batch_sizee: 4\n", encoding="utf-8")
    assert main(["train", str(config)]) == 2
    assert "global_batch_sizee: Extra inputs are not permitted" in capsys.readouterr().err
