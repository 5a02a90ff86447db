"""A resume continues from the study's own records: Ray's saved state damaged, missing or
planted with code changes nothing; files in storage never run code; a full disk stops the
study cleanly and a resume finishes it. Real drivers, real Ray, real SQLite MLflow."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests.study.test_survival import Study, check_complete, interrupt, wait_for, write_space

pytestmark = pytest.mark.slow


class Planted:
    """Unpickled, it creates `path`: what a file that runs code on load would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_resume_trusts_the_records_not_rays_state(small_synthetic, tmp_path):
    """Ray's experiment state cut off, its tuner.pkl replaced by a pickle that runs code, a
    trial's newest checkpoint planted likewise, leftovers of the kill: the resume continues
    both trials with their recorded keys and configs, runs no planted code, and leaves
    nothing behind."""
    epochs = 12
    study = Study(tmp_path, small_synthetic, write_space(tmp_path, "records", epochs, rows=2))
    driver = study.start()
    wait_for(lambda: study.all_keep_two_checkpoints(2), driver)
    interrupt(driver, signal.SIGKILL)
    assert not study.recorded()
    configs = {
        p.parent.name: json.loads(p.read_text())
        for p in (study.dir / "trials").glob("*/config.json")
    }
    assert len(configs) == 2
    stored = study.stored_epochs()
    first, second = sorted(stored)

    marker = tmp_path / "planted-code-ran"
    states = sorted(study.dir.glob("experiment_state-*.json"))
    assert states, "Ray saved no experiment state before the kill"
    for state in states:  # a full disk cut it off mid-write
        state.write_bytes(state.read_bytes()[:100])
    (study.dir / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker)))
    newest = study.dir / "checkpoints" / first / f"epoch-{stored[first][-1]:04d}"
    torch.save({"best_model": Planted(marker), "model": {}}, newest / "checkpoint.pt")
    # Leftovers of the kill: a half-copied checkpoint, a half-written record, a scratch folder.
    (study.dir / "checkpoints" / second / "epoch-0099.partial").mkdir()
    (study.dir / "trials" / f"{second}.partial").mkdir()
    scratch = Path("/tmp") / f"mer-trial-{first}-leftover"
    scratch.mkdir(exist_ok=True)
    (scratch / "run").mkdir(exist_ok=True)
    os.utime(scratch / "run", (0, 0))
    os.utime(scratch, (0, 0))

    output = study.run("--resume")
    assert not marker.exists(), "a file in storage ran code"
    assert "Traceback" not in output
    check_complete(study, trials=2, epochs=epochs)  # one MLflow run each, every epoch once
    recorded = study.recorded()
    assert sorted(recorded) == [first, second]  # the same trials, not new ones
    for key, config in configs.items():
        assert json.loads((study.dir / "trials" / key / "config.json").read_text()) == config
    skipped = " ".join(recorded[first]["skipped_checkpoints"])
    assert str(newest / "checkpoint.pt") in skipped  # refused as damaged, the older one used
    assert recorded[second].get("skipped_checkpoints") is None
    assert not scratch.exists()


def _tmpfs(path: Path, megabytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_stops_the_study_cleanly_and_a_resume_finishes(small_synthetic, tmp_path):
    """Storage on a small tmpfs, filled while trials train: the study stops with one
    paragraph (place, error, how to continue), its table so far and its MLflow runs KILLED;
    with room again, a resume finishes it and leaves no half-written file."""
    epochs = 12
    storage = tmp_path / "small-disk"
    _tmpfs(storage, 64)
    try:
        space = write_space(tmp_path, "full", epochs, rows=2)
        study = Study(tmp_path, small_synthetic, space, "--storage", str(storage))
        study.dir = storage / "full"
        driver = study.start()
        wait_for(lambda: len(study.stored_epochs()) == 2, driver)
        filler = storage / "filler"
        with open(filler, "wb") as handle:  # the disk fills up, as another job would fill it
            block = b"\0" * (1 << 20)
            try:
                while True:
                    handle.write(block)
                    handle.flush()
            except OSError:
                pass
        status = driver.wait(timeout=300)
        output = study.output()
        assert status == 1, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert "storage failed" in output and "No space left on device" in output
        assert f"--name full --resume --storage {storage}" in output
        assert "conv. attention" in output  # the table so far
        parents, runs = study.runs()
        assert parents and all(run.info.status == "KILLED" for run in parents + runs)

        filler.unlink()
        study.run("--resume")
        check_complete(study, trials=2, epochs=epochs)
        leftovers = [p for p in storage.rglob("*") if ".partial" in p.name]
        assert leftovers == []
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=False)
        shutil.rmtree(storage, ignore_errors=True)


def test_an_optuna_study_resumes_its_begun_trials_then_samples_the_rest(small_synthetic, tmp_path):
    """Killed with one trial ended and one training: the resume continues the second with
    its recorded config, then Optuna (told the recorded results) samples the third."""
    epochs = 6
    space = tmp_path / "tpe.yaml"
    space.write_text(
        "searcher: optuna\nnum_samples: 3\nbudget: quick\nscheduler: {type: fifo}\n"
        f"parameters: {{max_epochs: {epochs}, patience: 0, width: 4, window: 64, "
        "batch_size: 16, seed: 0, layers: 1, cell: gru, units: 8, cbam: false, "
        "lr: {loguniform: [1.0e-3, 1.0e-2]}}\n"
    )
    study = Study(tmp_path, small_synthetic, space, "--max-concurrent", "1")
    driver = study.start()

    def second_training() -> bool:  # one trial recorded, another with a checkpoint of its own
        recorded = study.recorded()
        return len(recorded) == 1 and any(
            key not in recorded and epochs for key, epochs in study.stored_epochs().items()
        )

    wait_for(second_training, driver)
    interrupt(driver, signal.SIGKILL)
    first = study.recorded()
    begun = {
        p.parent.name: json.loads(p.read_text())["lr"]
        for p in (study.dir / "trials").glob("*/config.json")
    }
    assert len(begun) == 2

    study.run("--resume")
    check_complete(study, trials=3, epochs=epochs)
    recorded = study.recorded()
    for key, lr in begun.items():  # the begun trials kept their keys and configs
        assert json.loads((study.dir / "trials" / key / "config.json").read_text())["lr"] == lr
    for key, metrics in first.items():  # the ended one was not run again
        assert recorded[key] == metrics
    (third,) = set(recorded) - set(begun)
    lr = json.loads((study.dir / "trials" / third / "config.json").read_text())["lr"]
    assert 1.0e-3 <= lr <= 1.0e-2 and lr not in begun.values()
