"""The mixture subcommands: plan, build, mixtures list/show/diff, tokenizer train."""

import json
from pathlib import Path

import pytest

from midmix.cli import main
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset

SAMPLE = SAMPLE_CORPUS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("cli")
    write_sample_dataset(data_dir, SAMPLE, limit=800)
    return data_dir


def _spec(path: Path, math_weight: float = 0.4, budget: int = 50_000) -> Path:
    spec = {"name": "cli", "phases": [{"name": "stable", "token_budget": budget, "components": [
        {"name": "web", "datasets": ["latest"], "weight": round(1 - math_weight, 6), "select": {"column": "domain", "op": "==", "value": "web"}},
        {"name": "math", "datasets": ["latest"], "weight": math_weight, "max_epochs": 2,
         "select": {"all": [{"column": "domain", "op": "==", "value": "math"}, {"column": "quality.fasttext_hq", "op": "top_percent", "value": 50}]}},
    ]}]}  # fmt: skip
    path.write_text(json.dumps(spec))
    return path


def test_plan_prints_a_table_per_phase(data_dir, tmp_path, capsys):
    assert main(["plan", str(_spec(tmp_path / "s.json")), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "phase 0 'stable': budget 50,000 tokens, seq_len 512" in out
    assert "math" in out and "quality.fasttext_hq >= 0." in out and "20,000" in out


def test_infeasible_plan_prints_the_table_then_one_error_line(data_dir, tmp_path, capsys):
    assert main(["plan", str(_spec(tmp_path / "s.json", budget=5_000_000)), "--data-dir", str(data_dir)]) == 2
    captured = capsys.readouterr()
    assert "phase 0 'stable'" in captured.out
    assert captured.err.startswith("midmix plan: error: phase 'stable': component 'math' needs ")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_build_list_show_and_diff(data_dir, tmp_path, capsys):
    assert main(["build", str(_spec(tmp_path / "a.json")), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    version_a = out.split()[1]
    assert version_a.startswith("mix-") and "stable: 5" in out and "/ 50,000 tokens" in out
    assert main(["build", str(_spec(tmp_path / "b.json", math_weight=0.2)), "--data-dir", str(data_dir)]) == 0
    version_b = capsys.readouterr().out.split()[1]

    assert main(["mixtures", "list", "--data-dir", str(data_dir)]) == 0
    listed = capsys.readouterr().out
    assert version_a in listed and version_b in listed
    assert main(["mixtures", "show", version_a, "--data-dir", str(data_dir)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == json.loads((data_dir / "mixtures" / version_a / "manifest.json").read_text())
    assert main(["mixtures", "diff", version_a, version_b, "--data-dir", str(data_dir), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    math = {c["name"]: c for c in diff["phases"][0]["components"]}["math"]
    assert math["tokens_delta"] < 0 and math["weight_a"] == 0.4 and math["weight_b"] == 0.2
    assert main(["mixtures", "show", "mix-0", "--data-dir", str(data_dir)]) == 2
    assert "mixture version 'mix-0' not found" in capsys.readouterr().err


def test_bad_spec_file_is_one_line_without_traceback(data_dir, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nphases: [{name: p, token_budget: 10, components: [], colour: red}]\n")
    assert main(["build", str(path), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("midmix build: error: ") and "phases.0.colour: Extra inputs are not permitted" in err
    assert not (data_dir / "mixtures" / ".staging").exists() or not any((data_dir / "mixtures" / ".staging").iterdir())


def test_tokenizer_train_writes_a_bpe_tokenizer_with_eos(data_dir, tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--dataset", "latest", "--vocab-size", "300", "--out", str(out), "--data-dir", str(data_dir)]) == 0
    assert "vocab 300, eos_id 0" in capsys.readouterr().out
    from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec

    tokenizer = Tokenizer(TokenizerSpec(kind="hf", path=str(out)))
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (300, 0)
    assert max(tokenizer.encode_batch(["naïve café ∑ x"])[0]) < 300
    assert main(["tokenizer", "train", "--dataset", "latest", "--vocab-size", "100", "--out", str(out), "--data-dir", str(data_dir)]) == 2
    assert "--vocab-size must be at least 257" in capsys.readouterr().err


def test_tokenizer_check_names_the_encoder_and_compares_ids_on_a_dataset(data_dir, tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--dataset", "latest", "--vocab-size", "1000", "--out", str(out), "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "check", str(out), "--dataset", "latest", "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{out}: tiktoken: byte-level BPE, GPT-2 regex, ")
    assert ": 800 docs, " in lines[1] and " 0 docs with other ids; HF encode_batch " in lines[1] and "fast " in lines[1]
