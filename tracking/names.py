"""Names as the MLflow UI shows them: tags, run names and metric names, defined once.

A trial's files (history.json, metrics.json) keep the trainer's keys; MLflow
gets the names below, which say what each number is: ``val_roc_auc`` is the
per-epoch validation macro ROC-AUC that ASHA reads by default,
``best_val_roc_auc`` and ``test_roc_auc`` are the scores at the best epoch
(the epoch of the best validation selection metric).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mer_models.config import architecture
from mer_models.models.registry import ARCHITECTURE_FIELDS
from mer_models.training.metrics import BEST_VALUE_KEY, METRICS

# Run and experiment tags --------------------------------------------------------------------

STUDY_TAG = "mer.study"  # the study a run belongs to: its name
STUDY_ID_TAG = "mer.study_id"  # ... and its id (study.json's study_id): a name may be reused
ROLE_TAG = "mer.role"  # study (the parent run), trial or fusion
TRIAL_TAG = "mer.trial_id"  # Ray Tune's trial id of a trial run
ROW_TAG = "mer.row"  # a trial run's row (its configuration without its seed): `row_name`
SEED_TAG = "mer.seed"  # a trial run's seed (repeats: N runs each row with seeds 0..N-1)
SPLIT_TAG = "mer.split"  # a trial run's official split (splits: [...] runs each row on each)
END_STATE_TAG = "mer.end_state"  # finished, early_stopped, asha_stopped, race_dropped, error
DROPPED_TAG = "mer.dropped_at_rung"  # a trial run whose row a race dropped: the rung (1, 2, ...)
FUSION_TAG = "mer.fusion"  # a fusion run's folder name (top2, greedy-top4, ...)
BEST_TRIAL_TAG = "mer.best_trial"  # on the parent run: the best trial's id
BEST_NAME_TAG = "mer.best_trial_name"  # on the parent run: the best trial's run name
BEST_CONFIG_TAG = "mer.best_config"  # on the parent run: the best trial's config, JSON
BEST_MODEL_TAG = "mer.best_model"  # on the parent run: models:/<study>-best/<version>
MODEL_NAME_TAG = "mer.registered_model"  # on the parent run: the name its best model takes
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a run under another in the UI
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the description shown in the UI
# MLflow 3's UI shows an experiment without a kind as a GenAI one (traces, token usage);
# this value makes it open on the runs table, as for model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# A race's records, shared by the study folder and its MLflow runs: the metrics.json key
# (and trial-run tag) of a dropped trial's rung, the rungs file (a parent-run artifact) and
# its decisions.
DROPPED_KEY = "dropped_at_rung"
RUNGS_FILE = "rungs.json"
BEST, KEPT, DROPPED = "best", "kept", "dropped"

# Metric names: trainer key -> MLflow name (the scores from the one table, metrics.METRICS) -------

EPOCH_METRICS: Mapping[str, str] = {  # one point per epoch, step = epoch
    "train_loss": "train_loss",
    **{metric.epoch: metric.epoch for metric in METRICS},  # what schedulers read
    "lr": "lr",
    "seconds": "epoch_seconds",
    "samples_per_second": "samples_per_second",
}
FINAL_METRICS: Mapping[str, str] = {  # once per trial, at the best epoch
    **{metric.validation: metric.best for metric in METRICS},
    **{metric.test: metric.test for metric in METRICS},
    BEST_VALUE_KEY: "best_val_selection_metric",
    "best_epoch": "best_epoch",
    "epochs_run": "epochs_run",
}


# The parent run of a race: per rung (step = the rung's epoch), the rows it kept and dropped
# and the best row's mean validation selection metric.
RUNG_METRICS = ("race_rows_kept", "race_rows_dropped", "race_best_mean")


def metric_key(official: str) -> str:
    """An official metric name as an MLflow key: ``ROC-AUC-macro`` -> ``roc_auc_macro``."""
    return re.sub(r"[^a-z0-9]+", "_", official.lower()).strip("_")


def fusion_metric(official: str) -> str:
    """The MLflow name of a fusion's test metric: ``fusion_test_roc_auc_macro``."""
    return f"fusion_test_{metric_key(official)}"


def mlflow_metrics(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, float]:
    """The entries of ``values`` that ``names`` knows, under their MLflow names, as floats."""
    return {mlflow: float(values[key]) for key, mlflow in names.items() if key in values}


# The parent run's comparison: each row's aggregates, each factor's effects (analysis.rows,
# analysis.effects), named by row and factor so that the UI's metric search finds them.
# MLflow allows letters, digits, _ - . space and / in a metric name (a colon too, but not on
# Windows); / separates the parts here, so a part has none of its own.
_NOT_IN_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. ]+")
MAX_NAME_PART = 100  # MLflow allows 250 characters in a whole name


def metric_name_part(text: str) -> str:
    """Text as one part of a metric name: ``lr=4.1e-4`` -> ``lr_4.1e-4``, never empty."""
    part = _NOT_IN_METRIC_NAME.sub("_", str(text))
    return re.sub(r" {2,}", " ", part)[:MAX_NAME_PART].strip(" .") or "_"


