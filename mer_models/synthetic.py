"""An embedded synthetic dataset in exactly the MTG-Jamendo mood/theme formats.

The real mel-spectrograms (68 GB) are not reachable from where the project is
developed and tested, so the default study, the tests and new users run on a
generated stand-in that the real loaders read unchanged: the repository layout
(split TSVs with CRLF line ends like the real ones, the 56 real tag names in
their official order), `NN/ID.npy` float32 (96, n_frames) dB arrays at
46.875 frames/s, artist-disjoint 60/20/20 splits, and the real long tail of
tag frequencies (the per-tag counts of split-0 train, scaled down).

The audio is a toy world built to be learnable but not trivially: every tag
plants its own spectro-temporal signature (a formant, a rhythm, a sweep, a
vibrato, a modulation whose rate drifts along the track, or alternating
sections), present throughout the track so that any window of 128+ frames
shows it, at a per-track random strength, over a coloured noise floor, a bed
of harmonic notes and drums at a track-specific tempo, and signature-like
distractors tied to no tag; a few labels have no evidence and a few tracks
carry the evidence of a tag they are not labelled with. Everything is drawn
from numpy generators seeded by (seed, stream, track), so equal arguments
give byte-identical files, whatever the number of worker processes.

python -m mer_models.synthetic --out DIR [--tracks N] [--seed S] [--workers W]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from mer_models.cache import cache_root
from mer_models.data.splits import HEADER, PARTS, DatasetPaths
from mer_models.data.windows import FRAMES_PER_SECOND, N_BANDS

log = logging.getLogger(__name__)

# Bump when the generated content changes: it names the cache folder, so a
# new generator never reads a dataset written by an older one.
GENERATOR_VERSION = 2
DEFAULT_TRACKS = 1000
MIN_TRACKS = 50
MARKER = "synthetic-complete.json"  # written last: a folder without it is not a dataset

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
PART_SHARES = (0.6, 0.2, 0.2)  # train, validation, test

# Track lengths in frames: lognormal around 740 frames (16 s), so that about
# one track in ten is shorter than 500 frames, plus a few shorter than the
# usual 256-frame window to exercise padding; kept small so the default set
# stays near 300 MB.
_MEDIAN_FRAMES, _SIGMA_LOG_FRAMES = 740, 0.33
_MIN_FRAMES, _MAX_FRAMES = 150, 3000
_SHORT_SHARE, _SHORT_FRAMES = 0.02, 256

# Difficulty: signature level (dB relative to the music bed) and label noise.
_CLARITY_DB, _CLARITY_TRACK_SD, _CLARITY_TAG_SD = 5.0, 3.0, 4.0
_MISSING_EVIDENCE = 0.05  # a label whose signature is not rendered
_STRAY_EVIDENCE = 0.05  # a track that also carries an unlabelled tag's signature
_DISTRACTORS_PER_TRACK = 1.0  # mean number of signature-like events tied to no tag
_SIGNATURE_SEED = 20200914  # the tag signatures are fixed: seeds vary tracks, not tags

_BANDS = np.arange(N_BANDS, dtype=np.float64)[:, None]  # (96, 1), broadcasts over frames


# --- the catalogue: ids, artists, albums, parts, lengths and tags -----------------------------


@dataclass(frozen=True)
class Catalogue:
    """The metadata of every track, rows sorted by track id."""

    track_ids: np.ndarray  # int64 (n,)
    artist_ids: np.ndarray  # int64 (n,)
    album_ids: np.ndarray  # int64 (n,)
    parts: np.ndarray  # int64 (n,), index into PARTS
    frames: np.ndarray  # int64 (n,)
    labels: np.ndarray  # bool (n, 56)

    def __len__(self) -> int:
        return len(self.track_ids)

    def rows(self, part: int | None = None) -> list[str]:
        """TSV rows (header first) of one part, or of all tracks when `part` is None."""
        lines = ["\t".join(HEADER)]
        for i in range(len(self)):
            if part is not None and self.parts[i] != part:
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
    """Draw the metadata of `tracks` tracks: artist-disjoint parts, lengths and tags."""
    rng = np.random.default_rng((seed, 0))
    artist_of, album_of = _artists_and_albums(tracks, rng)
    parts = _assign_parts(artist_of, rng)
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
    for part in range(len(PARTS)):
        members = np.flatnonzero(parts == part)
        labels[members] = _assign_tags(favourites[members], rng)
    return Catalogue(track_ids, artist_ids, album_ids, parts, frames, labels)


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


def _assign_parts(artist_of: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Part of every track; whole artists go to one part, filled towards 60/20/20.

    Artists are taken largest first (random order among equals) and each goes
    to the part furthest below its share, so the shares come out within an
    artist's size of the target, like the artist-filtered real splits.
    """
    sizes = np.bincount(artist_of)
    order = np.lexsort((rng.random(len(sizes)), -sizes))
    filled = np.zeros(len(PARTS))
    part_of_artist = np.zeros(len(sizes), dtype=np.int64)
    total = len(artist_of)
    for artist in order:
        part = int(np.argmax(np.asarray(PART_SHARES) * total - filled))
        part_of_artist[artist] = part
        filled[part] += sizes[artist]
    # Near MIN_TRACKS a part can come out too small to hold every tag (7 tracks of
    # 8 tags for 56 tags): it takes the smallest artists of the largest part.
    smallest_part = -(-len(TAGS) // MAX_TAGS_PER_TRACK)
    while filled.min() < smallest_part:
        short, donor = int(np.argmin(filled)), int(np.argmax(filled))
        members = np.flatnonzero(part_of_artist == donor)
        artist = members[np.argmin(sizes[members])]
        part_of_artist[artist] = short
        filled[donor] -= sizes[artist]
        filled[short] += sizes[artist]
    return part_of_artist[artist_of]


def _album_favourites(album_of: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bool (tracks, tags): two tags an album leans to, so tags cluster by album."""
    weights = np.asarray(_REAL_TRAIN_COUNTS, dtype=np.float64)
    n_albums = album_of.max() + 1
    keys = np.log(weights) + rng.gumbel(size=(n_albums, len(TAGS)))
    favourite = np.zeros((n_albums, len(TAGS)), dtype=bool)
    np.put_along_axis(favourite, np.argsort(-keys, axis=1)[:, :2], True, axis=1)
    return favourite[album_of]


def _assign_tags(favourites: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels of one part: real tags-per-track law, real tail, every tag at least once.

    Tag counts are set first (proportional to the real train counts, at least
    one each), then each tag, most frequent first, goes to the tracks with the
    most free tag slots, album favourites and random order breaking ties: the
    greedy construction of a bipartite graph with given degrees (Gale-Ryser).
    """
    n = len(favourites)
    law = np.asarray(_REAL_TAGS_PER_TRACK, dtype=np.float64)
    per_track = rng.choice(np.arange(1, MAX_TAGS_PER_TRACK + 1), size=n, p=law / law.sum())
    while per_track.sum() < len(TAGS):  # tiny parts: more tags a track so every tag fits
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


# --- signatures: the evidence of a tag in a mel-spectrogram ---------------------------------


@dataclass(frozen=True)
class Signature:
    """A spectro-temporal pattern: `kind` names the renderer, `params` its arguments."""

    kind: str
    params: tuple[tuple[str, float], ...]

    def render(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Power (96, n) at unit level; the random phase and jitter differ per track."""
        return _RENDERERS[self.kind](n, rng, **dict(self.params))


def _draw_signature(kind: str, rng: np.random.Generator) -> Signature:
    """Random parameters of one pattern of `kind` (tags and distractors alike)."""
    u = rng.uniform
    if kind == "formant":
        k = int(rng.integers(1, 4))
        params = {f"centre{i}": u(4, 92) for i in range(k)}
        params |= {f"width{i}": u(1.0, 3.0) for i in range(k)}
        params |= {f"gain{i}": u(0.3, 1.0) for i in range(k)}
        params |= {"on": u(10, 50), "off": u(3, 25)}
    elif kind == "rhythm":
        low = u(0, 80)
        params = {"low": low, "high": min(low + u(8, 35), 95), "period": u(8, 40)}
        params |= {"decay": u(1.0, 5.0), "accent": float(rng.integers(1, 5))}
    elif kind == "sweep":
        start = u(5, 90)
        params = {"start": start, "stop": np.clip(start + rng.choice([-1, 1]) * u(8, 40), 2, 93)}
        params |= {"length": u(15, 70), "gap": u(5, 45), "width": u(0.8, 2.0)}
    elif kind == "vibrato":
        params = {"centre": u(6, 80), "depth": u(1.0, 4.0), "period": u(8, 40)}
        params |= {"width": u(0.8, 1.8), "partial": u(8, 20)}
    elif kind == "drift":
        low = u(0, 85)
        params = {"low": low, "high": min(low + u(5, 25), 95)}
        params |= {"period_start": u(6, 40), "period_stop": u(6, 40)}
    elif kind == "sections":
        params = {"first": u(4, 92), "second": u(4, 92), "width": u(1.0, 3.0)}
        params |= {"section": u(40, 90)}
    else:
        raise ValueError(f"unknown signature kind {kind!r}; expected one of {', '.join(_KINDS)}")
    return Signature(kind, tuple((name, float(value)) for name, value in params.items()))


@functools.cache
def tag_signatures() -> tuple[Signature, ...]:
    """One fixed signature a tag (the same for every seed): the world the data is drawn from."""
    rng = np.random.default_rng(_SIGNATURE_SEED)
    kinds = np.repeat(list(_KINDS), _KIND_TAGS)
    return tuple(_draw_signature(str(kind), rng) for kind in rng.permutation(kinds))


def _segments(n: int, on: float, off: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) note envelope: notes of about `on` frames with gaps of about `off`, random phase."""
    count = int(n / (0.5 * (on + off))) + 3
    lengths = np.stack([rng.uniform(0.5, 1.5, count) * on, rng.uniform(0.5, 1.5, count) * off])
    levels = np.stack([rng.uniform(0.5, 1.0, count), np.zeros(count)])
    lengths = np.maximum(np.round(lengths.T.ravel()).astype(np.int64), 1)
    envelope = np.repeat(levels.T.ravel(), lengths)
    start = int(rng.integers(0, int(on + off) + 1))
    envelope = envelope[start : start + n]
    return _smooth(np.pad(envelope, (0, n - len(envelope))), 3)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the last axis, same length (soft attacks and releases)."""
    kernel = np.ones(width) / width
    return np.convolve(x, kernel, mode="same")


def _band(low: float, high: float) -> np.ndarray:
    """(96,) plateau over bands [low, high] with soft edges."""
    bands = _BANDS[:, 0]
    return 1 / (1 + np.exp(-(bands - low) * 1.5)) / (1 + np.exp((bands - high) * 1.5))


def _line(centre: np.ndarray | float, width: float) -> np.ndarray:
    """(96, n) Gaussian ridge at fractional band `centre` (a scalar or a (n,) track)."""
    return np.exp(-0.5 * ((_BANDS - np.atleast_1d(centre)[None, :]) / width) ** 2)


def _pulses(n: int, period: float, decay: float, accent: int, rng) -> np.ndarray:
    """(n,) periodic onsets with exponential decay; every `accent`-th beat is stronger."""
    count = int(n / period) + 2
    times = rng.uniform(0, period) + period * np.arange(count) + rng.normal(0, 0.3, count)
    times = np.round(times).astype(np.int64)
    strength = np.where(np.arange(count) % accent == 0, 1.0, 0.5) * rng.uniform(0.7, 1.0, count)
    keep = times < n
    impulses = np.zeros(n)
    np.add.at(impulses, times[keep], strength[keep])
    kernel = np.exp(-np.arange(int(5 * decay) + 1) / decay)
    return np.convolve(impulses, kernel)[:n]


def _render_formant(n: int, rng: np.random.Generator, on: float, off: float, **p) -> np.ndarray:
    k = sum(name.startswith("centre") for name in p)
    profile = sum(p[f"gain{i}"] * _line(p[f"centre{i}"], p[f"width{i}"])[:, 0] for i in range(k))
    return np.outer(profile, _segments(n, on, off, rng))


def _render_rhythm(n, rng, low, high, period, decay, accent) -> np.ndarray:
    return np.outer(_band(low, high), _pulses(n, period, decay, int(accent), rng))


def _render_sweep(n, rng, start, stop, length, gap, width) -> np.ndarray:
    position = (np.arange(n) + rng.uniform(0, length + gap)) % (length + gap)
    active = position < length
    centre = start + (stop - start) * np.minimum(position / length, 1.0)
    return _line(centre, width) * active


def _render_vibrato(n, rng, centre, depth, period, width, partial) -> np.ndarray:
    phase = 2 * np.pi * np.arange(n) / period + rng.uniform(0, 2 * np.pi)
    track = centre + depth * np.sin(phase)
    return _line(track, width) + 0.4 * _line(track + partial, width)


def _render_drift(n, rng, low, high, period_start, period_stop) -> np.ndarray:
    # Amplitude modulation whose period moves from period_start to period_stop
    # over the track: a window's rate depends on where in the track it lies.
    period = np.linspace(period_start, period_stop, n)
    phase = 2 * np.pi * np.cumsum(1 / period) + rng.uniform(0, 2 * np.pi)
    return np.outer(_band(low, high), ((1 + np.cos(phase)) / 2) ** 2)


def _render_sections(n, rng, first, second, width, section) -> np.ndarray:
    # Alternating sections: a formant at `first`, then one at `second`.
    position = (np.arange(n) + rng.uniform(0, 2 * section)) % (2 * section)
    in_first = _smooth((position < section).astype(np.float64), 5)
    return np.outer(_line(first, width)[:, 0], in_first) + np.outer(
        _line(second, width)[:, 0], 1 - in_first
    )


_RENDERERS: dict[str, Callable[..., np.ndarray]] = {
    "formant": _render_formant,
    "rhythm": _render_rhythm,
    "sweep": _render_sweep,
    "vibrato": _render_vibrato,
    "drift": _render_drift,
    "sections": _render_sections,
}
_KINDS = tuple(_RENDERERS)
_KIND_TAGS = (14, 14, 8, 8, 6, 6)  # tags of each kind, 56 in all


# --- one track ---------------------------------------------------------------------------------


def _hz_to_band(hz: np.ndarray) -> np.ndarray:
    """Fractional band of a frequency on the dataset's 96 Slaney mel bands over 0-6 kHz."""

    def mel(f):
        f = np.asarray(f, dtype=np.float64)
        log_part = 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4)
        return np.where(f < 1000, 3 * f / 200, log_part)

    step = mel(6000.0) / (N_BANDS + 1)
    return mel(hz) / step - 1


def _music_bed(n: int, rng: np.random.Generator) -> np.ndarray:
    """(96, n) power at unit level: harmonic notes of a few pitches, and drums."""
    pitches = int(rng.integers(3, 9))
    f0 = np.exp(rng.uniform(np.log(80), np.log(700), pitches))
    harmonics = np.arange(1, 40)
    position = _hz_to_band(f0[:, None] * harmonics[None, :])  # (pitches, harmonics)
    amplitude = harmonics[None, :] ** -rng.uniform(0.8, 2.0, (pitches, 1))
    amplitude *= (f0[:, None] * harmonics[None, :]) < 6000
    profiles = np.einsum(
        "bph,ph->bp", np.exp(-0.5 * ((_BANDS[:, :, None] - position) / 0.7) ** 2), amplitude
    )
    # Onsets start 100 frames before the track, so it does not open on silence.
    rate = rng.uniform(0.01, 0.05, (pitches, 1))
    onsets = (rng.random((pitches, n + 100)) < rate) * rng.uniform(0.3, 1.0, (pitches, 1))
    decay = rng.uniform(4, 25)
    kernel = np.exp(-np.arange(int(4 * decay)) / decay)
    activity = np.stack([np.convolve(row, kernel)[100 : n + 100] for row in onsets])
    bed = profiles @ activity
    if rng.random() < 0.7:  # drums at the track's own tempo
        period = rng.uniform(9, 40)
        kick = _pulses(n, period, 2.0, 1, rng)
        snare = np.roll(_pulses(n, 2 * period, 1.5, 1, rng), int(period))
        hat = _pulses(n, period / 2, 0.8, 2, rng)
        drums = np.stack([_band(0, 6), 0.5 * _band(15, 60), 0.3 * _band(65, 95)], axis=1)
        bed += rng.uniform(0.5, 2.0) * drums @ np.stack([kick, snare, hat])
    return bed


def render_track(
    n_frames: int, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A (96, n_frames) float32 dB mel-spectrogram for a track with these labels.

    Returns the array and the bool (56,) mask of tags whose signature was
    rendered (label noise makes it differ from `labels` now and then).
    """
    n = int(n_frames)
    signatures = tag_signatures()
    evidence = labels & (rng.random(len(TAGS)) >= _MISSING_EVIDENCE)
    if rng.random() < _STRAY_EVIDENCE:
        evidence[rng.choice(np.flatnonzero(~labels))] = True
    # Noise floor: coloured and levelled per track, quiet (about -95 to -45 dB).
    floor_db = rng.uniform(-72, -50) - rng.uniform(5, 30) * _BANDS[:, 0] / N_BANDS
    floor_db += _ripple(rng, 3.0)
    power = 10 ** (floor_db[:, None] / 10) * np.ones((1, n))
    bed_db = floor_db.max() + rng.uniform(35, 50)
    content = _music_bed(n, rng)
    clarity = _CLARITY_DB + rng.normal(0, _CLARITY_TRACK_SD)
    for tag in np.flatnonzero(evidence):
        level = clarity + rng.normal(0, _CLARITY_TAG_SD)
        content += 10 ** (level / 10) * signatures[tag].render(n, rng)
    for _ in range(rng.poisson(_DISTRACTORS_PER_TRACK)):
        distractor = _draw_signature(str(rng.choice(_KINDS)), rng)
        level = _CLARITY_DB + rng.normal(0, _CLARITY_TRACK_SD)
        content += 10 ** (level / 10) * distractor.render(n, rng)
    # Production: the track's own equalisation and slow loudness changes.
    equaliser = rng.uniform(-6, 6) * (_BANDS[:, 0] / N_BANDS - 0.5) + _ripple(rng, 2.0)
    loudness = _smooth(rng.normal(0, 1, n + 200), 101)[100:-100] * 20
    gain_db = bed_db + equaliser[:, None] + loudness[None, :]
    power += 10 ** (gain_db / 10) * content
    # Spectral estimation noise of a power spectrum summed into mel bands.
    power *= rng.gamma(3.0, 1 / 3.0, power.shape)
    melspec = (10 * np.log10(np.maximum(power, 1e-10))).astype(np.float32)
    return melspec, evidence


def _ripple(rng: np.random.Generator, depth_db: float) -> np.ndarray:
    """(96,) smooth random spectral colour, about +-depth_db."""
    frequencies = rng.uniform(0.5, 4.0, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    x = _BANDS[:, 0] / N_BANDS * 2 * np.pi
    return depth_db / 2 * np.sin(frequencies[:, None] * x[None, :] + phases[:, None]).sum(axis=0)


# --- writing a dataset -------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What a generation wrote, for the one-line report of the command line."""

    root: Path
    tracks: tuple[int, ...]  # per part, in PARTS order
    frames: int
    bytes: int
    seconds: float

    def line(self) -> str:
        parts = ", ".join(f"{part} {count}" for part, count in zip(PARTS, self.tracks, strict=True))
        hours = self.frames / FRAMES_PER_SECOND / 3600
        return (
            f"synthetic dataset in {self.root}: {sum(self.tracks)} tracks ({parts}), "
            f"{len(TAGS)} tags, {self.frames} frames ({hours:.1f} h), "
            f"{self.bytes / 1e6:.0f} MB, {self.seconds:.1f} s"
        )


def dataset_paths(root: str | Path) -> DatasetPaths:
    """The `DatasetPaths` of a dataset written under `root` (split 0, moodtheme)."""
    root = Path(root)
    return DatasetPaths(root / "metadata", root / "melspecs", split=0, subset="moodtheme")


def write_synthetic(
    out: str | Path, tracks: int = DEFAULT_TRACKS, seed: int = 0, workers: int | None = None
) -> Summary:
    """Generate a dataset into `out`, which must not exist or be an empty folder.

    Files are written into a temporary folder next to `out` and renamed into
    place at the end, with the marker file last, so `out` is either absent or
    complete. `workers` processes render the tracks (default: up to 2, none
    inside a daemon process, which may not start children); the files do not
    depend on it.
    """
    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    _check_arguments(out, tracks, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Made with the umask's permissions (tempfile.mkdtemp's 0700 would keep the dataset
    # from everyone else on a shared cache).
    temporary = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        catalogue = plan_catalogue(tracks, seed)
        _write_metadata(temporary / "metadata", catalogue)
        _write_melspecs(temporary / "melspecs", catalogue, seed, _worker_count(workers))
        summary = Summary(
            root=out,
            tracks=tuple(int((catalogue.parts == p).sum()) for p in range(len(PARTS))),
            frames=int(catalogue.frames.sum()),
            bytes=sum(f.stat().st_size for f in temporary.rglob("*") if f.is_file()),
            seconds=0.0,
        )
        marker = {"generator_version": GENERATOR_VERSION, "tracks": tracks, "seed": seed}
        (temporary / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # empty, as checked; os.replace cannot replace a folder
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log.info("generated %d synthetic tracks in %s in %.1f s", tracks, out, seconds)
    return Summary(out, summary.tracks, summary.frames, summary.bytes, seconds)


def _check_arguments(out: Path, tracks: int, seed: int) -> None:
    if isinstance(tracks, bool) or not isinstance(tracks, int) or tracks < MIN_TRACKS:
        raise ValueError(
            f"tracks must be an integer >= {MIN_TRACKS} (every tag must appear in every "
            f"part), got {tracks!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not an empty folder")


def _worker_count(workers: int | None) -> int:
    if workers is None:
        if multiprocessing.current_process().daemon:
            return 1
        return max(1, min(2, os.cpu_count() or 1))
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def _write_metadata(metadata: Path, catalogue: Catalogue) -> None:
    """Tag list, the three split files of split-0 and the table of all tracks."""
    tags = metadata / "data" / "tags"
    splits = metadata / "data" / "splits" / "split-0"
    tags.mkdir(parents=True)
    splits.mkdir(parents=True)
    (tags / "moodtheme_split.txt").write_text("\n".join(TAGS) + "\n")
    # The real TSVs end their lines with CRLF; readers must cope, so ours do too.
    for part, name in enumerate(PARTS):
        _write_tsv(splits / f"autotagging_moodtheme-{name}.tsv", catalogue.rows(part))
    _write_tsv(metadata / "data" / "autotagging_moodtheme.tsv", catalogue.rows())


def _write_tsv(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def _write_melspecs(melspecs: Path, catalogue: Catalogue, seed: int, workers: int) -> None:
    jobs = [
        (
            melspecs / catalogue.melspec_path(i),
            int(catalogue.frames[i]),
            catalogue.labels[i],
            seed,
            i,
        )
        for i in range(len(catalogue))
    ]
    for folder in sorted({path.parent for path, *_ in jobs}):
        folder.mkdir(parents=True)
    if workers == 1:
        for job in jobs:
            _write_track(*job)
        return
    # spawn, not fork: the caller may hold threads (torch, Ray) that fork would copy half-way.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunk = max(1, len(jobs) // (8 * workers))
        for _ in pool.map(_write_track, *zip(*jobs, strict=True), chunksize=chunk):
            pass


def _write_track(path: Path, n_frames: int, labels: np.ndarray, seed: int, index: int) -> None:
    melspec, _ = render_track(n_frames, labels, np.random.default_rng((seed, 1, index)))
    np.save(path, melspec)


# --- the cached dataset of the project --------------------------------------------------------


def synthetic_dataset(
    tracks: int = DEFAULT_TRACKS, seed: int = 0, cache_dir: Path | None = None
) -> DatasetPaths:
    """The cached synthetic dataset of these arguments, generated first when missing.

    Lives in `cache_dir`, else `$MER_MODELS_CACHE`, else `~/.cache/mer_models`,
    in a folder named by generator version, tracks and seed. Several processes
    (Ray workers, parallel tests) may ask at once: a file lock lets one of
    them generate while the others wait, and a folder counts as complete only
    when the marker file, written last, is there.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = root / f"synthetic-v{GENERATOR_VERSION}-t{tracks}-s{seed}"
    if not (folder / MARKER).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f"{folder.name}.lock")):
            if not (folder / MARKER).is_file():
                if folder.exists():  # not ours: complete datasets always carry the marker
                    log.warning("removing incomplete synthetic dataset %s", folder)
                    shutil.rmtree(folder)
                write_synthetic(folder, tracks=tracks, seed=seed)
    return dataset_paths(folder)


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mer_models.synthetic",
        description="Generate the synthetic MTG-Jamendo mood/theme dataset (metadata and "
        "mel-spectrograms) into a new folder.",
    )
    parser.add_argument("--out", required=True, help="new (or empty) output folder")
    parser.add_argument(
        "--tracks", type=int, default=DEFAULT_TRACKS, help=f"tracks (default {DEFAULT_TRACKS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: up to 2; same files)"
    )
    args = parser.parse_args(argv)
    if args.tracks < MIN_TRACKS:
        parser.error(f"--tracks must be >= {MIN_TRACKS}, got {args.tracks}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"--out {out} exists and is not an empty folder")
    summary = write_synthetic(out, tracks=args.tracks, seed=args.seed, workers=args.workers)
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
