"""Greedy fusion's selection time at 12, 48 and 96 members of the real validation size.

Greedy forward selection (`python -m analysis fuse STUDY --select greedy`)
scores every remaining member in every round. Each synthetic member scores
the real validation split's size, 3,802 tracks x 56 tags with ~3% positives,
as a trial would (float32 sigmoid outputs): its logit is the label's signal
(a strength drawn per member), noise shared by every member (what no fusion
removes) and its own noise (what fusion averages away), so that greedy
keeps adding members for a while, as on a real study. Times:

- `select_members(..., "greedy")`, what the commands run: `greedy_selection`
  (`RankScorer` on running sums) and scikit-learn's score of the chosen set;
- `greedy_selection_sklearn`, the plain definition (scikit-learn's score of
  the re-averaged members for every candidate), for sizes up to
  `--reference-up-to` (96 takes minutes), with a check that both choose the
  same members.

    python benchmarks/greedy_fusion.py [--sizes 12 48 96] [--reference-up-to 48] [--seed 0]

The last line printed is a JSON object: per size, the members chosen,
`seconds` (new), `reference_seconds` (or null), `same_members` and both
validation scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path, and its study.py would hide the
# `study` package: the project root goes before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.fusion import greedy_selection_sklearn, select_members  # noqa: E402
from mer_models.training.metrics import selection_metric  # noqa: E402

TRACKS, TAGS = 3802, 56  # the real validation split
POSITIVE_SHARE = 0.03
SIGNAL = (0.4, 0.8)  # a member's label signal, in logit sd: macro ROC-AUC ~0.75 alone
SHARED_SD = 1.0  # noise every member shares
OWN_SD = 1.0  # each member's own noise


def synthetic_members(count: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Validation labels and `count` members' float32 scores (see the module docstring)."""
    rng = np.random.default_rng(seed)
    labels = rng.random((TRACKS, TAGS)) < POSITIVE_SHARE
    labels[0], labels[1] = True, False  # every tag has both classes
    shared = rng.normal(0.0, SHARED_SD, labels.shape)
    offset = np.log(POSITIVE_SHARE / (1 - POSITIVE_SHARE))
    members = []
    for _ in range(count):
        signal = rng.uniform(*SIGNAL)
        logit = offset + signal * (2 * labels - 1) + shared + rng.normal(0.0, OWN_SD, labels.shape)
        members.append((1.0 / (1.0 + np.exp(-logit))).astype(np.float32))
    return labels, members


def measure(count: int, seed: int, reference: bool) -> dict:
    """Time both selections on `count` synthetic members."""
    labels, members = synthetic_members(count, seed)
    start = time.perf_counter()
    selection = select_members(members, labels, "greedy")
    figures = {
        "members": count,
        "chosen": len(selection.indices),
        "seconds": round(time.perf_counter() - start, 2),
        "validation_roc_auc": selection.validation_score,
        "reference_seconds": None,
    }
    if reference:
        start = time.perf_counter()
        chosen, score = greedy_selection_sklearn(
            members, labels, np.full(count, 1.0 / count), selection_metric(None)
        )
        figures["reference_seconds"] = round(time.perf_counter() - start, 2)
        figures["reference_validation_roc_auc"] = score
        figures["same_members"] = chosen == selection.indices
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 48, 96])
    parser.add_argument(
        "--reference-up-to",
        type=int,
        default=48,
        help="time scikit-learn's path up to this many members (default: %(default)s; 96 takes "
        "minutes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = []
    for count in args.sizes:
        figures = measure(count, args.seed + count, count <= args.reference_up_to)
        reference = figures["reference_seconds"]
        print(
            f"{count} members: {figures['chosen']} chosen in {figures['seconds']} s"
            + ("" if reference is None else f" (scikit-learn per candidate: {reference} s)"),
            flush=True,
        )
        results.append(figures)
    figures = {"tracks": TRACKS, "tags": TAGS, "sizes": results}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
