"""Per-row results: each row's aggregates are what numpy and scipy make of its trials'
metrics.json, its ensemble is its trials' mean test predictions, and rows.json holds them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from analysis.rows import ROWS_FILE, row_results, summarise, write_rows
from mer_models.training.metrics import tagging_metrics
from study_folder.records import load_study, read_labels
from tests.analysis.repeated import repeated_study

SEARCHED = ("cbam", "cell")
ROWS = [({"cbam": True}, 0.8), ({"cbam": False}, 0.4), ({"cell": "lstm"}, 0.6)]


@pytest.fixture
def study(tmp_path, labelled_dataset):
    return repeated_study(tmp_path / "rows", labelled_dataset, ROWS, range(4), SEARCHED)


def read(study, trial_id: str, name: str = "metrics.json"):
    return json.loads((study / "trials" / trial_id / name).read_text())


def test_aggregates_equal_numpy_and_scipy_of_the_trials_metrics(study):
    table = row_results(load_study(study))
    assert [row.n for row in table.rows] == [4, 4, 4]
    for row in table.rows:
        ids = [trial.key for trial in row.trials]
        assert len({i[:2] for i in ids}) == 1  # one row's trials, and no other's
        for key, summary in (
            ("test_roc_auc", row.test_roc_auc),
            ("test_pr_auc", row.test_pr_auc),
            ("validation_roc_auc", row.validation),
        ):
            values = np.array([read(study, i)[key] for i in ids])
            half = stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)
            assert summary.mean == pytest.approx(values.mean())
            assert summary.sd == pytest.approx(values.std(ddof=1))
            assert summary.low == pytest.approx(values.mean() - half)
            assert summary.high == pytest.approx(values.mean() + half)
        assert row.mean_best_epoch == pytest.approx(
            np.mean([read(study, i)["best_epoch"] for i in ids])
        )
        labels, _ = read_labels(study, "test")
        mean = np.mean(
            [np.load(study / "trials" / i / "test_predictions.npy") for i in ids], axis=0
        )
        assert row.ensemble_test_roc_auc == pytest.approx(tagging_metrics(labels, mean)["roc_auc"])
        assert row.ensemble_test_pr_auc == pytest.approx(tagging_metrics(labels, mean)["pr_auc"])
    # Ranked by mean validation selection metric, and named as the runs are.
    means = [row.validation.mean for row in table.rows]
    assert means == sorted(means, reverse=True)
    assert [row.name for row in table.rows] == [
        "block GRU 256",  # signal 0.8
        "block LSTM 256",  # 0.6
        "no attention GRU 256",  # 0.4
    ]


def test_rows_json_has_the_named_keys(study):
    table = row_results(load_study(study))
    path = write_rows(table, study)
    assert path == study / ROWS_FILE
    rows = json.loads(path.read_text())
    assert len(rows) == 3
    for entry, row in zip(rows, table.rows, strict=True):
        assert entry["row"] == row.name and entry["n"] == 4
        for key in ("test_roc_auc", "test_pr_auc", "val_roc_auc"):
            assert set(entry[key]) == {"mean", "sd", "low", "high"}
            assert entry[key]["low"] <= entry[key]["mean"] <= entry[key]["high"]
        assert 0 <= entry["ensemble_test_roc_auc"] <= 1 and 0 <= entry["ensemble_test_pr_auc"] <= 1
        assert entry["trials"] == [trial.key for trial in row.trials]
        assert entry["trial_names"][0].startswith(row.name)


def test_a_single_trial_row_has_no_spread_and_unusable_trials_are_named(tmp_path, labelled_dataset):
    study = repeated_study(
        tmp_path / "one", labelled_dataset, ROWS[:2], range(3), SEARCHED, skip={(1, 1), (1, 2)}
    )
    failed = json.loads((study / "trials" / "r0s2" / "metrics.json").read_text())
    failed["end_state"] = "error"
    (study / "trials" / "r0s2" / "metrics.json").write_text(json.dumps(failed))
    table = row_results(load_study(study))
    assert [row.n for row in table.rows] == [2, 1]
    single = table.rows[1].test_roc_auc
    assert single.sd is None and single.low is None and single.high is None
    assert table.left_out == (("r0s2", "end state error"),)
    assert json.loads(write_rows(table, study).read_text())[1]["test_roc_auc"]["sd"] is None


def test_a_raced_row_that_was_dropped_leaves_with_all_its_trials(
    tmp_path, labelled_dataset, caplog
):
    """Two of row 1's trials were stopped at rung 1; its third had ended by patience before
    the rung: the row is out whole, not a row of one survivor."""
    study = repeated_study(
        tmp_path / "raced", labelled_dataset, ROWS[:2], range(3), SEARCHED, scheduler="race"
    )
    for trial in ("r1s0", "r1s1"):
        path = study / "trials" / trial / "metrics.json"
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({**metrics, "end_state": "race_dropped", "dropped_at_rung": 1}))
    with caplog.at_level("INFO", logger="analysis.rows"):
        table = row_results(load_study(study))
    assert [row.n for row in table.rows] == [3]
    why = "its row was dropped at rung 1 of the race"
    assert table.left_out == (("r1s0", why), ("r1s1", why), ("r1s2", why))
    # One reason said once, after the trials it holds for (a race drops dozens at once).
    assert f"trial(s) in no row: r1s0, r1s1, r1s2 ({why})" in caplog.text


def test_summarise_refuses_nothing():
    with pytest.raises(ValueError, match="no values"):
        summarise([])
