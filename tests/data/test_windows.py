from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np
import pytest

from mer_models.data import DataError
from mer_models.data.windows import PAD_DB, centred_starts, open_melspec, random_start, read_window


def _save(path, array):
    np.save(path, array)
    return path


def test_centred_window_is_the_middle(tmp_path):
    array = np.arange(96 * 1000, dtype=np.float32).reshape(96, 1000)
    mapped = open_melspec(_save(tmp_path / "a.npy", array))
    start = int(centred_starts(1000, 500)[0])
    assert start == 250
    np.testing.assert_array_equal(read_window(mapped, start, 500), array[:, 250:750])


def test_a_numpy_integer_start_reads_the_same_window(tmp_path):
    array = np.arange(96 * 700, dtype=np.float32).reshape(96, 700)
    np.save(tmp_path / "a.npy", array)
    mapped = open_melspec(tmp_path / "a.npy")
    for start in (np.int64(123), np.int32(650)):
        window = read_window(mapped, start, 100)
        stop = min(int(start) + 100, 700)
        np.testing.assert_array_equal(window[:, : stop - start], array[:, start:stop])
        assert (window[:, stop - start :] == PAD_DB).all()


def test_fortran_order_files_read_as_the_extractor_wrote_them(tmp_path):
    # The dataset's extractor saves a transposed (frames, bands) array: Fortran order on disk.
    frames_by_bands = np.arange(700 * 96, dtype=np.float32).reshape(700, 96)
    np.save(tmp_path / "f.npy", frames_by_bands.T)
    assert np.load(tmp_path / "f.npy", mmap_mode="r").flags.f_contiguous
    mapped = open_melspec(tmp_path / "f.npy")
    assert mapped.shape == (96, 700)
    np.testing.assert_array_equal(mapped, frames_by_bands.T)
    for start in (0, 321, 650):
        window = read_window(mapped, start, 100)
        stop = min(start + 100, 700)
        np.testing.assert_array_equal(window[:, : stop - start], frames_by_bands[start:stop].T)
        assert (window[:, stop - start :] == PAD_DB).all()


def test_spread_crops_cover_the_track_and_stay_inside():
    starts = centred_starts(10_000, 500, count=4)
    np.testing.assert_array_equal(starts, [1000, 3500, 6000, 8500])
    assert (centred_starts(600, 500, count=5) <= 100).all()


def test_random_windows_are_inside_and_vary():
    rng = np.random.default_rng(0)
    starts = [random_start(1000, 500, rng) for _ in range(2000)]
    assert min(starts) == 0 and max(starts) == 500
    assert len(set(starts)) > 400


def test_short_tracks_are_padded_with_quiet_db(tmp_path):
    array = np.full((96, 300), -20.0, dtype=np.float32)
    mapped = open_melspec(_save(tmp_path / "short.npy", array))
    assert random_start(300, 500, np.random.default_rng(1)) == 0
    window = read_window(mapped, int(centred_starts(300, 500)[0]), 500)
    assert window.shape == (96, 500) and window.dtype == np.float32
    np.testing.assert_array_equal(window[:, :300], array)
    assert (window[:, 300:] == PAD_DB).all() and PAD_DB < -60


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (
            np.zeros((64, 100), np.float32),
            r"float32 \(64, 100\); expected float32 \(96, n_frames\)",
        ),
        (np.zeros((96, 100), np.float64), "float64"),
        (np.zeros((96, 0), np.float32), "no frames"),
    ],
)
def test_bad_arrays_are_refused_with_the_file_named(tmp_path, array, expected):
    path = _save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=expected) as raised:
        open_melspec(path)
    assert str(path) in str(raised.value)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_melspec(tmp_path / "absent.npy")
    path = _save(tmp_path / "full.npy", np.zeros((96, 1000), np.float32))
    path.write_bytes(path.read_bytes()[:50_000])
    with pytest.raises(DataError, match="truncated"):
        open_melspec(path)
    path.write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="unreadable"):
        open_melspec(path)


def _resident_fraction(path) -> float:
    """Fraction of a file's pages in the page cache, by mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vector = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            pytest.skip("mmap through ctypes failed")
        try:
            if libc.mincore(address, size, vector) != 0:
                pytest.skip(f"mincore failed with errno {ctypes.get_errno()}")
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vector) / pages


def _drop_from_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if _resident_fraction(path) > 0.01:
        pytest.skip(
            "this filesystem keeps the file in memory (tmpfs?): page reads are not observable"
        )


def test_only_the_window_is_read_from_disk(tmp_path):
    """A 10-minute track: a window touches a few percent of the file, np.load all of it."""
    frames = int(600 * 46.875)
    path = _save(
        tmp_path / "long.npy", np.random.default_rng(0).normal(size=(96, frames)).astype(np.float32)
    )
    _drop_from_page_cache(path)
    mapped = open_melspec(path)
    window = read_window(mapped, int(centred_starts(frames, 500)[0]), 500)
    del mapped
    assert window.shape == (96, 500)
    assert _resident_fraction(path) < 0.10
    _drop_from_page_cache(path)
    np.load(path)  # the control: reading the whole track
    assert _resident_fraction(path) > 0.95
