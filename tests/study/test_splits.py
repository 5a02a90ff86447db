"""Official splits in a space (`splits: [0, 1, ...]`): the key, the trials the driver plans
(every row on every split, with every seed), the split each trial is named and tagged by, and
the checks that refuse a study before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from study.driver import StudyOptions, planned_trials
from study_folder import records
from study_folder.search_space import SpaceError, space_from_text
from tests.study.processes import environment, study_command
from tracking.names import SPLIT_TAG, repeated_run_name, varied_draws

DATA = DatasetPaths("metadata", "melspecs", split=2)  # the options only plan trials
ROWS = [
    {"model": "crnn", "cbam": False, "cell": "gru", "units": 8},
    {"model": "crnn", "cbam": True, "cell": "gru", "units": 8},
]


def space(tmp_path: Path, text: str):
    return space_from_text(text, tmp_path / "space.yaml")


def options(tmp_path: Path, text: str, data: DatasetPaths = DATA) -> StudyOptions:
    return StudyOptions(space(tmp_path, text), "s", tmp_path, data, "sqlite:///x.db", "quick")


GRID = f"configs: {json.dumps(ROWS)}\nrepeats: 2\nsplits: [3, 1]\n"


def test_splits_multiply_the_trials_and_keep_their_order(tmp_path):
    parsed = space(tmp_path, GRID)
    assert parsed.splits == (3, 1)
    assert parsed.trial_count == 2 * 2 * 2 and parsed.draws == 4
    assert space(tmp_path, f"configs: {json.dumps(ROWS)}\n").splits == ()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("splits: []\n", r"splits: expected a list of distinct official split numbers"),
        ("splits: [0, 0]\n", r"splits: expected a list of distinct"),
        ("splits: [-1]\n", r"splits: expected a list of distinct"),
        ("splits: 3\n", r"splits: expected a list of distinct"),
        ("splits: [true]\n", r"splits: expected a list of distinct"),
        ("splits: ['1']\n", r"splits: expected a list of distinct"),
        (
            "searcher: optuna\nnum_samples: 2\nsplits: [0, 1]\n"
            "parameters: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n",
            r"splits: optuna learns from one trial per point",
        ),
        ("parameters: {split: 1}\n", r"parameters\.split: a trial's split comes from the study"),
        ("splits: [0, 1]\nconfigs: [{cell: gru, split: 1}]\n", r"configs\[0\]\.split: a trial"),
    ],
)
def test_bad_splits_are_refused_naming_the_key(tmp_path, content, expected):
    with pytest.raises(SpaceError, match=expected) as refused:
        space(tmp_path, content)
    assert str(tmp_path / "space.yaml") in str(refused.value)


def test_every_row_runs_on_every_split_with_every_seed(tmp_path):
    planned = planned_trials(options(tmp_path, GRID))
    assert len(planned) == 8
    # Draw by draw: seed 0 on the first split (every row), then on the next, then seed 1.
    assert [(c["seed"], c["split"], c["cbam"]) for c in planned] == [
        (seed, split, cbam) for seed in (0, 1) for split in (3, 1) for cbam in (False, True)
    ]
    assert len({records.row_key(c) for c in planned}) == 2  # a row: without seed and split
    for config in planned:
        TrainConfig.from_dict(config)  # whole configs, as config.json holds them


def test_a_study_without_splits_runs_on_its_datas_split(tmp_path):
    planned = planned_trials(options(tmp_path, f"configs: {json.dumps(ROWS)}\n"))
    assert [c["split"] for c in planned] == [2, 2]
    assert options(tmp_path, f"configs: {json.dumps(ROWS)}\n").splits == (2,)
    assert options(tmp_path, GRID).splits == (3, 1)


def test_a_trial_is_named_and_tagged_by_its_split_when_splits_vary():
    config = {**TrainConfig(cbam=False, units=8).to_dict(), "seed": 1, "split": 3}
    assert varied_draws(1, 1) == ()
    assert varied_draws(2, 5) == ("seed", "split")
    assert varied_draws(1, 5) == ("split",)
    assert repeated_run_name(config, ("cbam",), varied_draws(2, 5)) == (
        "no attention GRU 8 seed=1 split=3"
    )
    assert repeated_run_name(config, ("cbam",), varied_draws(1, 5)) == "no attention GRU 8 split=3"
    assert SPLIT_TAG == "mer.split"


def test_a_config_written_before_trials_had_a_split_reads_as_the_studys(tmp_path):
    """An older study's config.json has no split: its trials trained on the study's."""
    study = tmp_path / "old"
    study.mkdir()
    data = DatasetPaths(tmp_path / "metadata", tmp_path / "melspecs", split=4)
    record = records.StudyRecord(
        name="old",
        space="s.yaml",
        data=data.to_dict(),
        space_yaml="",
        budget="quick",
        scheduler="fifo",
        searched=(),
        trials=1,
        tracking_uri="sqlite:///x.db",
    )
    records.write_study(study, record)
    old = TrainConfig().to_dict()
    del old["split"]
    records.list_trial(study, "t1", old)
    (listed,) = records.read_trials(study)
    assert listed.config["split"] == 4


def run_study(tmp_path: Path, data: DatasetPaths, space_text: str, *extra: str):
    space_file = tmp_path / "splits.yaml"
    space_file.write_text(space_text)
    return subprocess.run(
        [*study_command(data, *extra, space=space_file), "--name", "s"],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_split_is_checked_before_anything_is_written(tmp_path, tiny_dataset):
    """split-1 of the dataset is damaged: the study is refused naming its file, and no
    study folder, MLflow store or Ray session appears."""
    split_1 = tiny_dataset.metadata / "data" / "splits" / "split-1"
    shutil.copytree(tiny_dataset.metadata / "data" / "splits" / "split-0", split_1)
    damaged = split_1 / "autotagging_moodtheme-test.tsv"
    lines = damaged.read_text().splitlines()
    track, *fields = lines[1].split("\t")
    fields[2] = "99/99999.mp3"  # PATH: a mel-spectrogram that is not there
    damaged.write_text("\n".join([lines[0], "\t".join([track, *fields]), *lines[2:]]) + "\n")
    done = run_study(tmp_path, tiny_dataset, "configs: [{cell: gru}]\nsplits: [0, 1]\n")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: dataset check failed: 1 problem(s) in split-1" in done.stderr
    assert f"{track}: {tiny_dataset.melspecs / '99/99999.npy'} not found" in done.stderr
    assert not (tmp_path / "ray_results").exists()
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "mlruns").exists()


def test_a_missing_split_is_refused_naming_its_file(tmp_path, tiny_dataset):
    done = run_study(tmp_path, tiny_dataset, "configs: [{cell: gru}]\nsplits: [0, 3]\n")
    assert done.returncode == 1
    assert "split-3" in done.stderr and "split file not found" in done.stderr
    assert not (tmp_path / "ray_results").exists()


def test_split_flag_and_a_spaces_splits_are_refused_together(tmp_path, tiny_dataset):
    done = run_study(tmp_path, tiny_dataset, "splits: [0, 1]\n", "--split", "1")
    assert done.returncode == 2
    assert "--split 1" in done.stderr and "leave out --split" in done.stderr
    assert not (tmp_path / "ray_results").exists()


SPLIT_STUDY = """\
searcher: grid
budget: quick
scheduler: {type: fifo}
parameters: {max_epochs: 2, patience: 2, width: 4, window: 64, batch_size: 16, lr: 3.0e-3}
configs:
  - {cbam: true, cell: gru, units: 8}
  - {cbam: false, cell: gru, units: 8}
