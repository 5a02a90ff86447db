"""The training loop of one configuration.

Adam on binary cross-entropy over logits, early stopping on a validation
selection metric (macro ROC-AUC by default, as in the paper), and the best
epoch's weights for the test set (Gerczuk et al., MediaEval 2020). One function serves a Ray Tune trial (through `on_epoch`)
and the command line alike; this module never imports Ray or MLflow.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mer_models.config import TrainConfig
from mer_models.data.augment import BatchPreprocess, SpecAugment
from mer_models.data.check import require_valid_dataset
from mer_models.data.dataset import EpochSampler, EvalWindows, TrainWindows, make_loader
from mer_models.data.scaling import BandStats, band_stats
from mer_models.data.sources import window_source
from mer_models.data.splits import PARTS, DatasetPaths, SplitTable, cached_split
from mer_models.files import atomic_write_bytes, atomic_write_text
from mer_models.models import build_model
from mer_models.training.checkpoint import (
    BEST_MODEL_FILE,
    TEST_PREDICTIONS,
    VALIDATION_PREDICTIONS,
    EarlyStopping,
    TrainingState,
    load_checkpoint,
    save_best_model,
    save_checkpoint,
)
from mer_models.training.metrics import (
    BEST_VALUE_KEY,
    DEFAULT_SELECTION,
    METRICS,
    SELECTION_KEY,
    Metric,
    selection_metric,
    tagging_metrics,
)
from mer_models.training.step import autocast_for, load_optimizer_state, make_optimizer, make_step
from mer_models.training.thresholds import THRESHOLDS_FILE, tune_thresholds, write_thresholds

log = logging.getLogger(__name__)

# Called after every epoch with the epoch's metrics and the checkpoint folder
# just written; a Ray trainable reports both from here.
EpochCallback = Callable[[dict[str, float], Path], None]

_FINITE_CHECK_STEPS = 50  # steps between checks of the running loss (one sync each)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def train(
    config: TrainConfig,
    paths: DatasetPaths,
    out_dir: Path,
    *,
    on_epoch: EpochCallback | None = None,
    restore: Path | None = None,
    device: str | None = None,
    check_data: bool = True,
    selection: str = DEFAULT_SELECTION,
    decision_epochs: Collection[int] = (),
) -> dict[str, Any]:
    """Train one configuration; returns the final metrics (also in `out_dir/metrics.json`).

    `out_dir` receives `checkpoint/` after every epoch, and at the end the best
    epoch's `validation_predictions.npy`, `test_predictions.npy`,
    `best_model.pt`, `history.json`, `metrics.json` and `thresholds.txt` (per-tag
    decision thresholds tuned on validation). `restore` names a checkpoint
    folder to continue from; the result equals an uninterrupted run.
    `selection`: the per-epoch validation metric (`metrics.METRICS`) that early
    stopping and the best epoch follow. `decision_epochs`: the epochs after
    which a scheduler may stop the run from outside (its rungs).

    The best epoch's test predictions are made only when the run may end: at
    its last epoch, at early stopping and at the decision epochs, from the
    best epoch's weights. So a checkpoint written then holds them, and a
    model that keeps improving does not predict the test set at every epoch.
    """
    metric = selection_metric(selection, "selection")
    _require_same_split(config, paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = _set_up(config, paths, device, metric, check_data)
    if restore is not None:
        run.restore(restore)
    preprocess = BatchPreprocess(run.stats).to(device)
    loop = TrainingLoop(run.model, run.optimizer, device, config, config.channels_last, preprocess)
    loaders = _Loaders.build(config, paths, run.tables)
    checkpoint_dir = out_dir / "checkpoint"
    for epoch in range(run.state.epoch + 1, config.max_epochs + 1):
        if run.stopped_early:
            break
        record, validation = run.run_epoch(epoch, loop, loaders)
        if epoch in decision_epochs or epoch == config.max_epochs or run.stopped_early:
            run.predict_test(loop, loaders)
        run.save_checkpoint(checkpoint_dir)
        _log_epoch(record, validation, config.max_epochs)
        if on_epoch is not None:
            on_epoch(record, checkpoint_dir)
    # A run restored at or past its last epoch from a checkpoint that predates them.
    run.predict_test(loop, loaders)
    return run.finish(out_dir)


def _require_same_split(config: TrainConfig, paths: DatasetPaths) -> None:
    if config.split != paths.split:
        raise ValueError(
            f"the config trains on split {config.split} but the data is split-{paths.split} of "
            f"{paths.metadata}: give the same split to both"
        )


@dataclass
class _Run:
    """What the steps of `train` share: the data, the model and the best epoch so far."""

    config: TrainConfig
    metric: Metric
    tables: dict[str, SplitTable]
    stats: BandStats
    model: nn.Module
    optimizer: torch.optim.Optimizer
    state: TrainingState
    best_model: dict[str, torch.Tensor]
    best_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    best_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> tuple[str, ...]:
        return self.tables["train"].tags

    def restore(self, checkpoint: Path) -> None:
        """Continue from a checkpoint folder: weights, optimiser, progress and input scaling."""
        saved, self.best_predictions = load_checkpoint(checkpoint)
        self.model.load_state_dict(saved["model"])
        load_optimizer_state(self.optimizer, saved["optimizer"])  # onto the model's device
        self.state = TrainingState.from_dict(saved["state"])
        self.best_model = saved["best_model"]
        self.best_metrics = saved["best_metrics"]
        _check_selection(checkpoint, self.best_metrics, self.metric)
        self.stats = BandStats.from_dict(saved["band_stats"])
        log.info("restored %s at epoch %d", checkpoint, self.state.epoch)

    def run_epoch(
        self, epoch: int, loop: TrainingLoop, loaders: _Loaders
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Train one epoch, validate, keep the epoch if it is the best; its history record."""
        started = time.perf_counter()
        loaders.sampler.set_epoch(epoch)
        # Dropout draws from here: the same draws after a restore.
        torch.manual_seed(self.config.seed * 1_000_003 + epoch)
        train_loss, samples, train_seconds = loop.train_epoch(loaders.train, epoch)
        validation_scores = loop.predict(loaders.evaluation["validation"])
        validation = tagging_metrics(self.tables["validation"].labels, validation_scores)
        if self.state.early_stopping.update(epoch, validation[self.metric.key]):
            self._keep_best(epoch, validation, validation_scores)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            **{m.epoch: validation[m.key] for m in METRICS},
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            "samples_per_second": samples / train_seconds,
        }
        self.state.epoch = epoch
        self.state.history.append(record)
        return record, validation

    def _keep_best(
        self, epoch: int, validation: dict[str, float], validation_scores: np.ndarray
    ) -> None:
        """The new best epoch: its weights, and its validation predictions and metrics (its
        test predictions wait for `predict_test`)."""
        self.best_model = _cpu_copy(self.model.state_dict())
        self.best_predictions = {VALIDATION_PREDICTIONS: validation_scores}
        self.best_metrics = _summary(epoch, self.metric, validation)

    @property
    def stopped_early(self) -> bool:
        """Patience ran out after the last completed epoch."""
        return self.state.early_stopping.should_stop

    def predict_test(self, loop: TrainingLoop, loaders: _Loaders) -> None:
        """The best epoch's test predictions and metrics, once per best epoch."""
        if TEST_PREDICTIONS in self.best_predictions or not self.best_metrics:
            return
        live = self.best_metrics["best_epoch"] == self.state.epoch  # the model is the best
        with contextlib.nullcontext() if live else _weights(self.model, self.best_model):
            test_scores = loop.predict(loaders.evaluation["test"])
        self.best_predictions[TEST_PREDICTIONS] = test_scores
        test = tagging_metrics(self.tables["test"].labels, test_scores)
        self.best_metrics.update({m.test: test[m.key] for m in METRICS})

    def save_checkpoint(self, checkpoint_dir: Path) -> None:
        """Everything a restore needs, after the last completed epoch."""
        save_checkpoint(
            checkpoint_dir,
            model=self.model,
            optimizer=self.optimizer,
            state=self.state,
            best_model=self.best_model,
            extra={
                "best_metrics": self.best_metrics,
                "band_stats": self.stats.to_dict(),
                "config": self.config.to_dict(),
                "tags": list(self.tags),
            },
            best_predictions=self.best_predictions,
            summary={
                **self.state.to_dict(),
                "best_metrics": self.best_metrics,
                "end_state": _end_state(self.state, self.config),
            },
        )

    def finish(self, out_dir: Path) -> dict[str, Any]:
        """Write the best epoch's outputs and its tuned thresholds; the final metrics."""
        metrics = {
            **self.best_metrics,
            "epochs_run": self.state.epoch,
            "end_state": _end_state(self.state, self.config),
        }
        _write_outputs(
            out_dir,
            self.config,
            self.tags,
            self.stats,
            self.best_model,
            self.best_predictions,
            self.state,
            metrics,
        )
        if VALIDATION_PREDICTIONS in self.best_predictions:  # decisions when tagging new music
            scores = self.best_predictions[VALIDATION_PREDICTIONS]
            thresholds = tune_thresholds(self.tables["validation"].labels, scores)
            write_thresholds(out_dir / THRESHOLDS_FILE, self.tags, thresholds)
        return metrics


