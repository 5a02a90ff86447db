"""Output folders appear whole or not at all, and replace only what they may replace."""

from __future__ import annotations

import pytest

from analysis.staging import staged_folder


def test_a_folder_appears_only_when_complete(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as staging:
        (staging / "a.txt").write_text("a")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failure_leaves_the_earlier_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(out, lambda folder: True) as staging:
        (staging / "a.txt").write_text("new")
        raise RuntimeError("half-way")
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_only_a_replaceable_folder_is_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        with staged_folder(out):
            pass
    with staged_folder(out, lambda folder: (folder / "mine.txt").exists()) as staging:
        (staging / "b.txt").write_text("b")
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        with staged_folder(tmp_path / "file"):
            pass
