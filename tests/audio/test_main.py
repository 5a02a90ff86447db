"""The command line: one file, a whole folder (mirrored, resumable, failures listed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mer_models.audio.__main__ import main
from mer_models.audio.frontend import melspec_file
from mer_models.data.windows import open_melspec
from tests.audio.conftest import RATE, chirp_and_tones, write_audio


def test_melspec_writes_the_dataset_layout(recordings, tmp_path, capsys):
    out = tmp_path / "x.npy"
    assert main(["melspec", str(recordings["wav"]), "--out", str(out)]) == 0
    array = np.load(out)
    assert array.dtype == np.float32 and array.shape[0] == 96
    np.testing.assert_array_equal(array, melspec_file(recordings["wav"]))
    np.testing.assert_array_equal(open_melspec(out), array)  # the training reader takes it
    assert "96 bands x" in capsys.readouterr().out


def test_melspec_of_a_broken_file_fails_and_writes_nothing(tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF????WAVEjunk")
    out = tmp_path / "x.npy"
    assert main(["melspec", str(broken), "--out", str(out)]) == 1
    assert "broken.wav: cannot decode" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [broken]


def _dataset_folder(root):
    """NN/ID.mp3 and NN/ID.wav recordings of different lengths, and one broken file."""
    signal = chirp_and_tones(seconds=1.0)
    files = {
        "00/100.mp3": signal,
        "00/200.wav": signal[:3000],
        "14/1114.wav": signal[::-1].copy(),
        "14/14.wav": 0.5 * signal,
    }
    for relative, samples in files.items():
        write_audio(root / relative, samples)
    (root / "14" / "999.mp3").write_bytes(b"ID3 but no audio frames")
    (root / "14" / "notes.txt").write_text("not audio")
    return sorted(files)


def test_melspecs_mirrors_the_folder_lists_failures_and_resumes(tmp_path, capsys):
    audio, out = tmp_path / "audio", tmp_path / "melspecs"
    good = _dataset_folder(audio)
    assert main(["melspecs", str(audio), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "4 written, 0 already done, 1 failed (of 5 recordings)" in captured.out
    assert "999.mp3: cannot decode" in captured.err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(r.rsplit(".", 1)[0] + ".npy" for r in good)
    for relative in good:
        target = out / (relative.rsplit(".", 1)[0] + ".npy")
        np.testing.assert_array_equal(np.load(target), melspec_file(audio / relative))

    # A killed run: one output missing, a temporary file left behind. Rerun continues.
    finished = out / "00" / "100.npy"
    stamp = finished.stat().st_mtime_ns
    (out / "14" / "1114.npy").unlink()
    (out / "14" / "1114.npy.partial-abc123").write_bytes(b"half")
    (audio / "14" / "999.mp3").unlink()
    assert main(["melspecs", str(audio), "--out", str(out), "--workers", "2"]) == 0
    assert "1 written, 3 already done, 0 failed (of 4 recordings)" in capsys.readouterr().out
    assert finished.stat().st_mtime_ns == stamp  # not recomputed
    assert not list(out.rglob("*.partial*"))
    np.testing.assert_array_equal(
        np.load(out / "14" / "1114.npy"), melspec_file(audio / "14" / "1114.wav")
    )


def test_melspecs_in_parallel_equals_serial(tmp_path):
    audio = tmp_path / "audio"
    good = _dataset_folder(audio)
    (audio / "14" / "999.mp3").unlink()
    assert main(["melspecs", str(audio), "--out", str(tmp_path / "one")]) == 0
    assert main(["melspecs", str(audio), "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    for relative in good:
        name = relative.rsplit(".", 1)[0] + ".npy"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_melspecs_refuses_two_recordings_with_one_output(tmp_path, capsys):
    audio = tmp_path / "audio"
    write_audio(audio / "a.wav", chirp_and_tones(seconds=0.2))
    write_audio(audio / "a.flac", chirp_and_tones(seconds=0.2))
    assert main(["melspecs", str(audio), "--out", str(tmp_path / "out")]) == 1
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_melspecs_of_a_folder_without_audio_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["melspecs", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert "no audio files found" in capsys.readouterr().err


def test_a_rerun_removes_what_a_killed_run_left_and_outputs_get_the_umask_s_mode(tmp_path, capsys):
    audio, out = tmp_path / "audio", tmp_path / "melspecs"
    _dataset_folder(audio)
    (audio / "14" / "999.mp3").unlink()
    previous = os.umask(0o022)
    try:
        assert main(["melspecs", str(audio), "--out", str(out)]) == 0
        written = sorted(out.rglob("*.npy"))
        assert len(written) == 4
        assert {path.stat().st_mode & 0o777 for path in written} == {0o644}  # not 0o600
        # What kills leave beside complete outputs: this version's staging names and
        # older versions'.
        left = [out / "00" / "100.npy.partial-abc", out / "14" / f".14.npy.{os.getpid()}.partial"]
        for path in left:
            path.write_bytes(b"half")
        capsys.readouterr()
        assert main(["melspecs", str(audio), "--out", str(out)]) == 0
        captured = capsys.readouterr()
        assert "0 written, 4 already done, 0 failed" in captured.out
        assert "removed 2 unfinished file(s)" in captured.err
        assert not any(path.exists() for path in left)
        assert sorted(out.rglob("*.npy")) == written
        single = tmp_path / "one.npy"
        assert main(["melspec", str(audio / "14" / "14.wav"), "--out", str(single)]) == 0
        assert single.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(previous)


def _long_recordings(folder: Path, count: int) -> np.ndarray:
    """`count` 5-minute recordings (0.3 s or more of work each, whatever the machine's load,
    so a run stopped at its first output has most of them left); their one melspec.

    One 16-bit WAV, hard-linked under `count` names: writing them costs no time.
    """
    import wave

    first = folder / "00" / "00.wav"
    first.parent.mkdir(parents=True)
    with wave.open(str(first), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        samples = np.tile(chirp_and_tones(seconds=10.0), 30)
        handle.writeframes((samples * 32767).astype("<i2").tobytes())
    for number in range(1, count):
        os.link(first, folder / "00" / f"{number:02d}.wav")
    return melspec_file(first)


def _wait_for_first_output(out: Path, process: subprocess.Popen) -> None:
    """Until the run has written a melspec (an event, however slow the machine is)."""
    while not list(out.rglob("*.npy")):
        assert process.poll() is None, "the run ended before writing anything"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_run_leaves_only_complete_files_and_continues(tmp_path):
    audio, out = tmp_path / "audio", tmp_path / "melspecs"
    expected = _long_recordings(audio, 32)
    command = [sys.executable, "-m", "mer_models.audio", "melspecs", str(audio), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_first_output(out, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(out.rglob("*.npy"))
    assert 1 <= len(finished) < 32, "the kill did not land mid-run"
    for path in finished:  # whatever exists is complete
        np.testing.assert_array_equal(np.load(path), expected)
    stamps = [path.stat().st_mtime_ns for path in finished]
    (out / "00" / "31.npy.partial-abc").write_bytes(b"half")  # as an older version left them
    done = subprocess.run([*command, "--workers", "2"], capture_output=True, text=True, check=True)
    assert f"{32 - len(finished)} written, {len(finished)} already done, 0 failed" in done.stdout
    assert len(list(out.rglob("*.npy"))) == 32 and not list(out.rglob("*.partial*"))
    assert [path.stat().st_mtime_ns for path in finished] == stamps  # not recomputed
    np.testing.assert_array_equal(np.load(out / "00" / "31.npy"), expected)


def test_ctrl_c_stops_without_a_traceback_and_leaves_only_complete_files(tmp_path):
    audio, out = tmp_path / "audio", tmp_path / "melspecs"
    expected = _long_recordings(audio, 48)
    command = [sys.executable, "-m", "mer_models.audio", "melspecs", str(audio), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # Ctrl-C as a terminal's command meets it: a test run in the background (`cmd &`
        # in a script) would pass its children SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_first_output(out, process)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C does: the run and its workers
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    assert not list(out.rglob("*.partial*"))  # files in progress were finished, not cut
    finished = sorted(out.rglob("*.npy"))
    # Stopped mid-run: what was not started yet is cancelled (with 2 workers at most 5
    # files are in progress or queued for them when the interrupt lands).
    assert 1 <= len(finished) < 48, "the interrupt did not land mid-run"
    for path in finished:
        np.testing.assert_array_equal(np.load(path), expected)
