from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mer_models.config import TrainConfig
from mer_models.data import load_split
from mer_models.training.trainer import TrainingDiverged, TrainingLoop, train
from tests.conftest import write_dataset

SMALL = TrainConfig(
    width=8,
    units=16,
    window=96,
    batch_size=8,
    max_epochs=4,
    patience=10,
    workers=0,
    dropout=0.2,
    seed=3,
)


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    return write_dataset(
        tmp_path / "data",
        {"train": [200] * 24 + [60] * 2, "validation": [200] * 10, "test": [150] * 10},
    )


class Crash(RuntimeError):
    pass


def test_outputs_have_the_documented_shapes_and_keys(dataset, tmp_path):
    metrics = train(SMALL.replace(max_epochs=2), dataset, tmp_path / "run")
    run = tmp_path / "run"
    for part, rows in (("validation", 10), ("test", 10)):
        scores = np.load(run / f"{part}_predictions.npy")
        assert scores.dtype == np.float32 and scores.shape == (rows, 4)
        assert ((scores > 0) & (scores < 1)).all()
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == metrics
    for key in (
        "validation_roc_auc",
        "validation_pr_auc",
        "test_roc_auc",
        "test_pr_auc",
        "validation_roc_auc_micro",
        "test_pr_auc_micro",
        "best_epoch",
    ):
        assert 0 <= saved[key] <= 2
    assert saved["epochs_run"] == 2 and saved["end_state"] == "finished"
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert set(history[0]) == {
        "epoch",
        "train_loss",
        "val_roc_auc",
        "val_pr_auc",
        "val_roc_auc_micro",
        "val_pr_auc_micro",
        "lr",
        "seconds",
        "samples_per_second",
    }
    best = max(history, key=lambda row: row["val_roc_auc"])
    assert saved["best_epoch"] == best["epoch"]
    assert saved["validation_roc_auc"] == pytest.approx(best["val_roc_auc"])
    assert saved["selection_metric"] == "val_roc_auc"
    assert saved["best_metric"] == saved["validation_roc_auc"]


def test_the_selection_metric_chooses_the_best_epoch(dataset, tmp_path):
    """Selected by validation PR-AUC, the best epoch is the epoch of the best PR-AUC, and a
    checkpoint chosen by one metric does not continue under another."""
    config = SMALL.replace(max_epochs=4, patience=0)
    metrics = train(config, dataset, tmp_path / "pr", selection="val_pr_auc")
    history = json.loads((tmp_path / "pr" / "history.json").read_text())
    best = max(history, key=lambda row: (row["val_pr_auc"], -row["epoch"]))
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["validation_pr_auc"] == pytest.approx(best["val_pr_auc"])
    assert metrics["selection_metric"] == "val_pr_auc"
    assert metrics["best_metric"] == metrics["validation_pr_auc"]
    assert len({row["epoch"] for row in history}) == 4
    with pytest.raises(ValueError, match="by val_pr_auc, not val_roc_auc"):
        train(config, dataset, tmp_path / "pr2", restore=tmp_path / "pr" / "checkpoint")
    with pytest.raises(ValueError, match="unknown selection metric 'val_f1'.*val_pr_auc"):
        train(config, dataset, tmp_path / "bad", selection="val_f1")


def test_restored_run_equals_an_uninterrupted_run(dataset, tmp_path):
    uninterrupted = train(SMALL, dataset, tmp_path / "a")

    def crash_after_two(record, checkpoint):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(SMALL, dataset, tmp_path / "b", on_epoch=crash_after_two)
    resumed = train(SMALL, dataset, tmp_path / "b", restore=tmp_path / "b" / "checkpoint")
    assert resumed == uninterrupted
    a = json.loads((tmp_path / "a" / "history.json").read_text())
    b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_roc_auc"] for r in a] == [r["val_roc_auc"] for r in b]
    for name in ("validation_predictions.npy", "test_predictions.npy"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
        )
    weights_a = torch.load(tmp_path / "a" / "best_model.pt")["model"]
    weights_b = torch.load(tmp_path / "b" / "best_model.pt")["model"]
    for name, tensor in weights_a.items():
        torch.testing.assert_close(tensor, weights_b[name], rtol=0, atol=0)


