"""A .npy file whose header disagrees with its size is one clear ValueError, before any
allocation: never numpy's ArrayMemoryError and its traceback."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch

from analysis.evaluate import load_matrix
from mer_models.data.splits import DataError
from mer_models.data.store import FORMAT, INDEX, MANIFEST, VERSION, open_store
from mer_models.npy import check_npy, load_npy
from mer_models.training.checkpoint import (
    STATE_FILE,
    TEST_PREDICTIONS,
    CheckpointDamaged,
    load_checkpoint,
)
from tests.analysis.conftest import run_cli, run_main

HUGE = (2_000_000, 1_000_000)  # 2e12 float32: 8 TB that np.load would try to allocate


def overwrite_shape(path, shape) -> None:
    """Rewrite the shape in a saved .npy file's header, keeping the header's length."""
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[8:10], "little")  # format 1.0: a 2-byte header length
    header = ast.literal_eval(data[10 : 10 + length].decode("latin1"))
    header["shape"] = tuple(shape)
    text = repr(header).ljust(length - 1) + "\n"
    assert len(text) == length
    data[10 : 10 + length] = text.encode("latin1")
    path.write_bytes(bytes(data))


def huge_header_file(path, tail: bytes = b"\0" * 16):
    """A file numpy.save never wrote: a header claiming HUGE float32, then a few bytes."""
    with path.open("wb") as file:
        header = {"descr": "<f4", "fortran_order": False, "shape": HUGE}
        np.lib.format.write_array_header_1_0(file, header)
        file.write(tail)
    return path


def scores_file(path, rows: int = 6, tags: int = 3):
    np.save(path, np.random.default_rng(0).random((rows, tags)).astype(np.float32))
    return path


def test_a_sound_file_is_checked_and_loaded(tmp_path):
    path = scores_file(tmp_path / "scores.npy")
    assert check_npy(path, "predictions") == ((6, 3), np.dtype(np.float32))
    np.testing.assert_array_equal(load_npy(path, "predictions"), np.load(path))


@pytest.mark.parametrize("make", ["overwritten", "built"])
def test_a_header_claiming_terabytes_is_refused_before_allocating(tmp_path, make):
    path = tmp_path / "scores.npy"
    if make == "overwritten":
        overwrite_shape(scores_file(path), HUGE)
    else:
        huge_header_file(path)
    size = path.stat().st_size
    with pytest.raises(ValueError) as refused:  # a MemoryError would fail here
        load_npy(path, "predictions")
    message = str(refused.value)
    assert f"predictions file {path} is damaged" in message
    assert "header claims shape (2000000, 1000000) of float32" in message
    assert "8,000,000,000,000 bytes of data" in message
    assert f"the file holds {size:,} bytes" in message
    assert "re-create the file" in message and "\n" not in message


def test_a_file_cut_short_or_with_bytes_after_its_data_is_refused(tmp_path):
    path = scores_file(tmp_path / "cut.npy")
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])
    with pytest.raises(ValueError, match=r"claims shape \(6, 3\) of float32 \(72 bytes") as cut:
        check_npy(path, "labels")
    assert f"labels file {path}" in str(cut.value)
    assert f"holds {len(whole) - 5:,} bytes" in str(cut.value)
    path.write_bytes(whole + b"extra")
    with pytest.raises(ValueError, match=f"holds {len(whole) + 5:,} bytes"):
        check_npy(path, "labels")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not a .npy file (no NumPy header in its 0 bytes)"),
        (b"0.1 0.2\n", "is not a .npy file"),
        (b"\x93NUMPY\x01\x00\x50", "is not a readable .npy array (damaged header"),
        (b"\x93NUMPY\x01\x00\x0a\x00{'descr': ", "is not a readable .npy array (damaged header"),
    ],
)
def test_what_is_not_a_npy_array_is_named(tmp_path, content, expected):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="re-create the file") as refused:
        check_npy(path, "scores")
    assert str(refused.value).startswith(f"scores file {path} {expected}")


def test_pickled_objects_are_refused_unread(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"holds Python objects \(dtype object\)"):
        check_npy(path, "predictions")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"predictions file {tmp_path / 'no.npy'} not found"):
        check_npy(tmp_path / "no.npy", "predictions")


def test_evaluate_load_matrix_checks_the_header(tmp_path):
    path = huge_header_file(tmp_path / "scores.npy")
    with pytest.raises(ValueError, match="header claims shape") as refused:
        load_matrix(path, "predictions")
    assert f"predictions file {path} is damaged" in str(refused.value)


def test_a_checkpoint_with_damaged_predictions_is_damaged(tmp_path):
    keys = ("model", "optimizer", "state", "best_model", "best_metrics", "band_stats")
    torch.save({key: {} for key in keys}, tmp_path / STATE_FILE)
    huge_header_file(tmp_path / TEST_PREDICTIONS)
    with pytest.raises(CheckpointDamaged, match="checkpoint predictions file .* is damaged"):
        load_checkpoint(tmp_path)


def test_a_store_with_a_damaged_index_says_pack_it_again(tmp_path):
    manifest = {"format": FORMAT, "version": VERSION, "tracks": {}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    huge_header_file(tmp_path / INDEX)
    with pytest.raises(DataError, match="packed store index file .* pack the store again"):
        open_store(tmp_path)


@pytest.fixture
def damaged_inputs(tmp_path):
    """Sound labels, and predictions whose header claims terabytes."""
    labels = np.zeros((6, 3), dtype=bool)
    labels[::2] = True
    np.save(tmp_path / "groundtruth.npy", labels)
    return tmp_path / "groundtruth.npy", huge_header_file(tmp_path / "predictions.npy")


def one_paragraph(err: str, command: str) -> str:
    assert "Traceback" not in err and "MemoryError" not in err, err
    assert err.startswith(f"python -m analysis {command}: error: ") and err.count("\n") == 1, err
    return err


def test_the_commands_refuse_a_damaged_file_in_one_paragraph(damaged_inputs, capsys):
    truth, damaged = damaged_inputs
    code, _, err = run_main(capsys, "evaluate", truth, damaged)
    assert code == 2
    assert f"predictions file {damaged} is damaged" in one_paragraph(err, "evaluate")
    code, _, err = run_main(capsys, "evaluate", damaged, truth)
    assert code == 2 and f"groundtruth file {damaged}" in one_paragraph(err, "evaluate")
    code, _, err = run_main(capsys, "fuse-files", damaged, "--groundtruth", truth)
    assert code == 2 and f"file {damaged} is damaged" in one_paragraph(err, "fuse-files")


@pytest.mark.parametrize("command", ["evaluate", "fuse-files"])
def test_the_real_command_exits_non_zero_without_a_traceback(damaged_inputs, command):
    truth, damaged = damaged_inputs
    if command == "evaluate":
        done = run_cli("evaluate", truth, damaged)
    else:
        done = run_cli("fuse-files", damaged, "--groundtruth", truth)
    assert done.returncode == 2, done.stderr
    assert "header claims shape (2000000, 1000000)" in one_paragraph(done.stderr, command)
