"""The report's Markdown cells and tables (`analysis.report`, `analysis.comparison`).

User text (a study's name, trial and row names, paths) is escaped here so that
the report shows it as written: no HTML, no formatting (`escape_markdown`, from
`tracking.text`, which MLflow's notes share).
"""

from __future__ import annotations

import re

from tracking.text import escape_markdown

__all__ = ["DASH", "code_span", "escape_markdown", "markdown_table", "percent"]

DASH = "–"  # a cell with no value
_CELL_ESCAPES = {"|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.73912`` -> ``73.91``)."""
    return DASH if value is None else f"{100.0 * value:.2f}"


def code_span(text: object) -> str:
    """``text`` (a path, say) as inline code: a fence longer than any run of backticks in it,
    so that none closes the span early (inside one, HTML and Markdown are shown as text)."""
    text = " ".join(str(text).splitlines())  # a code span is one line of the paragraph
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def _cell(text: str) -> str:
    """A cell's text on one line, with ``|`` (which would end the cell) and HTML's ``&<>``
    escaped."""
    text = " ".join(text.splitlines())
    return re.sub(r"[|&<>]", lambda match: _CELL_ESCAPES[match.group()], text)


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A Markdown table's lines; ``|``, ``&``, ``<`` and ``>`` inside a cell are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines
