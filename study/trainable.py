"""The Ray Tune trainable: one trial runs `mer_models.training.train` on its config.

Ray Tune hands the trial a flat config dict (sampled parameters, and under
`row` one entry of the space's explicit `configs` list). Every epoch is
reported to Ray (schedulers read the validation ROC-AUC) and its checkpoint
kept in the study's checkpoint store (`study.checkpoints`), from which a
failed, moved or resumed trial continues. The trial works in a node-local
temporary folder, so nothing it writes on the way lands in the trial folder
that Ray syncs to storage.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from mer_models.training.trainer import train
from study.checkpoints import CheckpointStore

ROW_KEY = "row"  # the param-space key of the explicit configuration list
ERROR_KEY = "error"  # in a recorded result: the trial failed for good
SKIPPED_KEY = "skipped_checkpoints"  # reported once when damaged checkpoints were passed over

log = logging.getLogger(__name__)


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: its parameters, with its `configs` row on top."""
    values = {key: value for key, value in config.items() if key != ROW_KEY}
    values.update(config.get(ROW_KEY) or {})
    return TrainConfig.from_dict(values, source="trial config")


def run_trial(
    config: dict[str, Any],
    data: dict[str, Any],
    checkpoints: str,
    recorded: dict[str, dict[str, float]] | None = None,
) -> None:
    """Train one trial, continuing from its newest checkpoint that loads.

    `recorded`: the last epoch's result of each trial whose results the study
    already holds (a kill can come after a trial is recorded but before Ray's
    state says it ended); such a trial reports it again and ends, untrained.
    A trial recorded as failed (its result holds ERROR_KEY) fails again at
    once, so that Ray keeps it failed and `--retry-failed` can still resume it.
    """
    trial_id = tune.get_context().get_trial_id()
    if recorded and trial_id in recorded:
        if ERROR_KEY in recorded[trial_id]:
            raise RuntimeError(recorded[trial_id][ERROR_KEY])
        tune.report(recorded[trial_id])
        return
    train_config = trial_config(config)
    paths = DatasetPaths(**data)
    store = CheckpointStore(checkpoints, trial_id)
    work = Path(tempfile.mkdtemp(prefix=f"mer-trial-{trial_id}-"))
    try:
        restore_dir = None
        with store.newest() as found:
            if found.skipped:
                log.warning("trial %s: %s", trial_id, "; ".join(found.skipped))
            if found.folder is None and found.skipped:
                raise RuntimeError(
                    f"no checkpoint of trial {trial_id} loads: " + "; ".join(found.skipped)
                )
            if found.folder is not None:
                restore_dir = work / "restore"
                shutil.copytree(found.folder, restore_dir)
        notes = {SKIPPED_KEY: "; ".join(found.skipped)} if found.skipped else {}

        def report(record: dict[str, float], checkpoint_dir: Path) -> None:
            store.save(checkpoint_dir, int(record["epoch"]))
            tune.report({**record, **notes})
            notes.clear()

        # The study driver checked the data once before starting trials.
        train(
            train_config,
            paths,
            work / "run",
            on_epoch=report,
            restore=restore_dir,
            check_data=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
