"""confirm.yaml: a study's top rows as a space that loads, repeats them five times under FIFO
and trains exactly the configurations that were ranked."""

from __future__ import annotations

import json

import yaml

from analysis.confirm import CONFIRM_FILE, write_confirm
from analysis.rows import row_results
from mer_models.config import TrainConfig
from study_folder.budgets import BUDGETS
from study_folder.records import DRAW_FIELDS, RESOURCE_FIELDS, load_study, row_of
from study_folder.search_space import load_space
from tests.analysis.repeated import repeated_study

SEARCHED = ("cbam", "cell", "units")
ROWS = [
    ({"cbam": False, "cell": "gru", "units": 128, "dropout": 0.2}, 0.3),
    ({"cbam": True, "cell": "gru", "units": 256, "dropout": 0.2}, 0.9),
    ({"cbam": True, "cell": "lstm", "units": 256, "dropout": 0.2}, 0.7),
    ({"cbam": False, "cell": "lstm", "units": 128, "dropout": 0.2}, 0.5),
]


def expand(space, config: dict) -> dict:
    """A confirm row as the driver trains it: TrainConfig defaults, budget, parameters, row."""
    whole = TrainConfig().to_dict() | BUDGETS[space.budget] | space.parameters | config
    return {k: v for k, v in whole.items() if k not in (*RESOURCE_FIELDS, *DRAW_FIELDS)}


def test_confirm_yaml_loads_as_a_repeated_fifo_space_of_the_top_rows(tmp_path, labelled_dataset):
    folder = repeated_study(
        tmp_path / "wide", labelled_dataset, ROWS, [0], SEARCHED, scheduler="asha"
    )
    study = load_study(folder)
    table = row_results(study)
    path = write_confirm(study, table)
    assert path == folder / CONFIRM_FILE
    space = load_space(str(path))
    assert space.repeats == 5 and space.scheduler.type == "fifo"
    assert space.metric == "val_roc_auc" and space.budget == "quick" and space.searcher == "grid"
    assert space.trial_count == 3 * 5
    assert space.parameters == {"dropout": 0.2}  # shared, and not what the budget gives
    # The top three rows by validation, each exactly as it trained (its seed aside).
    top = table.rows[:3]
    assert [row.name for row in top] == ["block GRU 256", "block LSTM 256", "no attention LSTM 128"]
    for config, row in zip(space.configs, top, strict=True):
        assert set(config) >= set(SEARCHED)
        assert expand(space, config) == row.config
    raw = yaml.safe_load(path.read_text())
    assert "wide" in raw["description"] and "block GRU 256" in raw["description"]
    assert f"--space {path}" in path.read_text()


def test_confirm_of_fewer_rows_than_k_takes_them_all(tmp_path, labelled_dataset):
    folder = repeated_study(tmp_path / "two", labelled_dataset, ROWS[:2], [0, 1], SEARCHED)
    study = load_study(folder)
    space = load_space(str(write_confirm(study, row_results(study))))
    assert len(space.configs) == 2
    assert json.loads(json.dumps(space.configs))  # plain values only
    row = row_of(study.trials[0].config)
    assert {"cbam", "cell", "units"} <= set(row)
