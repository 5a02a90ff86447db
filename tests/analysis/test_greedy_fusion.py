"""Greedy fusion: the rank scorer and running sums choose as scikit-learn did, and a selection
that keeps one member says it is no fusion (console, metrics.json, MLflow params)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.fuse_study import fusion_params
from analysis.fusion import (
    Member,
    RankScorer,
    greedy_selection,
    greedy_selection_sklearn,
    run_fusion,
)
from mer_models.training.metrics import METRICS, selection_metric
from tests.analysis.conftest import member_scores, run_main

TRACKS, TAGS = 160, 6


def labels_for(seed: int, tracks: int = TRACKS) -> np.ndarray:
    labels = np.random.default_rng(seed).random((tracks, TAGS)) < 0.1
    labels[0], labels[1] = True, False  # every tag has both classes
    return labels


def tied(scores: np.ndarray) -> np.ndarray:
    """Scores rounded to one decimal: many ties, within and across classes."""
    return np.round(scores, 1).astype(np.float32)


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.key)
@pytest.mark.parametrize("seed", range(3))
def test_the_rank_scorer_is_scikit_learns_score(metric, seed):
    labels = labels_for(seed)
    scorer = RankScorer(labels, metric)
    for scores in (member_scores(labels, seed, 0.3), tied(member_scores(labels, seed, 0.3))):
        rows = np.ascontiguousarray(scorer.rows(scores), dtype=np.float64)
        assert scorer(rows) == pytest.approx(metric.score(labels, scores), abs=1e-12)


def greedy_members(labels: np.ndarray, seed: int, count: int = 8) -> list[np.ndarray]:
    """Members of mixed strength; one repeats another and one has ties, to exercise the tie rule."""
    rng = np.random.default_rng(seed)
    members = [
        member_scores(labels, seed * 100 + i, signal) for i, signal in enumerate(rng.random(count))
    ]
    members[3] = members[1].copy()
    members[5] = tied(members[5])
    return members


@pytest.mark.parametrize("metric", ["val_roc_auc", "val_pr_auc", "val_roc_auc_micro"])
@pytest.mark.parametrize("seed", range(4))
def test_fast_greedy_chooses_as_scikit_learn_did(metric, seed):
    labels = labels_for(10 + seed)
    members = greedy_members(labels, seed)
    measure = selection_metric(metric)
    weights = np.full(len(members), 1.0 / len(members))
    if seed % 2:
        weights = np.random.default_rng(seed).uniform(0.5, 2.0, len(members))
        weights /= weights.sum()
    chosen, score = greedy_selection(members, labels, weights, measure)
    reference, reference_score = greedy_selection_sklearn(members, labels, weights, measure)
    assert chosen == reference
    assert score == pytest.approx(reference_score, abs=1e-12)
    if 3 in chosen:  # member 3 is member 1's copy: they tie, and the first listed goes first
        assert chosen.index(1) < chosen.index(3)


def one_member_files(folder: Path, best_alone: bool) -> list[str]:
    """Members as TEST:VALIDATION files, and labels; with `best_alone`, member 0 ranks validation
    perfectly, so no addition can raise its score."""
    folder.mkdir()
    test_labels, validation_labels = labels_for(20), labels_for(21, tracks=120)
    np.save(folder / "test_gt.npy", test_labels)
    np.save(folder / "validation_gt.npy", validation_labels)
    specs = []
    for i, signal in enumerate([0.6, 0.5, 0.4]):
        validation = member_scores(validation_labels, 50 + i, signal)
        if best_alone and i == 0:
            validation = validation + 2.0 * validation_labels
        np.save(folder / f"test{i}.npy", member_scores(test_labels, i, signal))
        np.save(folder / f"val{i}.npy", validation.astype(np.float32))
        specs.append(f"{folder / f'test{i}.npy'}:{folder / f'val{i}.npy'}")
    return specs


@pytest.mark.parametrize("best_alone", [True, False])
def test_a_greedy_selection_of_one_member_is_no_fusion(tmp_path, capsys, best_alone):
    folder = tmp_path / "inputs"
    specs = one_member_files(folder, best_alone)
    args = ["fuse-files", *specs, "--groundtruth", folder / "test_gt.npy"]
    args += ["--validation-groundtruth", folder / "validation_gt.npy", "--select", "greedy"]
    args += ["--resamples", "20"]
    code, printed, err = run_main(capsys, *args, "--out", tmp_path / "fused")
    assert code == 0, err
    metrics = json.loads((tmp_path / "fused" / "metrics.json").read_text())
    params = fusion_params(metrics)
    if best_alone:
        assert metrics["members"] == [specs[0]]
        assert metrics["fused"] is False and params["fused"] == "false"
        note = f"no fusion improved on the best member: greedy selection kept {specs[0]} alone"
        assert metrics["note"] == note
        assert note in printed and "fusion - best single" not in printed
        # Every key a reader knew is still there.
        assert {"paired_bootstrap_vs_best_single", "best_single_member", "select"} <= set(metrics)
    else:
        assert len(metrics["members"]) > 1
        assert metrics["fused"] is True and params["fused"] == "true"
        assert "note" not in metrics and "fusion - best single ROC-AUC-macro" in printed
    code, printed, err = run_main(capsys, *args, "--json")
    assert code == 0, err
    assert json.loads(printed)["fused"] is (not best_alone)


def test_a_summary_without_the_key_counts_its_members():
    """metrics.json written before `fused` existed: a fusion when it has several members."""
    assert fusion_params({"members": ["a", "b"]})["fused"] == "true"
    assert fusion_params({"members": ["a"]})["fused"] == "false"


def test_a_top_1_result_is_no_fusion_either():
    labels = labels_for(30)
    members = [
        Member(f"m{i}", member_scores(labels, i, signal), member_scores(labels, 9 + i, signal))
        for i, signal in enumerate([0.5, 0.2])
    ]
    result = run_fusion(members, labels, labels, "topk", top_k=1, resamples=20)
    assert not result.fused
    assert result.summary()["note"] == "no fusion: the topk selection kept m0 alone"
