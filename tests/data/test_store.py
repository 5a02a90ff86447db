"""The packed window store: round trip, refusals, a killed pack resuming, damage found."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mer_models.data import DataError, DatasetPaths, load_split
from mer_models.data.augment import BatchPreprocess, SpecAugment
from mer_models.data.check import check_dataset
from mer_models.data.dataset import EpochSampler, EvalWindows, TrainWindows, make_loader
from mer_models.data.scaling import BandStats, compute_band_stats
from mer_models.data.sources import MelspecFolder, window_source
from mer_models.data.store import (
    DATA,
    INDEX,
    MANIFEST,
    PROGRESS,
    damaged_tracks,
    open_store,
    pack,
)
from mer_models.data.windows import PAD_DB
from mer_models.train import main as train_main
from tests.conftest import run_data_check, write_dataset

HALF_ULP_BELOW_128 = 2.0**-5  # float16 spacing is 2^-4 for |x| in [64, 128)


def stored(paths: DatasetPaths, store: Path) -> DatasetPaths:
    return DatasetPaths(paths.metadata, split=paths.split, subset=paths.subset, store=store)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def packed(tiny_dataset, tmp_path, cache):
    pack(tiny_dataset, tmp_path / "store", progress=False)
    return stored(tiny_dataset, tmp_path / "store")


def test_the_store_round_trips_a_dataset_within_float16_precision(small_synthetic, tmp_path, cache):
    result = pack(small_synthetic, tmp_path / "store", progress=False)
    store = result.store
    assert not result.already_complete and result.resumed_from == 0
    assert store.manifest["split"] == 0 and store.manifest["subset"] == "moodtheme"
    assert sorted(p.name for p in store.path.iterdir()) == sorted([DATA, INDEX, MANIFEST])
    largest = 0.0
    rng = np.random.default_rng(0)
    for part in ("train", "validation", "test"):
        table = load_split(small_synthetic, part)
        assert store.manifest["tracks"][part] == list(table.track_ids)
        folder = MelspecFolder(table, small_synthetic.melspecs)
        packed = window_source(stored(small_synthetic, store.path), table)
        for index in range(len(table)):
            frames = folder.length(index)
            assert packed.length(index) == frames
            whole = packed.read(index, 0, frames)
            assert whole.dtype == np.float16 and whole.shape == (96, frames)
            original = folder.read(index, 0, frames)
            np.testing.assert_array_equal(whole, original.astype(np.float16))
            largest = max(largest, float(np.abs(whole.astype(np.float32) - original).max()))
            start = int(rng.integers(0, frames))  # windows past the end are padded
            window = packed.read(index, start, 300)
            np.testing.assert_array_equal(window, folder.read(index, start, 300).astype(np.float16))
    assert largest == pytest.approx(store.manifest["max_abs_error_db"])
    assert 0 < largest <= HALF_ULP_BELOW_128  # synthetic dB values lie in [-100, 0]
    # band statistics from either source agree to float16 precision
    train = load_split(small_synthetic, "train")
    from_store = compute_band_stats(
        train, window_source(stored(small_synthetic, store.path), train), 128
    )
    from_files = compute_band_stats(train, MelspecFolder(train, small_synthetic.melspecs), 128)
    np.testing.assert_allclose(from_store.mean, from_files.mean, atol=HALF_ULP_BELOW_128)
    np.testing.assert_allclose(from_store.std, from_files.std, atol=HALF_ULP_BELOW_128)


def test_short_tracks_are_padded_with_silence(packed):
    table = load_split(packed, "train")
    source = window_source(packed, table)
    short = int(np.argmin([source.length(i) for i in range(len(table))]))  # 300 frames
    window = source.read(short, 100, 500)
    assert (window[:, 200:] == PAD_DB).all() and (window[:, :200] != PAD_DB).any()


def test_a_store_refuses_another_split_or_tag_order(packed, tiny_dataset, tmp_path):
    table = load_split(packed, "train")
    other_split = DatasetPaths(packed.metadata, split=1, store=packed.store)
    with pytest.raises(DataError, match="built from split-0 moodtheme.*asks for split-1 moodtheme"):
        window_source(other_split, table)
    metadata = tmp_path / "reordered"
    shutil.copytree(tiny_dataset.metadata, metadata)
    tag_file = metadata / "data" / "tags" / "moodtheme_split.txt"
    tags = tag_file.read_text().split()
    tag_file.write_text("\n".join([tags[1], tags[0], *tags[2:]]) + "\n")
    reordered = DatasetPaths(metadata, store=packed.store)
    with pytest.raises(DataError, match=r"another tag order.*position 1 \('mood/theme---calm'"):
        window_source(reordered, load_split(reordered, "train"))
    report = check_dataset(reordered)
    assert "another tag order" in report.describe_problems()
    # a split file listing a track the store lacks
    split_file = metadata / "data" / "splits" / "split-0" / "autotagging_moodtheme-test.tsv"
    tag_file.write_text("\n".join(tags) + "\n")
    lines = split_file.read_text().splitlines()
    lines[1] = lines[1].replace("track_0000110", "track_0000999")
    split_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="lacks 1 track.*track_0000999"):
        window_source(reordered, load_split(reordered, "test"))
    assert "track_0000999" in check_dataset(reordered).problems["store mismatch"][0]


def test_pack_refuses_values_a_float16_cannot_hold_and_leaves_no_store(tiny_dataset, tmp_path):
    table = load_split(tiny_dataset, "validation")
    path = tiny_dataset.melspecs / table.melspec_paths[1]
    array = np.load(path)
    array[7, 30] = 70000.0
    np.save(path, array)
    with pytest.raises(DataError, match=rf"{table.track_ids[1]}.*70000.*band 7, frame 30.*65504"):
        pack(tiny_dataset, tmp_path / "store", progress=False)
    array[7, 30] = np.inf
    np.save(path, array)
    with pytest.raises(DataError, match=rf"{table.track_ids[1]}.*NaN or infinite"):
        pack(tiny_dataset, tmp_path / "store", progress=False)
    assert not (tmp_path / "store" / MANIFEST).exists()
    with pytest.raises(DataError, match="unfinished"):
        open_store(tmp_path / "store")


def test_pack_refuses_a_folder_that_is_not_its_store(tiny_dataset, tmp_path, packed):
    again = pack(tiny_dataset, packed.store, progress=False)
    assert again.already_complete
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a packed store"):
        pack(tiny_dataset, occupied, progress=False)
    assert (occupied / "notes.txt").read_text() == "mine"
    leftover = tmp_path / "leftover"  # a pack killed while renaming its first file
    leftover.mkdir()
    (leftover / f".{PROGRESS}.k2j4.tmp").write_text('{"plan"')
    assert not pack(tiny_dataset, leftover, progress=False).already_complete
    assert sorted(p.name for p in leftover.iterdir()) == sorted([DATA, INDEX, MANIFEST])
    other = write_dataset(tmp_path / "other", {"train": [300], "validation": [300], "test": [300]})
    with pytest.raises(DataError, match="already holds a complete packed store"):
        pack(other, packed.store, progress=False)


PACK_SLOWLY = """
import sys, time
import mer_models.data.store as store
from mer_models.data.__main__ import main
slow = store._pack_track
store._pack_track = lambda *a: (time.sleep(0.02), slow(*a))[1]
store._CHECKPOINT_TRACKS = 4
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_pack_resumes_and_writes_the_bytes_of_an_uninterrupted_one(tmp_path, cache):
    paths = write_dataset(
        tmp_path / "data", {"train": [400] * 60, "validation": [500] * 20, "test": [350] * 20}
    )
    flags = ["--metadata", str(paths.metadata), "--melspecs", str(paths.melspecs)]
    env = {**os.environ, "MER_MODELS_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "mer_models.data", "pack", *flags]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "packed 100 tracks" in done.stdout and "packing 100/100 tracks" in done.stderr

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", PACK_SLOWLY, "pack", *flags, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if json.loads((killed / PROGRESS).read_text())["done"] >= 12:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = json.loads((killed / PROGRESS).read_text())["done"]
    assert 12 <= done_before < 100
    assert not (killed / MANIFEST).exists()
    with pytest.raises(DataError, match="unfinished.*pack command again"):
        open_store(killed)
    checked = check_dataset(stored(paths, killed))
    assert "unfinished" in checked.describe_problems()

    done = subprocess.run([*command, "--out", str(killed)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {done_before}/100 tracks already packed" in done.stderr
    assert f"resumed after {done_before} tracks" in done.stdout
    assert sorted(p.name for p in killed.iterdir()) == sorted([DATA, INDEX, MANIFEST])
    for name in (DATA, INDEX, MANIFEST):
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_check_finds_a_damaged_store(packed):
    report = check_dataset(packed)
    assert report.ok, report.describe_problems()
    assert "windows from the packed store" in report.summary()
    store = open_store(packed.store)
    victim = store.track_ids()[4]
    entry = store.index[4]
    with open(packed.store / DATA, "r+b") as data:
        data.seek(int(entry["start"]) * 96 * 2 + 1000)
        data.write(np.array([np.nan], np.float16).tobytes())
    report = check_dataset(packed)
    assert len(report.problems["damaged store"]) == 1
    assert f"track {victim}" in report.problems["damaged store"][0]
    assert "NaN or infinite" in report.problems["damaged store"][0]
    table = load_split(packed, "train")
    evaluation = EvalWindows(table, window_source(packed, table), 1200, crops=2)
    with pytest.raises(DataError, match=f"{victim}.*NaN"):  # and training reads refuse it
        evaluation[table.track_ids.index(victim)]
    with open(packed.store / DATA, "r+b") as data:
        data.truncate(1000)
    assert "is 1000 bytes; the manifest promises" in check_dataset(packed).describe_problems()
    (packed.store / MANIFEST).unlink()
    assert "not a packed store" in check_dataset(packed).describe_problems()


def test_check_command_verifies_a_store(packed, tmp_path):
    store = ("--metadata", str(packed.metadata), "--store", str(packed.store))
    done = run_data_check(tmp_path, *store)
    assert done.returncode == 0 and "dataset OK: 12 tracks" in done.stdout, done.stderr
    done = run_data_check(tmp_path, *store, "--split", "2")
    assert done.returncode == 1 and "asks for split-2" in done.stderr
    done = run_data_check(tmp_path, *store, "--melspecs", "x")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_training_runs_from_a_store_without_the_melspec_folder(tmp_path, cache, capsys):
    paths = write_dataset(
        tmp_path / "data", {"train": [200] * 16, "validation": [200] * 6, "test": [150] * 6}
    )
    pack(paths, tmp_path / "store", progress=False)
    shutil.rmtree(paths.melspecs)  # the store alone holds the windows now
    config = tmp_path / "tiny.yaml"
    config.write_text("width: 4\nunits: 8\nwindow: 64\nbatch_size: 8\nmax_epochs: 2\nworkers: 0\n")
    out = tmp_path / "run"
    arguments = ["--config", str(config), "--out", str(out), "--metadata", str(paths.metadata)]
    status = train_main([*arguments, "--store", str(tmp_path / "store")])
    assert status == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    finished = (out / "metrics.json").read_bytes()
    with pytest.raises(SystemExit) as refused:  # the same --out again, without --resume
        train_main([*arguments, "--store", str(tmp_path / "store")])
    assert refused.value.code == 2
    assert "holds a run already" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == finished
    assert np.load(out / "test_predictions.npy").shape == (6, 4)
    stats = torch.load(out / "best_model.pt")["band_stats"]
    np.testing.assert_allclose(stats["mean"], -40, atol=2.0)  # write_dataset's N(-40, 10) values
    np.testing.assert_allclose(stats["std"], 10, atol=2.0)


def test_store_batches_equal_melspec_batches_rounded_whatever_the_workers(packed, tiny_dataset):
    table = load_split(packed, "train")
    folder = TrainWindows(table, MelspecFolder(table, tiny_dataset.melspecs), 256, SpecAugment())
    store = TrainWindows(table, window_source(packed, table), 256, SpecAugment())
    sampler = EpochSampler(len(table), seed=5)
    sampler.set_epoch(1)
    expected = [batch for batch in make_loader(folder, 4, 0, sampler=sampler)]
    for workers in (0, 2):
        batches = list(make_loader(store, 4, workers, sampler=sampler, seed=5))
        assert len(batches) == len(expected)
        for (windows, labels, masks), (want, want_labels, want_masks) in zip(
            batches, expected, strict=True
        ):
            assert windows.dtype == torch.float16 and windows.shape == want.shape
            torch.testing.assert_close(windows, want.half(), rtol=0, atol=0)
            torch.testing.assert_close(masks, want_masks, rtol=0, atol=0)
            torch.testing.assert_close(labels, want_labels, rtol=0, atol=0)
    stats = BandStats(np.full(96, -40, np.float32), np.full(96, 10, np.float32))
    windows, _, masks = batches[0]
    out = BatchPreprocess(stats)(windows, masks)
    assert out.is_contiguous() and out.dtype == torch.float32
    torch.testing.assert_close(
        out, BatchPreprocess(stats)(expected[0][0], masks), atol=4e-3, rtol=0
    )


def _overwrite_in_place_keeping_mtime(path: Path, offset: int, data: bytes) -> None:
    """Write `data` at `offset` in the same file, then set its times back (`os.utime`)."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size,
        before.st_ino,
        before.st_mtime_ns,
    )


def test_a_store_changed_in_place_with_its_time_kept_is_verified_again(
    packed, tmp_path, monkeypatch, capsys
):
    import mer_models.data.check as check

    reads = []
    monkeypatch.setattr(check, "damaged_tracks", lambda s: reads.append(s) or damaged_tracks(s))
    assert check_dataset(packed).ok and check_dataset(packed).ok
    assert len(reads) == 1  # the second check trusted the first
    store = open_store(packed.store)
    victim, entry = store.track_ids()[4], store.index[4]
    finite = np.full(2000, 7.0, np.float16).tobytes()  # 4,000 bytes of finite values
    _overwrite_in_place_keeping_mtime(
        packed.store / DATA, int(entry["start"]) * 96 * 2 + 1000, finite
    )
    report = check_dataset(packed)
    assert len(reads) == 2  # read again, not satisfied by what was remembered
    assert len(report.problems["damaged store"]) == 1, report.describe_problems()
    problem = report.problems["damaged store"][0]
    assert f"track {victim}: its bytes in {store.path / DATA} changed since packing" in problem
    assert f"expected {entry['digest'].tobytes().hex()} as packed" in problem
    assert "NaN" not in problem
    arguments = ["--out", str(tmp_path / "run"), "--metadata", str(packed.metadata)]
    assert train_main([*arguments, "--store", str(packed.store)]) == 1  # training refuses it
    refused = capsys.readouterr().err
    assert "dataset check failed" in refused and f"track {victim}" in refused
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_check_full_reads_every_byte_whatever_was_remembered(packed, tmp_path):
    from mer_models.data.check import _VerifiedFiles

    store = open_store(packed.store)
    victim, entry = store.track_ids()[7], store.index[7]
    offset = int(entry["start"]) * 96 * 2 + 96 * 2 * 5
    _overwrite_in_place_keeping_mtime(packed.store / DATA, offset, bytes(4000))
    # What a stamp cannot see (a file system without change times, say): the damaged
    # store remembered as verified.
    verified = _VerifiedFiles(store.path)
    verified.add_store(verified.store_stamp(store))
    verified.save()
    store_args = ("--metadata", str(packed.metadata), "--store", str(packed.store))
    trusted = run_data_check(tmp_path, *store_args)
    assert trusted.returncode == 0 and "dataset OK" in trusted.stdout, trusted.stderr
    full = run_data_check(tmp_path, *store_args, "--full")
    assert full.returncode == 1, full.stdout
    assert "- damaged store: 1" in full.stderr
    first = int(entry["start"]) * 96 * 2
    last = first + int(entry["frames"]) * 96 * 2 - 1
    assert (
        f"track {victim}: its bytes in {store.path / DATA} changed since packing "
        f"(frames {entry['start']}..{entry['start'] + entry['frames'] - 1}, bytes {first}..{last})"
    ) in full.stderr
    assert f"expected {entry['digest'].tobytes().hex()} as packed (index.npy)" in full.stderr
    assert "Traceback" not in full.stderr
    help_text = run_data_check(tmp_path, "--help")
    assert "--full" in help_text.stdout and "read every byte again" in help_text.stdout


def test_what_the_data_layer_writes_gets_the_mode_the_umask_gives(tiny_dataset, tmp_path, cache):
    from mer_models.data.__main__ import main as data_main
    from mer_models.data.scaling import band_stats

    previous = os.umask(0o002)  # a group-shared folder: not tempfile's 0o600, nor 0o644
    try:
        pack(tiny_dataset, tmp_path / "store", progress=False)
        paths = stored(tiny_dataset, tmp_path / "store")
        assert check_dataset(paths).ok
        band_stats(load_split(paths, "train"), paths, 256)
        labels = tmp_path / "labels.npy"
        split = tiny_dataset.split_file("test")
        assert (
            data_main(
                ["labels", str(split), "--tags", str(tiny_dataset.tag_file())]
                + ["--out", str(labels)]
            )
            == 0
        )
    finally:
        os.umask(previous)
    written = [tmp_path / "store" / name for name in (DATA, INDEX, MANIFEST)]
    written += [labels, *(tmp_path / "cache").glob("*/*.json")]
    assert {path.parent.name for path in written} >= {"store", "verified", "band_stats"}
    assert {str(path): path.stat().st_mode & 0o777 for path in written} == {
        str(path): 0o664 for path in written
    }
