"""The embedded synthetic dataset: real layout, realistic statistics, determinism,
a learnable signal, the cache and bad input.

One 1000-track dataset (the default size, about 4 s) is generated per module
and shared by the layout and statistics tests; the rest use sets near the
minimum size.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from mer_models.data import DatasetPaths, load_split, read_split, read_tags
from mer_models.data.__main__ import main as data_main
from mer_models.data.check import check_dataset
from mer_models.data.splits import HEADER, PARTS
from mer_models.data.synthetic import command, write
from mer_models.data.synthetic.catalogue import PART_SHARES, SPLITS, TAGS, plan_catalogue
from mer_models.data.synthetic.render import render_track, tag_signatures
from mer_models.data.synthetic.write import (
    GENERATOR_VERSION,
    MARKER,
    MIN_TRACKS,
    synthetic_dataset,
    synthetic_paths,
    write_synthetic,
)
from mer_models.data.windows import FRAMES_PER_SECOND, N_BANDS, PAD_DB, open_melspec, read_window
from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[2]
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"the real MTG-Jamendo metadata is absent ({SHARED}); nothing to compare with",
)
# The first five columns of a real split row (tags follow, one a column).
ROW = re.compile(r"track_(\d{7})\tartist_\d{6}\talbum_\d{6}\t(\d\d)/(\d+)\.mp3\t\d+\.\d(\t[^\t]+)+")
DEFAULT_TRACKS = 1000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DatasetPaths:
    """The default-size dataset (1000 tracks, seed 0), generated once for the module."""
    root = tmp_path_factory.mktemp("synthetic") / "default"
    write_synthetic(root, tracks=DEFAULT_TRACKS, seed=0, workers=2)
    return synthetic_paths(root)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private project cache, so the preflight's memory of checked files stays here."""
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def split_rows(paths: DatasetPaths, part: str) -> list[list[str]]:
    """Rows (header excluded) of one split file, as raw tab-separated fields."""
    with paths.split_file(part).open(newline="") as stream:
        return list(csv.reader(stream, delimiter="\t"))[1:]


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def real_train_counts() -> np.ndarray:
    """Tracks per tag in the real split-0 train part, read with the project's reader."""
    tags = read_tags(SHARED / "data" / "tags" / "moodtheme_split.txt")
    table = read_split(
        SHARED / "data" / "splits" / "split-0" / "autotagging_moodtheme-train.tsv", tags
    )
    return table.labels.sum(axis=0)


# --- layout --------------------------------------------------------------------------------------


def test_the_layout_is_the_real_repository_layout(dataset):
    root = dataset.metadata.parent
    splits = dataset.metadata / "data" / "splits" / "split-0"
    expected = {f"autotagging_moodtheme-{part}.tsv" for part in ("train", "validation", "test")}
    assert {path.name for path in splits.iterdir()} == expected
    assert (dataset.metadata / "data" / "tags" / "moodtheme_split.txt").is_file()
    assert dataset.split_file("train") == splits / "autotagging_moodtheme-train.tsv"
    assert dataset.tag_file() == dataset.metadata / "data" / "tags" / "moodtheme_split.txt"
    assert {path.name for path in root.iterdir()} == {"metadata", "melspecs", MARKER}
    marker = json.loads((root / MARKER).read_text())
    assert marker == {"generator_version": GENERATOR_VERSION, "seed": 0, "tracks": DEFAULT_TRACKS}


def test_the_tag_file_lists_the_56_tags_in_order(dataset):
    tags = read_tags(dataset.tag_file())
    assert tags == TAGS
    assert len(tags) == 56 and len(set(tags)) == 56
    assert all(tag.startswith("mood/theme---") for tag in tags)


@needs_shared
def test_the_tag_file_equals_the_real_one(dataset):
    real = SHARED / "data" / "tags" / "moodtheme_split.txt"
    assert dataset.tag_file().read_text().splitlines() == real.read_text().splitlines()


