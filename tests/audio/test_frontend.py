"""The front end against the dataset's stated parameters, computed independently in NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mer_models.audio.frontend import AudioError, load_audio, melspec_file, melspectrogram
from tests.audio.conftest import RATE, chirp_and_tones, write_empty_wav


def slaney_hz_to_mel(hz):
    """Slaney's Auditory Toolbox mel: linear to 1 kHz (200/3 Hz a mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3.0)
    log_step = math.log(6.4) / 27.0
    above = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / log_step
    return np.where(hz >= 1000.0, above, linear)


def slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def band_edges() -> np.ndarray:
    """98 edges of 96 triangles evenly spaced in Slaney mel from 0 to 6000 Hz."""
    return slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(6000.0), 98))


def reference_filterbank() -> np.ndarray:
    """(96, 257) triangles on the FFT bin frequencies, unit_tri: peak 2 / width in Hz."""
    edges = band_edges()
    freqs = np.arange(257) * RATE / 512
    weights = np.zeros((96, 257))
    for band in range(96):
        low, centre, high = edges[band : band + 3]
        rising, falling = (freqs - low) / (centre - low), (high - freqs) / (high - centre)
        weights[band] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (high - low)
    return weights


def reference_melspec(samples: np.ndarray) -> np.ndarray:
    """The stated front end in NumPy: centred 512/256 frames, Hann, power, mel, 2 x lin2db."""
    n = samples.size
    frames = math.ceil((n + 256) / 256)  # every centred frame holding a sample
    padded = np.concatenate([np.zeros(256), samples.astype(np.float64), np.zeros(512)])
    index = np.arange(frames)[:, None] * 256 + np.arange(512)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 511)  # symmetric, not normalised
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2  # (T, 257)
    bands = power @ reference_filterbank().T  # (T, 96)
    return (20.0 * np.log10(np.maximum(bands, 1e-10))).T  # 2 * 10 log10, floor 2 * -100


@pytest.mark.parametrize("n", [1, 255, 256, 257, 512, 1000, 12000, 12289])
def test_frame_count_is_every_centred_frame_holding_a_sample(n):
    samples = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    mel = melspectrogram(samples)
    assert mel.shape == (96, math.ceil((n + 256) / 256))
    assert mel.dtype == np.float32 and mel.flags["C_CONTIGUOUS"]


def test_values_match_the_stated_parameters_on_chirp_and_tones():
    samples = chirp_and_tones()
    mel = melspectrogram(samples)
    expected = reference_melspec(samples)
    assert mel.shape == expected.shape == (96, math.ceil((samples.size + 256) / 256))
    # Far from the tones a band's power is 1e-15 or less, where Essentia's float32
    # arithmetic differs from float64 by a fraction of a dB.
    loud = expected > -150
    assert loud.mean() > 0.3
    np.testing.assert_allclose(mel[loud], expected[loud], atol=0.05)
    np.testing.assert_allclose(mel, expected, atol=0.5)


def test_tones_peak_in_the_band_around_their_frequency():
    edges = band_edges()
    t = np.arange(RATE) / RATE
    for hz in (300.0, 1000.0, 2500.0, 5000.0):
        mel = melspectrogram((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        peak = int(np.argmax(mel[:, 10:-10].mean(axis=1)))
        assert edges[peak] < hz < edges[peak + 2], (hz, peak, edges[peak : peak + 3])


def test_db_scale_is_twenty_log10_of_power_floored_at_minus_200():
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    quiet, loud = melspectrogram(0.1 * tone), melspectrogram(0.2 * tone)
    # twice the amplitude is four times the power: 20 * log10(4) = 12.04 dB in every band
    middle = slice(10, -10)
    assert np.median(loud[:, middle] - quiet[:, middle]) == pytest.approx(
        20 * math.log10(4), abs=0.01
    )
    silence = melspectrogram(np.zeros(3000, dtype=np.float32))
    assert (silence == -200.0).all()


def test_wav_at_12khz_decodes_to_the_written_samples(recordings):
    decoded = load_audio(recordings["wav"])
    written = chirp_and_tones()
    assert decoded.dtype == np.float32
    assert abs(decoded.size - written.size) <= 1
    n = min(decoded.size, written.size)
    np.testing.assert_allclose(decoded[:n], written[:n], atol=1e-3)  # 16-bit PCM
    mel = melspec_file(recordings["wav"])
    assert mel.shape == (96, math.ceil((decoded.size + 256) / 256))


def test_mp3_and_44khz_wav_give_the_same_bands_where_the_signal_is(recordings):
    reference = melspec_file(recordings["wav"])
    for name in ("mp3", "wav44"):
        decoded = load_audio(recordings[name])
        mel = melspec_file(recordings[name])
        assert mel.shape == (96, math.ceil((decoded.size + 256) / 256)), name
        frames = min(mel.shape[1], reference.shape[1])
        # the tones half: steady, so an encoder delay of a few frames does not matter
        steady = slice(frames // 2 + 10, frames - 10)
        peaks = np.argmax(mel[:, steady].mean(axis=1)), np.argmax(reference[:, steady].mean(1))
        assert peaks[0] == peaks[1], name
        strong = reference[:, steady].mean(axis=1) > reference[:, steady].mean(axis=1).max() - 30
        difference = mel[strong, steady].mean(axis=1) - reference[strong, steady].mean(axis=1)
        assert np.abs(difference).max() < 3.0, (name, difference)


def test_undecodable_and_empty_recordings_are_errors_naming_the_file(tmp_path):
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match="broken.mp3: cannot decode"):
        melspec_file(broken)
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        melspec_file(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: the recording is empty"):
        melspec_file(empty)
    header_only = write_empty_wav(tmp_path / "header.wav")  # FFmpeg finds no stream in it
    with pytest.raises(AudioError, match="header.wav: cannot decode"):
        melspec_file(header_only)
