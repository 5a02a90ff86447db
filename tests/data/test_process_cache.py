"""What a process keeps of a dataset between trials: split tables, band statistics and a
packed store, each read once while its files stay the same, read again when they change."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mer_models.data.scaling as scaling
from mer_models.data.splits import DatasetPaths, cached_split, load_split
from mer_models.data.store import MANIFEST, cached_store, open_store, pack
from mer_models.files import atomic_write_text


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))


def test_a_split_is_parsed_once_until_its_file_changes(tiny_dataset):
    first = cached_split(tiny_dataset, "train")
    assert cached_split(tiny_dataset, "train") is first
    fresh = load_split(tiny_dataset, "train")
    assert first.track_ids == fresh.track_ids
    np.testing.assert_array_equal(first.labels, fresh.labels)
    with pytest.raises(ValueError, match="read-only"):
        first.labels[0, 0] = not first.labels[0, 0]  # shared by every later trial
    split_file = tiny_dataset.split_file("train")
    lines = split_file.read_text().splitlines()
    atomic_write_text(split_file, "\n".join(lines[:-1]) + "\n")  # one track fewer
    again = cached_split(tiny_dataset, "train")
    assert again is not first and len(again) == len(first) - 1


def test_band_statistics_are_read_once_and_computed_again_when_the_cache_is_cleared(
    tiny_dataset, cache, monkeypatch
):
    computed = []
    compute = scaling.compute_band_stats
    monkeypatch.setattr(
        scaling, "compute_band_stats", lambda *a: computed.append(a[-1]) or compute(*a)
    )
    train = load_split(tiny_dataset, "train")
    first = scaling.band_stats(train, tiny_dataset, 64)
    assert scaling.band_stats(train, tiny_dataset, 64) is first
    assert computed == [64]
    assert not first.mean.flags.writeable
    for path in (scaling.cache_root() / "band_stats").glob("*.json"):
        path.unlink()
    again = scaling.band_stats(train, tiny_dataset, 64)
    assert computed == [64, 64]
    np.testing.assert_array_equal(again.mean, first.mean)


def test_a_store_is_opened_once_until_it_is_packed_again(tiny_dataset, tmp_path, cache):
    pack(tiny_dataset, tmp_path / "store", progress=False)
    store = cached_store(tmp_path / "store")
    assert cached_store(tmp_path / "store") is store
    paths = DatasetPaths(tiny_dataset.metadata, store=tmp_path / "store")
    table = load_split(paths, "validation")
    source = store.source(table)
    expected = open_store(tmp_path / "store").source(table)
    np.testing.assert_array_equal(source.starts, expected.starts)
    manifest = tmp_path / "store" / MANIFEST
    atomic_write_text(manifest, json.dumps(json.loads(manifest.read_text())))  # a new file
    assert cached_store(tmp_path / "store") is not store
