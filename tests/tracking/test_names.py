"""Run names and metric names as the MLflow UI shows them."""

from __future__ import annotations

import pytest

from mer_models.config import TrainConfig, applicable_fields
from study_folder.search_space import load_space
from tracking.names import (
    EPOCH_METRICS,
    FINAL_METRICS,
    effect_metric,
    fusion_run_name,
    metric_name_part,
    row_metric,
    searched_fields,
    trial_run_name,
)


def names_of(space: str) -> list[str]:
    loaded = load_space(space)
    searched = searched_fields(loaded.parameters, loaded.configs)
    return [trial_run_name({**loaded.parameters, **row}, searched) for row in loaded.configs]


def test_table1_runs_are_named_by_their_row():
    assert names_of("table1") == [
        "no attention GRU 256",
        "no attention LSTM 256",
        "block GRU 2x128",
        "block GRU 256",
        "block LSTM 256",
        "attention CNN",
    ]


def test_a_sampled_space_names_its_runs_by_the_searched_values():
    space = load_space("wide")
    searched = searched_fields(space.parameters, space.configs)
    assert searched == ("cbam", "cell", "units", "layers", "lr", "dropout", "batch_size", "window")
    config = {
        "model": "crnn",
        "cbam": True,
        "cell": "gru",
        "units": 128,
        "layers": 2,
        "lr": 4.1234e-4,
        "dropout": 0.1234,
        "batch_size": 32,
        "window": 128,
    }
    name = trial_run_name(config, searched)
    assert name == "block GRU 2x128 lr=4.1e-4 drop=0.123 batch=32 win=128"
    assert len(name) < 60


def test_a_space_that_varies_only_the_learning_rate_names_it_alone():
    searched = searched_fields({"lr": {"loguniform": [1e-4, 1e-2]}, "cell": "lstm"}, [])
    assert searched == ("lr",)
    assert trial_run_name({"cell": "lstm", "lr": 0.02}, searched) == "lr=0.02"
    assert trial_run_name({"cell": "lstm"}, ()) == "block LSTM 256"


def test_fusion_run_name_lists_its_members():
    assert (
        fusion_run_name("top2", ["block GRU 256", "no attention GRU 256"])
        == "fusion top2: block GRU 256 + no attention GRU 256"
    )


def test_metric_names_tell_per_epoch_from_best_epoch_values():
    epoch, final = set(EPOCH_METRICS.values()), set(FINAL_METRICS.values())
    assert not epoch & final
    assert "val_roc_auc" in epoch and "epoch_seconds" in epoch and "seconds" not in epoch
    assert {"best_val_roc_auc", "test_roc_auc"} <= final
    assert not any(name.startswith("validation_") for name in final)


@pytest.mark.parametrize("model", ["crnn", "attention_cnn"])
def test_only_the_fields_a_model_reads_are_its_params(model):
    fields = applicable_fields(TrainConfig(model=model), "cpu")
    crnn_only = {"cell", "units", "layers", "cbam"}
    if model == "crnn":
        assert crnn_only <= set(fields)
    else:
        assert not crnn_only & set(fields)
        assert {"lr", "dropout", "width", "window"} <= set(fields)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_params_say_what_acts_on_the_device(device):
    """bf16 and CUDA graphs act on CUDA only: a CPU run records them false; channels_last
    acts on both."""
    config = TrainConfig(bf16=True, channels_last=True, cuda_graphs=False)
    fields = applicable_fields(config, device)
    assert fields["device"] == device
    on_cuda = device == "cuda"
    assert (fields["bf16"], fields["channels_last"], fields["cuda_graphs"]) == (
        on_cuda,
        True,
        False,
    )


def test_comparison_metric_names_keep_to_mlflows_characters():
    assert metric_name_part("block GRU 2x128 lr=4.1e-4 drop=0.12") == (
        "block GRU 2x128 lr_4.1e-4 drop_0.12"
    )
    assert metric_name_part("a/b:c") == "a_b_c" and metric_name_part("...") == "_"
    assert row_metric("no attention LSTM 256", "n") == "row/no attention LSTM 256/n"
    assert effect_metric("cell", "block GRU 256", "block LSTM 256", "test_roc_auc_low") == (
        "effect/cell/block GRU 256 to block LSTM 256/test_roc_auc_low"
    )
