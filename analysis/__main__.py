"""Command line of the analysis package: ``python -m analysis SUBCOMMAND ...``.

Each subcommand is a function that adds its parser and sets ``handler``;
``@subcommand`` registers it, so a new one is one decorated function here
and its work lives in its own module. Handlers only parse and call; bad
input (a ValueError or an unreadable file) becomes a one-paragraph message
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from analysis.evaluate import evaluate_files, format_results
from analysis.fuse_study import SELECTS, fuse_study
from analysis.fusion import FusionResult, fuse_files
from analysis.importance import (
    DEFAULT_CONTROLS,
    DEFAULT_RESAMPLES,
    EVALUATORS,
    IMPORTANCE_FOLDER,
    compute_importance,
    importance_table,
    is_importance_plot,
    log_importance,
    plot_importance,
    write_importance,
)
from analysis.report import REPORT_FILE, write_report
from analysis.staging import staged_folder
from mer_models.training.metrics import BY_EPOCH_NAME, DEFAULT_SELECTION
from study_folder.records import resolve_study

SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}
USAGE_ERROR = 2
DEFAULT_RESULTS = "ray_results"  # the study driver's default storage, under the working folder


def subcommand(name: str):
    """Register a function that adds the ``name`` subparser (and its ``handler``)."""

    def register(add: Callable[[argparse._SubParsersAction], None]):
        if name in SUBCOMMANDS:
            raise RuntimeError(f"subcommand {name!r} is registered twice")
        SUBCOMMANDS[name] = add
        return add

    return register


@subcommand("evaluate")
def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="official MediaEval metrics of a prediction matrix",
        description="ROC-AUC and PR-AUC (macro and micro) of PREDICTIONS against GROUNDTRUTH, "
        "and with -d the precision, recall and F-score of binary decisions: the numbers of the "
        "official MediaEval evaluation script.",
    )
    parser.add_argument("groundtruth", help="bool or 0/1 .npy matrix (tracks x tags)")
    parser.add_argument("predictions", help=".npy matrix of scores (tracks x tags)")
    parser.add_argument("-d", "--decisions", help="bool or 0/1 .npy matrix of decisions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    results = evaluate_files(args.groundtruth, args.predictions, args.decisions)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


def _add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


@subcommand("fuse-files")
def _add_fuse_files(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse-files",
        help="late fusion (mean) of prediction files, selected on validation",
        description="Average members' test scores (the paper's late fusion) and evaluate the "
        "fused scores. A MEMBER is TEST.npy or TEST.npy:VALIDATION.npy; with validation files "
        "and --validation-groundtruth, 'topk' and 'greedy' rank and select members on "
        "validation only, and decision thresholds are tuned on validation (otherwise on test, "
        "like the official script).",
    )
    parser.add_argument("members", nargs="+", metavar="MEMBER", help="TEST.npy[:VALIDATION.npy]")
    parser.add_argument("--groundtruth", required=True, help="test labels .npy (bool or 0/1)")
    parser.add_argument(
        "--select",
        choices=("all", "topk", "greedy"),
        default="all",
        help="which members are fused: all (default), the --top-k best on validation, or greedy: "
        "forward selection on validation, which starts from the best member by --metric and adds, "
        "one at a time, the member that raises the fused (mean) validation --metric most (each "
        "member at most once; ties to the one listed first), and stops when none raises it; it "
        "may keep the best member alone, reported as no fusion",
    )
    parser.add_argument(
        "--metric",
        choices=tuple(BY_EPOCH_NAME),
        default=DEFAULT_SELECTION,
        help=f"validation score that ranks and selects members (default: {DEFAULT_SELECTION})",
    )
    parser.add_argument(
        "--top-k", type=int, help="members kept by --select topk (no default: required with it)"
    )
    parser.add_argument("--weights", type=float, nargs="+", help="one weight > 0 per member")
    parser.add_argument("--validation-groundtruth", help="validation labels .npy (bool or 0/1)")
    parser.add_argument("--tags", help="tag list, one a line (names in thresholds.txt)")
    parser.add_argument("--out", help="new folder for predictions, decisions, thresholds, metrics")
    _add_bootstrap_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_fuse_files)


def _run_fuse_files(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.select != "topk":
        raise ValueError("--top-k is only used with --select topk")
    result = fuse_files(
        args.members,
        args.groundtruth,
        validation_groundtruth=args.validation_groundtruth,
        select=args.select,
        top_k=args.top_k,
        weights=args.weights,
        tags=args.tags,
        out=args.out,
        resamples=args.resamples,
        seed=args.seed,
        metric=args.metric,
    )
    if args.json:
        print(json.dumps({**result.metrics, **_members(result), **result.context}, indent=2))
    else:
        print(format_results(result.metrics))
        print("members\t" + " ".join(result.members))
        best = result.context["best_single_member"]
        print(f"best single member\t{best['name']} (chosen on {best['chosen_on']})")
        for line in paired_lines(result):
            print(line)
    return 0


def _members(result: FusionResult) -> dict:
    """The JSON output's members, whether they were fused and, if not, the note saying so."""
    return {"members": list(result.members), "fused": result.fused} | (
        {} if result.fused else {"note": result.note}
    )


