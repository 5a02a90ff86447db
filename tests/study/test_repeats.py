"""Repeated seeds (`repeats: N`): the space's key, the trials the driver plans (every row with
seeds 0..N-1), a resume's view of them, and how each trial names its row and seed in its run
name, its MLflow tags, its metrics and the tables."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from study.console import table_lines
from study.driver import StudyOptions, check_records, planned_trials
from study.recorder import StudyRecorder
from study.summary import columns, table_rows
from study.trainable import ROW_KEY
from study_folder import records
from study_folder.records import load_study, match_planned, row_key
from study_folder.search_space import (
    MAX_TRIALS,
    SpaceError,
    load_space,
    parse_space,
    space_from_text,
)
from tests.study.test_summary import GRU, LSTM, finished, write_study
from tracking.names import ROW_TAG, SEED_TAG, repeated_run_name, row_name, trial_run_name
from tracking.study_tracker import StudyTracker
from tracking.ui import SHARED_VIEW_TAG, VIEW_KEY

# Where no trial reads: the options only plan trials.
DATA = DatasetPaths("metadata", "melspecs")

ROWS = [
    {"model": "crnn", "cbam": False, "cell": "gru", "units": 256, "layers": 1},
    {"model": "crnn", "cbam": True, "cell": "lstm", "units": 256, "layers": 1},
]
SEARCHED = ("cbam", "cell")


def space(tmp_path: Path, text: str):
    return space_from_text(text, tmp_path / "space.yaml")


def options(tmp_path: Path, text: str) -> StudyOptions:
    return StudyOptions(space(tmp_path, text), "s", tmp_path, DATA, "sqlite:///x.db", "quick")


GRID = f"configs: {json.dumps(ROWS)}\nrepeats: 3\n"
RANDOM = (
    "searcher: random\nnum_samples: 4\nrepeats: 2\n"
    "parameters: {lr: {loguniform: [1.0e-5, 1.0e-2]}, cell: {choice: [gru, lstm]}}\n"
)


# The space's key ----------------------------------------------------------------------------


@pytest.mark.parametrize("repeats", [1, 2, 5])
def test_repeats_multiplies_the_trials(tmp_path, repeats):
    loaded = parse_space({"configs": ROWS, "repeats": repeats}, tmp_path / "s.yaml")
    assert loaded.repeats == repeats and loaded.trial_count == 2 * repeats
    grid = {"parameters": {"lr": {"grid": [1e-3, 1e-4]}}, "num_samples": 2, "repeats": repeats}
    assert parse_space(grid, tmp_path / "s.yaml").trial_count == 4 * repeats


def test_a_space_without_repeats_runs_each_row_once(tmp_path):
    assert parse_space({"configs": ROWS}, tmp_path / "s.yaml").repeats == 1


BAD = [
    ({"repeats": 0}, "repeats: expected an integer >= 1, got 0"),
    ({"repeats": -2}, "repeats: expected an integer >= 1"),
    ({"repeats": 2.0}, "repeats: expected an integer >= 1, got 2.0"),
    ({"repeats": "5"}, "repeats: expected an integer >= 1, got '5'"),
    ({"repeats": True}, "repeats: expected an integer >= 1, got True"),
    ({"repeats": 3, "parameters": {"seed": 1}}, "parameters.seed: repeats: 3 runs every row"),
    (
        {"repeats": 2, "parameters": {"seed": {"grid": [0, 1]}}},
        "parameters.seed: repeats: 2 runs every row with seeds 0..1; the space may not fix or "
        "search seed too",
    ),
    ({"repeats": 2, "configs": [{"cell": "gru"}, {"seed": 4}]}, r"configs\[1\].seed: repeats"),
    (
        {"repeats": 2, "searcher": "optuna", "parameters": {"lr": {"loguniform": [1e-5, 1e-2]}}},
        "repeats: optuna learns from one trial per point",
    ),
    (
        {"repeats": 2, "configs": [{"units": 128}], "num_samples": MAX_TRIALS // 2 + 1},
        "plans 10,002 trials",
    ),
]


@pytest.mark.parametrize(("content", "expected"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_repeats_are_refused_naming_the_key(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(SpaceError, match=expected) as raised:
        load_space(str(path))
    assert str(raised.value).startswith(f"{path}: ")


def test_repeats_of_one_leave_the_seed_to_the_space(tmp_path):
    fixed = parse_space({"repeats": 1, "parameters": {"seed": 7}}, tmp_path / "s.yaml")
    assert fixed.parameters["seed"] == 7


def test_table1_repeated_is_table1s_rows_with_five_seeds_under_fifo():
    table1, repeated = load_space("table1"), load_space("table1_repeated")
    assert repeated.configs == table1.configs
    assert repeated.repeats == 5 and repeated.scheduler.type == "fifo"
    assert table1.repeats == 3 and table1.scheduler.type == "race"
    assert repeated.trial_count == 5 * len(table1.configs) == 30
    assert "seed" not in repeated.parameters


# The trials the driver plans ----------------------------------------------------------------


def test_a_grid_of_configs_plans_every_row_with_seeds_0_to_n(tmp_path):
    planned = planned_trials(options(tmp_path, GRID))
    assert len(planned) == 6 == space(tmp_path, GRID).trial_count
    assert [c["seed"] for c in planned] == [0, 0, 1, 1, 2, 2]  # every row's seed 0 first
    by_row: dict[str, list[int]] = {}
    for config in planned:
        by_row.setdefault(row_key(config), []).append(config["seed"])
    assert list(by_row.values()) == [[0, 1, 2], [0, 1, 2]]
    assert [planned[0][k] for k in SEARCHED] == [False, "gru"]
    assert [planned[1][k] for k in SEARCHED] == [True, "lstm"]


def test_a_random_space_repeats_the_same_configurations_over_seeds(tmp_path):
    planned = planned_trials(options(tmp_path, RANDOM))
    assert len(planned) == 8 == space(tmp_path, RANDOM).trial_count
    seed0 = [c for c in planned if c["seed"] == 0]
    seed1 = [c for c in planned if c["seed"] == 1]
    assert [records.row_of(c) for c in seed0] == [records.row_of(c) for c in seed1]
    assert len({c["lr"] for c in seed0}) == 4
    once = planned_trials(options(tmp_path, RANDOM.replace("repeats: 2", "repeats: 1")))
    assert [c["lr"] for c in once] == [c["lr"] for c in seed0]  # repeats changes no draw
    assert planned == planned_trials(options(tmp_path, RANDOM))


def test_a_resume_knows_which_row_and_seed_trials_have_not_begun(tmp_path):
    study = options(tmp_path, GRID)
    planned = planned_trials(study)
    begun = [planned[0], planned[3]]  # row 0 seed 0, row 1 seed 1
    for index, config in enumerate(begun):
        records.list_trial(study.study_dir, f"t_{index:05d}", {**config, "threads": 8})
    listed = records.read_trials(study.study_dir)
    check_records(study, planned)  # what was begun is what the space plans
    remaining, _ = match_planned(planned, listed)
    assert remaining == [planned[i] for i in (1, 2, 4, 5)]
    assert {(c["cell"], c["seed"]) for c in remaining} == {
        ("lstm", 0),
        ("gru", 1),
        ("gru", 2),
        ("lstm", 2),
    }
    records.list_trial(study.study_dir, "t_00009", {**planned[0], "seed": 3})
    with pytest.raises(records.RecordError, match=r"seed 3 \(planned: \d\)"):
        check_records(study, planned)


def test_study_json_records_repeats_and_an_old_one_reads_as_one(tmp_path):
    record = records.StudyRecord(
        name="s",
        space="x.yaml",
        space_yaml=GRID,
        budget="quick",
        scheduler="fifo",
        searched=SEARCHED,
        trials=6,
        data={},
        tracking_uri="",
        repeats=3,
    )
    records.write_study(tmp_path, record)
    assert records.read_study(tmp_path) == record
    values = json.loads((tmp_path / records.STUDY_FILE).read_text())
    assert values["repeats"] == 3 and "seed" not in values["searched"]
    del values["repeats"]
    (tmp_path / records.STUDY_FILE).write_text(json.dumps(values))
    assert records.read_study(tmp_path).repeats == 1


# Names, tags and tables -----------------------------------------------------------------------


def test_a_row_is_named_as_its_trials_without_their_seed():
    config = TrainConfig(cbam=True, cell="gru", units=256, seed=3).to_dict()
    assert row_name(config, SEARCHED) == "block GRU 256" == trial_run_name(config, SEARCHED)
    assert repeated_run_name(config, SEARCHED) == "block GRU 256 seed=3"
    # A space that searches the seed itself: the seed names the trial, never the row.
    assert trial_run_name(config, ("lr", "seed")) == "lr=3.0e-4 seed=3"
    assert row_name(config, ("lr", "seed")) == "lr=3.0e-4"


def fake_trial(trial_id: str, row: dict, seed: int):
    """What the recorder reads of a Ray trial of a grid of configs."""
    return SimpleNamespace(
        trial_id=trial_id,
        config={"seed": seed, "threads": 1, ROW_KEY: row},
        last_result={"epoch": 2, "val_roc_auc": 0.61},
        metric_analysis={"val_roc_auc": {"max": 0.62}},
        status="RUNNING",
    )


def test_trial_runs_carry_their_row_and_seed(tmp_path):
    """The recorder names and tags a repeated trial's run; a local SQLite MLflow store."""
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "rep", tmp_path / "artifacts")
    tracker.start({"space": "rep"})
    recorder = StudyRecorder(
        tmp_path, tracker, str(tmp_path / "ckpt"), searched=SEARCHED, repeats=3
    )
    for trial_id, row, seed in (("a", ROWS[0], 0), ("b", ROWS[1], 2)):
        recorder._run_id(fake_trial(trial_id, row, seed))
    assert tracker.drain(30)
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`{ROW_TAG}` != ''")
    found = {(r.info.run_name, r.data.tags[ROW_TAG], r.data.tags[SEED_TAG]) for r in runs}
    assert found == {
        ("no attention GRU 256 seed=0", "no attention GRU 256", "0"),
        ("block LSTM 256 seed=2", "block LSTM 256", "2"),
    }
    # A run made before its study tagged rows gets the tags when the trial's run is asked for.
    tracker.trial_run("old", "block GRU 256", {"lr": 0.1})
    assert tracker.drain(30)
    again = StudyTracker(tracker.tracking_uri, "rep", tmp_path / "artifacts")
    again.start({"space": "rep"})
    again.trial_run("old", "block GRU 256", {"lr": 0.1}, {ROW_TAG: "block GRU 256", SEED_TAG: "0"})
    assert again.drain(30)
    (old,) = again.client.search_runs([again.experiment_id], "tags.`mer.trial_id` = 'old'")
    assert old.data.tags[ROW_TAG] == "block GRU 256" and old.data.tags[SEED_TAG] == "0"


