"""Late fusion of a study's best trials, with external systems, recorded in MLflow.

Gerczuk et al. (MediaEval 2020) average the sigmoid outputs of their best
models (their Table 1 fusion) and also fuse with another challenge system's
scores. `fuse_study` does both for a study folder: it ranks the trials that
finished by the study's selection metric on validation (macro ROC-AUC unless
its space names another; metrics.json), fuses the top K
(``topk``) or the subset a forward selection picks on validation
(``greedy``, among the top K when K is given), adds external systems, and
scores the result on the study's own test labels. The fusion is compared
with the best single trial by a paired bootstrap, written with
`write_fusion` (all or nothing; every input is checked first), and logged as
an MLflow run nested in the study's parent run. When greedy selection keeps
the best trial alone, that is recorded as no fusion (``fused`` false, with a
``note``), not as a fusion equal to its best member.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.bootstrap import PairedResult, paired_bootstrap
from analysis.evaluate import check_groundtruth, check_scores, evaluate, load_matrix, metric_names
from analysis.fusion import (
    FusionResult,
    Member,
    is_fusion_folder,
    parse_member,
    run_fusion,
    write_fusion,
)
from analysis.staging import check_output_dir
from mer_models.training.metrics import BEST_VALUE_KEY, SELECTION_KEY, selection_metric
from study_folder.records import (
    FINISHED_STATES,
    Study,
    Trial,
    check_finished,
    finished_trials,
    finite_number,
    load_study,
    read_labels,
)
from tracking.names import FUSION_TAG, fusion_metric, fusion_run_name, metric_key
from tracking.runs import NestedRun, record_nested_run
from tracking.study_run import find_study_run

log = logging.getLogger(__name__)

SELECTS = ("topk", "greedy")
# External names become folder and MLflow names: keep them plain.
_EXTERNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class External:
    """Another system's scores (e.g. a challenge submission) to fuse with the trials."""

    name: str
    test: Path
    validation: Path | None


@dataclass(frozen=True)
class StudyFusion:
    """What `fuse_study` did: the fusion's name, folder, result and MLflow run (None if none)."""

    name: str
    out: Path
    result: FusionResult
    best_single: str  # trial id
    paired: dict[str, PairedResult]  # fusion minus best single trial, by official metric name
    mlflow_run_id: str | None


def parse_external(spec: str) -> External:
    """``NAME=TEST.npy`` or ``NAME=TEST.npy:VALIDATION.npy`` -> External."""
    name, sep, files = spec.partition("=")
    if not sep or not files:
        raise ValueError(f"external {spec!r}: expected NAME=TEST.npy[:VALIDATION.npy]")
    if not _EXTERNAL_NAME.fullmatch(name):
        raise ValueError(
            f"external {spec!r}: name {name!r} must be letters, digits, '_', '.' or '-' "
            f"(it names the fusion folder and MLflow params)"
        )
    test, validation = parse_member(files)
    return External(name, test, validation)


def fusion_name(select: str, top_k: int | None, externals: Sequence[External] = ()) -> str:
    """The default folder name (and MLflow run suffix): ``top2``, ``greedy-top4``, ``top2+vgg``."""
    if select == "topk":
        base = f"top{top_k}"
    else:
        base = "greedy" if top_k is None else f"greedy-top{top_k}"
    return base + "".join(f"+{external.name}" for external in externals)


