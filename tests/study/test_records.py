"""The study's records: typed reads that name the file at fault, writes that are whole or
absent (and readable as the umask allows), and a kill mid-write undone or finished."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from study_folder import records
from study_folder.records import match_planned

# Where no trial reads: the options only plan trials.
DATA = DatasetPaths("metadata", "melspecs")

CONFIG = TrainConfig().to_dict()


def results(config=CONFIG, state="finished"):
    def build(staging):
        (staging / "best_model.pt").write_bytes(b"weights")
        return config, {"end_state": state, "epochs_run": 3}, [{"epoch": 1}, {"epoch": 2}]

    return build


def test_trials_read_in_key_order_with_their_results(tmp_path):
    records.list_trial(tmp_path, "abc_00001", {**CONFIG, "lr": 1e-3})
    records.list_trial(tmp_path, "abc_00000", CONFIG)
    records.write_trial_results(tmp_path, "abc_00000", results())
    found = records.read_trials(tmp_path)
    assert [t.key for t in found] == ["abc_00000", "abc_00001"]
    assert found[0].end_state == "finished" and found[0].history == ({"epoch": 1}, {"epoch": 2})
    assert found[1].metrics == {} and found[1].config["lr"] == 1e-3
    assert (tmp_path / "trials" / "abc_00000" / "best_model.pt").read_bytes() == b"weights"
    assert not records.list_trial(tmp_path, "abc_00001", CONFIG)  # listed once, not replaced


def test_a_config_that_is_not_a_train_config_is_refused_naming_the_file(tmp_path):
    records.list_trial(tmp_path, "abc_00000", {**CONFIG, "cell": "transformer"})
    with pytest.raises(records.RecordError, match=r"abc_00000/config\.json.*cell"):
        records.read_trials(tmp_path)


def test_a_write_that_fails_leaves_the_old_folder_and_no_partial(tmp_path):
    records.list_trial(tmp_path, "abc_00000", CONFIG)

    def failing(staging):
        (staging / "half").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        records.write_trial_results(tmp_path, "abc_00000", failing)
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["abc_00000"]
    assert records.read_trials(tmp_path)[0].metrics == {}


@pytest.mark.parametrize("moment", ["staging complete", "target moved aside", "staging half"])
def test_a_kill_mid_write_is_finished_or_undone(tmp_path, moment):
    records.list_trial(tmp_path, "abc_00000", CONFIG)
    target = tmp_path / "trials" / "abc_00000"
    staging = target.with_name("abc_00000.partial")
    staging.mkdir()
    (staging / "config.json").write_text(json.dumps(CONFIG))
    if moment != "staging half":
        (staging / "history.json").write_text("[]")
        (staging / "metrics.json").write_text(json.dumps({"end_state": "finished"}))
    if moment == "target moved aside":
        target.rename(target.with_name("abc_00000.old.partial"))
    records.recover_trials(tmp_path)
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["abc_00000"]
    expected = None if moment == "staging half" else "finished"
    assert records.read_trials(tmp_path)[0].end_state == expected


def test_records_get_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o002)
    try:
        records.list_trial(tmp_path, "abc_00000", CONFIG)
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "trials" / "abc_00000" / "config.json").stat().st_mode)
    assert mode == 0o664


def test_not_begun_counts_repeated_configs_and_ignores_resources(tmp_path):
    twice = [CONFIG, CONFIG, {**CONFIG, "lr": 1e-3}]
    records.list_trial(tmp_path, "abc_00000", {**CONFIG, "threads": 8})  # other resources
    listed = records.read_trials(tmp_path)
    not_begun, unplanned = match_planned(twice, listed)
    assert not_begun == [CONFIG, {**CONFIG, "lr": 1e-3}]
    assert unplanned == []
    assert match_planned([CONFIG], listed * 2) == ([], listed)  # a repeat no plan holds


def test_a_random_space_draws_the_same_trials_for_the_same_search_seed(tmp_path):
    from study.driver import StudyOptions, planned_trials
    from study_folder.search_space import space_from_text

    def planned(seed: int) -> list[dict]:
        text = (
            f"searcher: random\nnum_samples: 5\nsearch_seed: {seed}\n"
            "parameters: {lr: {loguniform: [1.0e-5, 1.0e-2]}, cell: {choice: [gru, lstm]}}\n"
        )
        space = space_from_text(text, tmp_path / "random.yaml")
        options = StudyOptions(space, "s", tmp_path, DATA, "sqlite:///x.db", "quick")
        return planned_trials(options)

    first, again, other = planned(0), planned(0), planned(1)
    assert len(first) == 5 and first == again
    assert [c["lr"] for c in first] != [c["lr"] for c in other]
    assert len({c["lr"] for c in first}) == 5


def test_trials_that_differ_only_in_seed_and_resources_are_one_row():
    from study_folder.records import row_key, row_of

    base = TrainConfig(cell="lstm").to_dict()
    again = TrainConfig(cell="lstm", seed=3, threads=4, workers=2).to_dict()
    other = TrainConfig(cell="gru", seed=3).to_dict()
    assert row_key(base) == row_key(again) != row_key(other)
    assert "seed" not in row_of(base) and row_of(base)["cell"] == "lstm"
