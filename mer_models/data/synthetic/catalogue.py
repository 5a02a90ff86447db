"""The synthetic dataset's catalogue: track ids, artists, albums, folds, lengths and tags.

It follows the real dataset: the 56 real tag names in their official order,
five official splits of the same tracks, each artist-disjoint across its
train/validation/test parts, and the real long tail of tag frequencies (the
per-tag counts of split-0 train, scaled down). Whole artists go to five folds
of about 20% each and split k rotates them: validation is fold (3 + k) % 5,
test fold (4 + k) % 5, train the other three (60/20/20; the five test parts
cover every track once). Every fold holds every tag, so every part of every
split does. `Catalogue.rows` gives the split files' rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mer_models.data.splits import HEADER, PARTS
from mer_models.data.windows import FRAMES_PER_SECOND

# The 56 mood/theme tags of the real dataset, in the order of its tag file.
TAGS = tuple(
    f"mood/theme---{name}"
    for name in (
        "action adventure advertising background ballad calm children christmas commercial "
        "cool corporate dark deep documentary drama dramatic dream emotional energetic epic "
        "fast film fun funny game groovy happy heavy holiday hopeful inspiring love "
        "meditative melancholic melodic motivational movie nature party positive powerful "
        "relaxing retro romantic sad sexy slow soft soundscape space sport summer trailer "
        "travel upbeat uplifting"
    ).split()
)
# Tracks per tag in the real split-0 train part (tag order): the shape of the long tail.
_REAL_TRAIN_COUNTS = (
    296, 264, 363, 404, 193, 267, 152, 368, 191, 170, 349, 620, 429, 339, 253, 195, 498, 499,
    857, 601, 62, 746, 220, 109, 169, 78, 927, 98, 98, 137, 561, 493, 374, 228, 598, 372, 207,
    137, 127, 376, 106, 763, 139, 363, 375, 59, 295, 208, 415, 362, 201, 261, 159, 89, 216, 449,
)  # fmt: skip
# Tracks with 1..8 tags in the real split-0 train part (mean 1.8).
_REAL_TAGS_PER_TRACK = (5261, 2734, 1081, 574, 196, 87, 13, 3)
MAX_TAGS_PER_TRACK = len(_REAL_TAGS_PER_TRACK)
# Official splits, as in the real repository (split-0 .. split-4); also the number
# of artist folds they rotate, so a part holds 1/SPLITS of the tracks or the rest.
SPLITS = 5
PART_SHARES = ((SPLITS - 2) / SPLITS, 1 / SPLITS, 1 / SPLITS)  # train, validation, test
# The fewest tracks a fold may hold: every tag at least once, at most 8 tags a track.
_MIN_FOLD_TRACKS = -(-len(TAGS) // MAX_TAGS_PER_TRACK)
_ARTIST_DRAWS = 100  # tries at artists that can fill every fold (one nearly always does)

# Track lengths in frames: lognormal around 740 frames (16 s), so that about
# one track in ten is shorter than 500 frames, plus a few shorter than the
# usual 256-frame window to exercise padding; kept small so the default set
# stays near 300 MB.
_MEDIAN_FRAMES, _SIGMA_LOG_FRAMES = 740, 0.33
_MIN_FRAMES, _MAX_FRAMES = 150, 3000
_SHORT_SHARE, _SHORT_FRAMES = 0.02, 256

# --- the catalogue: ids, artists, albums, folds, lengths and tags ----------------------------


@dataclass(frozen=True)
class Catalogue:
    """The metadata of every track, rows sorted by track id."""

    track_ids: np.ndarray  # int64 (n,)
    artist_ids: np.ndarray  # int64 (n,)
    album_ids: np.ndarray  # int64 (n,)
    folds: np.ndarray  # int64 (n,), in [0, SPLITS): whole artists, every tag in each
    frames: np.ndarray  # int64 (n,)
    labels: np.ndarray  # bool (n, 56)

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def parts(self) -> np.ndarray:
        """int64 (n,) index into PARTS of every track in split 0."""
        return self.split_parts(0)

    def split_parts(self, split: int) -> np.ndarray:
        """int64 (n,) index into PARTS of every track in split `split`.

        Validation is fold (split + 3) % 5, test fold (split + 4) % 5, train the
        other three (SPLITS = 5): a rotation, so split 0 trains on folds 0-2.
        """
        if not 0 <= split < SPLITS:
            raise ValueError(f"split must be in 0..{SPLITS - 1}, got {split!r}")
        parts = np.full(len(self), PARTS.index("train"), dtype=np.int64)
        parts[self.folds == (SPLITS - 2 + split) % SPLITS] = PARTS.index("validation")
        parts[self.folds == (SPLITS - 1 + split) % SPLITS] = PARTS.index("test")
        return parts

    def rows(self, part: int | None = None, split: int = 0) -> list[str]:
        """TSV rows (header first) of one part of `split`, or of all tracks when `part` is None."""
        lines = ["\t".join(HEADER)]
        parts = self.split_parts(split)
        for i in range(len(self)):
            if part is not None and parts[i] != part:
                continue
            track = int(self.track_ids[i])
            fields = [
                f"track_{track:07d}",
                f"artist_{int(self.artist_ids[i]):06d}",
                f"album_{int(self.album_ids[i]):06d}",
                f"{track % 100:02d}/{track}.mp3",
                f"{self.frames[i] / FRAMES_PER_SECOND:.1f}",
                *(TAGS[j] for j in np.flatnonzero(self.labels[i])),
            ]
            lines.append("\t".join(fields))
        return lines

    def melspec_path(self, i: int) -> str:
        track = int(self.track_ids[i])
        return f"{track % 100:02d}/{track}.npy"


def plan_catalogue(tracks: int, seed: int) -> Catalogue:
    """Draw the metadata of `tracks` tracks: artist-disjoint folds, lengths and tags."""
    rng = np.random.default_rng((seed, 0))
    # Near MIN_TRACKS a draw may have too few artists to fill every fold (two of 14
    # and 13 tracks among 50, say): about one draw in a thousand, drawn again.
    for _ in range(_ARTIST_DRAWS):
        artist_of, album_of = _artists_and_albums(tracks, rng)
        folds = _assign_folds(artist_of, rng)
        if folds is not None:
            break
    else:
        raise AssertionError(f"{_ARTIST_DRAWS} artist draws could not fill {SPLITS} folds")
    # Ids grow along the catalogue: consecutive within an album, gaps between albums.
    new_album = np.r_[True, album_of[1:] != album_of[:-1]]
    gaps = np.where(new_album, rng.integers(10, 4000, tracks), rng.integers(1, 3, tracks))
    track_ids = 200 + np.cumsum(gaps)
    artist_ids = 10 + np.cumsum(rng.integers(1, 40, artist_of.max() + 1))[artist_of]
    album_ids = 10 + np.cumsum(rng.integers(1, 25, album_of.max() + 1))[album_of]
    frames = np.exp(rng.normal(np.log(_MEDIAN_FRAMES), _SIGMA_LOG_FRAMES, tracks))
    short = rng.random(tracks) < _SHORT_SHARE
    frames[short] = rng.uniform(_MIN_FRAMES, _SHORT_FRAMES, short.sum())
    frames = np.clip(np.round(frames), _MIN_FRAMES, _MAX_FRAMES).astype(np.int64)
    labels = np.zeros((tracks, len(TAGS)), dtype=bool)
    favourites = _album_favourites(album_of, rng)
    # Tags per fold: every tag in every fold, hence in every part of every split.
    for fold in range(SPLITS):
        members = np.flatnonzero(folds == fold)
        labels[members] = _assign_tags(favourites[members], rng)
    return Catalogue(track_ids, artist_ids, album_ids, folds, frames, labels)


def _artists_and_albums(tracks: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Artist and album index of every track: 1-3 albums an artist, 1-6 tracks an album."""
    album_sizes: list[int] = []
    album_artist: list[int] = []
    artist = 0
    while sum(album_sizes) < tracks:
        for _ in range(min(rng.geometric(0.6), 3)):
            album_sizes.append(int(min(rng.geometric(0.4), 6)))
            album_artist.append(artist)
        artist += 1
    album_of = np.repeat(np.arange(len(album_sizes)), album_sizes)[:tracks]
    return np.asarray(album_artist)[album_of], album_of


