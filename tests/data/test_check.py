from __future__ import annotations

import os

import numpy as np

from mer_models.data import load_split
from mer_models.data.check import check_dataset
from tests.conftest import run_data_check


def _check(paths, tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    return check_dataset(paths)


def test_a_good_dataset_passes_with_a_summary(tiny_dataset, tmp_path, monkeypatch):
    report = _check(tiny_dataset, tmp_path, monkeypatch)
    assert report.ok, report.describe_problems()
    assert report.tracks == {"train": 6, "validation": 3, "test": 3}
    assert report.tags == 4
    assert "12 tracks" in report.summary()


def test_every_problem_is_found_and_counted(tiny_dataset, tmp_path, monkeypatch):
    train = load_split(tiny_dataset, "train")
    melspecs = tiny_dataset.melspecs
    (melspecs / train.melspec_paths[0]).unlink()
    np.save(melspecs / train.melspec_paths[1], np.zeros((64, 500), np.float32))
    bad = np.zeros((96, 500), np.float32)
    bad[3, 7] = np.inf
    np.save(melspecs / train.melspec_paths[2], bad)
    path = melspecs / train.melspec_paths[3]
    path.write_bytes(path.read_bytes()[:1000])
    split_file = tiny_dataset.split_file("test")
    split_file.write_text(
        split_file.read_text() + "track_9\ta\tb\t09/9.mp3\t30.0\tmood/theme---nope\n"
    )
    report = _check(tiny_dataset, tmp_path, monkeypatch)
    assert not report.ok
    counts = {kind: len(found) for kind, found in report.problems.items() if found}
    assert counts == {
        "split row": 1,
        "missing mel-spectrogram": 1,
        "wrong shape or dtype": 1,
        "NaN or infinite values": 1,
        "unreadable file": 1,
    }
    text = report.describe_problems()
    for track_id in train.track_ids[:4]:
        assert track_id in text
    assert "mood/theme---nope" in text


def test_values_are_scanned_once_then_remembered(tiny_dataset, tmp_path, monkeypatch):
    assert _check(tiny_dataset, tmp_path, monkeypatch).ok
    train = load_split(tiny_dataset, "train")
    path = tiny_dataset.melspecs / train.melspec_paths[0]
    array = np.load(path)
    array[0, 0] = np.nan
    np.save(path, array)  # a change: new mtime, so it is scanned again
    report = _check(tiny_dataset, tmp_path, monkeypatch)
    assert len(report.problems["NaN or infinite values"]) == 1


def test_check_command_exit_codes(tiny_dataset, tmp_path):
    metadata = ("--metadata", str(tiny_dataset.metadata))
    melspecs = ("--melspecs", str(tiny_dataset.melspecs))
    done = run_data_check(tmp_path, *metadata, *melspecs)
    assert done.returncode == 0 and "dataset OK: 12 tracks" in done.stdout
    tiny_dataset.split_file("validation").unlink()
    done = run_data_check(tmp_path, *metadata, *melspecs)
    assert done.returncode == 1
    assert (
        "split file not found" in done.stderr
        and "autotagging_moodtheme-validation.tsv" in done.stderr
    )
    done = run_data_check(tmp_path, *metadata)
    assert done.returncode == 2 and "--metadata goes with --melspecs or --store" in done.stderr


def test_a_track_in_two_parts_and_non_utf8_bytes_are_named(tiny_dataset, tmp_path, monkeypatch):
    train, test = tiny_dataset.split_file("train"), tiny_dataset.split_file("test")
    leaked = train.read_text().splitlines()[1]
    test.write_text(test.read_text() + leaked + "\n")
    report = _check(tiny_dataset, tmp_path, monkeypatch)
    assert not report.ok
    track = leaked.split("\t")[0]
    assert [p for p in report.problems["track in two parts"] if track in p and str(test) in p]

    validation = tiny_dataset.split_file("validation")
    validation.write_bytes(validation.read_bytes() + b"track_0000999\t\xff\n")
    report = _check(tiny_dataset, tmp_path, monkeypatch)
    described = report.describe_problems()
    assert f"{validation}, line 5: byte 0xff is not UTF-8" in described


def test_a_melspec_changed_in_place_is_scanned_again_and_full_trusts_no_memory(
    tiny_dataset, tmp_path, monkeypatch
):
    from mer_models.data.check import _VerifiedFiles

    assert _check(tiny_dataset, tmp_path, monkeypatch).ok
    path = tiny_dataset.melspecs / load_split(tiny_dataset, "train").melspec_paths[2]
    before = path.stat()
    with open(path, "r+b") as handle:  # 4,000 bytes in place, the header untouched
        handle.seek(before.st_size - 4000)
        handle.write(np.full(1000, np.nan, np.float32).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    report = _check(tiny_dataset, tmp_path, monkeypatch)
    assert len(report.problems["NaN or infinite values"]) == 1
    assert str(path) in report.problems["NaN or infinite values"][0]

    verified = _VerifiedFiles(tiny_dataset.melspecs)  # remembered as passed all the same
    verified.add(path, verified.stamp(path))
    verified.save()
    assert _check(tiny_dataset, tmp_path, monkeypatch).ok
    report = check_dataset(tiny_dataset, full=True)
    assert [str(path) in found for found in report.problems["NaN or infinite values"]] == [True]
