"""Hand-built studies with repeated seeds: rows of a grid, each trained (here: scored) per seed.

A trial's scores separate its labels by its row's ``signal`` plus noise drawn
from its own (row, seed, part): rows of equal signal differ by noise only,
and a row of signal 0 cannot learn. metrics.json holds what those scores
score, as the driver writes it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from mer_models.config import TrainConfig
from mer_models.data import DatasetPaths
from mer_models.training.metrics import tagging_metrics
from study_folder.budgets import BUDGETS
from study_folder.records import read_labels, write_groundtruth
from tests.analysis.conftest import member_scores
from tracking.names import trial_run_name

BASE = {"model": "crnn", "cbam": True, "cell": "gru", "units": 256, "layers": 1}


def write_trial(
    study: Path,
    trial_id: str,
    config: dict[str, Any],
    signal: float,
    noise_seed: int,
    searched: tuple[str, ...],
    end_state: str = "finished",
    best_epoch: int = 3,
    labels_split: int | None = None,
) -> dict[str, Any]:
    """A trial folder as the driver writes it; its metrics (scored on the labels of
    `labels_split`: None, the study's own split)."""
    folder = study / "trials" / trial_id
    folder.mkdir(parents=True)
    whole = TrainConfig.from_dict(config).to_dict()
    (folder / "config.json").write_text(json.dumps(whole))
    metrics: dict[str, Any] = {
        "end_state": end_state,
        "epochs_run": best_epoch + 1,
        "best_epoch": best_epoch,
        "selection_metric": "val_roc_auc",
        "trial_name": trial_run_name(whole, searched),
    }
    history = []
    for offset, part in enumerate(("validation", "test")):
        labels, _ = read_labels(study, part, labels_split)
        predicted = member_scores(labels, 1000 * noise_seed + offset, signal)
        np.save(folder / f"{part}_predictions.npy", predicted)
        values = tagging_metrics(labels, predicted)
        metrics[f"{part}_roc_auc"] = values["roc_auc"]
        metrics[f"{part}_pr_auc"] = values["pr_auc"]
    metrics["best_metric"] = metrics["validation_roc_auc"]
    for epoch in range(1, best_epoch + 2):
        value = 0.5 + (metrics["validation_roc_auc"] - 0.5) * min(epoch / best_epoch, 1.0)
        history.append({"epoch": epoch, "val_roc_auc": value, "val_pr_auc": value / 2})
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def repeated_study(
    folder: Path,
    data: DatasetPaths,
    rows: list[tuple[dict[str, Any], float]],
    seeds: range | list[int],
    searched: tuple[str, ...],
    scheduler: str = "fifo",
    skip: set[tuple[int, int]] = frozenset(),
    splits: tuple[int, ...] = (),
) -> Path:
    """A finished study of ``rows`` (overrides of BASE, signal) x ``seeds`` (x ``splits`` of
    ``data``, its own split first, when given); (row, seed) pairs in ``skip`` are never
    trained. Trial ids are ``r<row>s<seed>``, with ``p<split>`` over splits."""
    folder.mkdir(parents=True)
    draws = [(s, p) for s in seeds for p in (splits or (data.split,))]
    trials = [(r, s, p) for r in range(len(rows)) for s, p in draws if (r, s) not in skip]
    description = {
        "name": folder.name,
        "space": "repeated.yaml",
        "data": data.to_dict(),
        "searched": [*searched, "seed"],
        "metric": "val_roc_auc",
        "scheduler": scheduler,
        "budget": "quick",
        "trials": len(trials),
        "splits": list(splits),
    }
    (folder / "study.json").write_text(json.dumps(description))
    for split in splits or (data.split,):
        own = split != data.split
        write_groundtruth(folder, dataclasses.replace(data, split=split), own_folder=own)
    for r, s, p in trials:
        overrides, signal = rows[r]
        # As the driver merges them.
        config = {**BUDGETS["quick"], **BASE, **overrides, "seed": s, "split": p}
        name = f"r{r}s{s}" + (f"p{p}" if splits else "")
        noise = 100 * r + s + 10_000 * p
        labels_split = p if p != data.split else None
        write_trial(
            folder, name, config, signal, noise, (*searched, "seed"), labels_split=labels_split
        )
    return folder