splits: [0, 2]
"""


@pytest.mark.slow  # four two-epoch trials on a 150-track set: ~1 min on the 2-core VM
def test_a_study_over_two_splits_trains_each_trial_on_its_splits_tracks(small_synthetic, tmp_path):
    from mlflow.tracking import MlflowClient

    from mer_models.data.splits import load_split
    from mer_models.training.metrics import tagging_metrics

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_study(tmp_path, small_synthetic, SPLIT_STUDY, "--tracking-uri", tracking)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study_dir = tmp_path / "ray_results" / "s"
    study = records.load_study(study_dir)
    assert study.runs_on_splits == (0, 2) and study.data.split == 0
    assert sorted((t.config["split"], t.config["cbam"]) for t in study.trials) == [
        (0, False), (0, True), (2, False), (2, True)
    ]  # fmt: skip
    client = MlflowClient(tracking)
    runs = {
        run.data.tags["mer.trial_id"]: run
        for run in client.search_runs([client.get_experiment_by_name("s").experiment_id])
        if run.data.tags.get("mer.role") == "trial"
    }
    for trial in study.trials:
        split = trial.config["split"]
        data = DatasetPaths(small_synthetic.metadata, small_synthetic.melspecs, split=split)
        test = load_split(data, "test")
        predictions = trial.load_predictions("test")
        assert predictions.shape == test.labels.shape  # its split's test tracks, in order
        stored, _ = study.labels("test", split)
        assert (stored == test.labels).all()
        scored = tagging_metrics(test.labels, predictions)
        assert trial.metrics["test_roc_auc"] == pytest.approx(scored["roc_auc"], abs=1e-6)
        run = runs[trial.key]
        assert run.data.tags[SPLIT_TAG] == str(split) and run.data.params["split"] == str(split)
        assert run.info.run_name.endswith(f" split={split}")
        assert run.data.tags["mer.row"] == trial.metrics["row"]
    # Split 2's test tracks are others than split 0's: the trials did not share them.
    first, third = (
        load_split(
            DatasetPaths(small_synthetic.metadata, small_synthetic.melspecs, split=s), "test"
        )
        for s in (0, 2)
    )
    assert not set(first.track_ids) & set(third.track_ids)
    assert (study_dir / "split-2" / "test_groundtruth.npy").is_file()
    rows = json.loads((study_dir / "rows.json").read_text())
    assert sorted(row["n"] for row in rows) == [2, 2]
    assert all(sorted(split for _, split in row["draws"]) == [0, 2] for row in rows)
    effects = json.loads((study_dir / "effects.json").read_text())
    assert {effect["pairs"] for effect in effects} == {2}  # paired by seed and split
    (fusion,) = (study_dir / "fusions").iterdir()  # the study's top-2 fusion: split 0's trials
    members = json.loads((fusion / "metrics.json").read_text())["members"]
    assert set(members) == {trial.key for trial in study.trials if trial.config["split"] == 0}
