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
from analysis.fusion import fuse_files
from analysis.report import REPORT_FILE, write_report
from mer_models.training.metrics import BY_EPOCH_NAME, DEFAULT_SELECTION
from study.records import resolve_study

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
        help="which members are fused: all (default), the --top-k best on validation, or "
        "greedy (added while the validation --metric improves)",
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
        print(
            json.dumps(
                {**result.metrics, "members": list(result.members), **result.context}, indent=2
            )
        )
    else:
        print(format_results(result.metrics))
        print("members\t" + " ".join(result.members))
        best = result.context["best_single_member"]
        print(f"best single member\t{best['name']} (chosen on {best['chosen_on']})")
        for line in paired_lines(result.context):
            print(line)
    return 0


def paired_lines(context: dict) -> list[str]:
    """The paired test against the best single member (`fuse`, `fuse-files`), a line per metric."""
    lines = []
    for name, test in context["paired_bootstrap_vs_best_single"].items():
        lines.append(
            f"fusion - best single {name}\t{test['observed_difference']:+.4f} "
            f"[{test['low']:+.4f}, {test['high']:+.4f}], p = {test['p_value']:.3f}"
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
        "validation (macro ROC-AUC unless its space says otherwise); greedy: trials added in "
        "that order while the fusion's validation score improves",
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
        "members": list(fusion.result.members),
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
        for line in paired_lines(fusion.result.context):
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
