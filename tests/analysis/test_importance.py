"""Which hyperparameters mattered (analysis.importance), on study folders written by hand.

The planted study: 40 trials over a log-uniform learning rate whose lower half
of the range cannot learn (validation ROC-AUC about 0.5) while the upper half
learns (about 0.8), beside a dropout the scores ignore.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.importance import FanovaImportanceEvaluator

from analysis.importance import (
    FINAL,
    FIRST_RUNG,
    FOREST_TREES,
    IMPORTANCE_FILE,
    IMPORTANCE_FOLDER,
    compute_importance,
    importance_section,
    log_importance,
    mlflow_metrics,
    plot_importance,
    write_importance,
)
from mer_models.config import TrainConfig
from study_folder.records import StudyRecord, write_study
from tests.analysis.conftest import run_main

TRIALS = 40
RESAMPLES = 15  # fewer than the default: these tests stay quick
CONTROLS = 8
LR_RANGE = (1.0e-5, 1.0e-2)
LEARNS_FROM = math.sqrt(LR_RANGE[0] * LR_RANGE[1])  # the log-scale middle: 3.2e-4
DATA = {"metadata": "/m", "melspecs": "/s", "split": 0, "subset": "moodtheme"}


def space_yaml(scheduler: str) -> str:
    schedule = (
        "{type: asha, grace_period: 2, reduction_factor: 2, max_epochs: 6}"
        if scheduler == "asha"
        else "{type: fifo}"
    )
    return (
        f"searcher: random\nnum_samples: {TRIALS}\nscheduler: {schedule}\n"
        "parameters:\n  lr: {loguniform: [1.0e-5, 1.0e-2]}\n"  # LR_RANGE
        "  dropout: {uniform: [0.0, 0.5]}\n"
    )


def write_study_folder(
    folder: Path,
    trials: list[dict],
    scheduler: str = "fifo",
    searched: tuple[str, ...] = ("lr", "dropout"),
    tracking_uri: str = "",
) -> Path:
    """A study folder as the driver leaves it (no predictions: importance reads none).

    Each trial: `config` (TrainConfig fields), `history` (per-epoch dicts), `end_state`,
    and `value`, its best epoch's validation ROC-AUC.
    """
    record = StudyRecord(
        name=folder.name,
        space="planted.yaml",
        space_yaml=space_yaml(scheduler),
        budget="quick",
        scheduler=scheduler,
        searched=searched,
        trials=len(trials),
        data=DATA,
        tracking_uri=tracking_uri,
    )
    folder.mkdir(parents=True)
    write_study(folder, record)
    for index, trial in enumerate(trials):
        trial_folder = folder / "trials" / f"t{index:03d}"
        trial_folder.mkdir(parents=True)
        config = TrainConfig.from_dict(trial["config"]).to_dict()
        (trial_folder / "config.json").write_text(json.dumps(config))
        (trial_folder / "history.json").write_text(json.dumps(trial["history"]))
        metrics = {"end_state": trial["end_state"], "validation_roc_auc": trial["value"]}
        (trial_folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def planted_trials(seed: int = 0, shuffled: bool = False, asha: bool = False) -> list[dict]:
    """`TRIALS` trials: lr below LEARNS_FROM scores about 0.5, above it about 0.8; dropout is
    ignored. `shuffled`: the scores permuted across trials; `asha`: the odd trials stopped
    at epoch 2 (the first rung), the others run to epoch 6."""
    rng = np.random.default_rng(seed)
    lrs = np.exp(rng.uniform(*np.log(LR_RANGE), TRIALS))
    dropouts = rng.uniform(0.0, 0.5, TRIALS)
    values = np.where(lrs >= LEARNS_FROM, 0.8, 0.5) + rng.normal(0.0, 0.01, TRIALS)
    if shuffled:
        values = rng.permutation(values)
    trials = []
    for index, (lr, dropout, value) in enumerate(zip(lrs, dropouts, values, strict=True)):
        stopped = asha and index % 2 == 1
        epochs = 2 if stopped else 6
        # The score climbs to `value` at the last epoch: at the rung, 0.1 below it.
        history = [
            {"epoch": e, "val_roc_auc": float(value - 0.1 * (epochs - e) / epochs)}
            for e in range(1, epochs + 1)
        ]
        trials.append(
            {
                "config": {"lr": float(lr), "dropout": float(dropout)},
                "history": history,
                "end_state": "asha_stopped" if stopped else "finished",
                "value": float(value),
            }
        )
    return trials


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return write_study_folder(tmp_path_factory.mktemp("importance") / "planted", planted_trials())


@pytest.fixture(scope="module")
def planted_result(planted):
    return compute_importance(planted, resamples=RESAMPLES, controls=CONTROLS, seed=0)


def entries_by_parameter(result, budget: str = FINAL) -> dict:
    return {entry.parameter: entry for entry in result.entries if entry.budget == budget}


def test_the_planted_learning_rate_matters_and_the_ignored_dropout_does_not(planted_result):
    entries = entries_by_parameter(planted_result)
    assert set(entries) == {"lr", "dropout"}
    lr, dropout = entries["lr"], entries["dropout"]
    assert lr.matters and lr.low > lr.control_p95
    assert not dropout.matters
    assert lr.importance > 0.5 > dropout.importance
    assert lr.low <= lr.importance <= lr.high
    assert [budget.budget for budget in planted_result.budgets] == [FINAL]  # FIFO: one budget


def test_shuffled_scores_give_nothing_that_matters(tmp_path):
    folder = write_study_folder(tmp_path / "shuffled", planted_trials(shuffled=True))
    result = compute_importance(folder, resamples=RESAMPLES, controls=CONTROLS, seed=0)
    assert len(result.entries) == 2
    assert not any(entry.matters for entry in result.entries)
    assert "No parameter's importance rose above the control" in "\n".join(
        importance_section(result)
    )


def test_the_point_values_are_optunas_own_on_the_same_trials(planted, planted_result):
    trials = planted_trials()
    study = optuna.create_study(direction="maximize")
    distributions = {
        "lr": FloatDistribution(*LR_RANGE, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
    }
    for trial in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=trial["config"], distributions=distributions, value=trial["value"]
            )
        )
    evaluator = FanovaImportanceEvaluator(n_trees=FOREST_TREES, seed=0)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        expected = optuna.importance.get_param_importances(
            study, evaluator=evaluator, normalize=False
        )
    found = {name: entry.importance for name, entry in entries_by_parameter(planted_result).items()}
    assert found == pytest.approx(expected, rel=1e-12)
    # The point values do not depend on the refits that follow them.
    again = compute_importance(planted, resamples=1, controls=1, seed=0)
    assert {e.parameter: e.importance for e in again.entries} == found


def test_every_evaluator_names_its_importances_right(planted):
    # Optuna 5.1's mean decrease impurity labels unsorted parameters in the wrong order: the
    # planted lr must come out on top whatever the evaluator's quirks.
    result = compute_importance(
        planted, evaluator="mean_decrease_impurity", resamples=5, controls=5
    )
    assert result.entries[0].parameter == "lr" and result.entries[0].importance > 0.9


def test_asha_gives_the_first_rung_and_the_final_budget(tmp_path):
    folder = write_study_folder(tmp_path / "asha", planted_trials(asha=True), scheduler="asha")
    result = compute_importance(folder, resamples=RESAMPLES, controls=CONTROLS, seed=0)
    first, final = result.budgets
    assert (first.budget, first.epoch, len(first.points)) == (FIRST_RUNG, 2, TRIALS)
    assert (final.budget, final.epoch, len(final.points)) == (FINAL, None, TRIALS // 2)
    # At the rung, a trial's best score up to epoch 2, whatever it reached later.
    trial = planted_trials(asha=True)[0]
    assert first.points[0].value == pytest.approx(
        max(h["val_roc_auc"] for h in trial["history"][:2])
    )
    assert {(e.parameter, e.budget) for e in result.entries} == {
        (name, budget) for name in ("lr", "dropout") for budget in (FIRST_RUNG, FINAL)
    }
    assert entries_by_parameter(result, FIRST_RUNG)["lr"].matters
    metrics = mlflow_metrics(result)
    assert set(metrics) == {
        "importance/lr",
        "importance/dropout",
        "importance_first_rung/lr",
        "importance_first_rung/dropout",
    }
    assert (
        metrics["importance_first_rung/lr"]
        == entries_by_parameter(result, FIRST_RUNG)["lr"].importance
    )


def test_a_study_that_searched_nothing_has_no_importance(tmp_path, capsys):
    folder = write_study_folder(tmp_path / "fixed", planted_trials(), searched=())
    assert compute_importance(folder) is None
    assert importance_section(None) == []
    assert mlflow_metrics(None) == {}
    code, out, _ = run_main(capsys, "importance", folder)
    assert code == 0 and "searched no parameter" in out
    assert not (folder / IMPORTANCE_FILE).exists()


def test_too_few_trials_or_a_single_value_give_a_reason_not_an_error(tmp_path):
    few = write_study_folder(tmp_path / "few", planted_trials()[:5])
    result = compute_importance(few, resamples=RESAMPLES, controls=CONTROLS)
    assert result.entries == ()
    assert "5 usable trial(s)" in result.budgets[0].reason
    assert "5 usable trial(s)" in "\n".join(importance_section(result))
    trials = planted_trials()
    for trial in trials:
        trial["config"]["dropout"] = 0.2
    single = write_study_folder(tmp_path / "single", trials)
    result = compute_importance(single, resamples=RESAMPLES, controls=CONTROLS)
    assert [entry.parameter for entry in result.entries] == ["lr"]
    assert "single value (0.2)" in result.budgets[0].skipped["dropout"]


def test_the_section_has_the_table_the_plots_and_the_best_region(planted_result, tmp_path):
    plots = plot_importance(planted_result, tmp_path / "report")
    assert sorted(path.name for path in plots) == [
        "importance_parallel_final.png",
        "importance_slice_dropout.png",
        "importance_slice_lr.png",
    ]
    assert all(path.stat().st_size > 0 for path in plots)
    lines = importance_section(planted_result, plots, relative_to=tmp_path)
    text = "\n".join(lines)
    assert lines[0] == "## Which hyperparameters mattered"
    assert "| parameter | budget | importance [90% interval] | control p95 | matters |" in text
    assert "![importance_slice_lr](report/importance_slice_lr.png)" in text
    (sentence,) = [line for line in lines if line.startswith("- lr, final: the best 25%")]
    low, high = (float(v) for v in sentence.split(" had ")[1].split(" (searched")[0].split(" to "))
    assert LEARNS_FROM <= low < high <= LR_RANGE[1]  # the best trials all learned
    assert "- dropout" not in text


def test_the_command_writes_the_json_and_the_plots(planted, tmp_path, capsys):
    folder = write_study_folder(tmp_path / "cli", planted_trials())
    code, out, err = run_main(capsys, "importance", folder, "--resamples", "5", "--controls", "5")
    assert code == 0, err
    record = json.loads((folder / IMPORTANCE_FILE).read_text())
    assert record["evaluator"] == "fanova" and record["metric"] == "val_roc_auc"
    assert record["entries"]
    for entry in record["entries"]:
        assert set(entry) == {
            "parameter",
            "importance",
            "low",
            "high",
            "control_p95",
            "matters",
            "budget",
        }
    assert (folder / IMPORTANCE_FOLDER / "importance_slice_lr.png").is_file()
    assert "| lr | final |" in out
    assert "mlflow_logged\tFalse" in out  # the study has no MLflow store
    # Run again (with another evaluator): the plot folder is replaced.
    code, _, err = run_main(
        capsys, "importance", folder, "--evaluator", "ped_anova", "--resamples", "5"
    )
    assert code == 0, err
    assert json.loads((folder / IMPORTANCE_FILE).read_text())["evaluator"] == "ped_anova"


@pytest.mark.parametrize(("flag", "value"), [("--metric", "val_accuracy"), ("--evaluator", "shap")])
def test_a_bad_metric_or_evaluator_exits_2_with_one_line(planted, capsys, flag, value):
    code, out, err = run_main(capsys, "importance", planted, flag, value)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and value in err


def test_the_parent_run_gets_the_importances_and_plots(planted_result, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("tracked")
    parent = client.create_run(experiment, tags={"mer.role": "study", "mer.study": "tracked"})
    folder = write_study_folder(tmp_path / "tracked", planted_trials(), tracking_uri=uri)
    files = [write_importance(planted_result, folder), *plot_importance(planted_result, tmp_path)]
    assert log_importance(folder, planted_result, files)
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics["importance/lr"] == pytest.approx(
        entries_by_parameter(planted_result)["lr"].importance
    )
    logged = {item.path for item in client.list_artifacts(parent.info.run_id, "importance")}
    assert "importance/importance.json" in logged and "importance/importance_slice_lr.png" in logged