def test_the_test_set_is_predicted_only_where_the_run_may_end(dataset, tmp_path, monkeypatch):
    """The best epoch's test predictions are made at the decision epochs and the last, from
    its weights: the same scores as predicting at every new best, fewer test passes, and
    every checkpoint written where the run may be stopped holds them."""
    passes = []
    predict = TrainingLoop.predict

    def counting(loop, loader):
        if loader.dataset.table.file.stem.endswith("test"):
            passes.append(loader)
        return predict(loop, loader)

    def keeping(held):
        def look(record, checkpoint):
            summary = json.loads((checkpoint / "summary.json").read_text())
            file = checkpoint / "test_predictions.npy"
            held[record["epoch"]] = (
                np.load(file) if file.is_file() else None,
                "test_roc_auc" in summary["best_metrics"],
            )

        return look

    monkeypatch.setattr(TrainingLoop, "predict", counting)
    # A run whose validation score falls right after a new best, before its last epoch:
    # there, a decision epoch, the model is not the best epoch's, whose weights must make
    # the test predictions. Which seed gives one depends on the kernels' sums: several are
    # tried, until one also improves after it or at least twice before it (so that
    # predicting at every new best would cost more passes).
    candidates = [SMALL.replace(lr=lr, seed=seed) for lr in (3e-2, 1e-1) for seed in range(3, 9)]
    for attempt, config in enumerate(candidates):
        passes.clear()
        eager_held = {}
        eager = train(
            config,
            dataset,
            tmp_path / f"eager{attempt}",
            decision_epochs=range(1, 5),
            on_epoch=keeping(eager_held),
        )
        eager_passes = len(passes)
        history = json.loads((tmp_path / f"eager{attempt}" / "history.json").read_text())
        scores = [row["val_roc_auc"] for row in history]
        new_bests = [e for e in range(1, 5) if scores[e - 1] > max(scores[: e - 1], default=-1)]
        after_best = [e for e in range(2, 4) if e not in new_bests and e - 1 in new_bests]
        if after_best:
            decision = after_best[0]
            deferred_passes = 1 + any(e > decision for e in new_bests)  # there, and at the end
            if deferred_passes < eager_passes:
                break
    else:
        pytest.fail(f"no run fell after a new best and improved enough; the last: {scores}")
    assert eager_passes == len(new_bests)
    eager_dir, deferred_held = tmp_path / f"eager{attempt}", {}

    passes.clear()
    deferred = train(
        config,
        dataset,
        tmp_path / "deferred",
        decision_epochs=(decision,),
        on_epoch=keeping(deferred_held),
    )
    assert deferred == eager
    for name in ("validation_predictions.npy", "test_predictions.npy"):
        np.testing.assert_array_equal(
            np.load(eager_dir / name), np.load(tmp_path / "deferred" / name)
        )
    assert len(passes) == deferred_passes < eager_passes
    for epoch, (scores_held, has_metrics) in deferred_held.items():
        best = max(e for e in new_bests if e <= epoch)
        made = epoch in (decision, 4) or (epoch > decision and best <= decision)
        assert (scores_held is not None) == has_metrics == made, (epoch, new_bests, decision)
        if made:
            np.testing.assert_array_equal(scores_held, eager_held[epoch][0])