def _check_request(select: str, top_k: int | None, externals: Sequence[External]) -> None:
    if select not in SELECTS:
        raise ValueError(f"unknown selection {select!r}; expected one of {', '.join(SELECTS)}")
    if select == "topk" and top_k is None:
        raise ValueError("the 'topk' selection needs --top-k K (how many trials to average)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    names = [external.name for external in externals]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"external name {name!r} is given twice")
    if select == "greedy":
        for external in externals:
            if external.validation is None:
                raise ValueError(
                    f"external {external.name}: the greedy selection chooses members on "
                    f"validation scores; give it as {external.name}=TEST.npy:VALIDATION.npy"
                )


def _candidates(study: Study, top_k: int | None) -> list[Trial]:
    """The finished trials a fusion may use, best first, cut to K; K too large is an error."""
    trials = finished_trials(study)
    if not trials:
        states = sorted({str(t.end_state or "running") for t in study.trials})
        raise ValueError(
            f"study {study.dir} has no finished trial to fuse: none of its {len(study.trials)} "
            f"trial(s) ended in {', '.join(FINISHED_STATES)} with predictions and a validation "
            f"{study.selection.title} (states seen: {', '.join(states)})"
        )
    if top_k is not None and top_k > len(trials):
        raise ValueError(
            f"--top-k {top_k} is larger than the number of finished trials in study "
            f"{study.dir}: {len(trials)} of its {len(study.trials)} trial(s) finished with "
            f"predictions ({', '.join(t.key for t in trials)}); choose K <= {len(trials)}"
        )
    return trials if top_k is None else trials[:top_k]


def _read_scores(path: Path, name: str, part: str, shape: tuple) -> np.ndarray:
    """A finite score matrix with the rows and tag columns of the study's ``part`` split."""
    scores = load_matrix(path, name)
    if scores.shape != shape:
        raise ValueError(
            f"{name} {path} has shape {scores.shape}; the study's {part} split has (tracks, "
            f"tags) = {shape}, and fused scores must cover the same tracks and tags in order"
        )
    return check_scores(scores, f"{name} {path}")


def _trial_member(trial: Trial, validation_shape: tuple, test_shape: tuple) -> Member:
    validation, test = (
        _read_scores(path, f"{part} predictions of trial {trial.key}", part, shape)
        for part, path, shape in (
            ("validation", trial.validation_predictions, validation_shape),
            ("test", trial.test_predictions, test_shape),
        )
    )
    return Member(trial.key, test, validation)


def _external_member(external: External, validation_shape: tuple, test_shape: tuple) -> Member:
    name = f"external {external.name}"
    validation = None
    if external.validation is not None:
        validation = _read_scores(
            external.validation, f"{name} validation scores", "validation", validation_shape
        )
    test = _read_scores(external.test, f"{name} test scores", "test", test_shape)
    return Member(external.name, test, validation)


def fuse_study(
    study_dir: str | Path,
    top_k: int | None = None,
    select: str = "topk",
    externals: Sequence[str] = (),
    out: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    track: bool = True,
    replace: bool = False,
) -> StudyFusion:
    """Fuse a study's trials (and externals), write the outputs and record an MLflow run.

    ``topk`` averages the K best finished trials by the study's selection metric;
    ``greedy`` runs forward selection on validation over the top K (all
    finished trials without K) and the externals, and may keep the best
    alone (``result.fused`` false). Externals always join a ``topk``
    fusion. ``out`` defaults to ``STUDY_DIR/fusions/<fusion_name>``.
    Thresholds are tuned on the fused validation scores, or on test (with
    a warning) when an external has no validation file. ``out`` must be new
    or empty; with ``replace`` an earlier fusion there is swapped for this
    one. With ``track``, a run named ``fusion <name>: <members>`` nested in the study's
    MLflow parent run records members, metrics and the output files.
    """
    plan = _plan(study_dir, top_k, select, externals, out, replace)
    inputs = _read_inputs(plan)
    result = _fuse(plan, inputs, resamples, seed)
    paired = paired_bootstrap(
        inputs.test_labels, result.predictions, inputs.best_test, resamples=resamples, seed=seed
    )
    result = dataclasses.replace(result, context=_context(plan, inputs, result, paired))
    write_fusion(result, plan.out, inputs.tags, replace=replace)
    log.debug("fusion %s of %s written to %s", plan.name, ", ".join(result.members), plan.out)
    run_id = log_fusion_run(plan.study, plan.out) if track else None
    return StudyFusion(plan.name, plan.out, result, plan.best.key, paired, run_id)


@dataclass(frozen=True)
class _Plan:
    """A fusion request checked against its study, before any scores are read."""

    study: Study
    select: str
    top_k: int | None
    externals: list[External]
    pool: list[Trial]  # the candidate trials, best first
    name: str
    out: Path

    @property
    def best(self) -> Trial:
        """The best single trial: the candidates are the finished trials best first."""
        return self.pool[0]


def _plan(
    study_dir: str | Path,
    top_k: int | None,
    select: str,
    externals: Sequence[str],
    out: str | Path | None,
    replace: bool,
) -> _Plan:
    """Check the request, the study and the output folder; a bad one is a ValueError."""
    parsed = [parse_external(spec) for spec in externals]
    _check_request(select, top_k, parsed)
    study = load_study(study_dir)
    check_finished(study)
    pool = _candidates(study, top_k)
    clash = {t.key for t in study.trials} & {e.name for e in parsed}
    if clash:
        raise ValueError(f"external name(s) {', '.join(sorted(clash))} are also trial ids")
    name = fusion_name(select, top_k, parsed)
    out = Path(out) if out is not None else study.dir / "fusions" / name
    check_output_dir(out, is_fusion_folder if replace else None)
    return _Plan(study, select, top_k, parsed, pool, name, out)


@dataclass(frozen=True)
class _Inputs:
    """The members' scores and the labels they are scored on, read and checked."""

    members: list[Member]  # the candidates, then the externals
    validation_labels: np.ndarray | None  # None when a member has no validation scores
    test_labels: np.ndarray
    tags: tuple[str, ...]

    @property
    def best_test(self) -> np.ndarray:
        """The best single trial's test scores: the first candidate's."""
        return self.members[0].test


def _read_inputs(plan: _Plan) -> _Inputs:
    """The labels the trials were scored on, as the study stored them, and every member's
    scores; without validation scores for all, the fusion uses none."""
    study = plan.study
    validation_labels, tags = read_labels(study.dir, "validation")
    validation_labels = check_groundtruth(validation_labels, f"validation labels of {study.dir}")
    test_labels = check_groundtruth(
        read_labels(study.dir, "test")[0], f"test labels of {study.dir}"
    )
    shapes = validation_labels.shape, test_labels.shape
    members = [_trial_member(t, *shapes) for t in plan.pool]
    members += [_external_member(e, *shapes) for e in plan.externals]
    if all(m.validation is not None for m in members):
        return _Inputs(members, validation_labels, test_labels, tags)
    return _Inputs([Member(m.name, m.test) for m in members], None, test_labels, tags)


def _fuse(plan: _Plan, inputs: _Inputs, resamples: int, seed: int) -> FusionResult:
    """Average the top K (``topk``) or the members a forward selection keeps (``greedy``)."""
    result = run_fusion(
        inputs.members,
        inputs.test_labels,
        inputs.validation_labels,
        select="greedy" if plan.select == "greedy" else "all",
        resamples=resamples,
        seed=seed,
        metric=plan.study.metric,
    )
    if plan.select == "topk":
        # run_fusion averaged all given members; they are the top K by validation.
        result = dataclasses.replace(
            result, selection=dataclasses.replace(result.selection, method="topk")
        )
    return result


def _context(
    plan: _Plan, inputs: _Inputs, result: FusionResult, paired: dict[str, PairedResult]
) -> dict:
    """What metrics.json records beside the fusion's scores: its request, its members, and
    the best single trial with the paired test against it."""
    study, best = plan.study, plan.best
    chosen = set(result.members)
    return {
        "study": study.name,
        "fusion": plan.name,
        "top_k": plan.top_k,
        "externals": [e.name for e in plan.externals],
        "candidates": [m.name for m in inputs.members],
        "member_details": [
            _member_detail(m, plan.pool, plan.externals) for m in inputs.members if m.name in chosen
        ],
        "best_single_trial": {
            "id": best.key,
            study.selection.validation: best.metrics.get(study.selection.validation),
            **evaluate(inputs.test_labels, inputs.best_test),
        },
        "paired_bootstrap_vs_best_single": {k: v.to_dict() for k, v in paired.items()},
    }


def _member_detail(member: Member, pool: Sequence[Trial], externals: Sequence[External]) -> dict:
    trial = next((t for t in pool if t.key == member.name), None)
    if trial is not None:
        return {
            "name": trial.key,
            "kind": "trial",
            **{key: trial.metrics.get(key) for key in (SELECTION_KEY, BEST_VALUE_KEY)},
            "test_predictions": str(trial.test_predictions.resolve()),
        }
    external = next(e for e in externals if e.name == member.name)
    return {
        "name": external.name,
        "kind": "external",
        "test_predictions": str(external.test.resolve()),
        "validation_predictions": None
        if external.validation is None
        else str(external.validation.resolve()),
    }


def fusion_metrics(summary: dict) -> dict[str, float]:
    """The MLflow metrics of a fusion from its metrics.json: official test metrics,
    intervals, the validation score that chose it, the paired test against the best trial."""
    metrics = {fusion_metric(name): summary.get(name) for name in metric_names()}
    for name, interval in (summary.get("bootstrap") or {}).items():
        metrics[f"{fusion_metric(name)}_ci_low"] = interval.get("low")
        metrics[f"{fusion_metric(name)}_ci_high"] = interval.get("high")
    validation_key = selection_metric(summary.get(SELECTION_KEY)).fused_validation
    metrics[f"fusion_{validation_key}"] = summary.get(validation_key)
    for name, test in (summary.get("paired_bootstrap_vs_best_single") or {}).items():
        metrics[f"fusion_minus_best_single_{metric_key(name)}"] = test.get("observed_difference")
        metrics[f"fusion_vs_best_single_p_value_{metric_key(name)}"] = test.get("p_value")
    return {k: float(v) for k, v in metrics.items() if finite_number(v) is not None}


def fusion_params(summary: dict) -> dict[str, str]:
    """The MLflow params of a fusion from its metrics.json."""
    intervals = summary.get("bootstrap") or {}
    top_k = summary.get("top_k")
    return {
        "members": ",".join(summary["members"]),
        "member_count": str(len(summary["members"])),
        # False when greedy selection kept the best member alone (older summaries lack the key).
        "fused": str(bool(summary.get("fused", len(summary["members"]) > 1))).lower(),
        "select": str(summary.get("select")),
        "top_k": "all" if top_k is None else str(top_k),
        "externals": ",".join(summary.get("externals") or ()) or "none",
        "best_single_trial": str((summary.get("best_single_trial") or {}).get("id")),
        "thresholds_tuned_on": str(summary.get("thresholds_tuned_on")),
        "bootstrap_resamples": str(next(iter(intervals.values()), {}).get("resamples")),
    }


def log_fusion_run(study: Study, out: Path) -> str | None:
    """Record the fusion in folder `out` as a run nested in the study's parent run, once
    (`record_fusion_run`); its id, or None with a warning when MLflow cannot be written:
    the output files are already complete."""
    from mlflow.exceptions import MlflowException

    study_run = find_study_run(study)
    if study_run is None:
        return None
    try:
        return record_fusion_run(
            study_run.client, study_run.experiment_id, study_run.parent_run_id, study, out
        )
    except (MlflowException, OSError) as error:
        log.warning("fusion written to %s but not recorded in MLflow: %s", out, error)
        return None


def record_fusion_run(
    client, experiment_id: str, parent_run_id: str, study: Study, out: Path, again: bool = False
) -> str:
    """The fusion in folder `out` as a FINISHED run nested in the parent run, once
    (`tracking.runs.record_nested_run`); its id. `again` is the tracker queue's retry flag."""
    summary = json.loads((out / "metrics.json").read_text())
    names = {t.key: str(t.metrics.get("trial_name") or t.key) for t in study.trials}
    return record_nested_run(
        client,
        NestedRun(
            experiment_id,
            parent_run_id,
            study.name,
            study.study_id,
            "fusion",
            fusion_run_name(out.name, [names.get(m, m) for m in summary["members"]]),
            {FUSION_TAG: out.name},
            fusion_params(summary),
            fusion_metrics(summary),
        ),
        out,
        same=("members",),
    )
