"""A raced study end to end: the real driver, Ray Tune, MLflow; the same answer whatever the
concurrency, and after a kill in the middle of a rung.

Three tiny rows x 2 seeds, one rung at epoch 2 of 4, `alpha: 1` (plain
synchronous halving: the rule's statistics are tests/study/test_race_rule.py's;
trials this small learn too little on the test dataset to tell rows apart).
The study is run with two trials at a time (fewer than its six: the trial
generator must not count the trials paused at the rung, or the rung would
wait forever), and killed (SIGKILL to its whole session) while trials wait
at the rung, then resumed: both must write the same rungs.json decisions
and rows.json values. One trial at a time is `benchmarks/study_schedulers.py --space
race`'s `decisions_identical`.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.study.test_survival import Study, interrupt, stored_epochs, wait_for

pytestmark = pytest.mark.slow

ROWS = (
    "{cbam: true, cell: gru, units: 8}",
    "{cbam: false, cell: gru, units: 8}",
    "{cbam: false, cell: lstm, units: 8}",
)


def race_space(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        "searcher: grid\nnum_samples: 1\nbudget: quick\nrepeats: 2\n"
        "scheduler: {type: race, grace_period: 2, reduction_factor: 2, alpha: 1}\n"
        "parameters: {max_epochs: 4, patience: 4, width: 4, window: 64, batch_size: 16, "
        "layers: 1, lr: 3.0e-3}\n"
        "configs:\n" + "".join(f"  - {row}\n" for row in ROWS)
    )
    return path


def answer(study: Study) -> tuple[list, list]:
    """What a race decides and finds, without the trial ids (each run has its own)."""
    rungs = json.loads((study.dir / "rungs.json").read_text())
    rows = json.loads((study.dir / "rows.json").read_text())
    for entry in rungs:
        entry.pop("trials")
    for row in rows:
        row.pop("trials")
    return rungs, rows


@pytest.fixture(scope="module")
def clean(small_synthetic, tmp_path_factory) -> Study:
    folder = tmp_path_factory.mktemp("race-clean")
    study = Study(folder, small_synthetic, race_space(folder, "race"), "--max-concurrent", "2")
    study.run()
    return study


def test_a_race_drops_the_lowest_row_at_its_rung_and_records_why(clean):
    rungs, rows = answer(clean)
    assert [entry["decision"] for entry in rungs] == ["best", "kept", "dropped"]
    assert {entry["epoch"] for entry in rungs} == {2} and all(e["n"] == 2 for e in rungs)
    dropped = rungs[2]
    assert dropped["mean"] == min(entry["mean"] for entry in rungs)
    assert dropped["difference_to_best"]["mean"] == pytest.approx(
        dropped["mean"] - rungs[0]["mean"]
    )
    assert [row["row"] for row in rows] == [rungs[0]["row"], rungs[1]["row"]]  # dropped: out
    recorded = clean.recorded()
    states = [metrics["end_state"] for metrics in recorded.values()]
    assert states.count("race_dropped") == 2
    for metrics in recorded.values():
        if metrics["end_state"] == "race_dropped":
            assert metrics["dropped_at_rung"] == 1 and metrics["epochs_run"] == 2
            assert metrics["row"] == dropped["row"]
        else:
            assert metrics["epochs_run"] == 4
    assert f"rung 1 at epoch 2: kept 2 rows; dropped {dropped['row']}, " in clean.output()
    parents, runs = clean.runs()
    tags = [run.data.tags.get("mer.dropped_at_rung") for run in runs]
    assert sorted(tag for tag in tags if tag) == ["1", "1"]
    client = MlflowClient(clean.uri)
    parent = parents[0].info.run_id
    assert "study/rungs.json" in {a.path for a in client.list_artifacts(parent, "study")}
    kept = client.get_metric_history(parent, "race_rows_kept")
    assert [(m.step, m.value) for m in kept] == [(2, 2.0)]  # once, though written twice
    report = (clean.dir / "report" / "report.md").read_text()
    assert "## Rungs" in report and "Scheduler: race" in report
    # The registered model is named as what it is: the best trial of the best row.
    best_row = json.loads((clean.dir / "rows.json").read_text())[0]
    chosen = [line for line in clean.output().splitlines() if line.startswith("best trial")]
    assert len(chosen) == 1 and chosen[0].startswith("best trial of the best row: ")
    assert chosen[0].split()[6] in best_row["trials"]


def test_a_kill_while_trials_wait_at_a_rung_resumes_to_the_same_answer(
    clean, small_synthetic, tmp_path
):
    study = Study(tmp_path, small_synthetic, race_space(tmp_path, "race"), "--max-concurrent", "2")
    driver = study.start()

    def waiting_at_the_first_rung() -> bool:
        at_rung = [e for e in stored_epochs(study.dir).values() if e and max(e) >= 2]
        return len(at_rung) >= 2 and not (study.dir / "rungs.json").is_file()

    wait_for(waiting_at_the_first_rung, driver)
    interrupt(driver, signal.SIGKILL)
    assert not (study.dir / "rungs.json").is_file()  # killed before the rung was decided
    study.run("--resume")
    assert answer(study) == answer(clean)
