"""Materialising mixtures: exact budgets, repetition, curriculum, eval split, determinism, loading."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import sha256_file
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.curation.schema import SHARD_ROW_GROUP_ROWS, SHARD_SCHEMA
from midmix.pipelines.mixtures.build import materialize_mixture, mixture_version
from midmix.pipelines.mixtures.sequence import REPEAT_SPREAD, curriculum_sequence
from midmix.pipelines.mixtures.diff import diff_mixtures
from midmix.pipelines.mixtures.plan import plan_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.pipelines.tokenizer_train import dataset_texts, train_tokenizer
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset

SAMPLE = SAMPLE_CORPUS


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    """A data dir holding one curated dataset (1,500 sample documents); tests copy it."""
    data_dir = tmp_path_factory.mktemp("curated")
    write_sample_dataset(data_dir, SAMPLE, limit=1500)
    return data_dir


@pytest.fixture
def data_dir(datasets_dir, tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(datasets_dir / "datasets", target / "datasets")
    return target


def _spec(**overrides) -> dict:
    spec = {
        "name": "two-phase",
        "eval": {"count": 5},
        "phases": [
            {"name": "stable", "token_budget": 300_000, "curriculum": {"key": "none", "seed": 1},
             "components": [
                 {"name": "web", "datasets": ["latest"], "weight": 0.7, "select": {"column": "domain", "op": "==", "value": "web"}},
                 {"name": "code", "datasets": ["latest"], "weight": 0.3, "select": {"column": "domain", "op": "==", "value": "code"}},
             ]},
            {"name": "anneal", "token_budget": 62_000, "seq_len": 1024, "rope_theta": 500000.0,
             "curriculum": {"key": "quality.fasttext_hq", "direction": "asc"},
             "components": [
                 {"name": "math", "datasets": ["latest"], "weight": 1.0, "max_epochs": 3,
                  "select": {"all": [{"column": "domain", "op": "==", "value": "math"},
                                     {"column": "quality.fasttext_hq", "op": "top_percent", "value": 25}]}},
             ]},
        ],
    }  # fmt: skip
    spec.update(overrides)
    return spec


def _rows(version_dir: Path, component: dict) -> dict[str, list]:
    tables = [pq.read_table(version_dir / shard["path"]) for shard in component["shards"]]
    return {name: [v for t in tables for v in t.column(name).to_pylist()] for name in ("doc_id", "quality", "n_tokens", "domain")}


def test_budgets_are_met_within_one_document_and_shards_match_the_manifest(data_dir):
    manifest = materialize_mixture(parse_spec(_spec()), data_dir)
    version_dir = data_dir / "mixtures" / manifest["version"]
    for phase in manifest["phases"]:
        assert sum(c["target_tokens"] for c in phase["components"]) == phase["token_budget"]
        for component in phase["components"]:
            rows = _rows(version_dir, component)
            assert abs(component["realized_tokens"] - component["target_tokens"]) <= max(rows["n_tokens"]) / 2
            assert sum(rows["n_tokens"]) == component["realized_tokens"] == sum(s["tokens"] for s in component["shards"])
            for shard in component["shards"]:
                path = version_dir / shard["path"]
                assert (sha256_file(path), path.stat().st_size) == (shard["sha256"], shard["bytes"])
                parquet = pq.ParquetFile(path)
                assert parquet.schema_arrow == SHARD_SCHEMA
                assert parquet.metadata.num_rows == shard["rows"]
                assert max(parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)) <= SHARD_ROW_GROUP_ROWS
    assert manifest["phases"][1]["seq_len"] == 1024 and manifest["phases"][1]["rope_theta"] == 500000.0
    assert manifest["tokenizer"] == {**manifest["tokenizer"], "kind": "bytes", "vocab_size": 257, "eos_id": 256, "path": None}
    assert json.loads((version_dir / "manifest.json").read_text()) == manifest


def test_upsampled_component_keeps_its_curriculum_over_all_repeats(data_dir):
    """2.5 epochs of a quality-ordered component: every document 2 or 3 times, and the whole
    sequence (not each epoch) rises in quality: no saw-tooth that restarts the curriculum."""
    manifest = materialize_mixture(parse_spec(_spec()), data_dir)
    math = manifest["phases"][1]["components"][0]
    rows = _rows(data_dir / "mixtures" / manifest["version"], math)
    assert 2 < math["epochs"] < 3
    assert math["epochs"] == round(math["realized_tokens"] / math["available_tokens"], 6)
    assert Counter(Counter(rows["doc_id"]).values()).keys() == {2, 3}
    assert rows["quality"] == sorted(rows["quality"])  # few documents: the copies of each are side by side
    assert math["thresholds"]["quality.fasttext_hq"] <= min(rows["quality"])


def test_repeats_spread_around_their_curriculum_place_and_shuffled_components_repeat_by_epoch():
    counts = np.array([2, 3] * 500)  # 1,000 documents in curriculum order, 2.5 epochs
    keyed = curriculum_sequence(counts, keyed=True)
    assert np.bincount(keyed).tolist() == counts.tolist()
    spread = REPEAT_SPREAD * len(counts)
    places = np.arange(len(keyed)) * len(counts) / len(keyed)  # where the curriculum puts each position
    assert np.abs(keyed - places).max() <= spread + 2  # never more than the spread off the curriculum
    first, last = {}, {}
    for position, row in enumerate(keyed.tolist()):
        first.setdefault(row, position)
        last[row] = position
    gaps = np.array([last[row] - first[row] for row in range(len(counts))]) / (counts - 1)
    # A document comes back after about 3% of the component (positions run 2.5x faster than places);
    # near the ends, where copies cannot go further out, after at least half that.
    assert np.median(gaps) >= spread * 2.5 * 0.9 and gaps.min() >= spread * 2.5 * 0.45
    shuffled = curriculum_sequence(counts, keyed=False)
    assert shuffled[:1000].tolist() == list(range(1000)) and shuffled[1000:2000].tolist() == list(range(1000))
    assert shuffled[2000:].tolist() == list(range(1, 1000, 2))


def test_eval_documents_never_enter_training_shards(data_dir):
    manifest = materialize_mixture(parse_spec(_spec()), data_dir)
    version_dir = data_dir / "mixtures" / manifest["version"]
    eval_ids = set()
    for domain, shard in manifest["eval"].items():
        table = pq.read_table(version_dir / shard["path"])
        assert shard["rows"] == table.num_rows == 5 and set(table.column("domain").to_pylist()) == {domain}
        eval_ids.update(table.column("doc_id").to_pylist())
    assert sorted(manifest["eval"]) == ["academic", "code", "math", "other", "qa", "web"]
    training = {d for p in manifest["phases"] for c in p["components"] for d in _rows(version_dir, c)["doc_id"]}
    assert len(eval_ids) == 30 and not eval_ids & training


def test_same_spec_and_inputs_give_the_same_version_and_bytes(datasets_dir, tmp_path):
    dirs = []
    for name in ("one", "two"):
        shutil.copytree(datasets_dir / "datasets", tmp_path / name / "datasets")
        dirs.append(tmp_path / name)
    manifests = [materialize_mixture(parse_spec(_spec()), d) for d in dirs]
    assert manifests[0]["version"] == manifests[1]["version"]
    trees = []
    for d, m in zip(dirs, manifests):
        root = d / "mixtures" / m["version"]
        trees.append({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    assert trees[0].keys() == trees[1].keys() and len(trees[0]) == 3 + 6 + 2  # shards, eval shards, spec + manifest
    assert trees[0] == trees[1]


def test_building_an_existing_version_is_a_no_op(data_dir):
    spec = parse_spec(_spec())
    first = materialize_mixture(spec, data_dir)
    shard = data_dir / "mixtures" / first["version"] / first["phases"][0]["components"][0]["shards"][0]["path"]
    stamp = shard.stat().st_mtime_ns
    with Catalog(data_dir) as catalog:
        assert mixture_version(spec, catalog) == first["version"]
    assert materialize_mixture(spec, data_dir) == first
    assert shard.stat().st_mtime_ns == stamp


def test_a_phase_loads_with_hf_datasets(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    manifest = materialize_mixture(parse_spec(_spec()), data_dir)
    version_dir = data_dir / "mixtures" / manifest["version"]
    stable = manifest["phases"][0]
    files = [str(version_dir / s["path"]) for c in stable["components"] for s in c["shards"]]
    loaded = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == stable["docs"]
    assert sum(loaded["n_tokens"]) == stable["tokens"]
    assert len(loaded[0]["input_ids"]) == loaded[0]["n_tokens"]


def test_hf_tokenizer_mixture_counts_with_its_own_encoding(data_dir, tmp_path):
    (dataset_dir,) = (data_dir / "datasets").glob("ds-*")
    batches = dataset_texts(dataset_dir, ["data/part-00000.parquet"])
    info = train_tokenizer(iter([[t[:2000] for t in next(batches)[:300]]]), vocab_size=400, out=tmp_path / "bpe.json")
    spec = {"name": "bpe", "tokenizer": {"kind": "hf", "path": info["path"]}, "phases": [
        {"name": "qa", "token_budget": 60_000, "components": [
            {"name": "qa", "datasets": ["latest"], "weight": 1.0, "select": {"column": "domain", "op": "in", "value": ["qa", "academic"]}}]}]}  # fmt: skip
    manifest = materialize_mixture(parse_spec(spec), data_dir)
    version_dir = data_dir / "mixtures" / manifest["version"]
    assert manifest["tokenizer"]["path"] == "tokenizer.json" and manifest["tokenizer"]["vocab_size"] == 400
    assert (version_dir / "tokenizer.json").read_bytes() == (tmp_path / "bpe.json").read_bytes()
    assert json.loads((version_dir / "spec.json").read_text())["tokenizer"]["path"] == "tokenizer.json"
    assert manifest["tokenizer"]["eos_id"] == info["eos_id"] == 0
    qa = manifest["phases"][0]["components"][0]
    table = pq.read_table(version_dir / qa["shards"][0]["path"])
    ids = np.concatenate([np.asarray(x) for x in table.column("input_ids").to_pylist()])
    assert ids.max() < 400 and len(ids) == qa["realized_tokens"]
    assert abs(qa["realized_tokens"] - qa["target_tokens"]) <= max(table.column("n_tokens").to_pylist()) / 2
    with Catalog(data_dir) as catalog:
        plan = plan_mixture(parse_spec(spec), catalog)
    # The catalog counts bytes; the build recounted with BPE, which needs fewer tokens for the same documents.
    assert not plan.tokens_exact and plan.phases[0].components[0].available_docs == qa["available_docs"]
    assert qa["available_tokens"] < 0.9 * plan.phases[0].components[0].available_tokens


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda s: s["phases"][0]["components"][0].update(datasets=["ds-ffffffffffffffff"]), NotFoundError,
         r"dataset version 'ds-ffffffffffffffff' not found"),
        (lambda s: s["phases"][0]["components"][0].update(select={"column": "lang", "op": "==", "value": "tlh"}), MidmixError,
         r"phase 'stable': component 'web' selects no documents"),
        (lambda s: s["phases"][0]["components"][1].update(weight=0.5), MidmixError, r"phase 'stable': weights sum to 1\.2, not 1"),
        (lambda s: s["phases"][1].update(token_budget=5_000_000), MidmixError,
         r"phase 'anneal': component 'math' needs \d+\.\d\d epochs, cap is 3; lower its weight"),
        (lambda s: s["phases"][1].update(seq_len=0), MidmixError, r"phases\.1\.seq_len: Input should be greater than 0"),
        (lambda s: s["phases"][1].update(curriculum={"key": "shininess"}), MidmixError, r"unknown numeric column 'shininess'"),
        (lambda s: s["phases"][1].update(curriculum={"key": "quality.shininess"}), MidmixError, r"no quality score 'quality\.shininess'"),
    ],
    ids=["unknown-dataset", "empty-selection", "weights", "over-budget", "seq-len", "curriculum-key", "curriculum-score"],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(data_dir, change, error, message):
    spec = _spec()
    change(spec)
    with pytest.raises(error, match=message):
        materialize_mixture(parse_spec(spec), data_dir)
    assert not (data_dir / "mixtures").exists()


def test_diff_reports_token_changes_and_documents_added_and_removed(data_dir):
    a = materialize_mixture(parse_spec(_spec()), data_dir)
    spec_b = _spec()
    spec_b["phases"][1]["components"][0]["select"]["all"][1]["value"] = 40
    spec_b["phases"][0]["components"].append(
        {"name": "qa", "datasets": ["latest"], "weight": 0.1, "select": {"column": "domain", "op": "==", "value": "qa"}})
    spec_b["phases"][0]["components"][0]["weight"] = 0.6
    b = materialize_mixture(parse_spec(spec_b), data_dir)
    diff = diff_mixtures(a, b, data_dir)
    with Catalog(data_dir) as catalog:
        assert catalog.diff(a["version"], b["version"]) == diff
    stable, anneal = diff["phases"]
    by_name = {c["name"]: c for c in stable["components"]}
    assert by_name["qa"]["status"] == "added" and by_name["qa"]["docs_removed"] == []
    assert by_name["web"]["tokens_delta"] == b["phases"][0]["components"][0]["realized_tokens"] - a["phases"][0]["components"][0]["realized_tokens"] < 0
    ids = lambda m: set(_rows(data_dir / "mixtures" / m["version"], m["phases"][1]["components"][0])["doc_id"])
    math = anneal["components"][0]
    assert math["docs_added"] == sorted(ids(b) - ids(a)) and len(math["docs_added"]) > 0
    assert math["docs_removed"] == sorted(ids(a) - ids(b))
    assert by_name["qa"]["docs_added"] == sorted(set(_rows(data_dir / "mixtures" / b["version"], b["phases"][0]["components"][2])["doc_id"]))


def test_schedules_length_buckets_and_rope_scaling_reach_the_manifest(data_dir):
    spec = _spec()
    stable = spec["phases"][0]
    stable["components"][0]["weight"] = {"shape": "linear", "points": [[0, 0.8], [1, 0.6]]}
    stable["components"][1]["weight"] = {"shape": "linear", "points": [[0, 0.2], [1, 0.4]]}
    spec["phases"][1] = {
        "name": "long", "token_budget": 60_000, "seq_len": 4096, "rope_scaling": {"factor": 4},
        "length_buckets": [{"min_tokens": 2048, "max_tokens": 1_000_000, "weight": 0.75},
                           {"min_tokens": 256, "max_tokens": 2048, "weight": 0.25}],
        "components": [{"name": "web", "datasets": ["latest"], "weight": 1.0, "max_epochs": 4,
                        "select": {"column": "domain", "op": "in", "value": ["web", "academic"]}}],
    }  # fmt: skip
    manifest = materialize_mixture(parse_spec(spec), data_dir)
    version_dir = data_dir / "mixtures" / manifest["version"]
    web, code = manifest["phases"][0]["components"]
    assert web["schedule"] == [{"start": 0.0, "end": 1.0, "from": 0.8, "to": 0.6}] and web["weight"] == pytest.approx(0.7)
    assert code["target_tokens"] == 90_000
    long = manifest["phases"][1]
    assert long["rope_scaling"] == {"kind": "yarn", "factor": 4.0, "original_seq_len": 512, "beta_fast": 32.0, "beta_slow": 1.0}
    component = long["components"][0]
    rows = _rows(version_dir, component)
    assert min(rows["n_tokens"]) >= 256  # nothing outside the buckets
    long_tokens = sum(n for n in rows["n_tokens"] if n >= 2048)
    buckets = component["buckets"]
    assert [b["target_tokens"] for b in buckets] == [45_000, 15_000]
    assert buckets[0]["realized_tokens"] == long_tokens and buckets[1]["realized_tokens"] == sum(rows["n_tokens"]) - long_tokens
    assert abs(long_tokens / sum(rows["n_tokens"]) - 0.75) < 0.05
    assert long["length_buckets"][0] == {"min_tokens": 2048, "max_tokens": 1_000_000, "weight": 0.75,
                                         "target_tokens": 45_000, "realized_tokens": long_tokens}  # fmt: skip
