from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.search_space import SEARCH_SPACES, SpaceError, load_space

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
    assert space.scheduler.type == "asha"


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
    assert space.trial_count == variants * space.num_samples
    assert space.trial_count > 1