@needs_shared
def test_split_files_have_the_real_header_line_ends_and_row_format(dataset):
    real_file = SHARED / "data" / "splits" / "split-0" / "autotagging_moodtheme-train.tsv"
    real = real_file.read_bytes()
    real_header = real.split(b"\n", 1)[0]
    assert real_header.endswith(b"\r")  # the real files end their lines with CRLF
    for part in PARTS:
        ours = dataset.split_file(part).read_bytes()
        assert ours.split(b"\n", 1)[0] == real_header
        assert ours.count(b"\n") == ours.count(b"\r\n")
    # The real rows match the pattern, so the pattern says what a real row looks like.
    assert all(ROW.fullmatch(line) for line in real.decode().splitlines()[1:200])


def test_split_rows_are_well_formed(dataset):
    header = dataset.split_file("train").read_text().splitlines()[0]
    assert tuple(header.split("\t")) == HEADER
    for part in PARTS:
        for line in dataset.split_file(part).read_text().splitlines()[1:]:
            match = ROW.fullmatch(line)
            assert match, line
            track, folder, path_id = (int(match.group(i)) for i in (1, 2, 3))
            assert track == path_id and folder == track % 100
            tags = line.split("\t")[5:]
            assert len(set(tags)) == len(tags) and set(tags) <= set(TAGS)


def test_the_all_tracks_table_is_the_union_of_the_parts(dataset):
    whole = read_split(dataset.metadata / "data" / "autotagging_moodtheme.tsv", TAGS)
    parts = [load_split(dataset, part) for part in PARTS]
    assert len(whole) == DEFAULT_TRACKS == sum(len(table) for table in parts)
    assert set(whole.track_ids) == {t for table in parts for t in table.track_ids}
    # Rows sorted by track id, like the real table.
    numbers = [int(track.removeprefix("track_")) for track in whole.track_ids]
    assert numbers == sorted(numbers)


def test_melspecs_are_float32_96_by_n_finite_db_matching_the_durations(dataset):
    listed = set()
    for part in PARTS:
        table = load_split(dataset, part)
        for relative, seconds in zip(table.melspec_paths, table.durations, strict=True):
            listed.add(relative)
            array = np.load(dataset.melspecs / relative)
            assert array.dtype == np.float32 and array.ndim == 2
            assert array.shape[0] == N_BANDS
            assert np.isfinite(array).all()
            # dB values of a power spectrum, not normalised features.
            assert -100.0 <= array.min() and array.max() < 60.0 and array.std() > 3.0
            assert abs(array.shape[1] / FRAMES_PER_SECOND - seconds) <= 0.05 + 1e-9
    on_disk = {str(path.relative_to(dataset.melspecs)) for path in dataset.melspecs.rglob("*.npy")}
    assert on_disk == listed
    assert all(re.fullmatch(r"\d\d/\d+\.npy", relative) for relative in on_disk)


def test_the_preflight_passes_and_the_readers_load_it(dataset, cache):
    report = check_dataset(dataset)
    assert report.ok, report.describe_problems()
    assert report.tags == 56
    assert sum(report.tracks.values()) == DEFAULT_TRACKS
    table = load_split(dataset, "validation")
    assert table.labels.shape == (len(table), 56) and table.tags == TAGS
    shortest = int(np.argmin(table.durations))
    array = open_melspec(dataset.melspecs / table.melspec_paths[shortest])
    window = read_window(array, 0, 500)
    assert window.shape == (N_BANDS, 500)
    np.testing.assert_array_equal(window[:, : array.shape[1]], array)
    assert np.all(window[:, array.shape[1] :] == PAD_DB)


# --- statistics ----------------------------------------------------------------------------------


def test_parts_are_60_20_20_and_artist_disjoint(dataset):
    sizes = np.array([len(load_split(dataset, part)) for part in PARTS])
    np.testing.assert_allclose(sizes / sizes.sum(), (0.6, 0.2, 0.2), atol=0.03)
    artists = [{row[1] for row in split_rows(dataset, part)} for part in PARTS]
    tracks = [{row[0] for row in split_rows(dataset, part)} for part in PARTS]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not artists[i] & artists[j], (PARTS[i], PARTS[j])
            assert not tracks[i] & tracks[j], (PARTS[i], PARTS[j])
    assert all(len(found) > 5 for found in artists)


def test_tags_per_track_follow_the_real_law(dataset):
    labels = np.concatenate([load_split(dataset, part).labels for part in PARTS])
    per_track = labels.sum(axis=1)
    assert per_track.min() >= 1 and per_track.max() <= 8
    assert 1.6 <= per_track.mean() <= 2.0
    # Most tracks have one tag, and some have several, as in the real set (53% / 27%).
    assert 0.4 < np.mean(per_track == 1) < 0.65
    assert np.mean(per_track >= 3) > 0.1


