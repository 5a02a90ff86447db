"""Stand-in trials for the race scheduler's tests: scores a function of row, seed and
epoch, the state a JSON file per trial. This module imports Ray Tune and the trials'
report keys alone, so that each of Ray's worker processes starts in about two seconds
(the training stack's imports would double that)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from ray import tune

from study.trial_reports import RESTORED_KEY

ROWS = {"good": 0.80, "close": 0.795, "middling": 0.78, "bad": 0.60}
SEEDS = (0, 1, 2)
EPOCHS = 8


def score(row: str, seed: int, epoch: int) -> float:
    """A learning curve per row, with a seed's offset and a wobble per epoch."""
    wobble = math.sin(7.0 * seed + 3.0 * epoch + len(row)) * 0.004
    return ROWS[row] - 0.2 / epoch + 0.006 * (seed - 1) + wobble


def toy_trial(config: dict, state_dir: str, start_together: bool = False) -> None:
    """Train from the saved epoch on; report the restored scores first, as study trials do.
    `start_together`: the first start of every trial waits until all have started."""
    path = Path(state_dir) / f"{config['row']}-{config['seed']}.json"
    with (Path(state_dir) / "workers.txt").open("a") as workers:
        workers.write(f"{os.getpid()}\n")
    if start_together and not path.is_file():
        (Path(state_dir) / f"{path.stem}.started").touch()
        deadline = time.monotonic() + 120
        while len(list(Path(state_dir).glob("*.started"))) < len(ROWS) * len(SEEDS):
            assert time.monotonic() < deadline, "not every trial started"
            time.sleep(0.05)
    scores = json.loads(path.read_text()) if path.is_file() else []
    if scores:
        with (Path(state_dir) / "restores.txt").open("a") as restores:
            restores.write(f"{path.stem}\n")
        tune.report({"epoch": len(scores), "val": scores[-1], RESTORED_KEY: json.dumps(scores)})
    for epoch in range(len(scores) + 1, EPOCHS + 1):
        scores.append(score(config["row"], config["seed"], epoch))
        path.write_text(json.dumps(scores))
        tune.report({"epoch": epoch, "val": scores[-1]})
