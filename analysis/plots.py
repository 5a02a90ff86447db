"""PNG figures of a study report: validation curves and per-tag test ROC-AUC.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather
than through pyplot, so no global figure state or interactive backend is
involved and the functions are safe to call from any process (a CLI, a
test, a Ray worker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mer_models.training.metrics import DEFAULT_SELECTION
from study.records import finite_number

TAG_PREFIX = "mood/theme---"  # MTG-Jamendo mood/theme tag names; dropped on axis labels


@dataclass(frozen=True)
class Curve:
    """One trial's validation score (the study's selection metric) per epoch, and how it ended."""

    label: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    end_state: str | None  # finished, early_stopped, asha_stopped, error; None while running


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


ASHA_LABEL = "stopped by ASHA (last epoch)"


def plot_validation_curves(
    curves: Sequence[Curve], path: str | Path, title: str = "", metric: str = "macro ROC-AUC"
) -> None:
    """Save `validation_curves_figure` as a PNG."""
    _save(validation_curves_figure(curves, title, metric), path)


def validation_curves_figure(
    curves: Sequence[Curve], title: str = "", metric: str = "macro ROC-AUC"
) -> Figure:
    """A validation score (`metric` names it) per epoch, one line a trial.

    The last point of an ASHA-stopped trial is marked with a cross (its
    line's colour, label `ASHA_LABEL` in the legend) so that a line ending
    early reads as stopped by the scheduler, not as converged.
    """
    figure = Figure(figsize=(8, 5))
    axes = figure.add_subplot()
    stopped = False
    for curve in curves:
        if not curve.epochs:
            continue
        (line,) = axes.plot(curve.epochs, curve.values, marker=".", label=curve.label)
        if curve.end_state == "asha_stopped":
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
        axes.legend(handles, labels, fontsize="small", ncol=1 + len(handles) // 12)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(title or f"Validation {metric} per epoch")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_per_tag_roc_auc(
    tags: Sequence[str], series: Mapping[str, np.ndarray], path: str | Path, title: str = ""
) -> None:
    """Grouped bars of per-tag test ROC-AUC, one group a tag and one bar a system."""
    if not series:
        raise ValueError("no systems to plot per-tag ROC-AUC for")
    for name, values in series.items():
        if np.shape(values) != (len(tags),):
            raise ValueError(
                f"per-tag ROC-AUC of {name}: {np.shape(values)} values for {len(tags)} tags"
            )
    positions = np.arange(len(tags))
    width = 0.8 / len(series)
    figure = Figure(figsize=(max(8.0, 0.3 * len(tags)), 5))
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
    axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
