"""The report's "Rungs" section: what a race (`scheduler: {type: race}`) decided at each rung.

Reads `STUDY/rungs.json` (written by the study driver from the trials'
histories, `study.race`): one entry per rung and row with its mean over its
draws, its paired difference to the best row with a 95% interval, the p
values and the decision. Rows dropped at a rung are not in the Rows and
Effects sections; this section lists the evidence that dropped each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.markdown import DASH, escape_markdown, markdown_table
from study_folder.records import BEST, DROPPED, RUNGS_FILE

KEYS = ("rung", "epoch", "row", "n", "mean", "difference_to_best", "p_adjusted", "decision")


def read_rungs(study_dir: Path) -> list[dict[str, Any]] | None:
    """The entries of `rungs.json`; None when the study did not race. A damaged file is a
    ValueError naming it and the key at fault."""
    path = Path(study_dir) / RUNGS_FILE
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON array of rung entries")
    for index, entry in enumerate(entries):
        missing = [key for key in KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise ValueError(
                f"{path}: entry {index} lacks {', '.join(missing)}; each entry has the keys "
                f"{', '.join(KEYS)} (the study driver rewrites the file when it ends)"
            )
    return entries


def _points(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:+.1f}"


def _difference(entry: dict[str, Any]) -> str:
    difference = entry["difference_to_best"] or {}
    if difference.get("mean") is None:
        return DASH
    if difference.get("low") is None:
        return _points(difference["mean"])
    return (
        f"{_points(difference['mean'])} [{_points(difference['low'])}, "
        f"{_points(difference['high'])}]"
    )


def _p(value: float | None) -> str:
    return DASH if value is None else f"{value:.3g}"


def rungs_section(entries: list[dict[str, Any]], selection_title: str) -> list[str]:
    """The section's Markdown lines: the rule in a paragraph, a table of every rung's rows,
    and a sentence per dropped row."""
    lines = [
        "## Rungs",
        "",
        "The study raced its rows: at each rung every live trial waited until all had reached "
        "it or ended, so these decisions follow from the trials' results alone. A row's score "
        f"is the mean over its draws of each trial's best validation {selection_title} up to "
        "the rung (in %). The best rows (a share of 1 / reduction factor) went on whatever the "
        "test said; another row was dropped only when the rows differed (block F test, "
        "p below) and its paired difference to the best row was significant (one-sided paired "
        "t test, Holm-adjusted over the rows tested at that rung). Difference: row minus best "
        "row in points, over their common draws, with its 95% t interval. Each decision says "
        "why it was taken.",
        "",
    ]
    lines += markdown_table(
        (
            "rung",
            "epoch",
            "row",
            "n",
            f"mean best validation {selection_title}",
            "difference to best",
            "p",
            "p adjusted",
            "rows differ p",
            "decision",
        ),
        [_rung_cells(entry) for entry in entries],
    )
    dropped = [entry for entry in entries if entry["decision"] == DROPPED]
    lines.append("")
    if not dropped:
        lines.append("No row was dropped: every row reached the full budget.")
        return lines
    lines += [_dropped_line(entry, entries) for entry in dropped]
    return lines


def _rung_cells(entry: dict[str, Any]) -> tuple[str, ...]:
    """One row of the rungs table."""
    return (
        str(entry["rung"]),
        str(entry["epoch"]),
        str(entry["row"]),
        str(entry["n"]),
        f"{100 * entry['mean']:.1f}",
        _difference(entry),
        _p(entry.get("p_value")),
        _p(entry["p_adjusted"]),
        _p(entry.get("rows_differ_p")),
        f"{entry['decision']} ({entry['why']})" if entry.get("why") else str(entry["decision"]),
    )


def _dropped_line(entry: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    """The sentence on a dropped row: where, against which best row, on what evidence."""
    best = next(e for e in entries if e["rung"] == entry["rung"] and e["decision"] == BEST)
    evidence = (
        f"p adjusted {_p(entry['p_adjusted'])}"
        if entry["p_adjusted"] is not None
        else "one draw per row: plain successive halving"
    )
    return (
        f"- {escape_markdown(entry['row'])}: dropped at rung {entry['rung']} (epoch {entry['epoch']}), "
        f"{_difference(entry)} points against {best['row']} ({evidence}); its trials are "
        "listed in the tables above and left out of Rows and Effects."
    )
