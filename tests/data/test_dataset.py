from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_models.data import DataError, load_split
from mer_models.data.augment import SpecAugment
from mer_models.data.dataset import EpochSampler, EvalWindows, TrainWindows, make_loader
from mer_models.data.scaling import BandStats, band_stats, compute_band_stats
from mer_models.data.windows import centred_starts, open_melspec


@pytest.fixture
def train(tiny_dataset):
    return load_split(tiny_dataset, "train")


@pytest.fixture
def unit_stats():
    return BandStats(np.zeros(96, np.float32), np.ones(96, np.float32))


def _epoch(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    return torch.cat([windows for windows, _ in loader])


def test_windows_are_reproducible_from_the_seed_whatever_the_workers(
    tiny_dataset, train, unit_stats
):
    dataset = TrainWindows(train, tiny_dataset.melspecs, 256, unit_stats, SpecAugment())
    sampler = EpochSampler(len(dataset), seed=7)
    in_process = _epoch(make_loader(dataset, 4, 0, sampler=sampler), sampler, 1)
    with_workers = _epoch(make_loader(dataset, 4, 2, sampler=sampler, seed=7), sampler, 1)
    torch.testing.assert_close(in_process, with_workers, rtol=0, atol=0)
    assert not torch.equal(
        in_process, _epoch(make_loader(dataset, 4, 0, sampler=sampler), sampler, 2)
    )
    other_seed = EpochSampler(len(dataset), seed=8)
    assert not torch.equal(
        in_process, _epoch(make_loader(dataset, 4, 0, sampler=other_seed), other_seed, 1)
    )


def test_train_windows_are_augmented_and_eval_windows_are_not(tiny_dataset, train, unit_stats):
    augmented = TrainWindows(train, tiny_dataset.melspecs, 256, unit_stats, SpecAugment(10, 10))
    rng = np.random.default_rng(0)
    masked = [
        (augmented[(i, int(rng.integers(1 << 40)))][0] == 0).all(dim=-1).any().item()
        for i in range(len(train))
        for _ in range(5)
    ]
    assert any(masked)  # some frequency band was masked
    evaluation = EvalWindows(train, tiny_dataset.melspecs, 256, unit_stats)
    for index in range(len(train)):
        windows, labels = evaluation[index]
        array = open_melspec(tiny_dataset.melspecs / train.melspec_paths[index])
        start = int(centred_starts(array.shape[1], 256)[0])
        assert windows.shape == (1, 1, 96, 256)
        np.testing.assert_array_equal(windows[0, 0].numpy(), array[:, start : start + 256])
        np.testing.assert_array_equal(labels.numpy(), train.labels[index].astype(np.float32))


def test_eval_crops_shape(tiny_dataset, train, unit_stats):
    windows, _ = EvalWindows(train, tiny_dataset.melspecs, 128, unit_stats, crops=3)[3]
    assert windows.shape == (3, 1, 96, 128)
    assert not torch.equal(windows[0], windows[2])


def test_band_stats_standardise_training_windows_and_are_cached(
    tiny_dataset, train, monkeypatch, tmp_path
):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    stats = band_stats(train, tiny_dataset.melspecs, 256)
    assert stats.mean.shape == stats.std.shape == (96,)
    np.testing.assert_allclose(stats.mean, -40, atol=1.5)
    np.testing.assert_allclose(stats.std, 10, atol=1.5)
    assert len(list((tmp_path / "cache" / "band_stats").glob("*.json"))) == 1
    again = band_stats(train, tiny_dataset.melspecs, 256)
    np.testing.assert_array_equal(again.mean, stats.mean)
    np.testing.assert_allclose(compute_band_stats(train, tiny_dataset.melspecs, 256).std, stats.std)


def test_a_nan_in_a_track_is_an_error_naming_the_track(tiny_dataset, train, unit_stats):
    path = tiny_dataset.melspecs / train.melspec_paths[2]
    array = np.load(path)
    array[5, :] = np.nan
    np.save(path, array)
    with pytest.raises(DataError, match=f"{train.track_ids[2]}.*NaN"):
        EvalWindows(train, tiny_dataset.melspecs, 256, unit_stats)[2]
