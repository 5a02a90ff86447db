"""A study takes over another study's ended trials of the configurations it plans (`reuse`):
exactly those, copied whole, and a confirmation trains only the seeds its search lacks."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from mlflow.tracking import MlflowClient

from mer_models.config import TrainConfig
from study_folder.budgets import BUDGETS
from study_folder.records import read_trials
from study_folder.reuse import REUSED_FROM_KEY, ReuseError, check_source, take_over
from study_folder.search_space import SpaceError, load_space
from tests.analysis.conftest import labelled_dataset  # noqa: F401 - a fixture
from tests.analysis.repeated import BASE, repeated_study
from tests.study.processes import RUN, run_driver

ROWS = [({"cell": "gru"}, 0.6), ({"cell": "lstm"}, 0.4)]


def planned(seeds: range) -> list[dict]:
    """The configs a space repeating ROWS over `seeds` plans, as the driver builds them."""
    return [
        TrainConfig.from_dict({**BUDGETS["quick"], **BASE, **row, "seed": s, "split": 0}).to_dict()
        for row, _ in ROWS
        for s in seeds
    ]


def test_the_trials_planned_and_ended_by_their_own_stop_are_taken_over(
    tmp_path,
    labelled_dataset,  # noqa: F811
):
    source = repeated_study(tmp_path / "search", labelled_dataset, ROWS, range(2), ("cell",))
    metrics = source / "trials" / "r1s1" / "metrics.json"
    dropped = json.loads(metrics.read_text()) | {"end_state": "race_dropped"}
    metrics.write_text(json.dumps(dropped))  # stopped at a rung: not its own stop
    study = tmp_path / "confirm"
    study.mkdir()
    # The hand-built trials carry TrainConfig's CUDA switches: a CPU study trains otherwise.
    assert take_over(source, study, planned(range(3)), "cpu") == []
    taken = take_over(source, study, planned(range(3)), "cuda")
    assert sorted(taken) == ["r0s0", "r0s1", "r1s0"]
    for trial in read_trials(study):
        original = source / "trials" / trial.key
        assert trial.metrics[REUSED_FROM_KEY] == str(original)
        assert (
            trial.metrics["test_roc_auc"]
            == json.loads((original / "metrics.json").read_text())["test_roc_auc"]
        )
        assert (
            trial.test_predictions.read_bytes() == (original / "test_predictions.npy").read_bytes()
        )
    # Again: every planned config it has is begun, nothing is taken twice.
    assert take_over(source, study, planned(range(3)), "cuda") == []
    assert take_over(source, study, planned(range(1, 3)), "cuda") == []


def test_a_source_is_refused_unless_it_is_a_study_on_the_same_data_and_metric(
    tmp_path,
    labelled_dataset,  # noqa: F811
):
    source = repeated_study(tmp_path / "search", labelled_dataset, ROWS, range(2), ("cell",))
    data = labelled_dataset.to_dict()
    check_source(source, data | {"split": 3}, "val_roc_auc")  # a trial's split is its own
    with pytest.raises(ReuseError, match="is not a study folder"):
        check_source(tmp_path, data, "val_roc_auc")
    with pytest.raises(ReuseError, match="trained on other data"):
        check_source(source, data | {"metadata": str(tmp_path)}, "val_roc_auc")
    with pytest.raises(ReuseError, match="best epochs by val_roc_auc, this space by val_pr_auc"):
        check_source(source, data, "val_pr_auc")


def test_reuse_is_a_folder_beside_the_space_and_not_for_optuna(tmp_path):
    folder = tmp_path / "spaces"
    folder.mkdir()
    grid = folder / "grid.yaml"
    grid.write_text("configs: [{cell: gru}]\nreuse: ../search\n")
    assert load_space(str(grid)).reuse == (tmp_path / "search").resolve()
    optuna = folder / "optuna.yaml"
    optuna.write_text(
        "searcher: optuna\nparameters: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\nreuse: .\n"
    )
    with pytest.raises(SpaceError, match="reuse: optuna proposes its own points"):
        load_space(str(optuna))
    grid.write_text("configs: [{cell: gru}]\nreuse: 3\n")
    with pytest.raises(SpaceError, match="reuse: expected the path of a study folder"):
        load_space(str(grid))


@pytest.mark.slow  # two real studies: Ray Tune, MLflow
def test_a_confirmation_trains_only_the_seeds_its_search_did_not_run(small_synthetic, tmp_path):
    from tests.study.test_survival import Study

    space = tmp_path / "search.yaml"
    space.write_text(
        "searcher: grid\nnum_samples: 1\nbudget: quick\nrepeats: 2\nscheduler: {type: fifo}\n"
        "parameters: {max_epochs: 2, patience: 2, width: 4, window: 64, batch_size: 16, "
        "layers: 1, units: 8, lr: 3.0e-3}\n"
        "configs:\n  - {cell: gru}\n  - {cell: lstm}\n"
    )
    search = Study(tmp_path, small_synthetic, space, "--max-concurrent", "2")
    search.run()
    confirm = search.dir / "confirm.yaml"
    assert "reuse: ." in confirm.read_text()
    confirmation = Study(tmp_path, small_synthetic, confirm, "--max-concurrent", "2")
    output = confirmation.run()
    assert "took over 4 ended trial(s) of search" in output
    folder = tmp_path / "ray_results" / "search-confirm"
    trials = read_trials(folder)
    assert len(trials) == 10  # 2 rows x 5 seeds
    taken = {t.key: t for t in trials if REUSED_FROM_KEY in t.metrics}
    assert sorted(t.config["seed"] for t in taken.values()) == [0, 0, 1, 1]
    for key, trial in taken.items():
        original = json.loads((search.dir / "trials" / key / "metrics.json").read_text())
        assert trial.metrics["test_roc_auc"] == original["test_roc_auc"]
    table = [line for line in output.splitlines() if line.split()[:1] in ([k] for k in taken)]
    assert len(table) == 4 and all(line.endswith(", taken over") for line in table)
    assert "4 of 10 trial(s) taken over from study search (reuse)" in output
    rows = json.loads((folder / "rows.json").read_text())
    assert [row["n"] for row in rows] == [5, 5]
    client = MlflowClient(confirmation.uri)
    experiment = client.get_experiment_by_name("search-confirm")
    runs = client.search_runs([experiment.experiment_id], "tags.`mer.role` = 'trial'")
    assert len(runs) == 10 and all(run.info.status == "FINISHED" for run in runs)
    for run in runs:  # a run taken over carries its whole history, as a trained one does
        assert len(client.get_metric_history(run.info.run_id, "val_roc_auc")) == 2

    # The search removed: a resume of its confirmation has what it took and goes on.
    shutil.rmtree(search.dir)
    resumed = run_driver(
        [sys.executable, str(RUN), "--name", "search-confirm", "--resume"]
        + ["--tracking-uri", confirmation.uri],
        tmp_path,
    )
    assert "every trial of study search-confirm has ended" in resumed.stdout
    assert len(read_trials(folder)) == 10
