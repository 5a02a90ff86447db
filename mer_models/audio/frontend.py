"""The MTG-Jamendo mel front end: audio file -> (96, T) float32 dB mel-spectrogram.

The dataset's published extractor (``scripts/melspectrograms.py`` of the
MTG-Jamendo repository) runs this Essentia chain, and features for new audio
must equal what the dataset holds, so the same chain runs here:

- decode and mix to mono at 12 kHz (``MonoLoader``, ``resampleQuality=4``);
- frames of 512 samples, hop 256, centred: frame k covers samples
  [256 k - 256, 256 k + 256), zero-padded outside the recording, and every
  frame that holds a sample is kept, so T = ceil((N + 256) / 256) for N > 0;
- symmetric Hann window, not normalised, no zero padding; magnitude spectrum
  (257 bins);
- 96 mel bands from 0 to 6 kHz, Slaney mel, ``unit_tri`` normalisation
  (each triangle weighs 2 / its width in Hz), linear weighting, on the power
  spectrum;
- ``UnaryOperator(type='lin2db', scale=2)``: Essentia scales the *result*, so
  a band is 2 * 10 * log10(power) = 20 * log10(power), floored at -200
  (2 x lin2db's floor of -100 dB below 1e-10).

Essentia (AGPL, a 14 MB wheel with its own FFmpeg decoder) is imported on
first use, so the rest of the project runs without it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 12000
FRAME_SIZE = 512
HOP_SIZE = 256
N_BANDS = 96
LOW_HZ = 0.0
HIGH_HZ = SAMPLE_RATE / 2
RESAMPLE_QUALITY = 4  # Essentia's quality 4: libsamplerate's linear converter
DB_SCALE = 2.0  # lin2db's result times 2: 20 * log10(power)


class AudioError(ValueError):
    """A recording that cannot be turned into a mel-spectrogram (the message names it)."""


@dataclass(frozen=True)
class _Chain:
    """The Essentia algorithms of one process, configured once."""

    windowing: object
    spectrum: object
    mel_bands: object
    to_db: object
    frames: object  # FrameGenerator class


@functools.cache
def _essentia():
    try:
        import essentia
    except ImportError:
        raise AudioError(
            "computing mel-spectrograms from audio needs Essentia: pip install essentia "
            "(or pip install -e '.[audio]')"
        ) from None
    essentia.log.infoActive = False  # its import and loaders log at INFO level
    import essentia.standard as standard

    return standard


@functools.cache
def _chain() -> _Chain:
    es = _essentia()
    return _Chain(
        windowing=es.Windowing(type="hann", normalized=False, zeroPadding=0),
        spectrum=es.Spectrum(size=FRAME_SIZE),
        mel_bands=es.MelBands(
            numberBands=N_BANDS,
            sampleRate=SAMPLE_RATE,
            lowFrequencyBound=LOW_HZ,
            highFrequencyBound=HIGH_HZ,
            inputSize=FRAME_SIZE // 2 + 1,
            weighting="linear",
            normalize="unit_tri",
            warpingFormula="slaneyMel",
            type="power",
        ),
        to_db=es.UnaryOperator(type="lin2db", scale=DB_SCALE),
        frames=es.FrameGenerator,
    )


def load_audio(path: str | Path) -> np.ndarray:
    """Decode a recording, mixed to mono and resampled to 12 kHz (float32 samples)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the recording is empty (0 bytes)")
    es = _essentia()
    try:
        audio = es.MonoLoader(
            filename=str(path), sampleRate=SAMPLE_RATE, resampleQuality=RESAMPLE_QUALITY
        )()
    except RuntimeError as error:
        reason = str(error).removeprefix("Error while configuring MonoLoader: ")
        raise AudioError(f"{path}: cannot decode the audio ({reason})") from None
    return np.asarray(audio, dtype=np.float32)


def melspectrogram(audio: np.ndarray) -> np.ndarray:
    """(96, T) float32 mel-spectrogram of 12 kHz mono samples, in C order.

    An empty signal gives (96, 0): the caller decides whether that is an error.
    """
    chain = _chain()
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {audio.shape}")
    frames = chain.frames(audio, frameSize=FRAME_SIZE, hopSize=HOP_SIZE, startFromZero=False)
    bands = [
        chain.to_db(chain.mel_bands(chain.spectrum(chain.windowing(frame)))) for frame in frames
    ]
    if not bands:
        return np.zeros((N_BANDS, 0), dtype=np.float32)
    return np.ascontiguousarray(np.stack(bands).T, dtype=np.float32)  # (T, 96) -> (96, T)


def melspec_file(path: str | Path) -> np.ndarray:
    """The dataset's (96, T) mel-spectrogram of an audio file; an empty recording is an error."""
    audio = load_audio(path)
    if audio.size == 0:
        raise AudioError(f"{path}: the recording is empty (no samples after decoding)")
    try:
        return melspectrogram(audio)
    except RuntimeError as error:  # Essentia's algorithms raise RuntimeError
        raise AudioError(f"{path}: mel-spectrogram failed ({error})") from None
