"""Recordings made by the tests: a chirp and tones, written as WAV (and MP3) with Essentia."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

RATE = 12000


def chirp_and_tones(rate: int = RATE, seconds: float = 2.0) -> np.ndarray:
    """A linear chirp 50 Hz -> 5.9 kHz in the first half, then 440, 1000 and 3000 Hz tones."""
    half = int(rate * seconds / 2)
    t = np.arange(half) / rate
    f0, f1 = 50.0, 5900.0
    chirp = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
    tones = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (440.0, 1000.0, 3000.0))
    return np.concatenate([chirp, tones]).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Write mono samples with Essentia's encoder; the format follows the suffix."""
    import essentia

    essentia.log.infoActive = False
    import essentia.standard as es

    path.parent.mkdir(parents=True, exist_ok=True)
    es.MonoWriter(filename=str(path), format=path.suffix[1:], sampleRate=rate)(
        np.ascontiguousarray(samples, dtype=np.float32)
    )
    return path


def write_empty_wav(path: Path) -> Path:
    """A valid WAV header with no samples (Essentia's writer writes no file for no samples)."""
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
    return path


@pytest.fixture(scope="session")
def recordings(tmp_path_factory) -> dict[str, Path]:
    """The chirp and tones at 12 kHz as WAV and MP3, and at 44.1 kHz as WAV."""
    root = tmp_path_factory.mktemp("audio")
    return {
        "wav": write_audio(root / "chirp.wav", chirp_and_tones()),
        "mp3": write_audio(root / "chirp.mp3", chirp_and_tones()),
        "wav44": write_audio(root / "chirp44.wav", chirp_and_tones(44100), 44100),
    }