def paired_lines(result: FusionResult) -> list[str]:
    """The paired test against the best single member (`fuse`, `fuse-files`), a line per metric;
    for a one-member result, that there is no fusion (its note)."""
    if not result.fused:
        return [result.note]
    lines = []
    for name, test in result.context["paired_bootstrap_vs_best_single"].items():
        lines.append(
            f"fusion - best single {name}\t{100 * test['observed_difference']:+.2f} points "
            f"[{100 * test['low']:+.2f}, {100 * test['high']:+.2f}], p = {test['p_value']:.3f}"
        )
    return lines


def _add_study_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study", metavar="STUDY", help="study folder, or a study name under --results"
    )
    parser.add_argument(
        "--results",
        default=f"./{DEFAULT_RESULTS}",
        help="results root where study names are looked up (default: %(default)s)",
    )


def _study_dir(args: argparse.Namespace) -> Path:
    # The CLI edge: the only place a relative path is resolved against the working folder.
    return resolve_study(args.study, Path.cwd() / args.results)


@subcommand("fuse")
def _add_fuse(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="late fusion of a study's best trials (and external systems)",
        description="Average the test scores of the study's top K finished trials, ranked by "
        "validation macro ROC-AUC (the paper's fusion); with --select greedy, forward selection "
        "on validation picks the subset (among the top K if given). External systems' score "
        "matrices (same rows and tag order as the study's splits) join the fusion. Writes "
        "predictions.npy, decisions.npy (validation-tuned thresholds), thresholds.txt and "
        "metrics.json (with bootstrap intervals and a paired test against the best single "
        "trial), records a fusion run nested in the study's MLflow run, and (for a fusion under "
        "STUDY_DIR/fusions) rewrites the study's report so that it lists this fusion too.",
    )
    _add_study_argument(parser)
    parser.add_argument(
        "--top-k",
        type=int,
        help="trials fused (--select topk: required) or considered (greedy; default: every "
        "finished trial)",
    )
    parser.add_argument(
        "--select",
        choices=SELECTS,
        default="topk",
        help="topk (default): the --top-k best trials by the study's selection metric on "
        "validation (macro ROC-AUC unless its space says otherwise); greedy: forward selection "
        "on validation among the candidates (the --top-k best trials, or all finished ones, and "
        "the externals): start from the best, add the candidate that raises the fusion's "
        "validation score most (each at most once; ties to the better ranked), stop when none "
        "raises it; it may keep the best trial alone, reported as no fusion",
    )
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="NAME=TEST.npy[:VALIDATION.npy]",
        help="another system's scores to fuse with (repeatable)",
    )
    parser.add_argument("--out", help="new folder (default: STUDY_DIR/fusions/<name>, e.g. top2)")
    _add_bootstrap_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_fuse)


