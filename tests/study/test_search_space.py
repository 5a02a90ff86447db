from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import study_folder.search_space
from mer_models.config import TrainConfig
from study_folder.search_space import (
    DISTRIBUTIONS,
    SEARCH_SPACES,
    SpaceError,
    load_space,
    parse_space,
    tune_value,
)

RUN = Path(__file__).resolve().parents[2] / "study" / "run.py"


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_is_valid(path):
    space = load_space(str(path))
    assert space.metric == "val_roc_auc" and space.mode == "max"


def test_table1_holds_the_papers_rows():
    space = load_space("table1.yaml")
    rows = {
        (c.get("model", "crnn"), c.get("cbam"), c.get("cell"), c.get("units"), c.get("layers"))
        for c in space.configs
    }
    assert rows == {
        ("crnn", False, "gru", 256, 1),
        ("crnn", False, "lstm", 256, 1),
        ("crnn", True, "gru", 128, 2),
        ("crnn", True, "gru", 256, 1),
        ("crnn", True, "lstm", 256, 1),
        ("attention_cnn", None, None, None, None),
    }
    assert space.scheduler.type == "race" and space.repeats == 3


def test_a_race_reads_its_keys_and_refuses_a_bad_alpha_and_optuna(tmp_path):
    race = {"type": "race", "grace_period": 2, "reduction_factor": 3, "alpha": 0.1}
    space = parse_space({"scheduler": race, "repeats": 3}, tmp_path / "s.yaml")
    assert (space.scheduler.type, space.scheduler.grace_period) == ("race", 2)
    assert (space.scheduler.reduction_factor, space.scheduler.alpha) == (3, 0.1)
    for alpha in (0, 1.5, "0.05", True):
        with pytest.raises(SpaceError, match=r"s.yaml: scheduler.alpha: expected a level in"):
            parse_space({"scheduler": {**race, "alpha": alpha}}, tmp_path / "s.yaml")
    with pytest.raises(SpaceError, match="scheduler.alpha: unknown key"):
        parse_space({"scheduler": {"type": "asha", "alpha": 0.1}}, tmp_path / "s.yaml")
    searched = {"lr": {"loguniform": [1e-4, 1e-2]}}
    with pytest.raises(SpaceError, match="scheduler.type: race compares whole rows"):
        parse_space(
            {"scheduler": race, "searcher": "optuna", "parameters": searched}, tmp_path / "s.yaml"
        )


def test_names_are_found_in_search_spaces():
    assert load_space("smoke").file == SEARCH_SPACES / "smoke.yaml"
    with pytest.raises(SpaceError, match="no such search space"):
        load_space("nope")


BAD = [
    ({"parameters": {"learning_rate": 0.1}}, "parameters.learning_rate: unknown config field"),
    (
        {"searcher": "bayes"},
        "searcher: 'bayes' is not allowed; expected one of grid, random, optuna",
    ),
    ({"colour": 1}, "colour: unknown key"),
    ({"parameters": {"units": "many"}}, "parameters.units: config field 'units' must be int"),
    ({"parameters": {"cell": {"grid": []}}}, "parameters.cell.grid: expected a non-empty list"),
    (
        {"parameters": {"lr": {"loguniform": [1e-2, 1e-5]}}},
        "parameters.lr.loguniform: bounds the wrong way round",
    ),
    (
        {"parameters": {"cell": {"grid": ["gru", "rnn"]}}},
        r"parameters.cell.grid\[1\]: config field 'cell' must be one of gru, lstm",
    ),
    (
        {"configs": [{"cell": "rnn"}]},
        r"configs\[0\].cell: config field 'cell' must be one of gru, lstm",
    ),
    ({"scheduler": {"type": "asha", "grace": 2}}, "scheduler.grace: unknown key"),
    (
        {"scheduler": {"type": "asha", "reduction_factor": 1}},
        "scheduler.reduction_factor: expected an integer >= 2",
    ),
    ({"num_samples": 0}, "num_samples: expected an integer >= 1"),
    (
        {"searcher": "optuna", "parameters": {"cell": {"grid": ["gru"]}}},
        "searcher: optuna samples its own points",
    ),
    ({"metric": {"name": "test_roc_auc"}}, "metric.name: 'test_roc_auc' is not allowed"),
]