def row_metric(row: str, statistic: str) -> str:
    """A row's aggregate on the parent run: ``row/block GRU 256/test_roc_auc_mean``."""
    return f"row/{metric_name_part(row)}/{metric_name_part(statistic)}"


def effect_metric(factor: str, from_row: str, to_row: str, statistic: str) -> str:
    """A factor's effect between two rows on the parent run:
    ``effect/cell/block GRU 256 to block LSTM 256/test_roc_auc_difference``."""
    pair = f"{metric_name_part(from_row)} to {metric_name_part(to_row)}"
    return f"effect/{metric_name_part(factor)}/{pair}/{metric_name_part(statistic)}"


# Run names ---------------------------------------------------------------------------------

# ARCHITECTURE_FIELDS (the registry's) make up the architecture phrase ("block GRU 256",
# "attention CNN"): the model and the fields some models read and others do not.
# Short labels of other searched fields in run names (others keep their field name).
SHORT_LABELS = {"dropout": "drop", "batch_size": "batch", "window": "win", "weight_decay": "wd"}
MAX_RUN_NAME = 250  # MLflow's limit is longer; the runs table shows far less


def architecture_name(config: Mapping[str, Any]) -> str:
    """The model's registry phrase: ``attention CNN``, ``block GRU 256``, ``no attention LSTM
    2x128``. Architecture fields missing from ``config`` take the TrainConfig defaults."""
    return architecture(config).phrase


def format_value(value: Any) -> str:
    """A short, readable parameter value: 4.1e-4, 0.12, 64, true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            mantissa, exponent = f"{value:.1e}".split("e")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:.3g}"
    return str(value)


def trial_run_name(config: Mapping[str, Any], searched: Iterable[str]) -> str:
    """A trial's run name from the parameters its space varies.

    The architecture phrase when an architecture field varies (or nothing
    does), then ``label=value`` for every other searched field:
    ``block GRU 2x128 lr=4.1e-4 drop=0.12``.
    """
    searched = [key for key in searched if key in config]
    parts = []
    if not searched or any(key in ARCHITECTURE_FIELDS for key in searched):
        parts.append(architecture_name(config))
    for key in searched:
        if key not in ARCHITECTURE_FIELDS:
            parts.append(f"{SHORT_LABELS.get(key, key)}={format_value(config[key])}")
    return " ".join(parts)[:MAX_RUN_NAME]


# The config fields that make a trial one draw of its row (`study_folder.records.DRAW_FIELDS`).
SEED_FIELD = "seed"
SPLIT_FIELD = "split"


def row_name(config: Mapping[str, Any], searched: Iterable[str]) -> str:
    """A row's name: the run name of its trials without their seed, ``block GRU 256``.

    Trials of one row (the same configuration, other seeds) share it; a space
    that searches ``seed`` itself has one row per configuration, too.
    """
    return trial_run_name(config, [key for key in searched if key not in (SEED_FIELD, SPLIT_FIELD)])


def varied_draws(repeats: int, splits: int) -> tuple[str, ...]:
    """The draw fields a study varies (seed over `repeats`, split over its `splits`): they
    end its run names and are columns of its tables."""
    return (SEED_FIELD,) * (repeats > 1) + (SPLIT_FIELD,) * (splits > 1)


def repeated_run_name(
    config: Mapping[str, Any], searched: Iterable[str], draws: Iterable[str] = (SEED_FIELD,)
) -> str:
    """A trial's run name in a space that repeats rows over seeds (``repeats``) or splits
    (``splits``): its row's name and the draw fields that vary, ``block GRU 256 seed=3
    split=1``."""
    return " ".join([row_name(config, searched), *(f"{key}={config[key]}" for key in draws)])


def fusion_run_name(fusion: str, members: Iterable[str]) -> str:
    """``fusion top2: block GRU 256 + no attention GRU 256``."""
    return f"fusion {fusion}: {' + '.join(members)}"[:MAX_RUN_NAME]


def searched_fields(
    parameters: Mapping[str, Any], configs: Iterable[Mapping[str, Any]]
) -> tuple[str, ...]:
    """The fields a search space varies: its distributions, and the `configs` fields that differ.

    ``parameters`` maps a field to a fixed value or a one-key distribution
    mapping (``{choice: [...]}``); ``configs`` is the explicit list of rows.
    """
    varying = [key for key, spec in parameters.items() if isinstance(spec, Mapping)]
    rows = list(configs)
    for key in dict.fromkeys(key for row in rows for key in row):
        values = {repr(row.get(key)) for row in rows}
        if len(values) > 1 and key not in varying:
            varying.append(key)
    order = {name: i for i, name in enumerate(ARCHITECTURE_FIELDS)}
    return tuple(sorted(varying, key=lambda key: (order.get(key, len(order)), varying.index(key))))