def test_every_tag_is_in_every_part(dataset):
    for part in PARTS:
        counts = load_split(dataset, part).labels.sum(axis=0)
        assert counts.min() >= 1, (part, TAGS[int(np.argmin(counts))])


def test_tag_frequencies_are_long_tailed(dataset):
    counts = load_split(dataset, "train").labels.sum(axis=0)
    assert counts.max() >= 8 * counts.min()
    # A tail, not a cliff: the top quarter of the tags holds under two thirds of the labels.
    ordered = np.sort(counts)[::-1]
    assert 0.35 < ordered[:14].sum() / counts.sum() < 0.65


@needs_shared
def test_tag_frequencies_rank_like_the_real_train_split(dataset):
    real = real_train_counts()
    assert real.shape == (56,)
    for part in PARTS:
        ours = load_split(dataset, part).labels.sum(axis=0)
        assert spearmanr(ours, real).statistic > 0.8, part


@pytest.mark.parametrize("seed", [0, 1, 2, 347])
def test_the_smallest_sets_hold_every_tag_in_every_part(seed):
    # At seed 347 the first artist draw (artists of 14 and 13 of the 50 tracks) leaves
    # a fold under 7 tracks, too few for 56 tags at 8 a track, and no artist can move
    # to it: the artists are drawn again, whole artists still apart.
    catalogue = plan_catalogue(MIN_TRACKS, seed)
    sizes = np.bincount(catalogue.parts, minlength=3)
    assert sizes.sum() == MIN_TRACKS and sizes.min() >= 7
    for part in range(3):
        labels = catalogue.labels[catalogue.parts == part]
        assert labels.sum(axis=0).min() >= 1
        assert 1 <= labels.sum(axis=1).min() and labels.sum(axis=1).max() <= 8
    artists = [set(catalogue.artist_ids[catalogue.parts == part]) for part in range(3)]
    assert not (artists[0] & artists[1] or artists[0] & artists[2] or artists[1] & artists[2])


@pytest.mark.parametrize("seed", [0, 1, 347, 1364, 2451])
def test_the_smallest_sets_hold_every_tag_in_every_fold(seed):
    # Seeds 347, 1364 and 2451 draw their artists again (a fold would hold under 7 tracks).
    catalogue = plan_catalogue(MIN_TRACKS, seed)
    sizes = np.bincount(catalogue.folds, minlength=SPLITS)
    assert len(sizes) == SPLITS and sizes.sum() == MIN_TRACKS and sizes.min() >= 7
    artists = [set(catalogue.artist_ids[catalogue.folds == fold]) for fold in range(SPLITS)]
    for fold in range(SPLITS):
        labels = catalogue.labels[catalogue.folds == fold]
        assert labels.sum(axis=0).min() >= 1, fold
        assert 1 <= labels.sum(axis=1).min() and labels.sum(axis=1).max() <= 8
        assert not any(artists[fold] & artists[other] for other in range(fold + 1, SPLITS))


@pytest.mark.parametrize("tracks", [MIN_TRACKS, 300])
def test_split_k_rotates_the_folds(tracks):
    catalogue = plan_catalogue(tracks, 4)
    np.testing.assert_array_equal(catalogue.parts, catalogue.split_parts(0))
    for split in range(SPLITS):
        parts = catalogue.split_parts(split)
        expected = np.full(tracks, PARTS.index("train"))
        expected[catalogue.folds == (split + 3) % 5] = PARTS.index("validation")
        expected[catalogue.folds == (split + 4) % 5] = PARTS.index("test")
        np.testing.assert_array_equal(parts, expected)
        # A part's rows are the tracks the part holds, in track-id order.
        for part in range(len(PARTS)):
            rows = catalogue.rows(part, split=split)[1:]
            ids = [int(row.split("\t")[0].removeprefix("track_")) for row in rows]
            assert ids == catalogue.track_ids[parts == part].tolist()
    for bad in (-1, SPLITS):
        with pytest.raises(ValueError, match=f"split must be in 0..{SPLITS - 1}"):
            catalogue.split_parts(bad)


