from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_models.data import DataError, load_split
from mer_models.data.augment import SpecAugment
from mer_models.data.dataset import EpochSampler, EvalWindows, TrainWindows, make_loader
from mer_models.data.scaling import band_stats, compute_band_stats
from mer_models.data.sources import MelspecFolder
from mer_models.data.windows import PAD_DB, centred_starts, open_melspec


@pytest.fixture
def train(tiny_dataset):
    return load_split(tiny_dataset, "train")


@pytest.fixture
def source(tiny_dataset, train):
    return MelspecFolder(train, tiny_dataset.melspecs)


def _epoch(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    windows, _, masks = zip(*loader, strict=True)
    return torch.cat(windows), torch.cat(masks)


def test_windows_are_reproducible_from_the_seed_whatever_the_workers(train, source):
    dataset = TrainWindows(train, source, 256, SpecAugment())
    sampler = EpochSampler(len(dataset), seed=7)
    in_process = _epoch(make_loader(dataset, 4, 0, sampler=sampler), sampler, 1)
    with_workers = _epoch(make_loader(dataset, 4, 2, sampler=sampler, seed=7), sampler, 1)
    for a, b in zip(in_process, with_workers, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    next_epoch = _epoch(make_loader(dataset, 4, 0, sampler=sampler), sampler, 2)
    assert not torch.equal(in_process[0], next_epoch[0])
    assert not torch.equal(in_process[1], next_epoch[1])
    other_seed = EpochSampler(len(dataset), seed=8)
    assert not torch.equal(
        in_process[0], _epoch(make_loader(dataset, 4, 0, sampler=other_seed), other_seed, 1)[0]
    )


def test_train_items_are_raw_windows_with_their_masks(tiny_dataset, train, source):
    augmented = TrainWindows(train, source, 256, SpecAugment(10, 10))
    rng = np.random.default_rng(0)
    widths = []
    for index in range(len(train)):
        array = open_melspec(tiny_dataset.melspecs / train.melspec_paths[index])
        for _ in range(5):
            window, labels, masks = augmented[(index, int(rng.integers(1 << 40)))]
            assert window.dtype == torch.float32 and window.shape == (1, 96, 256)
            assert masks.dtype == torch.int64 and masks.shape == (4,)
            start = int(np.flatnonzero(array[0] == window[0, 0, 0].item())[0])
            np.testing.assert_array_equal(window[0].numpy(), array[:, start : start + 256])
            f0, fw, t0, tw = masks.tolist()
            assert 0 <= fw <= 10 and 0 <= tw <= 10 and f0 + fw <= 96 and t0 + tw <= 256
            widths.append((fw, tw))
            np.testing.assert_array_equal(labels.numpy(), train.labels[index].astype(np.float32))
    assert len(set(widths)) > 5
    plain = TrainWindows(train, source, 256, None)
    assert plain[(0, 1)][2].tolist() == [0, 0, 0, 0]


def test_short_tracks_are_padded_with_silence(train, source):
    short = int(np.argmin([source.length(i) for i in range(len(train))]))  # 300 frames
    window, _, _ = TrainWindows(train, source, 512, SpecAugment())[(short, 3)]
    assert (window[0, :, 300:] == PAD_DB).all() and (window[0, :, :300] != PAD_DB).any()


def test_eval_windows_are_raw_centred_windows(tiny_dataset, train, source):
    evaluation = EvalWindows(train, source, 256)
    for index in range(len(train)):
        windows, labels = evaluation[index]
        array = open_melspec(tiny_dataset.melspecs / train.melspec_paths[index])
        start = int(centred_starts(array.shape[1], 256)[0])
        assert windows.shape == (1, 1, 96, 256)
        np.testing.assert_array_equal(windows[0, 0].numpy(), array[:, start : start + 256])
        np.testing.assert_array_equal(labels.numpy(), train.labels[index].astype(np.float32))


def test_eval_crops_shape(train, source):
    windows, _ = EvalWindows(train, source, 128, crops=3)[3]
    assert windows.shape == (3, 1, 96, 128)
    assert not torch.equal(windows[0], windows[2])


def test_band_stats_standardise_training_windows_and_are_cached(
    tiny_dataset, train, monkeypatch, tmp_path
):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    stats = band_stats(train, tiny_dataset, 256)
    assert stats.mean.shape == stats.std.shape == (96,)
    np.testing.assert_allclose(stats.mean, -40, atol=1.5)
    np.testing.assert_allclose(stats.std, 10, atol=1.5)
    assert len(list((tmp_path / "cache" / "band_stats").glob("*.json"))) == 1
    again = band_stats(train, tiny_dataset, 256)
    np.testing.assert_array_equal(again.mean, stats.mean)
    source = MelspecFolder(train, tiny_dataset.melspecs)
    np.testing.assert_allclose(compute_band_stats(train, source, 256).std, stats.std)


def test_a_nan_in_a_track_is_an_error_naming_the_track(tiny_dataset, train, source):
    path = tiny_dataset.melspecs / train.melspec_paths[2]
    array = np.load(path)
    array[5, :] = np.nan
    np.save(path, array)
    with pytest.raises(DataError, match=f"{train.track_ids[2]}.*NaN"):
        EvalWindows(train, source, 256)[2]
    with pytest.raises(DataError, match=f"{train.track_ids[2]}.*NaN"):
        TrainWindows(train, source, 256, SpecAugment())[(2, 0)]
