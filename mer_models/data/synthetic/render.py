"""The synthetic dataset's audio: each tag's signature and a track's mel-spectrogram.

The audio is a toy world built to be learnable but not trivially: every tag
plants its own spectro-temporal signature (a formant, a rhythm, a sweep, a
vibrato, a modulation whose rate drifts along the track, or alternating
sections), present throughout the track so that any window of 128+ frames
shows it, at a per-track random strength, over a coloured noise floor, a bed
of harmonic notes and drums at a track-specific tempo, and signature-like
distractors tied to no tag; a few labels have no evidence and a few tracks
carry the evidence of a tag they are not labelled with. Everything is drawn
from numpy generators: the tag signatures from a fixed seed, a track from
the generator its caller passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mer_models.data.synthetic.catalogue import TAGS
from mer_models.data.windows import N_BANDS

# Difficulty: signature level (dB relative to the music bed) and label noise.
_CLARITY_DB, _CLARITY_TRACK_SD, _CLARITY_TAG_SD = 5.0, 3.0, 4.0
_MISSING_EVIDENCE = 0.05  # a label whose signature is not rendered
_STRAY_EVIDENCE = 0.05  # a track that also carries an unlabelled tag's signature
_DISTRACTORS_PER_TRACK = 1.0  # mean number of signature-like events tied to no tag
_SIGNATURE_SEED = 20200914  # the tag signatures are fixed: seeds vary tracks, not tags

_BANDS = np.arange(N_BANDS, dtype=np.float64)[:, None]  # (96, 1), broadcasts over frames

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