@pytest.mark.parametrize(("content", "expected"), BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_bad_spaces_name_file_and_key(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(SpaceError, match=expected) as raised:
        load_space(str(path))
    assert str(path) in str(raised.value)


def test_the_driver_refuses_a_bad_space_before_starting_anything(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"cell": {"grid": ["gru", "rnn"]}}}))
    done = subprocess.run(
        [sys.executable, str(RUN), "--space", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"{path}: parameters.cell.grid[1]" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.yaml"
    ]  # no Ray results, no MLflow store


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"parameters: {lr: .inf}\n", "parameters.lr: must be a finite number, got inf"),
        (b"parameters: {weight_decay: .nan}\n", "parameters.weight_decay: must be a finite"),
        (b"configs:\n  - {dropout: .nan}\n", r"configs\[0\].dropout: must be a finite"),
        (b"parameters:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' is given twice"),
        (b"description: caf\xe9\n", r"line 1: byte 0xe9 is not UTF-8"),
    ],
)
def test_bad_numbers_keys_and_bytes_are_refused(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(SpaceError, match=expected) as raised:
        load_space(str(path))
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_trial_count_is_what_rays_variant_generator_makes(path):
    from ray.tune.search.variant_generator import generate_variants

    from study.driver import space_values

    space = load_space(str(path))
    variants = generate_variants(space_values(space))
    variants = 1 if space.searcher == "optuna" else len(list(variants))
    assert space.trial_count == variants * space.num_samples * space.repeats
    assert space.trial_count > 1


@pytest.mark.parametrize("distribution", DISTRIBUTIONS.values(), ids=lambda d: d.kind)
def test_every_distribution_validates_converts_and_draws_within_its_values(distribution):
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.variant_generator import generate_variants

    key, values = distribution.example
    space = parse_space({"parameters": {key: {distribution.kind: values}}}, Path("example.yaml"))
    domain = {key: tune_value(space.parameters[key])}
    random_state = np.random.RandomState(0)
    drawn = [v[key] for _ in range(50) for _, v in generate_variants(domain, random_state)]
    if distribution.grid:
        assert drawn[: len(values)] == values and space.trial_count == len(values)
    elif distribution.bounds:
        low, high = values
        assert all(low <= value <= high for value in drawn)
        assert len(set(drawn)) > 1
    else:
        assert set(drawn) <= set(values) and len(set(drawn)) > 1
    if distribution.integer:
        assert all(isinstance(value, int | np.integer) for value in drawn)
    for value in drawn:
        TrainConfig.from_dict({key: value})  # a draw is a valid config value
    if not distribution.grid:  # optuna refuses grids; every other kind it must draw
        assert key in OptunaSearch.convert_search_space(domain)
        optuna_space = {key: {distribution.kind: values}}
        parse_space({"parameters": optuna_space, "searcher": "optuna"}, Path("example.yaml"))


def test_randint_includes_both_bounds():
    from ray.tune.search.optuna import OptunaSearch

    domain = tune_value({"randint": [3, 4]})
    assert set(domain.sample(size=200).tolist()) == {3, 4}
    optuna = OptunaSearch.convert_search_space({"x": domain})["x"]
    assert (optuna.low, optuna.high) == (3, 4)


@pytest.mark.parametrize("kind", DISTRIBUTIONS)
def test_every_distribution_is_documented(kind):
    assert f"{{{kind}: [" in study_folder.search_space.__doc__
    assert f"`{kind}`" in (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_an_unknown_distribution_names_the_file_the_key_and_the_kinds(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("parameters: {lr: {normal: [0.0, 1.0]}}\n")
    with pytest.raises(SpaceError) as raised:
        load_space(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: parameters.lr: expected a fixed value or one of")
    assert all(kind in message for kind in DISTRIBUTIONS)
    with pytest.raises(SpaceError, match="grid | choice"):
        tune_value({"normal": [0.0, 1.0]})  # a hand-built space is refused too
