"""Rows and effects of a study over several official splits: a row's trials span its seeds
and splits, its seed ensemble is scored split by split on that split's labels, and two rows
are paired by seed and split."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.effects import factor_effects
from analysis.rows import row_results
from mer_models.training.metrics import tagging_metrics
from study_folder.records import load_study
from tests.analysis.repeated import repeated_study
from tests.conftest import write_swapped_split

SEARCHED = ("cbam",)
ROWS = [({"cbam": True}, 0.8), ({"cbam": False}, 0.3)]
SEEDS = range(3)


@pytest.fixture
def study(tmp_path, labelled_dataset):
    data = labelled_dataset
    if not (data.metadata / "data" / "splits" / "split-1").is_dir():
        write_swapped_split(data, 1)  # the session's dataset: written once
    return load_study(
        repeated_study(tmp_path / "splits", data, ROWS, SEEDS, SEARCHED, splits=(0, 1))
    )


def test_a_rows_trials_span_its_seeds_and_splits(study):
    table = row_results(study)
    assert [row.n for row in table.rows] == [6, 6]
    for row in table.rows:
        draws = sorted((t.config["seed"], t.config["split"]) for t in row.trials)
        assert draws == [(seed, split) for seed in SEEDS for split in (0, 1)]


def test_the_seed_ensemble_is_scored_per_split_on_that_splits_labels(study):
    for row in row_results(study).rows:
        scores = []
        for split in (0, 1):
            labels, _ = study.labels("test", split)
            members = [t for t in row.trials if t.config["split"] == split]
            mean = np.mean([t.load_predictions("test").astype(np.float64) for t in members], 0)
            scores.append(tagging_metrics(labels, mean))
        assert row.ensemble_test_roc_auc == pytest.approx(np.mean([s["roc_auc"] for s in scores]))
        assert row.ensemble_test_pr_auc == pytest.approx(np.mean([s["pr_auc"] for s in scores]))
    # The two splits' test labels are other tracks' (split-1 tests on split-0's validation).
    first, second = study.labels("test", 0)[0], study.labels("test", 1)[0]
    assert not np.array_equal(first, second)


def test_effects_pair_trials_by_seed_and_split(study):
    found = factor_effects(row_results(study))
    assert not found.unmatched
    (roc,) = [effect for effect in found.effects if effect.metric == "test_roc_auc"]
    assert roc.pairs == 6
    assert sorted(roc.draws) == [(seed, split) for seed in SEEDS for split in (0, 1)]
    by_id = {trial.key: trial for trial in study.trials}
    for (seed, split), difference in zip(roc.draws, roc.differences, strict=True):
        # from no attention (row 1) to block (row 0), as the effect reads
        expected = (
            by_id[f"r0s{seed}p{split}"].metrics["test_roc_auc"]
            - by_id[f"r1s{seed}p{split}"].metrics["test_roc_auc"]
        )
        assert (roc.source, roc.target) == (False, True)
        assert difference == pytest.approx(expected)
    assert roc.mean_difference > 0 and roc.low > 0


def test_a_draw_missing_on_one_split_is_named_with_its_split(tmp_path, labelled_dataset):
    if not (labelled_dataset.metadata / "data" / "splits" / "split-1").is_dir():
        write_swapped_split(labelled_dataset, 1)
    folder = repeated_study(
        tmp_path / "gap", labelled_dataset, ROWS, SEEDS, SEARCHED, splits=(0, 1)
    )
    (folder / "trials" / "r1s2p1" / "metrics.json").unlink()  # never ended
    found = factor_effects(row_results(load_study(folder, require_results=False)))
    (roc,) = [effect for effect in found.effects if effect.metric == "test_roc_auc"]
    assert roc.pairs == 5
    assert roc.unmatched == ("seed 2, split 1 only in block GRU 256 (1 trial(s))",)
