"""The end-of-study table: Table 1 columns, best trial first, failed trials still listed."""

from __future__ import annotations

import json

import numpy as np

from study.summary import COLUMNS, columns, format_table, table_rows
from study_folder.records import load_study


def write_study(folder, trials: dict[str, dict], searched: list[str] | None = None) -> None:
    """A study folder as the driver writes it; `trials` maps an id to its config and metrics."""
    (folder / "study.json").write_text(
        json.dumps(
            {
                "name": folder.name,
                "space": "table1.yaml",
                "budget": "quick",
                "data": {"metadata": "m", "melspecs": "s", "split": 0, "subset": "moodtheme"},
                "searched": searched or [],
            }
        )
    )
    for trial_id, (config, metrics) in trials.items():
        trial = folder / "trials" / trial_id
        trial.mkdir(parents=True)
        (trial / "config.json").write_text(json.dumps(config))
        (trial / "metrics.json").write_text(json.dumps(metrics))
        if "validation_roc_auc" in metrics:
            for part in ("validation", "test"):
                np.save(trial / f"{part}_predictions.npy", np.zeros((2, 3), np.float32))


GRU = {"model": "crnn", "cbam": True, "cell": "gru", "units": 128, "layers": 2}
LSTM = {"model": "crnn", "cbam": False, "cell": "lstm", "units": 256, "layers": 1}
CNN = {"model": "attention_cnn", "cbam": True, "cell": "gru", "units": 256, "layers": 1}


def finished(val: float, state: str = "finished") -> dict:
    return {
        "validation_roc_auc": val,
        "test_roc_auc": val - 0.01,
        "test_pr_auc": 0.123,
        "epochs_run": 12,
        "end_state": state,
    }


def test_rows_are_ranked_by_validation_and_read_like_table_1(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    write_study(
        study,
        {
            "a": (GRU, finished(0.61, "asha_stopped")),
            "b": (LSTM, finished(0.72)),
            "c": (CNN, {"end_state": "error", "epochs_run": 1}),
        },
    )
    rows = table_rows(load_study(study))
    assert rows == [
        ("b", "none", "CRNN", "LSTM", "256", "72.0", "71.0", "12.3", "12", "finished"),
        ("a", "block", "CRNN", "GRU", "2 x 128", "61.0", "60.0", "12.3", "12", "asha_stopped"),
        ("c", "-", "attention CNN", "-", "-", "-", "-", "-", "1", "error"),
    ]
    lines = format_table(load_study(study)).splitlines()
    assert lines[0].split("  ")[0] == COLUMNS[0] == "trial"
    # Two header lines, the rows, and the note that ASHA made the budgets unequal.
    assert len(lines) == 3 + len(rows) and "--scheduler fifo" in lines[-1]


def test_every_searched_field_has_a_column(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    write_study(
        study,
        {
            "a": ({**GRU, "lr": 4.1e-4, "dropout": 0.12, "window": 96}, finished(0.6)),
            "b": ({**GRU, "lr": 2.0e-3, "dropout": 0.3, "window": 128}, finished(0.7)),
        },
        searched=["cbam", "lr", "dropout", "window"],
    )
    loaded = load_study(study)
    assert columns(loaded)[5:8] == ("lr", "dropout", "window")
    rows = table_rows(loaded)
    assert [row[:1] + row[5:8] for row in rows] == [
        ("b", "2.0e-3", "0.3", "128"),
        ("a", "4.1e-4", "0.12", "96"),
    ]
    assert "--scheduler fifo" not in format_table(loaded)  # no trial was stopped early


def test_a_study_whose_trials_all_failed_still_gets_its_table(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    write_study(
        study,
        {
            "a": (GRU, {"end_state": "error", "epochs_run": 0}),
            "b": (LSTM, {"end_state": "error", "epochs_run": 2}),
        },
    )
    table = format_table(load_study(study, require_results=False))
    assert table.count("error") == 2 and "2 x 128" in table
