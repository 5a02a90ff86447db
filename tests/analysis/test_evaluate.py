"""The evaluation reproduces the official MediaEval numbers and refuses bad labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.evaluate import evaluate, metric_names
from tests.analysis.conftest import REPO, run_cli, run_main

MEDIAEVAL = REPO.parent / "shared" / "mtg-jamendo" / "results" / "mediaeval"
# The official baseline's ground truth and scores, and its decisions: `evaluate`'s arguments.
BASELINE = (MEDIAEVAL / "groundtruth.npy", MEDIAEVAL / "baseline_vggish_predictions.npy")
DECISIONS = ("-d", MEDIAEVAL / "baseline_vggish_decisions.npy")
needs_mediaeval = pytest.mark.skipif(
    not (MEDIAEVAL / "baseline_vggish_results.tsv").is_file(),
    reason=f"the official MediaEval artefacts are not at {MEDIAEVAL} (shared reference data)",
)


def official_results() -> dict[str, str]:
    lines = (MEDIAEVAL / "baseline_vggish_results.tsv").read_text().splitlines()
    return dict(line.split("\t") for line in lines if line.strip())


@needs_mediaeval
def test_cli_json_reproduces_the_official_baseline_results_to_6_decimals():
    done = run_cli("evaluate", *BASELINE, *DECISIONS, "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    official = official_results()
    assert set(results) == set(official) == set(metric_names())
    for name, text in official.items():
        assert f"{results[name]:.6f}" == text, name


@needs_mediaeval
def test_cli_text_output_is_the_official_results_file():
    done = run_cli("evaluate", *BASELINE, *DECISIONS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == (MEDIAEVAL / "baseline_vggish_results.tsv").read_text().split()


@needs_mediaeval
def test_cli_without_decisions_prints_only_score_metrics():
    done = run_cli("evaluate", *BASELINE, "--json")
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == list(metric_names(with_decisions=False))


def synthetic(seed: int = 0, tracks: int = 200, tags: int = 6):
    rng = np.random.default_rng(seed)
    labels = rng.random((tracks, tags)) < 0.2
    labels[0], labels[1] = True, False  # every tag has both classes
    scores = rng.random((tracks, tags)) + labels
    return labels, scores.astype(np.float32), scores > 1.2


def test_integer_0_1_groundtruth_gives_the_same_numbers_as_bool():
    labels, scores, decisions = synthetic()
    as_bool = evaluate(labels, scores, decisions)
    for dtype in (np.int8, np.int64, np.uint8):
        assert evaluate(labels.astype(dtype), scores, decisions.astype(dtype)) == as_bool


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda y: y.astype(np.int64) * 2, "not binary"),
        (lambda y: y.astype(np.int64) - 1, "not binary"),
        (lambda y: y.astype(np.float32), "dtype float32"),
        (lambda y: y[:, 0], "2-D"),
    ],
)
def test_other_groundtruth_values_are_refused(bad, message):
    labels, scores, _ = synthetic()
    with pytest.raises(ValueError, match=message):
        evaluate(bad(labels), scores)


def test_a_tag_with_one_class_is_named():
    labels, scores, _ = synthetic()
    labels[:, 3] = False
    with pytest.raises(ValueError, match=r"column\(s\) 3 "):
        evaluate(labels, scores)


def test_shape_mismatch_and_nan_scores_are_refused():
    labels, scores, decisions = synthetic()
    with pytest.raises(ValueError, match="predictions has shape"):
        evaluate(labels, scores[:, :-1])
    with pytest.raises(ValueError, match="decisions has shape"):
        evaluate(labels, scores, decisions[:-1])
    scores[4, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite.*row 4, column 2"):
        evaluate(labels, scores)


def test_cli_refuses_non_binary_groundtruth_with_exit_2_naming_the_file(tmp_path, capsys):
    labels, scores, _ = synthetic()
    truth, predictions = tmp_path / "truth.npy", tmp_path / "scores.npy"
    np.save(truth, labels.astype(np.int64) * 2)
    np.save(predictions, scores)
    code, out, err = run_main(capsys, "evaluate", truth, predictions, "--json")
    assert code == 2
    assert str(truth) in err and "not binary" in err
    assert out == ""


def test_cli_accepts_integer_groundtruth(tmp_path, capsys):
    labels, scores, _ = synthetic()
    truth, predictions = tmp_path / "truth.npy", tmp_path / "scores.npy"
    np.save(truth, labels.astype(np.int32))
    np.save(predictions, scores)
    code, out, err = run_main(capsys, "evaluate", truth, predictions, "--json")
    assert code == 0, err
    assert json.loads(out) == evaluate(labels, scores)


def test_cli_missing_file_is_a_usage_error(tmp_path, capsys):
    code, _, err = run_main(capsys, "evaluate", tmp_path / "absent.npy", tmp_path / "no.npy")
    assert code == 2
    assert "absent.npy not found" in err
    code, _, err = run_main(capsys, "evaluate", tmp_path / "only-one.npy")
    assert code == 2 and "usage" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty; expected a (tracks, tags) .npy array"),
        (b"0.1 0.2\n0.3 0.4\n", "is not a .npy file (no NumPy header"),
        (b"\x93NUMPY\x01\x00", "is not a readable .npy array"),  # header cut short
    ],
)
def test_unreadable_matrices_are_named_with_what_is_wrong(tmp_path, content, expected):
    from analysis.evaluate import load_matrix

    path = tmp_path / "scores.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        load_matrix(path, "predictions")
    assert f"predictions file {path}" in str(raised.value)
    assert expected in str(raised.value)
