"""MixtureSpec validation: what a user can get wrong in a spec file, and the message they get."""

import json

import pytest

from midmix.errors import MidmixError
from midmix.pipelines.mixtures.spec import effective_weights, load_spec, parse_spec, weight_segments


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


def _scheduled(math_points: list, web_points: list, shape: str = "linear", **phase) -> dict:
    data = _spec(**phase)
    data["phases"][0]["components"][0]["weight"] = {"shape": shape, "points": web_points}
    data["phases"][0]["components"][1]["weight"] = {"shape": shape, "points": math_points}
    return data


def test_a_linear_schedule_gives_each_component_its_mean_weight():
    spec = parse_spec(_scheduled([[0, 0.7], [1, 0.3]], [[0, 0.3], [1, 0.7]]))
    assert effective_weights(spec.phases[0], False) == pytest.approx([0.5, 0.5])
    math = weight_segments(spec.phases[0], False)[1]
    assert [(s.start, s.end, s.begin, s.finish) for s in math] == [(0.0, 1.0, 0.7, 0.3)]


def test_step_and_constant_weights_mix_on_the_union_of_breakpoints():
    data = _spec()
    data["phases"][0]["components"][0]["weight"] = {"shape": "step", "points": [[0, 0.8], [0.25, 0.5]]}
    data["phases"][0]["components"][1]["weight"] = {"shape": "step", "points": [[0, 0.2], [0.25, 0.5]]}
    spec = parse_spec(data)
    web, math = weight_segments(spec.phases[0], False)
    assert [(s.start, s.end, s.begin, s.finish) for s in web] == [(0.0, 0.25, 0.8, 0.8), (0.25, 1.0, 0.5, 0.5)]
    assert effective_weights(spec.phases[0], False) == pytest.approx([0.8 * 0.25 + 0.5 * 0.75, 0.2 * 0.25 + 0.5 * 0.75])


def test_a_schedule_not_summing_to_one_somewhere_names_the_phase_the_point_and_the_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_scheduled([[0, 0.7], [0.5, 0.3]], [[0, 0.3], [1, 0.7]])))
    with pytest.raises(MidmixError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert "\n" not in message
    assert "phase 'stable': weights sum to 0.8 at 50% of the phase" in message
    assert "fix components[].weight or set normalize_weights: true" in message
    spec = parse_spec({**_scheduled([[0, 0.7], [0.5, 0.3]], [[0, 0.3], [1, 0.7]]), "normalize_weights": True})
    web, math = weight_segments(spec.phases[0], True)
    assert all(abs(w.begin + m.begin - 1) < 1e-12 and abs(w.finish + m.finish - 1) < 1e-12 for w, m in zip(web, math))


@pytest.mark.parametrize(
    ("points", "problem"),
    [([[0.1, 0.5]], "first point must be at 0"), ([[0, 0.5], [0.5, 0.2], [0.4, 0.3]], "strictly increasing"),
     ([[0, 0.5], [1.5, 0.5]], "strictly increasing"), ([[0, -0.5]], "finite numbers >= 0")],
)
def test_malformed_schedule_points_name_the_field(points, problem):
    with pytest.raises(MidmixError, match=rf"phases\.0\.components\.0\.weight\..*{problem}"):
        parse_spec(_scheduled([[0, 0.5]], points))


def _long_phase(**overrides) -> dict:
    phase = {"name": "long", "token_budget": 1000, "seq_len": 4096, "components": [
        {"name": "books", "datasets": ["latest"], "weight": 1.0}]}  # fmt: skip
    phase.update(overrides)
    return phase


def test_length_buckets_must_be_disjoint_shares():
    spec = parse_spec({"name": "demo", "phases": [_long_phase(length_buckets=[
        {"min_tokens": 16384, "max_tokens": 32768, "weight": 0.75}, {"min_tokens": 4096, "max_tokens": 16384, "weight": 0.25},
    ])]})  # fmt: skip
    assert [b.weight for b in spec.phases[0].length_buckets] == [0.75, 0.25]
    with pytest.raises(MidmixError, match=r"phase 'long': length_buckets weights sum to 0\.9, not 1"):
        parse_spec({"name": "demo", "phases": [_long_phase(length_buckets=[
            {"min_tokens": 16384, "max_tokens": 32768, "weight": 0.65}, {"min_tokens": 0, "max_tokens": 16384, "weight": 0.25},
        ])]})  # fmt: skip
    with pytest.raises(MidmixError, match=r"phase 'long': length_buckets \[0, 20000\) and \[16384, 32768\) overlap"):
        parse_spec({"name": "demo", "phases": [_long_phase(length_buckets=[
            {"min_tokens": 16384, "max_tokens": 32768, "weight": 0.5}, {"min_tokens": 0, "max_tokens": 20000, "weight": 0.5},
        ])]})  # fmt: skip


def test_yarn_needs_a_longer_seq_len_than_the_context_it_extends():
    short = {"name": "stable", "token_budget": 1000, "seq_len": 4096,
             "components": [{"name": "web", "datasets": ["latest"], "weight": 1.0}]}  # fmt: skip
    spec = parse_spec({"name": "d", "phases": [short, _long_phase(seq_len=16384, rope_scaling={"factor": 4})]})
    assert spec.phases[1].rope_scaling.factor == 4
    with pytest.raises(MidmixError) as raised:
        parse_spec({"name": "d", "phases": [short, _long_phase(seq_len=4096, rope_scaling={"factor": 4})]})
    message = str(raised.value)
    assert "phase 'long': rope_scaling.factor 4 needs a seq_len longer than the context it extends" in message
    assert "seq_len 4096 is not above 4096" in message and "\n" not in message
    with pytest.raises(MidmixError, match=r"phase 'long': rope_scaling needs original_seq_len in the first phase"):
        parse_spec({"name": "d", "phases": [_long_phase(rope_scaling={"factor": 4})]})
    with pytest.raises(MidmixError, match=r"rope_scaling\.factor: Input should be greater than 1"):
        parse_spec({"name": "d", "phases": [short, _long_phase(seq_len=16384, rope_scaling={"factor": 1})]})
