"""The report's Markdown cells and tables (`analysis.report`, `analysis.comparison`)."""

from __future__ import annotations

DASH = "–"  # a cell with no value


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.73912`` -> ``73.91``)."""
    return DASH if value is None else f"{100.0 * value:.2f}"


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A Markdown table's lines; a ``|`` inside a cell is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines
