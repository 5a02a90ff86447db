"""`python -m mer_models.train`: the CUDA-graph switch, and a failed capture's one paragraph."""

from __future__ import annotations

import pytest

import mer_models.train as train_command
from mer_models.training.step import GraphCaptureFailed


@pytest.fixture
def trained(monkeypatch):
    """What the command hands `train`, in place of a training run."""
    calls = []

    def fake_train(config, paths, out, **options):
        calls.append(config)
        return {"epochs_run": 0}

    monkeypatch.setattr(train_command, "train", fake_train)
    return calls


def _main(tmp_path, *flags: str) -> int:
    data = ["--metadata", str(tmp_path / "metadata"), "--melspecs", str(tmp_path / "melspecs")]
    return train_command.main(["--out", str(tmp_path / "run"), *data, *flags])


def test_no_cuda_graphs_turns_the_graph_off(trained, tmp_path):
    assert _main(tmp_path) == 0
    assert _main(tmp_path, "--no-cuda-graphs") == 0
    assert [config.cuda_graphs for config in trained] == [True, False]


def test_a_failed_capture_is_one_paragraph_and_exit_1(monkeypatch, tmp_path, capsys):
    paragraph = "the training step of model crnn could not be captured ... --no-cuda-graphs"

    def failing_train(*args, **options):
        raise GraphCaptureFailed(paragraph)

    monkeypatch.setattr(train_command, "train", failing_train)
    assert _main(tmp_path) == 1
    assert capsys.readouterr().err == f"error: {paragraph}\n"


def test_the_command_shares_the_cores_with_its_loader_workers():
    import os

    from mer_models.config import TrainConfig
    from mer_models.train import default_threads

    cores = len(os.sched_getaffinity(0))
    assert default_threads(TrainConfig(workers=0)) == cores
    assert default_threads(TrainConfig(workers=1)) == max(1, cores // 2)
    assert default_threads(TrainConfig(workers=4 * cores)) == 1


def test_the_threads_the_training_gets(trained, tmp_path):
    from mer_models.config import TrainConfig
    from mer_models.train import default_threads

    assert _main(tmp_path) == 0
    assert trained[-1].threads == default_threads(TrainConfig())
    assert _main(tmp_path, "--threads", "3") == 0
    assert trained[-1].threads == 3