def test_the_experiment_of_a_repeated_study_opens_grouped_by_row(tmp_path):
    """The trials a row has (its space's seeds times its splits) choose the experiment's
    shared view: grouped by row when a row has several."""
    for study, space, grouped_by in (
        ("rep", "repeats: 3\n", [ROW_TAG]),
        ("one", "repeats: 1\n", []),
        ("splits", "splits: [0, 1, 2]\n", [ROW_TAG]),
    ):
        per_row = space_from_text(space, tmp_path / f"{study}.yaml").draws
        tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", study, tmp_path)
        tracker.start({"space": study}, per_row=per_row)
        tags = tracker.client.get_experiment(tracker.experiment_id).tags
        view = json.loads(tags[SHARED_VIEW_TAG + VIEW_KEY])
        grouped = [key["groupByData"] for key in view.get("groupBy", {}).get("groupByKeys", [])]
        assert grouped == grouped_by, study


def test_the_progress_table_shows_the_seed_only_when_rows_repeat(tmp_path):
    trials = [fake_trial("a", ROWS[0], 0), fake_trial("b", ROWS[0], 1)]
    for repeats in (1, 2):
        recorder = StudyRecorder(tmp_path, None, "", searched=SEARCHED, repeats=repeats)
        header, *rows = table_lines(recorder.table(trials))
        assert ("seed" in header.split()) == (repeats > 1)
        if repeats > 1:
            at = header.index(" seed ") + 1  # the cells line up under their header
            assert [row[at:].split()[0] for row in rows] == ["0", "1"]


def test_the_summary_shows_the_seed_column_of_a_repeated_study(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    trials = {
        "a": ({**GRU, "seed": 0}, finished(0.61)),
        "b": ({**GRU, "seed": 1}, finished(0.65)),
        "c": ({**LSTM, "seed": 0}, finished(0.7)),
    }
    write_study(study, trials, searched=["cbam", "cell", "units", "layers"])
    assert "seed" not in columns(load_study(study))
    values = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**values, "repeats": 2}))
    loaded = load_study(study)
    column = columns(loaded).index("seed")
    assert [(row[0], row[column]) for row in table_rows(loaded)] == [
        ("c", "0"),
        ("b", "1"),
        ("a", "0"),
    ]