class Planted:
    """Unpickled, it creates `path`: a checkpoint that would run code on load."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_checkpoint_is_refused_and_runs_no_code(dataset, tmp_path):
    """`mer_models.train --resume` on a checkpoint that holds code: a clear error, exit 1,
    and the code never ran (checkpoints load with weights_only)."""
    out, marker = tmp_path / "run", tmp_path / "planted-code-ran"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"model": Planted(marker)}, out / "checkpoint" / "checkpoint.pt")
    config = tmp_path / "config.yaml"
    config.write_text("width: 4\nunits: 8\nwindow: 64\nbatch_size: 8\nmax_epochs: 2\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mer_models.train",
            "--config",
            str(config),
            "--out",
            str(out),
            "--resume",
            "--metadata",
            str(dataset.metadata),
            "--melspecs",
            str(dataset.melspecs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MER_MODELS_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 1, done.stderr
    assert not marker.exists(), "the checkpoint ran code"
    assert "checkpoint.pt: does not load as a checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_early_stopping_keeps_the_best_epoch(dataset, tmp_path):
    metrics = train(SMALL.replace(max_epochs=30, patience=2, lr=3e-2), dataset, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    scores = [row["val_roc_auc"] for row in history]
    best_epoch = int(np.argmax(scores)) + 1
    assert metrics["end_state"] == "early_stopped"
    assert metrics["epochs_run"] == best_epoch + 2 == len(history)
    assert metrics["best_epoch"] == best_epoch


def test_a_nan_loss_stops_training_with_an_error(dataset, tmp_path, monkeypatch):
    """Weights poisoned with NaN: the first epoch must fail loudly, report nothing, write nothing."""
    import mer_models.training.trainer as trainer_module

    build = trainer_module.build_model

    def build_poisoned(config, n_tags, n_bands=96):
        model = build(config, n_tags, n_bands)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    monkeypatch.setattr(trainer_module, "build_model", build_poisoned)
    reported = []
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 1"):
        train(SMALL, dataset, tmp_path / "run", on_epoch=lambda record, _: reported.append(record))
    assert reported == []
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_eval_crops_average_several_windows(dataset, tmp_path):
    one = train(SMALL.replace(max_epochs=1), dataset, tmp_path / "one")
    three = train(SMALL.replace(max_epochs=1, eval_crops=3), dataset, tmp_path / "three")
    assert one["validation_roc_auc"] != three["validation_roc_auc"]
    labels = load_split(dataset, "test").labels
    assert np.load(tmp_path / "three" / "test_predictions.npy").shape == labels.shape


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """Exact equality between two CUDA runs: cuDNN's deterministic algorithms, no autotuning
    (otherwise two runs may pick kernels that sum in another order)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _crashed_and_resumed(config: TrainConfig, dataset, out) -> dict:
    """A CUDA run that crashes after epoch 2, then continues from its checkpoint."""

    def crash_after_two(record, checkpoint):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(config, dataset, out, on_epoch=crash_after_two, device="cuda")
    return train(config, dataset, out, restore=out / "checkpoint", device="cuda")


def _train_losses(run) -> list[float]:
    return [row["train_loss"] for row in json.loads((run / "history.json").read_text())]


@needs_cuda
def test_a_graphed_run_restores_exactly_and_agrees_with_an_eager_run(
    dataset, tmp_path, deterministic_cudnn
):
    """On CUDA: every step is a replay, so a restored run repeats the uninterrupted one."""
    config = SMALL.replace(cuda_graphs=True, bf16=False, dropout=0.0)
    uninterrupted = train(config, dataset, tmp_path / "a", device="cuda")
    resumed = _crashed_and_resumed(config, dataset, tmp_path / "b")
    assert resumed == uninterrupted
    assert _train_losses(tmp_path / "b") == _train_losses(tmp_path / "a")
    eager = train(config.replace(cuda_graphs=False), dataset, tmp_path / "c", device="cuda")
    np.testing.assert_allclose(
        _train_losses(tmp_path / "a"), _train_losses(tmp_path / "c"), rtol=1e-3
    )
    assert eager["best_epoch"] == uninterrupted["best_epoch"]
    # The graph run's checkpoint (capturable Adam, step counts on the GPU) continues on a CPU.
    on_cpu = train(
        config, dataset, tmp_path / "d", restore=tmp_path / "b" / "checkpoint", device="cpu"
    )
    assert on_cpu["epochs_run"] == config.max_epochs


@needs_cuda
def test_a_graphed_bf16_run_with_dropout_restores_exactly_and_agrees_with_an_eager_run(
    dataset, tmp_path, deterministic_cudnn
):
    """The trainer's own CUDA defaults (bf16 autocast, channels_last, the graph) with dropout:
    the masks are seeded per epoch, so a restored run is the uninterrupted one exactly, and
    the eager step draws the same masks (bf16 tolerances)."""
    config = SMALL.replace(cuda_graphs=True, bf16=True, channels_last=True, dropout=0.3)
    uninterrupted = train(config, dataset, tmp_path / "a", device="cuda")
    assert _crashed_and_resumed(config, dataset, tmp_path / "b") == uninterrupted
    assert _train_losses(tmp_path / "b") == _train_losses(tmp_path / "a")
    train(config.replace(cuda_graphs=False), dataset, tmp_path / "c", device="cuda")
    graph, eager = _train_losses(tmp_path / "a"), _train_losses(tmp_path / "c")
    assert np.isfinite(graph).all()
    np.testing.assert_allclose(graph, eager, rtol=2e-2)
    without = train(config.replace(dropout=0.0), dataset, tmp_path / "e", device="cuda")
    assert without["epochs_run"] == config.max_epochs
    assert not np.allclose(_train_losses(tmp_path / "e"), graph, rtol=1e-3)  # dropout acted
