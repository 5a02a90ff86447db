"""Learning on the synthetic dataset, against a shuffled-label control."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mer_models.config import TrainConfig
from mer_models.data import DatasetPaths, load_split
from mer_models.data.synthetic import synthetic_paths, write_synthetic
from mer_models.models import build_model
from mer_models.training.trainer import initialise_output_bias, train

# A small CRNN: about 15 s of one CPU core for 12 epochs of 600 training tracks.
SMALL = TrainConfig(
    cbam=False,
    units=32,
    width=4,
    window=64,
    batch_size=16,
    lr=3e-3,
    max_epochs=12,
    patience=12,
    workers=0,
    threads=1,
    seed=0,
)
LABEL_COLUMNS = 5  # TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION, then the tags


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> DatasetPaths:
    root = tmp_path_factory.mktemp("learning") / "synthetic"
    write_synthetic(root, tracks=1000, seed=0)
    return synthetic_paths(root)


def with_shuffled_training_labels(paths: DatasetPaths, root, seed: int = 0) -> DatasetPaths:
    """A copy of the metadata whose training tracks carry each other's tags."""
    metadata = root / "metadata"
    shutil.copytree(paths.metadata, metadata)
    split_file = DatasetPaths(metadata, paths.melspecs).split_file("train")
    header, *rows = split_file.read_bytes().decode().splitlines()
    fields = [row.split("\t") for row in rows]
    tags = [row[LABEL_COLUMNS:] for row in fields]
    order = np.random.default_rng(seed).permutation(len(tags))
    shuffled = [row[:LABEL_COLUMNS] + tags[i] for row, i in zip(fields, order, strict=True)]
    lines = [header, *("\t".join(row) for row in shuffled)]
    split_file.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return DatasetPaths(metadata, paths.melspecs)


@pytest.mark.slow
def test_a_small_model_learns_what_shuffled_labels_cannot_teach(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    control = with_shuffled_training_labels(synthetic, tmp_path / "shuffled")
    real_labels = load_split(synthetic, "train").labels
    shuffled_labels = load_split(control, "train").labels
    assert (real_labels.sum(axis=0) == shuffled_labels.sum(axis=0)).all()  # same tag counts
    assert (real_labels != shuffled_labels).any(axis=1).mean() > 0.8  # other tracks' tags

    learned = train(SMALL, synthetic, tmp_path / "real")
    guessed = train(SMALL, control, tmp_path / "control")

    assert learned["validation_roc_auc"] > 0.62
    assert learned["test_roc_auc"] > 0.62
    # The control's best epoch is picked on validation, so it sits a little above 0.5.
    assert abs(guessed["test_roc_auc"] - 0.5) < 0.06
    assert learned["test_roc_auc"] > guessed["test_roc_auc"] + 0.08
    assert learned["validation_roc_auc"] > guessed["validation_roc_auc"] + 0.06


def test_output_biases_start_at_the_training_log_odds():
    labels = np.zeros((98, 3), dtype=bool)
    labels[:49, 0] = True  # half
    labels[:7, 1] = True  # rare
    # tag 2 never occurs: smoothed, it still gets a finite bias
    for config in (SMALL, SMALL.replace(model="attention_cnn")):
        model = build_model(config, n_tags=3)
        initialise_output_bias(model.output_layer, labels)
        bias = model.output_layer.bias.detach()
        expected = torch.tensor([49.5 / 49.5, 7.5 / 91.5, 0.5 / 98.5]).log()
        torch.testing.assert_close(bias, expected)
        assert torch.isfinite(bias).all()