def _set_up(
    config: TrainConfig, paths: DatasetPaths, device: torch.device, metric: Metric, check_data: bool
) -> _Run:
    """The data's tables and input scaling, then a fresh model and optimiser on the device."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if check_data:
        require_valid_dataset(paths)
    tables = split_tables(paths)
    stats = band_stats(tables["train"], paths, config.window)

    torch.manual_seed(config.seed)
    model = build_model(config, n_tags=len(tables["train"].tags))
    if config.prior_bias:
        initialise_output_bias(model.output_layer, tables["train"].labels)
    model = model.to(
        device,
        memory_format=torch.channels_last if config.channels_last else torch.preserve_format,
    )
    optimizer = make_optimizer(model, config, device)
    return _Run(
        config=config,
        metric=metric,
        tables=tables,
        stats=stats,
        model=model,
        optimizer=optimizer,
        state=TrainingState(EarlyStopping(config.patience)),
        best_model=_cpu_copy(model.state_dict()),
    )


@dataclass
class _Loaders:
    """The training loader with its epoch sampler, and the evaluation loaders by part."""

    sampler: EpochSampler
    train: Any
    evaluation: dict[str, Any]

    @classmethod
    def build(
        cls, config: TrainConfig, paths: DatasetPaths, tables: dict[str, SplitTable]
    ) -> _Loaders:
        """The loaders of one run; the sampler reshuffles the training tracks each epoch."""
        sampler = EpochSampler(len(tables["train"]), seed=config.seed)
        augment = SpecAugment(config.time_mask, config.freq_mask)
        train = make_loader(
            TrainWindows(
                tables["train"], window_source(paths, tables["train"]), config.window, augment
            ),
            config.batch_size,
            config.workers,
            sampler=sampler,
            seed=config.seed,
            drop_last=len(tables["train"]) > config.batch_size,
        )
        evaluation = {
            part: make_loader(
                EvalWindows(
                    tables[part],
                    window_source(paths, tables[part]),
                    config.window,
                    config.eval_crops,
                ),
                config.eval_batch_size,
                config.workers,
            )
            for part in ("validation", "test")
        }
        return cls(sampler, train, evaluation)


def _log_epoch(record: dict[str, Any], validation: dict[str, float], max_epochs: int) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  val ROC-AUC %.4f  PR-AUC %.4f  %.1fs  %.0f samples/s",
        record["epoch"],
        max_epochs,
        record["train_loss"],
        validation["roc_auc"],
        validation["pr_auc"],
        record["seconds"],
        record["samples_per_second"],
    )


def initialise_output_bias(layer: nn.Linear, labels: np.ndarray) -> None:
    """Start every tag's logit at its training log-odds, so the first epochs learn tags.

    With 56 tags of 0.3-9% frequency, a zero bias starts at probability 0.5
    and the first few hundred steps only learn the tag priors; a small model
    on a few CPU minutes never gets past them. Counts are smoothed by one
    half, so a tag absent from training gets a finite bias.
    """
    positives = labels.sum(axis=0, dtype=np.float64) + 0.5
    negatives = len(labels) - positives + 1.0
    with torch.no_grad():
        layer.bias.copy_(torch.from_numpy(np.log(positives / negatives)).to(layer.bias.dtype))


class TrainingLoop:
    """One epoch of training, and prediction over an evaluation loader.

    The training step itself (eager, or one CUDA graph) comes from
    `step.make_step`; the loop moves batches to the device, keeps the
    running loss on the device and checks it is finite now and then.
    Batches arrive raw (`TrainWindows`: windows, labels, masks; `EvalWindows`:
    windows, labels) and are standardised and masked on the device.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        config: TrainConfig,
        channels_last: bool,
        preprocess: BatchPreprocess,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.optimizer = optimizer
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.step = make_step(model, optimizer, config, device, self.memory_format)
        self.autocast = autocast_for(config, device)

    def _to_device(self, windows: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Model input: raw windows moved to the device, standardised and masked there."""
        windows = windows.to(self.device, non_blocking=True)
        if masks is not None:
            masks = masks.to(self.device, non_blocking=True)
        return self.preprocess(windows, masks).contiguous(memory_format=self.memory_format)

    def train_epoch(self, loader, epoch: int) -> tuple[float, int, float]:
        """Mean loss, samples seen and seconds of one pass over the training loader."""
        self.model.train()
        running = torch.zeros((), device=self.device)
        steps = samples = 0
        started = time.perf_counter()
        for windows, labels, masks in loader:
            windows = self._to_device(windows, masks)
            labels = labels.to(self.device, non_blocking=True)
            running += self.step(windows, labels)
            steps += 1
            samples += labels.shape[0]
            if steps % _FINITE_CHECK_STEPS == 0:
                _require_finite(running, epoch, steps)
        _require_finite(running, epoch, steps)
        return float(running) / max(steps, 1), samples, time.perf_counter() - started

    @torch.inference_mode()
    def predict(self, loader) -> np.ndarray:
        """Sigmoid scores, float32 (tracks, tags), averaged over each track's windows."""
        self.model.eval()
        scores = []
        for windows, _ in loader:
            batch, crops = windows.shape[:2]
            with self.autocast():
                logits = self.model(self._to_device(windows.flatten(0, 1)))  # (B * K, tags)
            scores.append(torch.sigmoid(logits.float()).view(batch, crops, -1).mean(dim=1))
        return torch.cat(scores).cpu().numpy().astype(np.float32)


def _require_finite(running: torch.Tensor, epoch: int, steps: int) -> None:
    if not math.isfinite(float(running)):
        raise TrainingDiverged(
            f"the training loss became {float(running)} in epoch {epoch} (by step {steps}); "
            "stopping instead of training on. Lower the learning rate, or check the input data "
            "(python -m mer_models.data check)."
        )


def _end_state(state: TrainingState, config: TrainConfig) -> str:
    """How training stands after the last completed epoch ("running" while it goes on)."""
    if state.early_stopping.should_stop:
        return "early_stopped"
    return "finished" if state.epoch >= config.max_epochs else "running"


def _summary(epoch: int, metric: Metric, validation: dict[str, float]) -> dict[str, Any]:
    """The best epoch's metrics.json entries on validation, and which metric chose it (the
    test part's come with its test predictions)."""
    return {
        **{m.validation: validation[m.key] for m in METRICS},
        "best_epoch": epoch,
        SELECTION_KEY: metric.epoch,
        BEST_VALUE_KEY: validation[metric.key],
    }


def _check_selection(restore: Path, best_metrics: dict[str, Any], metric: Metric) -> None:
    """A checkpoint continues only under the metric its best epoch was chosen by."""
    chosen_by = best_metrics.get(SELECTION_KEY, DEFAULT_SELECTION)
    if best_metrics and chosen_by != metric.epoch:
        raise ValueError(
            f"checkpoint {restore} chose its best epoch by {chosen_by}, not {metric.epoch}: "
            f"continue it with the selection metric {chosen_by}, or train afresh"
        )


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()}


@contextlib.contextmanager
def _weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """The model with `weights` for a while, then its own again; copied in place, so the
    training step's CUDA graph keeps its tensors."""
    own = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield
    finally:
        model.load_state_dict(own)


def _write_outputs(
    out_dir: Path,
    config: TrainConfig,
    tags: tuple[str, ...],
    stats: BandStats,
    best_model: dict[str, torch.Tensor],
    best_predictions: dict[str, np.ndarray],
    state: TrainingState,
    metrics: dict[str, Any],
) -> None:
    """Each file whole or not at all; metrics.json, which says the run ended, last."""
    for name, scores in best_predictions.items():
        buffer = io.BytesIO()
        np.save(buffer, scores)
        atomic_write_bytes(out_dir / name, buffer.getvalue())
    save_best_model(
        out_dir / BEST_MODEL_FILE, best_model, config.to_dict(), list(tags), stats.to_dict()
    )
    atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2))
    atomic_write_text(out_dir / "history.json", json.dumps(state.history, indent=2))
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))


def split_tables(paths: DatasetPaths) -> dict[str, SplitTable]:
    """The three parts of a dataset, keyed by part name (parsed once per process)."""
    return {part: cached_split(paths, part) for part in PARTS}
