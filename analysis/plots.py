"""PNG figures of a study report: validation curves (per trial, and per row as a mean with
its band over seeds), per-tag test ROC-AUC, and a forest plot of rows and effects.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather
than through pyplot, so no global figure state or interactive backend is
involved and the functions are safe to call from any process (a CLI, a
test, a Ray worker).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mer_models.training.metrics import DEFAULT_SELECTION
from study_folder.records import DROPPED_STATE, finite_number

TAG_PREFIX = "mood/theme---"  # MTG-Jamendo mood/theme tag names; dropped on axis labels


@dataclass(frozen=True)
class Curve:
    """One trial's validation score (the study's selection metric) per epoch, and how it ended."""

    label: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    end_state: str | None  # a trial's end state (FINISHED_STATES or error); None: running


def curve_from_history(
    label: str, history: Sequence[Mapping], end_state: str | None, key: str = DEFAULT_SELECTION
) -> Curve:
    """The (epoch, `key`) points of a history.json, skipping epochs without a finite value."""
    points = []
    for number, entry in enumerate(history, start=1):
        value = finite_number(entry.get(key))
        if value is None:
            continue
        points.append((int(entry.get("epoch", number)), value))
    return Curve(label, tuple(p[0] for p in points), tuple(p[1] for p in points), end_state)


def _save(figure: Figure, path: str | Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100)


LEGEND_COLUMNS = 3  # at most this many entries side by side in a legend under the axes
_CHARACTER_INCHES = 0.065  # a character of a "small" legend label, on average
_HANDLE_INCHES = 0.7  # a legend entry's line, marker and gaps


def _legend_columns(labels: Sequence[str], width: float) -> int:
    """Entries side by side that fit a figure `width` inches wide: long labels (a wide
    study's trial names) take one column each, else the legend is wider than the figure
    and the constrained layout gives up, dropping the legend out of the picture."""
    widest = _HANDLE_INCHES + _CHARACTER_INCHES * max((len(label) for label in labels), default=0)
    return max(1, min(LEGEND_COLUMNS, int((width - 0.4) // widest)))


def _line_styles():
    """Colour and dash pairs, none repeated before 60 lines: matplotlib's default cycle
    repeats its ten colours, so a study of 30 trials drew three lines in each."""
    colors = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    while True:
        for style in ("-", "--", ":"):
            for color in colors:
                yield color, style


def _figure_with_legend(width: float, height: float, labels: Sequence[str]) -> Figure:
    """A figure `width` inches wide: `height` for the axes, and room under them for a legend
    of `labels` (about 0.24 inches a line)."""
    lines = math.ceil(len(labels) / _legend_columns(labels, width))
    return Figure(figsize=(width, height + 0.3 + 0.24 * lines), layout="constrained")


def _legend_below(axes, handles, labels) -> None:
    """A legend under the axes, never over the data: the figure's constrained layout keeps
    room for it ("outside lower center") however tall it is."""
    figure = axes.get_figure()
    figure.legend(
        handles,
        labels,
        fontsize="small",
        loc="outside lower center",
        ncol=min(_legend_columns(labels, figure.get_figwidth()), max(len(labels), 1)),
        frameon=False,
    )


ASHA_LABEL = "stopped by its scheduler (last epoch)"
STOPPED_STATES = ("asha_stopped", DROPPED_STATE)  # ended by the scheduler, not by themselves


def plot_validation_curves(
    curves: Sequence[Curve], path: str | Path, title: str = "", metric: str = "macro ROC-AUC"
) -> None:
    """Save `validation_curves_figure` as a PNG."""
    _save(validation_curves_figure(curves, title, metric), path)


def validation_curves_figure(
    curves: Sequence[Curve], title: str = "", metric: str = "macro ROC-AUC"
) -> Figure:
    """A validation score (`metric` names it) per epoch, one line a trial.

    The last point of a trial its scheduler stopped (ASHA, or a race that
    dropped its row) is marked with a cross (its line's colour, label
    `ASHA_LABEL` in the legend) so that a line ending early reads as stopped
    by the scheduler, not as converged.
    """
    shown = [curve.label for curve in curves if curve.epochs] + [ASHA_LABEL]
    figure = _figure_with_legend(9, 5, shown)
    axes = figure.add_subplot()
    stopped = False
    styles = iter(_line_styles())
    for curve in curves:
        if not curve.epochs:
            continue
        color, style = next(styles)
        (line,) = axes.plot(
            curve.epochs,
            curve.values,
            marker=".",
            label=curve.label,
            color=color,
            linestyle=style,
        )
        if curve.end_state in STOPPED_STATES:
            stopped = True
            axes.plot(
                curve.epochs[-1],
                curve.values[-1],
                marker="X",
                markersize=11,
                color=line.get_color(),
                markeredgecolor="black",
                linestyle="none",
                gid="asha-stop",
            )
    handles, labels = axes.get_legend_handles_labels()
    if stopped:
        handles.append(
            Line2D([], [], marker="X", color="grey", markeredgecolor="black", linestyle="none")
        )
        labels.append(ASHA_LABEL)
    if handles:
        _legend_below(axes, handles, labels)
    _epoch_axes(axes, metric, title or f"Validation {metric} per epoch")
    return figure


def _epoch_axes(axes, metric: str, title: str) -> None:
    """Epochs (whole numbers) along x, the validation `metric` up y, the title, a light grid."""
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(title)
    axes.grid(alpha=0.3)


def plot_per_tag_roc_auc(
    tags: Sequence[str], series: Mapping[str, np.ndarray], path: str | Path, title: str = ""
) -> None:
    """Save `per_tag_figure` as a PNG."""
    _save(per_tag_figure(tags, series, title), path)


def per_tag_figure(
    tags: Sequence[str], series: Mapping[str, np.ndarray], title: str = ""
) -> Figure:
    """Grouped bars of per-tag test ROC-AUC, one group a tag and one bar a system."""
    if not series:
        raise ValueError("no systems to plot per-tag ROC-AUC for")
    for name, values in series.items():
        if np.shape(values) != (len(tags),):
            raise ValueError(
                f"per-tag ROC-AUC of {name}: {np.shape(values)} values for {len(tags)} tags"
            )
    positions = np.arange(len(tags))
    width = 0.8 / len(series)  # of a bar, in tag positions
    figure = _figure_with_legend(max(8.0, 0.3 * len(tags)), 5.5, list(series))
    axes = figure.add_subplot()
    for i, (name, values) in enumerate(series.items()):
        axes.bar(positions + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xticks(positions)
    axes.set_xticklabels([t.removeprefix(TAG_PREFIX) for t in tags], rotation=90, fontsize=8)
    axes.set_xlim(-0.6, len(tags) - 0.4)
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("test ROC-AUC")
    axes.set_title(title or "Per-tag test ROC-AUC")
    _legend_below(axes, *axes.get_legend_handles_labels())
    axes.grid(axis="y", alpha=0.3)
    return figure


# Rows over repeated seeds ------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """A row's validation score per epoch over its trials: mean, min and max, and how many
    trials reached the epoch (fewer where ASHA or early stopping ended some)."""

    label: str
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    trials: tuple[int, ...]


def band_from_curves(label: str, curves: Sequence[Curve]) -> Band:
    """Per epoch, the mean and range of the curves that have a value there."""
    by_epoch: dict[int, list[float]] = {}
    for curve in curves:
        for epoch, value in zip(curve.epochs, curve.values, strict=True):
            by_epoch.setdefault(epoch, []).append(value)
    epochs = tuple(sorted(by_epoch))
    values = [np.asarray(by_epoch[epoch]) for epoch in epochs]
    return Band(
        label,
        epochs,
        tuple(float(v.mean()) for v in values),
        tuple(float(v.min()) for v in values),
        tuple(float(v.max()) for v in values),
        tuple(int(v.size) for v in values),
    )


def plot_row_curves(
    bands: Sequence[Band], path: str | Path, title: str = "", metric: str = "macro ROC-AUC"
) -> None:
    """Save `row_curves_figure` as a PNG."""
    _save(row_curves_figure(bands, title, metric), path)


def row_curves_figure(
    bands: Sequence[Band], title: str = "", metric: str = "macro ROC-AUC"
) -> Figure:
    """One line a row (its trials' mean per epoch) in a band from their min to their max."""
    figure = _figure_with_legend(9, 5, [band.label for band in bands if band.epochs])
    axes = figure.add_subplot()
    for band in bands:
        if not band.epochs:
            continue
        (line,) = axes.plot(band.epochs, band.mean, marker=".", label=band.label)
        axes.fill_between(band.epochs, band.low, band.high, color=line.get_color(), alpha=0.2)
    _legend_below(axes, *axes.get_legend_handles_labels())
    _epoch_axes(
        axes, metric, title or f"Validation {metric} per epoch: mean over seeds, band min to max"
    )
    return figure


@dataclass(frozen=True)
class ForestItem:
    """One estimate and its interval (None: no interval, n = 1) on a forest plot's line."""

    label: str
    estimate: float
    low: float | None
    high: float | None
    marked: bool = False  # drawn filled (a significant effect); others hollow


@dataclass(frozen=True)
class ForestPanel:
    title: str
    xlabel: str
    items: tuple[ForestItem, ...]
    reference: float | None = None  # a vertical line: 0 for differences


def plot_forest(panels: Sequence[ForestPanel], path: str | Path, title: str = "") -> None:
    """Save `forest_figure` as a PNG."""
    _save(forest_figure(panels, title), path)


def forest_figure(panels: Sequence[ForestPanel], title: str = "") -> Figure:
    """Panels of estimates with their intervals, one line each, top to bottom as given."""
    panels = [panel for panel in panels if panel.items]
    if not panels:
        raise ValueError("a forest plot needs at least one estimate")
    heights = [1.0 + 0.32 * len(panel.items) for panel in panels]
    figure = Figure(figsize=(10, sum(heights) + 0.6), layout="constrained")
    grid = figure.add_gridspec(len(panels), 1, height_ratios=heights)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(grid[index])
        positions = np.arange(len(panel.items))[::-1]
        for y, item in zip(positions, panel.items, strict=True):
            if item.low is not None and item.high is not None:
                axes.hlines(y, item.low, item.high, color="C0", linewidth=2)
            axes.plot(
                item.estimate,
                y,
                marker="o",
                markerfacecolor="C0" if item.marked else "white",
                markeredgecolor="C0",
                linestyle="none",
            )
        if panel.reference is not None:
            axes.axvline(panel.reference, color="grey", linewidth=0.8, linestyle="--")
        axes.set_yticks(positions)
        axes.set_yticklabels([item.label for item in panel.items], fontsize="small")
        axes.set_ylim(-0.7, len(panel.items) - 0.3)
        axes.set_xlabel(panel.xlabel)
        axes.set_title(panel.title, fontsize="medium")
        axes.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure
