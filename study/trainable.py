"""The Ray Tune trainable: one trial runs `mer_models.training.train` on its config.

Ray Tune hands the trial a flat config dict (sampled parameters, and under
`row` one entry of the space's explicit `configs` list). Every epoch is
reported with its checkpoint folder, so schedulers see the validation
ROC-AUC and a failed or moved trial continues from its last epoch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from mer_models.training.trainer import train

ROW_KEY = "row"  # the param-space key of the explicit configuration list


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: its parameters, with its `configs` row on top."""
    values = {key: value for key, value in config.items() if key != ROW_KEY}
    values.update(config.get(ROW_KEY) or {})
    return TrainConfig.from_dict(values, source="trial config")


def run_trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    train_config = trial_config(config)
    paths = DatasetPaths(**data)
    trial_dir = Path(tune.get_context().get_trial_dir())
    restore_dir = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restore_dir = Path(tempfile.mkdtemp(prefix="restore-", dir=trial_dir))
        checkpoint.to_directory(str(restore_dir))

    def report(record: dict[str, float], checkpoint_dir: Path) -> None:
        tune.report(record, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    try:
        # The study driver checked the data once before starting trials.
        train(
            train_config,
            paths,
            trial_dir / "run",
            on_epoch=report,
            restore=restore_dir,
            check_data=False,
        )
    finally:
        if restore_dir is not None:
            shutil.rmtree(restore_dir, ignore_errors=True)