def _assign_folds(artist_of: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Fold of every track; whole artists go to one of SPLITS folds, filled equally.

    Artists are taken largest first (random order among equals) and each goes
    to the fold furthest below its share, so the folds come out within an
    artist's size of 1/SPLITS of the tracks, like the artist-filtered real splits.
    None when a fold comes out too small to hold every tag.
    """
    sizes = np.bincount(artist_of)
    order = np.lexsort((rng.random(len(sizes)), -sizes))
    filled = np.zeros(SPLITS)
    fold_of_artist = np.zeros(len(sizes), dtype=np.int64)
    target = len(artist_of) / SPLITS
    for artist in order:
        fold = int(np.argmax(target - filled))
        fold_of_artist[artist] = fold
        filled[fold] += sizes[artist]
    # A fold under 7 tracks cannot hold every tag (56 tags, at most 8 a track). Moving
    # an artist to it cannot help: while that fold was short, every other fold took
    # its artists only when at least as far below its share (under 7 tracks), its
    # last and smallest one included, so losing any artist leaves it short too. The
    # caller draws the artists again.
    if filled.min() < _MIN_FOLD_TRACKS:
        return None
    return fold_of_artist[artist_of]


def _album_favourites(album_of: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bool (tracks, tags): two tags an album leans to, so tags cluster by album."""
    weights = np.asarray(_REAL_TRAIN_COUNTS, dtype=np.float64)
    n_albums = album_of.max() + 1
    keys = np.log(weights) + rng.gumbel(size=(n_albums, len(TAGS)))
    favourite = np.zeros((n_albums, len(TAGS)), dtype=bool)
    np.put_along_axis(favourite, np.argsort(-keys, axis=1)[:, :2], True, axis=1)
    return favourite[album_of]


def _assign_tags(favourites: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels of one fold: real tags-per-track law, real tail, every tag at least once.

    Tag counts are set first (proportional to the real train counts, at least
    one each), then each tag, most frequent first, goes to the tracks with the
    most free tag slots, album favourites and random order breaking ties: the
    greedy construction of a bipartite graph with given degrees (Gale-Ryser).
    """
    n = len(favourites)
    law = np.asarray(_REAL_TAGS_PER_TRACK, dtype=np.float64)
    per_track = rng.choice(np.arange(1, MAX_TAGS_PER_TRACK + 1), size=n, p=law / law.sum())
    while per_track.sum() < len(TAGS):  # tiny folds: more tags a track so every tag fits
        open_slots = np.flatnonzero(per_track < MAX_TAGS_PER_TRACK)
        per_track[rng.choice(open_slots)] += 1
    counts = _tag_counts(int(per_track.sum()), n)
    free = per_track.copy()
    labels = np.zeros((n, len(TAGS)), dtype=bool)
    for tag in np.argsort(-counts, kind="stable"):
        preference = favourites[:, tag] + rng.random(n)
        chosen = np.lexsort((-preference, -free))[: counts[tag]]
        assert np.all(free[chosen] > 0), "tag assignment ran out of free slots"
        labels[chosen, tag] = True
        free[chosen] -= 1
    assert not free.any() and np.all(labels.sum(axis=0) >= 1)
    return labels


def _tag_counts(slots: int, tracks: int) -> np.ndarray:
    """Tracks per tag: `slots` shared in proportion to the real counts, each in [1, tracks]."""
    weights = np.asarray(_REAL_TRAIN_COUNTS, dtype=np.float64)
    share = weights / weights.sum() * slots
    counts = np.clip(np.floor(share).astype(np.int64), 1, tracks)
    # Largest remainders take the slots still free (or give back the excess).
    for tag in np.argsort(counts - share, kind="stable"):
        if counts.sum() == slots:
            break
        if counts.sum() < slots and counts[tag] < tracks:
            counts[tag] += 1
    for tag in np.argsort(-counts, kind="stable"):
        if counts.sum() == slots:
            break
        if counts[tag] > 1:
            counts[tag] -= 1
    assert counts.sum() == slots, "cannot share the tag slots among the tags"
    return counts
