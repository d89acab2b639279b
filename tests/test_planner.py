"""The planner: per-component availability, targets, repetition and thresholds from catalog statistics."""

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from midmix.cli import main
from midmix.errors import MidmixError, NotFoundError
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.plan import plan_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset

SAMPLE = SAMPLE_CORPUS

# OLMo 2 Dolmino 50B stage-2 mix (published shares, %; they sum to 100.01) and the source sizes we give
# them here, scaled by 1e-6 (tokens; every document is 100 byte-tokens).
DOLMINO_SHARES = {"dclm": 47.2, "flan": 16.6, "stackexchange": 2.45, "pes2o": 5.85, "wiki": 7.11, "math": 20.8}
DOLMINO_SIZES = {"dclm": 752_000, "flan": 17_000, "stackexchange": 1_300, "pes2o": 58_600, "wiki": 3_700, "math": 10_700}
DOC_TOKENS = 100


def _write_sources_corpus(path: Path, sizes: dict[str, int]) -> Path:
    filler = "Mid-training mixes reuse high quality sources near the end of pretraining. " * 3
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for source, tokens in sizes.items():
            for i in range(tokens // DOC_TOKENS):
                text = (f"{source} {i:06d} " + filler)[:DOC_TOKENS]
                doc = {"id": f"{source}-{i}", "text": text, "domain": "web", "lang": "en", "source": source}
                handle.write(json.dumps(doc) + "\n")
    return path


@pytest.fixture(scope="module")
def dolmino_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("dolmino")
    corpus = _write_sources_corpus(data_dir / "sources.jsonl.gz", DOLMINO_SIZES)
    write_sample_dataset(data_dir, corpus)
    return data_dir


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("sample")
    write_sample_dataset(data_dir, SAMPLE, limit=1500)
    return data_dir


def _dolmino_spec() -> dict:
    components = [
        {"name": source, "datasets": ["latest"], "weight": share, "max_epochs": 1,
         "select": {"column": "source", "op": "==", "value": source}}
        for source, share in DOLMINO_SHARES.items()
    ]  # fmt: skip
    return {
        "name": "dolmino-stage2",
        "normalize_weights": True,  # the published shares sum to 100.01%: treat them as relative weights
        "phases": [{"name": "anneal", "token_budget": 50_000, "components": components}],
    }


def test_dolmino_stage2_recipe_plans_exact_tokens_and_repetition(dolmino_dir):
    with Catalog(dolmino_dir) as catalog:
        plan = plan_mixture(parse_spec(_dolmino_spec()), catalog)
    components = {c.name: c for c in plan.phases[0].components}
    requested = {name: c.requested_tokens for name, c in components.items()}
    # 50,000 x share / 100.01, rounded by largest remainder so the phase budget is met exactly.
    assert requested == {"dclm": 23_597, "flan": 8_299, "stackexchange": 1_225, "pes2o": 2_925, "wiki": 3_555, "math": 10_399}
    assert sum(requested.values()) == 50_000
    assert {name: c.available_tokens for name, c in components.items()} == DOLMINO_SIZES
    assert {name: c.available_docs for name, c in components.items()} == {k: v // 100 for k, v in DOLMINO_SIZES.items()}
    for name, component in components.items():
        assert component.epochs == pytest.approx(requested[name] / DOLMINO_SIZES[name], rel=1e-12)
    assert components["stackexchange"].epochs == pytest.approx(0.942308, abs=1e-6)
    assert components["dclm"].epochs == pytest.approx(0.031379, abs=1e-6)
    assert components["dclm"].weight == pytest.approx(47.2 / 100.01)
    assert plan.feasible and plan.problems == []


def test_dolmino_without_normalize_weights_is_rejected():
    with pytest.raises(MidmixError, match=r"weights sum to 100\.01, not 1"):
        parse_spec({**_dolmino_spec(), "normalize_weights": False})


def test_doubling_the_budget_makes_small_sources_infeasible_with_an_actionable_message(dolmino_dir):
    spec = _dolmino_spec()
    spec["phases"][0]["token_budget"] = 100_000
    with Catalog(dolmino_dir) as catalog:
        with pytest.raises(MidmixError) as error:
            plan_mixture(parse_spec(spec), catalog)
        plan = plan_mixture(parse_spec(spec), catalog, strict=False)
    assert "phase 'anneal': component 'stackexchange' needs 1.88 epochs, cap is 1; lower its weight" in str(error.value)
    assert "raise max_epochs" in str(error.value)
    assert [c.name for c in plan.phases[0].components if not c.feasible] == ["stackexchange", "wiki", "math"]
    assert not plan.feasible


def _sample_values(data_dir: Path) -> dict[str, np.ndarray]:
    (part,) = (data_dir / "datasets").glob("ds-*/data/part-00000.parquet")
    table = pq.read_table(part, columns=["quality", "domain"])
    quality = table.column("quality").to_pylist()
    return {
        "hq": np.array([dict(q)["fasttext_hq"] for q in quality], dtype=np.float32),
        "edu": np.array([dict(q)["edu"] for q in quality], dtype=np.float32),
    }


def _one_component(select: dict, budget: int = 1000, **component) -> dict:
    return {"name": "t", "phases": [{"name": "p", "token_budget": budget, "components": [
        {"name": "c", "datasets": ["latest"], "weight": 1.0, "select": select, **component}]}]}  # fmt: skip


def test_top_percent_resolves_to_the_threshold_keeping_that_share(sample_dir):
    values = _sample_values(sample_dir)["hq"]
    with Catalog(sample_dir) as catalog:
        plan = plan_mixture(parse_spec(_one_component({"column": "quality.fasttext_hq", "op": "top_percent", "value": 7})), catalog)
    component = plan.phases[0].components[0]
    threshold = component.thresholds["quality.fasttext_hq"]
    assert threshold in set(values.tolist())
    wanted = math.ceil(0.07 * len(values))
    assert (values > threshold).sum() < wanted <= (values >= threshold).sum() == component.available_docs


def test_and_of_percentile_and_absolute_rule(sample_dir):
    values = _sample_values(sample_dir)
    select = {"all": [{"column": "quality.fasttext_hq", "op": "top_percent", "value": 30},
                      {"column": "quality.edu", "op": ">=", "value": 2}]}  # fmt: skip
    with Catalog(sample_dir) as catalog:
        component = plan_mixture(parse_spec(_one_component(select)), catalog).phases[0].components[0]
    threshold = component.thresholds["quality.fasttext_hq"]
    expected = int(((values["hq"] >= threshold) & (values["edu"] >= 2)).sum())
    assert 0 < expected == component.available_docs < (values["hq"] >= threshold).sum()


def test_unknown_dataset_version_is_not_found(sample_dir):
    spec = _one_component({"column": "domain", "op": "==", "value": "web"})
    spec["phases"][0]["components"][0]["datasets"] = ["ds-0000000000000000"]
    with Catalog(sample_dir) as catalog, pytest.raises(NotFoundError, match=r"dataset version 'ds-0000000000000000' not found; known: ds-"):
        plan_mixture(parse_spec(spec), catalog)


def test_empty_selection_names_phase_and_component(sample_dir):
    spec = _one_component({"column": "domain", "op": "==", "value": "poetry"})
    with Catalog(sample_dir) as catalog, pytest.raises(MidmixError, match=r"phase 'p': component 'c' selects no documents; loosen its selection"):
        plan_mixture(parse_spec(spec), catalog)


def test_unknown_quality_classifier_in_curriculum_is_rejected(sample_dir):
    spec = _one_component({"column": "domain", "op": "==", "value": "web"})
    spec["phases"][0]["curriculum"] = {"key": "quality.dclm"}
    with Catalog(sample_dir) as catalog, pytest.raises(MidmixError, match=r"has no quality score 'quality\.dclm'; known: quality\.edu, quality\.fasttext_hq"):
        plan_mixture(parse_spec(spec), catalog)


def test_eval_split_is_held_out_of_training_availability(sample_dir):
    spec = _one_component({"column": "domain", "op": "==", "value": "math"})
    with Catalog(sample_dir) as catalog:
        before = plan_mixture(parse_spec(spec), catalog)
        after = plan_mixture(parse_spec({**spec, "eval": {"count": 7}}), catalog)
    assert after.eval["math"].docs == 7
    assert after.phases[0].components[0].available_docs == before.phases[0].components[0].available_docs - 7
    assert after.phases[0].components[0].available_tokens == before.phases[0].components[0].available_tokens - after.eval["math"].tokens


def test_a_document_in_several_listed_datasets_counts_once(tmp_path):
    small = write_sample_dataset(tmp_path, SAMPLE, limit=200)["version"]
    large = write_sample_dataset(tmp_path, SAMPLE, limit=300)["version"]
    spec = _one_component({"column": "domain", "op": "==", "value": "web"})
    plans = {}
    with Catalog(tmp_path) as catalog:
        for datasets in ([small], [large], [small, large]):
            spec["phases"][0]["components"][0]["datasets"] = datasets
            plans[tuple(datasets)] = plan_mixture(parse_spec(spec), catalog).phases[0].components[0]
    # The first 200 documents are in both versions: the union is the larger one, never 500.
    assert plans[(small, large)].available_docs == plans[(large,)].available_docs > plans[(small,)].available_docs
    assert plans[(small, large)].available_tokens == plans[(large,)].available_tokens
    assert plans[(small, large)].datasets == [small, large]


def _two_components(budget: int = 200_000, **phase) -> dict:
    return {"name": "m", "phases": [{"name": "p", "token_budget": budget, "seq_len": 2048, "components": [
        {"name": "web", "datasets": ["latest"], "weight": 0.5, "select": {"column": "domain", "op": "==", "value": "web"}},
        {"name": "code", "datasets": ["latest"], "weight": 0.5, "select": {"column": "domain", "op": "==", "value": "code"}},
    ], **phase}]}  # fmt: skip


def test_a_schedule_asks_each_component_for_its_mean_weight_and_is_planned(sample_dir):
    spec = _two_components()
    spec["phases"][0]["components"][0]["weight"] = {"shape": "linear", "points": [[0, 0.7], [1, 0.3]]}
    spec["phases"][0]["components"][1]["weight"] = {"shape": "step", "points": [[0, 0.3], [0.5, 0.5], [1, 0.7]]}
    # Just before 0.5 the linear weight is 0.5 and the step still 0.3: they sum to 0.8 there.
    with Catalog(sample_dir) as catalog, pytest.raises(MidmixError, match=r"weights sum to 0\.8 at 50% of the phase \(just before it\)"):
        plan_mixture(parse_spec(spec), catalog)
    spec["phases"][0]["components"][1]["weight"] = {"shape": "linear", "points": [[0, 0.3], [1, 0.7]]}
    with Catalog(sample_dir) as catalog:
        phase = plan_mixture(parse_spec(spec), catalog).phases[0]
    web, code = phase.components
    assert (web.requested_tokens, code.requested_tokens) == (100_000, 100_000)
    assert web.schedule == [{"start": 0.0, "end": 1.0, "from": 0.7, "to": 0.3}]
    assert code.schedule == [{"start": 0.0, "end": 1.0, "from": 0.3, "to": 0.7}]


def test_length_buckets_split_every_component_and_count_each_bucket(sample_dir):
    buckets = [{"min_tokens": 4096, "max_tokens": 1_000_000, "weight": 0.75}, {"min_tokens": 500, "max_tokens": 4096, "weight": 0.25}]
    with Catalog(sample_dir) as catalog:
        phase = plan_mixture(parse_spec(_two_components(budget=100_000, length_buckets=buckets)), catalog).phases[0]
    documents = pq.read_table(list((sample_dir / "datasets").glob("*/data"))[0], columns=["domain", "n_tokens"]).to_pydict()
    long_web = [n for d, n in zip(documents["domain"], documents["n_tokens"]) if d == "web" and n >= 4096]
    long_web = (len(long_web), sum(long_web))
    assert phase.length_buckets == buckets
    web = phase.components[0]
    assert [b.requested_tokens for b in web.buckets] == [37_500, 12_500]
    assert (web.buckets[0].available_docs, web.buckets[0].available_tokens) == tuple(long_web)
    assert web.available_tokens == sum(b.available_tokens for b in web.buckets)


def test_a_length_bucket_no_document_fits_names_phase_bucket_and_component(sample_dir):
    buckets = [{"min_tokens": 10_000_000, "max_tokens": 20_000_000, "weight": 0.5}, {"min_tokens": 0, "max_tokens": 4096, "weight": 0.5}]
    with Catalog(sample_dir) as catalog, pytest.raises(MidmixError) as raised:
        plan_mixture(parse_spec(_two_components(length_buckets=buckets)), catalog)
    message = str(raised.value)
    assert message.startswith(
        "phase 'p': length_buckets[0] (10000000-20000000 tokens), component 'web': no selected document is that long"
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"components": 0, "weight": {"shape": "step", "points": [[0, 0.5], [0.5, 0.2]]}},
         "phase 'p': weights sum to 0.7 at 50% of the phase, not 1; fix components[].weight"),
        ({"length_buckets": [{"min_tokens": 10_000_000, "max_tokens": 20_000_000, "weight": 1.0}]},
         "phase 'p': length_buckets[0] (10000000-20000000 tokens), component 'web': no selected document is that long"),
        ({"rope_scaling": {"factor": 4, "original_seq_len": 2048}},
         "phase 'p': rope_scaling.factor 4 needs a seq_len longer than the context it extends"),
    ],
)
def test_bad_schedule_bucket_or_yarn_is_one_cli_line_and_writes_nothing(sample_dir, tmp_path, capsys, change, expected):
    spec = _two_components()
    if "components" in change:
        spec["phases"][0]["components"][change["components"]]["weight"] = change["weight"]
    else:
        spec["phases"][0].update(change)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    before = sorted(p.name for p in (sample_dir / "mixtures").iterdir()) if (sample_dir / "mixtures").exists() else []
    assert main(["build", str(path), "--data-dir", str(sample_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("midmix build: error: ") and expected in err and err.count("\n") == 1
    after = sorted(p.name for p in (sample_dir / "mixtures").iterdir()) if (sample_dir / "mixtures").exists() else []
    assert after == before and not any(name.startswith("mix-") for name in after)
