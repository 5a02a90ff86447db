"""Search, then confirm: a study's best rows as a space that repeats them under FIFO.

A wide search (ASHA, one seed per configuration) ranks rows on a single,
unequally budgeted draw each. `write_confirm` turns its top K rows (by the
mean validation selection metric, `analysis.rows`) into
``STUDY/confirm.yaml``: the rows as explicit ``configs``, ``repeats: 5``
(seeds 0-4) and ``scheduler: {type: fifo}``, under the study's budget and
selection metric, so that

    python study/run.py --space ray_results/NAME/confirm.yaml

reruns them as a comparison whose rows have intervals and whose factors
have paired tests. Each config holds the row's searched fields and every
field in which the K rows differ; fields the K rows share and that differ
from the budget's (and TrainConfig's) values are the space's fixed
``parameters``, so each confirmed row trains exactly the configuration
that was ranked. ``reuse: .`` hands the confirmation the study's own
trials of those rows that ran to their own stop (`study_folder.reuse`): it trains
only the seeds the study did not run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis.effects import Effects
from analysis.rows import RowResult, RowTable
from mer_models.config import TrainConfig
from mer_models.files import atomic_write_text
from study_folder.budgets import BUDGETS
from study_folder.records import CONFIRM_FILE, DRAW_FIELDS, RESOURCE_FIELDS, STUDY_FILE, Study

CONFIRM_TOP = 3  # rows confirmed by default
CONFIRM_REPEATS = 5  # seeds per confirmed row
DEFAULT_BUDGET = "quick"  # a space's budget when it names none (study_folder.search_space)


@dataclass(frozen=True)
class ConfirmPlan:
    """Which rows a confirmation reruns, with how many seeds, and why; no rows: none is
    needed (`why` says so)."""

    rows: tuple[RowResult, ...]
    repeats: int
    why: str


def confirm_plan(
    study: Study, table: RowTable, effects: Effects | None = None, top: int = CONFIRM_TOP
) -> ConfirmPlan:
    """A search's top rows, repeated; a study whose rows already have CONFIRM_REPEATS draws
    under equal budgets: more draws only for the rows of its undecided effects, or none."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    ranked = table.rows[:top]
    equal = study.scheduler in ("fifo", "race")
    if not (equal and ranked and all(row.n >= CONFIRM_REPEATS for row in table.rows)):
        return ConfirmPlan(
            ranked,
            CONFIRM_REPEATS,
            f"its top {len(ranked)} rows, {CONFIRM_REPEATS} seeds each, FIFO",
        )
    undecided = {
        name
        for effect in (effects.effects if effects is not None else ())
        if effect.p_adjusted is not None and not effect.detected
        for name in (effect.from_row, effect.to_row)
    }
    rows = tuple(row for row in table.rows if row.name in undecided)
    if not rows:
        return ConfirmPlan(
            (),
            0,
            f"nothing to confirm: every row has {min(row.n for row in table.rows)} or more "
            "draws under equal budgets and every effect tested was decided",
        )
    more = 2 * max(row.n for row in rows)
    return ConfirmPlan(
        rows,
        more,
        f"more draws ({more} seeds, FIFO) for the {len(rows)} row(s) of its undecided effects",
    )


def confirm_space(
    study: Study,
    table: RowTable,
    top: int = CONFIRM_TOP,
    repeats: int = CONFIRM_REPEATS,
    rows: Sequence[RowResult] | None = None,
) -> dict[str, Any]:
    """The confirmation space of a study's rows (its top `top`, or `rows`), as the mapping
    its YAML holds."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    budget = _budget(study)
    rows = tuple(rows) if rows is not None else table.rows[:top]
    fixed, configs = _parameters_and_configs(table, rows, budget)
    space: dict[str, Any] = {
        "description": _description(study, table, rows, budget, repeats),
        "searcher": "grid",
        "num_samples": 1,
        "repeats": repeats,
        **({"splits": list(study.splits)} if study.splits else {}),  # on the splits it ran on
        "budget": budget,
        "metric": {"name": table.selection.epoch, "mode": "max"},
        "scheduler": {"type": "fifo"},
        "reuse": ".",  # this study: its ended trials of these rows are taken over
    }
    if fixed:
        space["parameters"] = fixed
    space["configs"] = configs
    return space


def _parameters_and_configs(
    table: RowTable, rows: Sequence[RowResult], budget: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rows' config fields (draws and resources left out) as the space's fixed
    `parameters` (what all rows share and the defaults do not give) and its `configs` (per
    row: the searched fields and those that differ between the rows)."""
    skip = set(DRAW_FIELDS) | set(RESOURCE_FIELDS)
    searched = [field for field in table.searched if field not in skip]
    base = TrainConfig().to_dict() | dict(BUDGETS[budget])
    fields = [key for key in rows[0].config if key not in skip]
    differing = {key for key in fields if len({repr(row.config.get(key)) for row in rows}) > 1}
    fixed = {
        key: rows[0].config[key]
        for key in fields
        if key not in differing and key not in searched and rows[0].config[key] != base.get(key)
    }
    configs = [
        {
            key: row.config[key]
            for key in fields
            if key in row.config and (key in searched or key in differing)
        }
        for row in rows
    ]
    if not all(configs):  # one row and nothing searched: the row's whole config
        configs = [{key: rows[0].config[key] for key in fields if key not in fixed}]
    return fixed, configs


def _description(
    study: Study, table: RowTable, rows: Sequence[RowResult], budget: str, repeats: int
) -> str:
    """The space's description: which study's rows, ranked how, confirmed how."""
    ranking = "; ".join(
        f"{i}. {row.name} (validation {table.selection.title} {100 * row.validation.mean:.2f}, "
        f"n={row.n})"
        for i, row in enumerate(rows, start=1)
    )
    return (
        f"Confirmation of study {study.name} (space {study.space}, scheduler "
        f"{study.scheduler or 'unrecorded'}, budget {budget}): its top {len(rows)} of "
        f"{len(table.rows)} rows by mean validation {table.selection.title}: {ranking}. "
        f"Each is trained with seeds 0-{repeats - 1}"
        + (f" on splits {', '.join(map(str, study.splits))}" if study.splits else "")
        + " under FIFO (equal budgets), so that "
        "their differences are measured against seed noise. Written by analysis.confirm "
        f"from {study.dir.resolve()}."
    )


def _budget(study: Study) -> str:
    """The budget study.json records (a study.json without one ran the default, quick)."""
    description = json.loads((study.dir / STUDY_FILE).read_text(encoding="utf-8"))
    budget = description.get("budget") or DEFAULT_BUDGET
    if budget not in BUDGETS:
        raise ValueError(
            f"{study.dir / STUDY_FILE}: budget {budget!r} is none of {', '.join(BUDGETS)}"
        )
    return budget


def write_confirm(
    study: Study,
    table: RowTable,
    top: int = CONFIRM_TOP,
    repeats: int = CONFIRM_REPEATS,
    rows: Sequence[RowResult] | None = None,
) -> Path:
    """``STUDY/confirm.yaml``, written whole; its path."""
    space = confirm_space(study, table, top, repeats, rows)
    path = study.dir / CONFIRM_FILE
    header = (
        "# Written at the study's end: its best rows, repeated over seeds under FIFO; the\n"
        "# trials of this study that it plans are taken over, not trained again (reuse: .).\n"
        f"# Run it with: python study/run.py --space {path}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(space, sort_keys=False, width=88))
    return path
