from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mer_models.data import DataError, label_matrix, load_split, read_split, read_tags
from tests.conftest import HEADER, SHARED, TAGS

real_data = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"the real MTG-Jamendo metadata is not at {SHARED}"
)


@real_data
def test_label_matrix_of_the_real_test_split_equals_the_official_groundtruth():
    matrix = label_matrix(
        SHARED / "data/splits/split-0/autotagging_moodtheme-test.tsv",
        SHARED / "data/tags/moodtheme_split.txt",
    )
    groundtruth = np.load(SHARED / "results/mediaeval/groundtruth.npy")
    assert matrix.dtype == groundtruth.dtype == bool
    assert matrix.shape == (4231, 56)
    np.testing.assert_array_equal(matrix, groundtruth)


@real_data
def test_labels_command_writes_the_official_groundtruth(tmp_path):
    out = tmp_path / "m.npy"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mer_models.data",
            "labels",
            str(SHARED / "data/splits/split-0/autotagging_moodtheme-test.tsv"),
            "--tags",
            str(SHARED / "data/tags/moodtheme_split.txt"),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    np.testing.assert_array_equal(
        np.load(out), np.load(SHARED / "results/mediaeval/groundtruth.npy")
    )


@real_data
def test_real_split_sizes_and_label_statistics():
    from mer_models.data import DatasetPaths

    paths = DatasetPaths(SHARED, SHARED / "absent")
    sizes = {part: len(load_split(paths, part)) for part in ("train", "validation", "test")}
    assert sizes == {"train": 9949, "validation": 3802, "test": 4231}
    train = load_split(paths, "train")
    assert train.melspec_paths[0] == "48/948.npy"
    per_track = train.labels.sum(axis=1)
    assert per_track.min() == 1 and per_track.max() <= 8
    assert abs(per_track.mean() - 1.8) < 0.01


def test_tag_order_sets_the_columns(tiny_dataset):
    table = load_split(tiny_dataset, "train")
    reversed_table = read_split(table.file, tuple(reversed(TAGS)))
    np.testing.assert_array_equal(reversed_table.labels, table.labels[:, ::-1])


def _split_file(tmp_path, rows, header=HEADER):
    path = tmp_path / "split.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("header", "rows", "expected"),
    [
        ("TRACK_ID\tPATH\tTAGS", [], "line 1: header"),
        (HEADER, ["track_1\ta\tb\t01/1.mp3"], "line 2: 4 columns"),
        (
            HEADER,
            [
                "track_1\ta\tb\t01/1.mp3\t30.0\tmood/theme---calm",
                "track_2\ta\tb\t02/2.mp3\t30.0\tmood/theme---nope",
            ],
            "line 3: track track_2 has tag 'mood/theme---nope'",
        ),
        (HEADER, ["track_1\ta\tb\t01/1.mp3\t30.0"], "line 2: track track_1 has no tags"),
        (HEADER, ["track_1\ta\tb\t01/1.mp3\tlong\tmood/theme---calm"], "line 2: DURATION"),
    ],
)
def test_bad_split_rows_name_file_and_line(tmp_path, header, rows, expected):
    path = _split_file(tmp_path, rows, header)
    with pytest.raises(DataError, match=expected) as raised:
        read_split(path, TAGS)
    assert str(path) in str(raised.value)


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(DataError, match="split file not found"):
        read_split(tmp_path / "nope.tsv", TAGS)


def test_problems_list_collects_every_bad_row(tmp_path):
    path = _split_file(
        tmp_path,
        [
            "track_1\ta\tb\t01/1.mp3\t30.0\tmood/theme---calm",
            "track_2\ta\tb\t02/2.mp3\t30.0",
            "track_3\ta\tb\t03/3.mp3\t30.0\tmood/theme---nope",
        ],
    )
    problems: list[str] = []
    table = read_split(path, TAGS, problems=problems)
    assert table.track_ids == ("track_1",)
    assert len(problems) == 2 and "line 3" in problems[0] and "line 4" in problems[1]


def test_tag_list_duplicates_and_blanks_are_refused(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(DataError, match="line 3: tag 'a' is listed twice"):
        read_tags(path)
    path.write_text("a\n\nb\n")
    with pytest.raises(DataError, match="line 2: empty line"):
        read_tags(path)
