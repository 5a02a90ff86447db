"""benchmarks/study_schedulers.py's drawn space and its slot accounting, without running a study."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import yaml

from study_folder.search_space import find_space, load_space
from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("study_schedulers")


def test_wide24_is_24_seeded_draws_from_wide_yaml_as_explicit_configs(benchmark, tmp_path):
    wide = load_space("wide.yaml")
    out = benchmark.draw_space(find_space("wide.yaml"), tmp_path / "a.yaml", 24, seed=0)
    again = benchmark.draw_space(find_space("wide.yaml"), tmp_path / "b.yaml", 24, seed=0)
    assert out.read_text() == again.read_text()  # the same draws every time
    space = load_space(str(out))  # a valid space
    assert space.searcher == "grid" and space.trial_count == 24
    assert (space.scheduler.type, space.scheduler.grace_period) == ("asha", 2)
    assert space.scheduler.reduction_factor == 3 and space.budget == "quick"
    for row in space.configs:
        assert set(row) == set(wide.parameters)
        assert row["cell"] in ("gru", "lstm") and row["window"] in (96, 128, 192)
        assert 1.0e-4 <= row["lr"] <= 3.0e-3 and 0.0 <= row["dropout"] <= 0.5
    assert len({yaml.safe_dump(row) for row in space.configs}) == 24
    other = benchmark.draw_space(find_space("wide.yaml"), tmp_path / "c.yaml", 24, seed=1)
    assert other.read_text() != out.read_text()
    assert benchmark.searched_keys(out)[:5] == benchmark.ARCHITECTURE
    assert "lr" in benchmark.searched_keys(out)
    assert benchmark.searched_keys(find_space("table1.yaml")) == benchmark.ARCHITECTURE


def test_each_slot_is_held_from_the_tuners_start_to_its_last_trials_end(benchmark, tmp_path):
    """Trials end at 10, 12, 25 and 30 s on two slots: the slots are held 30 + 25 s (the
    first two trials' ends are where the last two began)."""
    (tmp_path / "tuner.pkl").touch()
    os.utime(tmp_path / "tuner.pkl", (1000.0, 1000.0))
    trials = []
    for index, end in enumerate((25.0, 10.0, 30.0, 12.0)):
        folder = tmp_path / f"trial{index}"
        folder.mkdir()
        (folder / "metrics.json").write_text("{}")
        os.utime(folder / "metrics.json", (1000.0 + end, 1000.0 + end))
        trials.append(SimpleNamespace(dir=folder))
    study = SimpleNamespace(dir=tmp_path, trials=trials)
    assert benchmark._slot_seconds(study, 2) == pytest.approx(55.0)
    assert benchmark._slot_seconds(study, 1) == pytest.approx(30.0)


def test_ashas_epochs_are_priced_at_fifos_seconds_for_the_same_epochs(benchmark):
    """Two configurations: a dear one ASHA kept for 3 epochs, a cheap one it stopped at 1;
    FIFO ran both for 4. ASHA's choice is worth (3 + 3 + 3) + 1 of FIFO's 4 * 3 + 4 * 1."""
    fifo = {"by_config": {"dear": [4.0, 3.0, 3.0, 3.0], "cheap": [2.0, 1.0, 1.0, 1.0]}}
    asha = {"by_config": {"dear": [9.0, 9.0, 9.0], "cheap": [9.0]}}  # its own seconds: unused
    assert benchmark.epochs_at_fifo_cost(asha, fifo) == pytest.approx((4 + 3 + 3 + 2) / 18)
    # A configuration FIFO stopped sooner than ASHA (patience) prices its extra epochs at
    # ASHA's own seconds.
    longer = {"by_config": {"dear": [4.0, 3.0, 3.0, 3.0, 5.0], "cheap": [2.0]}}
    assert benchmark.epochs_at_fifo_cost(longer, fifo) == pytest.approx(
        (4 + 3 + 3 + 3 + 5 + 2) / 18
    )


def test_the_race_agrees_with_itself_and_with_fifo_only_when_every_figure_matches(benchmark):
    def row(name, value):
        return {"row": name, "test_roc_auc": value, "test_pr_auc": 0.2, "val_roc_auc": value}

    rungs = [(1, "b", "dropped")]
    race = {"rows": [row("a", 0.8)], "rungs": rungs}
    fifo = {"rows": [row("a", 0.8), row("b", 0.7)], "rungs": []}
    once = benchmark.race_agreement({"race": race, "fifo": fifo})
    assert once == {"same_best_row": True, "full_budget_rows_as_fifo": True, "rows_dropped": 1}
    moved = {"rows": [row("a", 0.8001)], "rungs": rungs}  # another value, the same decisions
    thrice = benchmark.race_agreement(
        {"race": race, "race_again": race, "race_serial": moved, "fifo": fifo}
    )
    assert thrice["decisions_identical"] and not thrice["rows_identical"]
    assert not benchmark.race_agreement({"race": moved, "fifo": fifo})["full_budget_rows_as_fifo"]