@pytest.mark.parametrize("tracks", [MIN_TRACKS, 300, DEFAULT_TRACKS])
def test_folds_are_equal_within_an_artist(tracks):
    for seed in range(5):
        catalogue = plan_catalogue(tracks, seed)
        largest_artist = np.unique(catalogue.artist_ids, return_counts=True)[1].max()
        sizes = np.bincount(catalogue.folds, minlength=SPLITS)
        assert np.abs(sizes - tracks / SPLITS).max() <= largest_artist, (seed, sizes)


def test_durations_vary_and_some_tracks_are_shorter_than_a_window(dataset):
    frames = np.array(
        [
            open_melspec(dataset.melspecs / relative).shape[1]
            for part in PARTS
            for relative in load_split(dataset, part).melspec_paths
        ]
    )
    assert np.sum(frames < 500) >= 20
    assert np.sum(frames < 256) >= 5
    assert np.sum(frames >= 1000) >= 50
    assert len(np.unique(frames)) > 300


# --- the five official splits -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["default", "smallest"])
def splits_root(request, dataset, tmp_path_factory) -> Path:
    """The default dataset, and the smallest one at a seed whose artists are drawn twice."""
    if request.param == "default":
        return dataset.metadata.parent
    root = tmp_path_factory.mktemp("synthetic") / "smallest"
    write_synthetic(root, tracks=MIN_TRACKS, seed=347, workers=1)
    return root


def all_tracks(root: Path) -> dict[str, list[str]]:
    """Rows of the all-tracks table by track id, as raw tab-separated fields."""
    with (root / "metadata" / "data" / "autotagging_moodtheme.tsv").open(newline="") as stream:
        return {row[0]: row for row in list(csv.reader(stream, delimiter="\t"))[1:]}


def test_the_layout_holds_the_five_official_splits(dataset):
    splits = dataset.metadata / "data" / "splits"
    assert SPLITS == 5
    assert sorted(path.name for path in splits.iterdir()) == [f"split-{k}" for k in range(5)]
    expected = {f"autotagging_moodtheme-{part}.tsv" for part in ("train", "validation", "test")}
    for k in range(SPLITS):
        assert {path.name for path in (splits / f"split-{k}").iterdir()} == expected
        assert synthetic_paths(dataset.metadata.parent, k).split_file("test").is_file()
    for bad in (-1, SPLITS, True, 1.0):
        with pytest.raises(ValueError, match="split must be an integer in 0..4"):
            synthetic_paths(dataset.metadata.parent, bad)


def test_every_split_is_an_artist_disjoint_60_20_20_partition_holding_every_tag(splits_root):
    whole = all_tracks(splits_root)
    artist_sizes = np.unique([row[1] for row in whole.values()], return_counts=True)[1]
    for k in range(SPLITS):
        paths = DatasetPaths(splits_root / "metadata", splits_root / "melspecs", split=k)
        tables = {part: load_split(paths, part) for part in PARTS}
        tracks = {part: set(table.track_ids) for part, table in tables.items()}
        artists = {part: {row[1] for row in split_rows(paths, part)} for part in PARTS}
        assert sum(len(table) for table in tables.values()) == len(whole), k
        assert set().union(*tracks.values()) == set(whole), k
        for i, first in enumerate(PARTS):
            for second in PARTS[i + 1 :]:
                assert not tracks[first] & tracks[second], (k, first, second)
                assert not artists[first] & artists[second], (k, first, second)
        for part, share in zip(PARTS, PART_SHARES, strict=True):
            counts = tables[part].labels.sum(axis=0)
            assert counts.min() >= 1, (k, part, TAGS[int(np.argmin(counts))])
            assert abs(len(tables[part]) - share * len(whole)) <= artist_sizes.max(), (k, part)
            # A track's row is the same in every split and in the all-tracks table.
            for row in split_rows(paths, part):
                assert row == whole[row[0]], (k, part, row[0])


