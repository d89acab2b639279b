"""MixtureSpec validation: what a user can get wrong in a spec file, and the message they get."""

import json

import pytest

from midmix.errors import MidmixError
from midmix.pipelines.mixtures.spec import effective_weights, load_spec, parse_spec


def _spec(**phase_overrides) -> dict:
    phase = {
        "name": "stable",
        "token_budget": 1000,
        "components": [
            {"name": "web", "datasets": ["latest"], "weight": 0.7},
            {"name": "math", "datasets": ["latest"], "weight": 0.3},
        ],
    }
    phase.update(phase_overrides)
    return {"name": "demo", "phases": [phase]}


def test_yaml_and_json_specs_load_to_the_same_spec(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_spec()))
    (tmp_path / "a.yaml").write_text(
        "name: demo\nphases:\n  - name: stable\n    token_budget: 1000\n    components:\n"
        "      - {name: web, datasets: [latest], weight: 0.7}\n      - {name: math, datasets: [latest], weight: 0.3}\n"
    )
    assert load_spec(tmp_path / "a.json") == load_spec(tmp_path / "a.yaml")


def test_unknown_key_names_the_field_and_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_spec(token_budgett=5)))
    with pytest.raises(MidmixError, match=r"invalid mixture spec in .*bad\.json: phases\.0\.token_budgett: Extra inputs"):
        load_spec(path)


def test_wrong_type_names_the_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_spec(token_budget="lots")))
    with pytest.raises(MidmixError, match=r"phases\.0\.token_budget: Input should be a valid integer"):
        load_spec(path)


@pytest.mark.parametrize("seq_len", [0, -512])
def test_seq_len_must_be_positive(seq_len):
    with pytest.raises(MidmixError, match=r"phases\.0\.seq_len: Input should be greater than 0"):
        parse_spec(_spec(seq_len=seq_len))


def test_weights_not_summing_to_one_are_an_error_unless_normalized():
    data = _spec()
    data["phases"][0]["components"][1]["weight"] = 0.4
    with pytest.raises(MidmixError, match=r"phase 'stable': weights sum to 1\.1, not 1; fix them or set normalize_weights"):
        parse_spec(data)
    spec = parse_spec({**data, "normalize_weights": True})
    assert effective_weights(spec.phases[0], True) == pytest.approx([0.7 / 1.1, 0.4 / 1.1])


@pytest.mark.parametrize("weight", [-0.1, float("nan")])
def test_negative_or_nan_weight_is_rejected(weight):
    data = _spec()
    data["phases"][0]["components"][0]["weight"] = weight
    with pytest.raises(MidmixError, match=r"components\.0\.weight: Value error, weight must be a finite number >= 0"):
        parse_spec({**data, "normalize_weights": True})


def test_unknown_curriculum_key_is_rejected():
    with pytest.raises(MidmixError, match=r"curriculum\.key: Value error, unknown numeric column 'freshness'"):
        parse_spec(_spec(curriculum={"key": "freshness"}))


def test_curriculum_none_means_shuffled_with_seed():
    spec = parse_spec(_spec(curriculum={"key": "none", "seed": 3}))
    assert (spec.phases[0].curriculum.key, spec.phases[0].curriculum.seed) == (None, 3)


def test_general_components_must_match_the_reserved_ratio():
    data = _spec(reserved_general_ratio=0.2)
    data["phases"][0]["components"][0]["general"] = True
    with pytest.raises(MidmixError, match=r"general components' weights sum to 0\.7 but reserved_general_ratio is 0\.2"):
        parse_spec(data)


def test_normalize_scales_general_components_to_the_reserved_ratio():
    data = _spec(reserved_general_ratio=0.25)
    data["phases"][0]["components"] = [
        {"name": "replay", "datasets": ["latest"], "weight": 5, "general": True},
        {"name": "math", "datasets": ["latest"], "weight": 2},
        {"name": "code", "datasets": ["latest"], "weight": 1},
    ]
    spec = parse_spec({**data, "normalize_weights": True})
    assert effective_weights(spec.phases[0], True) == pytest.approx([0.25, 0.5, 0.25])


def test_reserved_ratio_without_general_component_is_an_error():
    with pytest.raises(MidmixError, match=r"reserved_general_ratio is 0\.1 but no component has general: true"):
        parse_spec(_spec(reserved_general_ratio=0.1))


def test_selection_tree_checks_operators_against_column_types():
    data = _spec()
    data["phases"][0]["components"][0]["select"] = {"all": [{"column": "domain", "op": ">=", "value": "web"}]}
    with pytest.raises(MidmixError, match=r"'domain' is a string column; use ==, !=, in or not_in"):
        parse_spec(data)
    data["phases"][0]["components"][0]["select"] = {
        "all": [{"column": "quality.fasttext_hq", "op": "top_percent", "value": 7}, {"column": "quality.edu", "op": ">=", "value": 2}]
    }
    assert parse_spec(data).phases[0].components[0].select.all[0].value == 7.0


def test_lr_fractions_must_sum_to_one():
    with pytest.raises(MidmixError, match=r"lr warmup \+ stable \+ decay must sum to 1, got 0\.9"):
        parse_spec(_spec(lr={"warmup": 0.1, "stable": 0.7, "decay": 0.1}))