def _run_fuse(args: argparse.Namespace) -> int:
    study_dir = _study_dir(args)
    fusion = fuse_study(
        study_dir,
        top_k=args.top_k,
        select=args.select,
        externals=args.external,
        out=Path(args.out) if args.out else None,
        resamples=args.resamples,
        seed=args.seed,
    )
    summary = {
        "fusion": fusion.name,
        "out": str(fusion.out),
        **_members(fusion.result),
        "best_single_trial": fusion.best_single,
        "mlflow_run_id": fusion.mlflow_run_id,
    }
    if fusion.out.parent.resolve() == (study_dir / "fusions").resolve():
        # The report lists the study's fusions: redo it so that it shows this one too.
        report = write_report(study_dir, resamples=args.resamples, seed=args.seed)
        summary["report"] = str(report.out / REPORT_FILE)
    if args.json:
        print(json.dumps({**fusion.result.metrics, **summary}, indent=2))
    else:
        print(format_results(fusion.result.metrics))
        for key, value in summary.items():
            print(f"{key}\t{' '.join(value) if isinstance(value, list) else value}")
        for line in paired_lines(fusion.result):
            print(line)
    return 0


@subcommand("report")
def _add_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="Markdown report of a study in the paper's Table 1 layout, with plots",
        description="Write report.md (every trial in the layout of Table 1 of Gerczuk et al., "
        "with test bootstrap intervals and paired p-values against the best single model, the "
        "fusions under STUDY_DIR/fusions, and the paper's published figures) and PNG plots, "
        "and log them to the study's MLflow parent run.",
    )
    _add_study_argument(parser)
    parser.add_argument(
        "--out", help="report folder (default: STUDY_DIR/report; an earlier report is replaced)"
    )
    _add_bootstrap_arguments(parser)
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    report = write_report(
        _study_dir(args),
        out=Path(args.out) if args.out else None,
        resamples=args.resamples,
        seed=args.seed,
    )
    for path in report.files:
        print(path)
    print(f"mlflow_logged\t{report.mlflow_logged}")
    return 0


@subcommand("importance")
def _add_importance(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "importance",
        help="which searched hyperparameters mattered (importance against a shuffled control)",
        description="Each searched parameter's importance (Optuna's evaluators over the "
        "recorded trials) with a bootstrap interval, against a control with the metric "
        "shuffled across trials; under ASHA or a race at the first rung and at the end. Writes "
        f"STUDY_DIR/importance.json and plots under STUDY_DIR/{IMPORTANCE_FOLDER}, prints the "
        "table, and logs the importances (importance/<param>) and plots to the study's MLflow "
        "parent run.",
    )
    _add_study_argument(parser)
    parser.add_argument(
        "--metric",
        help="validation score the trials are compared on: one of "
        f"{', '.join(BY_EPOCH_NAME)} (default: the study's selection metric)",
    )
    parser.add_argument(
        "--evaluator",
        default="fanova",
        help=f"one of {', '.join(EVALUATORS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap refits per budget"
    )
    parser.add_argument(
        "--controls", type=int, default=DEFAULT_CONTROLS, help="shuffled-metric refits per budget"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the forests and resamples")
    parser.set_defaults(handler=_run_importance)


def _run_importance(args: argparse.Namespace) -> int:
    study_dir = _study_dir(args)
    result = compute_importance(
        study_dir,
        metric=args.metric,
        evaluator=args.evaluator,
        resamples=args.resamples,
        controls=args.controls,
        seed=args.seed,
    )
    if result is None:
        print(f"study {study_dir} searched no parameter: no importance to compute")
        return 0
    out = study_dir / IMPORTANCE_FOLDER
    with staged_folder(out, replaceable=_only_importance_plots) as staging:
        plots = [out / path.name for path in plot_importance(result, staging)]
    files = [write_importance(result, study_dir), *plots]
    if result.entries:
        for line in importance_table(result):
            print(line)
    for budget in result.budgets:
        if budget.reason:
            print(f"{budget.budget}\t{budget.reason}")
    for path in files:
        print(path)
    print(f"mlflow_logged\t{log_importance(study_dir, result, files)}")
    return 0


def _only_importance_plots(folder: Path) -> bool:
    """An earlier `importance` run's plot folder, which a new run replaces."""
    return all(is_importance_plot(path.name) for path in folder.iterdir())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description="Evaluation, fusion and reports of MER studies."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:
        print(f"python -m analysis {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