def test_the_test_parts_rotate_over_every_track(splits_root):
    whole = set(all_tracks(splits_root))
    parts = {
        (k, part): set(load_split(synthetic_paths(splits_root, k), part).track_ids)
        for k in range(SPLITS)
        for part in PARTS
    }
    tests = [parts[k, "test"] for k in range(SPLITS)]
    assert sum(len(test) for test in tests) == len(whole)
    assert set().union(*tests) == whole
    for k in range(SPLITS):
        # One fold is split k's test and split k+1's validation part.
        assert parts[k, "test"] == parts[(k + 1) % SPLITS, "validation"], k
    # Every track trains in three splits and evaluates in the other two.
    for track in whole:
        assert sum(track in parts[k, "train"] for k in range(SPLITS)) == 3, track


def test_the_data_check_passes_on_split_3(dataset, cache, capsys):
    root = dataset.metadata.parent
    argv = ["check", "--metadata", str(dataset.metadata), "--melspecs", str(dataset.melspecs)]
    assert data_main([*argv, "--split", "3"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"dataset OK: {DEFAULT_TRACKS} tracks" in out and "split-3 moodtheme" in out, out
    split3 = synthetic_paths(root, 3)
    report = check_dataset(split3)
    assert report.ok, report.describe_problems()
    assert report.tracks == {part: len(load_split(split3, part)) for part in PARTS}
    # It read split 3's files, not split 0's.
    assert set(load_split(split3, "test").track_ids).isdisjoint(
        load_split(dataset, "test").track_ids
    )


# --- determinism ---------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files_whatever_the_workers(tmp_path):
    write_synthetic(tmp_path / "one", tracks=80, seed=3, workers=1)
    write_synthetic(tmp_path / "two", tracks=80, seed=3, workers=2)
    one, two = file_hashes(tmp_path / "one"), file_hashes(tmp_path / "two")
    assert len(one) > 80
    assert one == two


def test_a_different_seed_gives_different_content(tmp_path):
    write_synthetic(tmp_path / "a", tracks=80, seed=3, workers=1)
    write_synthetic(tmp_path / "b", tracks=80, seed=4, workers=1)
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    split = "metadata/data/splits/split-0/autotagging_moodtheme-train.tsv"
    assert a[split] != b[split]
    melspecs_a = {h for path, h in a.items() if path.startswith("melspecs/")}
    melspecs_b = {h for path, h in b.items() if path.startswith("melspecs/")}
    assert not melspecs_a & melspecs_b
    # The tag list does not depend on the seed.
    assert (
        a["metadata/data/tags/moodtheme_split.txt"] == b["metadata/data/tags/moodtheme_split.txt"]
    )


def test_the_catalogue_depends_only_on_its_arguments():
    first, again, other = plan_catalogue(200, 5), plan_catalogue(200, 5), plan_catalogue(200, 6)
    assert first.rows() == again.rows()
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.rows() != other.rows()


# --- a learnable signal --------------------------------------------------------------------------


def test_tag_signatures_are_fixed_varied_and_distinct():
    signatures = tag_signatures()
    assert len(signatures) == 56
    kinds = [signature.kind for signature in signatures]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == {
        "formant": 14,
        "rhythm": 14,
        "sweep": 8,
        "vibrato": 8,
        "drift": 6,
        "sections": 6,
    }
    rendered = np.stack(
        [signature.render(256, np.random.default_rng(1)) for signature in signatures]
    )
    assert rendered.shape == (56, N_BANDS, 256)
    assert np.isfinite(rendered).all() and rendered.min() >= 0
    assert np.all(rendered.max(axis=(1, 2)) > 0.1)
    flat = rendered.reshape(56, -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    similarity = flat @ flat.T
    np.fill_diagonal(similarity, 0)
    assert similarity.max() < 0.99  # no two tags plant the same pattern


def test_render_track_returns_a_db_melspec_and_its_evidence():
    labels = np.zeros(56, dtype=bool)
    labels[[3, 20]] = True
    melspec, evidence = render_track(300, labels, np.random.default_rng(0))
    assert melspec.dtype == np.float32 and melspec.shape == (N_BANDS, 300)
    assert np.isfinite(melspec).all() and melspec.min() >= -100.0
    assert evidence.dtype == bool and evidence.shape == (56,)
    again, _ = render_track(300, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(melspec, again)
    # Label noise is rare: most labels come with their evidence, few strays appear.
    agree = [
        np.array_equal(render_track(64, labels, np.random.default_rng(seed))[1], labels)
        for seed in range(40)
    ]
    assert 0.7 <= np.mean(agree) < 1.0


def test_a_formant_tag_raises_the_energy_of_its_bands():
    """Tracks labelled with a formant tag are louder in its bands than the same tracks without it.

    Both groups carry the same other tag (a rhythm), so the only difference is
    the tag under test; bands far from the formant are the control.
    """
    signatures = tag_signatures()
    background = next(i for i, s in enumerate(signatures) if s.kind == "rhythm")
    gains, controls = [], []
    for tag, signature in enumerate(signatures):
        if signature.kind != "formant":
            continue
        params = dict(signature.params)
        k = sum(name.startswith("centre") for name in params)
        centres = [params[f"centre{i}"] for i in range(k)]
        widths = [params[f"width{i}"] for i in range(k)]
        bands = sorted({int(round(c)) for c in centres})
        far = [
            b
            for b in range(N_BANDS)
            if all(abs(b - c) > 3 * w + 3 for c, w in zip(centres, widths, strict=True))
        ]

        def contrast(with_tag: bool, seed: int, bands=bands, far=far, tag=tag) -> np.ndarray:
            labels = np.zeros(56, dtype=bool)
            labels[background] = True
            labels[tag] = with_tag
            melspec, _ = render_track(256, labels, np.random.default_rng((seed, tag)))
            melspec = melspec.astype(np.float64)
            return np.array([melspec[bands].mean(), melspec[far].mean()]) - melspec.mean()

        labelled = np.array([contrast(True, seed) for seed in range(12)])
        unlabelled = np.array([contrast(False, 100 + seed) for seed in range(12)])
        gain, control = labelled.mean(axis=0) - unlabelled.mean(axis=0)
        gains.append(gain)
        controls.append(control)
    gains, controls = np.array(gains), np.array(controls)
    assert len(gains) == 14
    assert np.all(gains > 1.5), gains
    assert gains.mean() > 5.0
    # Far from the formant nothing rises: at most the whole-track mean moves up a little.
    assert np.all(controls < 0.5), controls
    assert gains.mean() - controls.mean() > 5.0


# --- the cache -----------------------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch) -> list:
    """The arguments of every dataset generation from here on (generation still runs)."""
    recorded = []
    real_write = write.write_synthetic

    def counting_write(*args, **kwargs):
        recorded.append(args)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(write, "write_synthetic", counting_write)
    return recorded


def test_the_cache_generates_once_then_reuses(tmp_path, calls):
    paths = synthetic_dataset(tracks=MIN_TRACKS, seed=1, cache_dir=tmp_path)
    folder = paths.metadata.parent
    assert folder.parent == tmp_path.resolve()
    assert folder.name == f"synthetic-v{GENERATOR_VERSION}-t{MIN_TRACKS}-s1"
    assert (folder / MARKER).is_file()
    assert paths == synthetic_paths(folder)
    assert len(load_split(paths, "train")) + len(load_split(paths, "test")) < MIN_TRACKS
    sample = paths.split_file("test")
    stamp = sample.stat().st_mtime_ns
    again = synthetic_dataset(tracks=MIN_TRACKS, seed=1, cache_dir=tmp_path)
    assert again == paths
    assert sample.stat().st_mtime_ns == stamp
    assert len(calls) == 1
    # Other arguments name another folder.
    other = synthetic_dataset(tracks=MIN_TRACKS, seed=2, cache_dir=tmp_path)
    assert other.metadata.parent.name == f"synthetic-v{GENERATOR_VERSION}-t{MIN_TRACKS}-s2"
    assert len(calls) == 2


def test_concurrent_callers_generate_once(tmp_path, calls):
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(synthetic_dataset, tracks=MIN_TRACKS, seed=3, cache_dir=tmp_path)
            for _ in range(2)
        ]
        first, second = (future.result(timeout=120) for future in futures)
    assert first == second
    assert len(calls) == 1
    assert (first.metadata.parent / MARKER).is_file()


def test_a_folder_without_the_marker_is_regenerated(tmp_path):
    folder = tmp_path / f"synthetic-v{GENERATOR_VERSION}-t{MIN_TRACKS}-s0"
    (folder / "metadata").mkdir(parents=True)
    (folder / "metadata" / "half-written.tsv").write_text("TRACK_ID\n")
    paths = synthetic_dataset(tracks=MIN_TRACKS, seed=0, cache_dir=tmp_path)
    assert paths.metadata.parent == folder.resolve()
    assert (folder / MARKER).is_file()
    assert not (folder / "metadata" / "half-written.tsv").exists()
    assert sum(len(load_split(paths, part)) for part in PARTS) == MIN_TRACKS


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--tracks", str(MIN_TRACKS - 1)], f"--tracks must be >= {MIN_TRACKS}"),
        (["--tracks", "many"], "--tracks"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_the_command_rejects_bad_numbers_and_writes_nothing(tmp_path, capsys, argv, problem):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--out", str(out), *argv])
    assert exit_info.value.code == 2
    assert problem in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_command_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--out", str(out), "--tracks", str(MIN_TRACKS)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert str(out) in error and "not an empty folder" in error
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"tracks": MIN_TRACKS - 1}, "tracks must be an integer >= 50"),
        ({"tracks": 100.0}, "tracks must be an integer"),
        ({"tracks": True}, "tracks must be an integer"),
        ({"tracks": 60, "seed": -1}, "seed must be an integer >= 0"),
        ({"tracks": 60, "seed": 1.5}, "seed must be an integer >= 0"),
        ({"tracks": 60, "workers": 0}, "workers must be >= 1"),
    ],
)
def test_write_synthetic_rejects_bad_arguments(tmp_path, kwargs, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        write_synthetic(tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_synthetic_refuses_an_existing_file_or_non_empty_folder(tmp_path):
    existing = tmp_path / "file"
    existing.write_text("x")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        write_synthetic(existing, tracks=MIN_TRACKS)
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("a")
    with pytest.raises(ValueError, match="full exists and is not an empty folder"):
        write_synthetic(full, tracks=MIN_TRACKS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "full"]
    assert [path.name for path in full.iterdir()] == ["a"]


def test_an_empty_output_folder_is_filled(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    summary = write_synthetic(out, tracks=MIN_TRACKS, seed=0, workers=1)
    assert summary.root == out.resolve()
    assert sum(summary.tracks) == MIN_TRACKS
    assert (out / MARKER).is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["empty"]


def test_the_dataset_gets_the_permissions_the_umask_gives(tmp_path):
    previous = os.umask(0o022)
    try:
        write_synthetic(tmp_path / "shared", tracks=MIN_TRACKS, seed=0, workers=1)
    finally:
        os.umask(previous)
    out = tmp_path / "shared"
    assert out.stat().st_mode & 0o777 == 0o755  # not tempfile.mkdtemp's 0o700
    melspec = next((out / "melspecs").rglob("*.npy"))
    assert melspec.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_mid_write_leaves_no_output(tmp_path, monkeypatch, failure):
    def failing_write(melspecs, *args):
        (melspecs / "00").mkdir(parents=True)
        np.save(melspecs / "00" / "100.npy", np.zeros((N_BANDS, 10), np.float32))
        raise failure

    monkeypatch.setattr(write, "_write_melspecs", failing_write)
    out = tmp_path / "out"
    with pytest.raises(type(failure)):
        write_synthetic(out, tracks=MIN_TRACKS, seed=0, workers=1)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no .partial folder either


# --- the command line ----------------------------------------------------------------------------


def test_the_command_writes_a_dataset_and_prints_the_summary(tmp_path):
    out = tmp_path / "nested" / "data"
    env = {**os.environ, "MER_MODELS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "mer_models.synthetic", "--out", str(out), "--tracks", "60"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        rf"synthetic dataset in {re.escape(str(out.resolve()))}: 60 tracks \(train \d+, "
        r"validation \d+, test \d+\), 56 tags, \d+ frames \(\d+\.\d h\), \d+ MB, \d+\.\d s",
        lines[0],
    ), lines[0]
    paths = synthetic_paths(out)
    sizes = [len(load_split(paths, part)) for part in PARTS]
    assert lines[0].find(f"train {sizes[0]}, validation {sizes[1]}, test {sizes[2]}") > 0
    assert sum(1 for _ in paths.melspecs.rglob("*.npy")) == 60
    assert (out / MARKER).is_file()
    # The same arguments in-process give the same files.
    write_synthetic(tmp_path / "again", tracks=60, seed=0, workers=1)
    assert file_hashes(out) == file_hashes(tmp_path / "again")
