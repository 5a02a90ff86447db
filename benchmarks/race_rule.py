"""The race rule alone, on simulated rung scores: how often it drops an equal row, and its
power against a row truly worse by 2, 4 and 8 standard deviations of the seed noise.

Each race has 5 rows x 3 draws over 3 rungs (grace 2, reduction 2: epochs 2,
4 and 8 of 12) and alpha 0.05, as `study.race.replay` runs them. A trial's
score at an epoch is its row's quality, a learning curve shared by all rows,
its seed's offset (sd 1: the seed noise, kept for the whole trial, as a
seed's initialisation and data order are) and a fresh wobble per epoch (sd
0.3); a rung reads each trial's best up to it, as the study does.

    python benchmarks/race_rule.py [--races 1000] [--seed 0] [--draws 3]

The last line printed is a JSON object: `equal_rows_dropped_by_rung` (the
share of races in which any of 5 equal rows is dropped at each rung),
`equal_rows_dropped_in_race`, and `worse_row_dropped` (by the last rung) for
a row worse by 1, 2, 4 and 8 seed sds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path, and its study.py would hide the
# `study` package: the project root goes before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.race import Course, RaceRule, replay  # noqa: E402

RULE = RaceRule(rungs=(2, 4, 8), reduction_factor=2, alpha=0.05)
EPOCHS = 8  # the last rung's epoch: later epochs decide nothing
DRAWS = 3
SEED_SD = 1.0
EPOCH_SD = 0.3


def simulate(
    qualities: Sequence[float], rng: np.random.Generator, rule: RaceRule = RULE, draws: int = DRAWS
) -> dict[str, int]:
    """One race: row name -> the rung that dropped it (rows not dropped are absent)."""
    epochs = np.arange(1, EPOCHS + 1)
    curve = -4.0 / epochs  # every row learns alike; rows differ by their quality
    courses = []
    for index, quality in enumerate(qualities):
        for draw in range(draws):
            seed_offset = rng.normal(0.0, SEED_SD)
            scores = quality + curve + seed_offset + rng.normal(0.0, EPOCH_SD, EPOCHS)
            courses.append(
                Course(f"r{index}-{draw}", f"row {index}", (draw,), list(scores), ended=True)
            )
    return dict(replay(rule, courses).dropped)


def equal_rows(
    races: int, seed: int, rows: int = 5, draws: int = DRAWS
) -> tuple[list[float], float]:
    """Share of races that drop any of `rows` equal rows at each rung, and in the race."""
    rng = np.random.default_rng(seed)
    by_rung, anywhere = np.zeros(len(RULE.rungs)), 0
    for _ in range(races):
        dropped = simulate([0.0] * rows, rng, draws=draws)
        for rung in set(dropped.values()):
            by_rung[rung - 1] += 1
        anywhere += bool(dropped)
    return list(by_rung / races), anywhere / races


def power(races: int, seed: int, shift: float, rows: int = 5, draws: int = DRAWS) -> float:
    """Share of races whose one row worse by `shift` seed sds is dropped by the last rung."""
    rng = np.random.default_rng(seed)
    worse = f"row {rows - 1}"
    qualities = [0.0] * (rows - 1) + [-shift]
    hits = sum(worse in simulate(qualities, rng, draws=draws) for _ in range(races))
    return hits / races


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--races", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=DRAWS, help="draws (seeds) per row")
    args = parser.parse_args(argv)
    by_rung, anywhere = equal_rows(args.races, args.seed, draws=args.draws)
    figures = {
        "races": args.races,
        "rows": 5,
        "draws": args.draws,
        "rungs": list(RULE.rungs),
        "alpha": RULE.alpha,
        "equal_rows_dropped_by_rung": [round(share, 4) for share in by_rung],
        "equal_rows_dropped_in_race": round(anywhere, 4),
        "worse_row_dropped": {
            str(shift): power(args.races, args.seed + shift, shift, draws=args.draws)
            for shift in (1, 2, 4, 8)
        },
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
