"""Which hyperparameters mattered: each searched parameter's importance, against a control.

The recorded trials of a study that searched parameters (random, Optuna, or
a grid with several values) become an in-memory Optuna study: each trial's
searched values, with the distributions its space declared, and its best
validation score. Optuna's evaluators (fANOVA by default: Hutter et al.,
"An Efficient Approach for Assessing Hyperparameter Importance", ICML 2014)
rank the parameters; we add what a ranking alone does not say, whether a
parameter's importance is more than a forest fitted to noise would give it:

- a 90% interval from refitting on bootstrap resamples of the trials;
- a control: the same refits with the metric shuffled across trials;
- a parameter *matters* only where its interval's low end lies above the
  control's 95th percentile.

Under ASHA or a race, trials ran for unequal budgets, and a stopped trial's
score says as much about its budget as about its parameters. Importance is
then computed twice: on the score every trial had at the first rung (equal
budgets), and on the final scores of the trials that ran to the end.

Writes `STUDY/importance.json`, draws slice and parallel-coordinates plots,
and gives the report its section "Which hyperparameters mattered".
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    MeanDecreaseImpurityImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)

from analysis.markdown import escape_markdown, markdown_table
from mer_models.files import atomic_write_text
from mer_models.training.metrics import Metric, selection_metric
from study_folder.records import (
    DRAW_FIELDS,
    DROPPED_STATE,
    FINISHED_STATES,
    STUDY_FILE,
    Study,
    Trial,
    finite_number,
    load_study,
)
from study_folder.search_space import RUNG_SCHEDULERS, SearchSpace, distribution_of, space_from_text
from tracking.study_run import log_to_study_run

log = logging.getLogger(__name__)

IMPORTANCE_FILE = "importance.json"  # in the study folder
IMPORTANCE_FOLDER = "importance"  # the plots of `python -m analysis importance`, in the study
MLFLOW_ARTIFACT_PATH = "importance"
FIRST_RUNG, FINAL = "first_rung", "final"
# The names other tools read in importance.json's entries: keep them as they are.
ENTRY_KEYS = ("parameter", "importance", "low", "high", "control_p95", "matters", "budget")
MIN_TRIALS = 8  # below this a forest over the trials says nothing worth a table
INTERVAL = 0.90  # of the bootstrap refits
CONTROL_PERCENTILE = 95.0  # the control's level a parameter's interval must clear
BEST_SHARE = 0.25  # "the best 25% of trials" in the best-region sentences
DEFAULT_RESAMPLES = 50
DEFAULT_CONTROLS = 20  # shuffles of the metric
# Optuna's default is 64 trees: a refit then takes about 0.25 s on 48 trials and 8
# parameters (2-core machine), and 1 + 50 + 20 refits per budget, two budgets under ASHA,
# would take half a minute. 16 trees take a quarter of that; the bootstrap spread, which
# includes the forest's own seed, shows what the smaller forest costs in precision.
FOREST_TREES = 16
# A trial the scheduler stopped early did not run to the end: left out of the final budget.
SCHEDULER_STOPS = ("asha_stopped", DROPPED_STATE)
SCHEDULER_NAMES = {"asha": "ASHA", "race": "race"}  # in the report's sentences


# Evaluators ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluator:
    """One of Optuna's importance evaluators, and what its numbers are (for the report)."""

    name: str
    build: Callable[[int], BaseImportanceEvaluator]  # seed -> evaluator
    describes: str


EVALUATORS = {
    evaluator.name: evaluator
    for evaluator in (
        Evaluator(
            "fanova",
            lambda seed: FanovaImportanceEvaluator(n_trees=FOREST_TREES, seed=seed),
            "the share of the variance of a random forest fitted to the trials that each "
            f"parameter explains alone (fANOVA, {FOREST_TREES} trees)",
        ),
        Evaluator(
            "ped_anova",
            lambda seed: PedAnovaImportanceEvaluator(),  # deterministic: no seed
            "how differently each parameter is distributed among the best 10% of trials "
            "than among all (PED-ANOVA's Pearson divergence)",
        ),
        Evaluator(
            "mean_decrease_impurity",
            lambda seed: MeanDecreaseImpurityImportanceEvaluator(n_trees=FOREST_TREES, seed=seed),
            "each parameter's mean decrease in impurity in a random forest fitted to the trials "
            f"({FOREST_TREES} trees; scikit-learn's shares, which sum to 1 in every fit)",
        ),
    )
}


def evaluator_named(name: str) -> Evaluator:
    """The evaluator called `name`; an unknown name is refused, naming the choices."""
    if name not in EVALUATORS:
        raise ValueError(
            f"unknown importance evaluator {name!r}; expected one of {', '.join(EVALUATORS)}"
        )
    return EVALUATORS[name]


# What the study recorded --------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One usable trial of a budget: its searched values (as Optuna sees them) and score."""

    trial: str
    params: dict[str, Any]
    value: float


@dataclass(frozen=True)
class Entry:
    """One parameter's importance at one budget; `to_dict` gives importance.json's entry."""

    parameter: str
    budget: str  # FIRST_RUNG or FINAL
    importance: float  # on every usable trial: Optuna's own number
    low: float  # the bootstrap refits' 5th and 95th percentiles
    high: float
    control_p95: float  # the shuffled-metric refits' 95th percentile
    matters: bool  # low > control_p95

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ENTRY_KEYS}


@dataclass(frozen=True)
class BudgetImportance:
    """The importances at one budget, or why there are none."""

    budget: str
    epoch: int | None  # the first rung's epoch; None for the final budget
    points: tuple[Point, ...]  # the usable trials, in the study's order (by id)
    entries: tuple[Entry, ...] = ()  # most important first
    skipped: dict[str, str] = field(default_factory=dict)  # parameter -> why it has none
    reason: str | None = None  # why no parameter has an importance at this budget

    @property
    def ranked(self) -> tuple[Point, ...]:
        """The usable trials, best first (ties by id)."""
        return tuple(sorted(self.points, key=lambda p: (-p.value, p.trial)))


@dataclass(frozen=True)
class ImportanceResult:
    """What `compute_importance` found, and how: what importance.json, the plots and the
    report's section are made from."""

    study: str
    metric: Metric
    evaluator: Evaluator
    resamples: int
    controls: int
    seed: int
    scheduler: str
    trials: int  # every trial the study recorded
    distributions: dict[str, BaseDistribution]  # searched parameter -> what its space allowed
    budgets: tuple[BudgetImportance, ...]  # first rung (rung schedulers only), then final

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(entry for budget in self.budgets for entry in budget.entries)


def _categorical(value: Any) -> Any:
    """A config value as an Optuna category: None, bool, int, float and str as they are,
    anything else (a list) as its JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def _declared(spec: Any, observed: Sequence[Any]) -> BaseDistribution:
    """The Optuna distribution of a parameter whose space entry is `spec`, widened to hold
    every `observed` value (a configs row may set one outside a range)."""
    distribution = distribution_of(spec)
    if distribution is None or not distribution.bounds:  # choice, grid; or set by configs
        values = spec[distribution.kind] if distribution is not None else []
        choices = dict.fromkeys(_categorical(v) for v in [*values, *observed])
        return CategoricalDistribution(list(choices))
    low, high = spec[distribution.kind]
    low, high = min([low, *observed]), max([high, *observed])
    if distribution.integer:
        return IntDistribution(int(low), int(high))
    return FloatDistribution(float(low), float(high), log=distribution.positive)


def searched_distributions(
    space: SearchSpace | None, searched: Sequence[str], trials: Sequence[Trial]
) -> dict[str, BaseDistribution]:
    """Each searched parameter's distribution: its space's (`choice`, `grid`: categorical;
    `uniform`, `loguniform`: float; `randint`: int), or for one only `configs` rows vary
    (or a study.json without its space), categorical over the values its trials took."""
    found = {}
    for name in searched:
        observed = [trial.config[name] for trial in trials if name in trial.config]
        spec = space.parameters.get(name) if space is not None else None
        found[name] = _declared(spec, observed)
    return found


def _recorded_space(study_dir: Path) -> SearchSpace | None:
    """The space study.json records; None for a study.json without its text (older, or
    written by hand): its parameters are then taken as categories of the values seen."""
    try:
        values = json.loads((Path(study_dir) / STUDY_FILE).read_text(encoding="utf-8"))
        return space_from_text(values["space_yaml"], Path(values["space"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _value(distribution: BaseDistribution, value: Any) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return _categorical(value)
    return int(value) if isinstance(distribution, IntDistribution) else float(value)


def _first_rung_score(trial: Trial, metric: Metric, epoch: int) -> float | None:
    """The trial's best per-epoch validation score up to `epoch`; None if it never got there."""
    scores, reached = [], 0
    for number, entry in enumerate(trial.history, start=1):
        at = int(entry.get("epoch", number))
        reached = max(reached, at)
        score = finite_number(entry.get(metric.epoch))
        if at <= epoch and score is not None:
            scores.append(score)
    return max(scores) if scores and reached >= epoch else None


def budget_points(
    study: Study,
    metric: Metric,
    distributions: dict[str, BaseDistribution],
    budget: str,
    epoch: int | None = None,
) -> tuple[Point, ...]:
    """The trials usable at `budget`, in the study's order (by id): ended with a best epoch
    (FINISHED_STATES) and a finite score. FIRST_RUNG: every such trial that reached `epoch`,
    scored by its best validation score up to it; FINAL: the trials that ran to the end
    (not stopped by the scheduler), scored at their best epoch (metrics.json)."""
    points = []
    for trial in study.trials:
        if trial.end_state not in FINISHED_STATES:
            continue
        if budget == FIRST_RUNG:
            score = _first_rung_score(trial, metric, epoch)
        elif trial.end_state in SCHEDULER_STOPS:
            continue
        else:
            score = finite_number(trial.metrics.get(metric.validation))
        if score is None or any(name not in trial.config for name in distributions):
            continue
        params = {name: _value(d, trial.config[name]) for name, d in distributions.items()}
        points.append(Point(trial.key, params, score))
    return tuple(points)


# Computing ----------------------------------------------------------------------------------


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna announces every study it creates (INFO) and warns that `normalize=False` is
    experimental: silenced while we build a study per refit, and restored after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def optuna_study(
    params: Sequence[dict[str, Any]],
    values: Sequence[float],
    distributions: dict[str, BaseDistribution],
) -> optuna.Study:
    """An in-memory Optuna study of completed trials (maximised, as our metrics are)."""
    study = optuna.create_study(direction="maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={name: p[name] for name in distributions},
                distributions=distributions,
                value=v,
            )
            for p, v in zip(params, values, strict=True)
        ]
    )
    return study


def param_importances(
    params: Sequence[dict[str, Any]],
    values: Sequence[float],
    distributions: dict[str, BaseDistribution],
    evaluator: Evaluator,
    seed: int,
) -> dict[str, float]:
    """Optuna's `get_param_importances` on these trials, not normalised.

    Normalising divides by the sum over the parameters, so the shares always
    add up to 1: a study where nothing matters (the shuffled control) still
    hands out 1/k per parameter, and a parameter's share falls as others are
    searched beside it. Unnormalised, fANOVA's number is the fraction of the
    forest's variance the parameter explains alone: an absolute scale on
    which the control is a noise floor, whatever the other parameters do.
    """
    study = optuna_study(params, values, distributions)
    # Sorted: Optuna 5.1's mean-decrease-impurity evaluator fits its columns in name order
    # but labels the results in the order given, swapping the names of unsorted parameters.
    importances = optuna.importance.get_param_importances(
        study, evaluator=evaluator.build(seed), params=sorted(distributions), normalize=False
    )
    return {name: float(value) for name, value in importances.items()}


def _refits(
    points: Sequence[Point],
    distributions: dict[str, BaseDistribution],
    evaluator: Evaluator,
    count: int,
    rng: np.random.Generator,
    shuffle: bool,
) -> dict[str, np.ndarray]:
    """Importances refitted on `count` bootstrap resamples of the trials; with `shuffle`,
    the control: the scores permuted across the trials first, then resampled the same way,
    so that the interval and the control share the duplicates a resample holds (a forest
    fits a duplicated trial more closely, which raises every importance a little). A
    resample whose scores are all equal has no variance to share out and is left out."""
    params = [point.params for point in points]
    values = np.array([point.value for point in points])
    found: dict[str, list[float]] = {name: [] for name in distributions}
    for _ in range(count):
        scores = rng.permutation(values) if shuffle else values
        rows = rng.integers(0, len(points), len(points))
        seed = int(rng.integers(0, 2**31 - 1))
        if np.ptp(scores[rows]) == 0:
            continue
        refit = param_importances(
            [params[i] for i in rows], scores[rows], distributions, evaluator, seed
        )
        for name, value in refit.items():
            found[name].append(value)
    return {name: np.array(values) for name, values in found.items()}


def _single_values(
    points: Sequence[Point], distributions: dict[str, BaseDistribution]
) -> dict[str, str]:
    skipped = {}
    for name in distributions:
        values = {json.dumps(point.params[name]) for point in points}
        if len(values) == 1:
            skipped[name] = (
                f"took a single value ({next(iter(values))}) in the {len(points)} trials: "
                "nothing to compare"
            )
    return skipped


def budget_importance(
    budget: str,
    epoch: int | None,
    points: tuple[Point, ...],
    distributions: dict[str, BaseDistribution],
    evaluator: Evaluator,
    resamples: int,
    controls: int,
    seed: int,
) -> BudgetImportance:
    """The importances at one budget with their intervals and control, or the reason why
    there are none (too few trials, every trial scoring the same, nothing varied)."""
    where = f"at the first rung (epoch {epoch})" if budget == FIRST_RUNG else "that ran to the end"
    if len(points) < MIN_TRIALS:
        reason = f"{len(points)} usable trial(s) {where}; importance needs at least {MIN_TRIALS}"
        return BudgetImportance(budget, epoch, points, reason=reason)
    if len({point.value for point in points}) == 1:
        reason = f"every one of the {len(points)} trials {where} scored the same"
        return BudgetImportance(budget, epoch, points, reason=reason)
    skipped = _single_values(points, distributions)
    varied = {name: d for name, d in distributions.items() if name not in skipped}
    if not varied:
        reason = f"no searched parameter took two values among the {len(points)} trials {where}"
        return BudgetImportance(budget, epoch, points, skipped=skipped, reason=reason)
    point = param_importances(
        [p.params for p in points], [p.value for p in points], varied, evaluator, seed
    )
    rng = np.random.default_rng(seed)
    bootstrap = _refits(points, varied, evaluator, resamples, rng, shuffle=False)
    control = _refits(points, varied, evaluator, controls, rng, shuffle=True)
    tail = 100 * (1 - INTERVAL) / 2
    entries = []
    for name in sorted(varied, key=lambda n: (-point[n], n)):
        low, high = (
            np.percentile(bootstrap[name], [tail, 100 - tail]) if bootstrap[name].size else (0, 0)
        )
        floor = np.percentile(control[name], CONTROL_PERCENTILE) if control[name].size else math.inf
        entries.append(
            Entry(
                name, budget, point[name], float(low), float(high), float(floor), bool(low > floor)
            )
        )
    return BudgetImportance(budget, epoch, points, tuple(entries), skipped)


def compute_importance(
    study_dir: str | Path,
    metric: str | None = None,
    evaluator: str = "fanova",
    resamples: int = DEFAULT_RESAMPLES,
    controls: int = DEFAULT_CONTROLS,
    seed: int = 0,
) -> ImportanceResult | None:
    """Each searched parameter's importance at each budget; None if the study searched none.

    `metric`: a per-epoch validation score's name (`val_pr_auc`); default the study's
    selection metric. Its final score is a trial's value at its best epoch, which the
    study's own selection metric chose.
    """
    chosen = evaluator_named(evaluator)
    requested = selection_metric(metric, "metric") if metric is not None else None
    if resamples < 1 or controls < 1:
        raise ValueError(f"resamples and controls must be >= 1, got {resamples} and {controls}")
    study = load_study(study_dir, require_results=False)
    searched = [name for name in study.searched if name not in DRAW_FIELDS]  # not seeds
    if not searched:
        return None
    space = _recorded_space(study.dir)
    scored = requested or study.selection
    distributions = searched_distributions(space, searched, study.trials)
    budgets = [(FINAL, None)]
    if study.scheduler in RUNG_SCHEDULERS and space is not None:
        budgets.insert(0, (FIRST_RUNG, space.scheduler.grace_period))
    with _quiet_optuna():
        results = tuple(
            budget_importance(
                budget,
                epoch,
                budget_points(study, scored, distributions, budget, epoch),
                distributions,
                chosen,
                resamples,
                controls,
                seed,
            )
            for budget, epoch in budgets
        )
    return ImportanceResult(
        study.name,
        scored,
        chosen,
        resamples,
        controls,
        seed,
        study.scheduler or "fifo",
        len(study.trials),
        distributions,
        results,
    )


# Records: importance.json and MLflow --------------------------------------------------------


def importance_record(result: ImportanceResult) -> dict[str, Any]:
    """importance.json's object: how it was computed, each budget's trials (or why it has no
    importances), and the entries (ENTRY_KEYS, one per parameter and budget)."""
    return {
        "study": result.study,
        "metric": result.metric.epoch,
        "evaluator": result.evaluator.name,
        "normalized": False,
        "resamples": result.resamples,
        "controls": result.controls,
        "seed": result.seed,
        "interval": INTERVAL,
        "control_percentile": CONTROL_PERCENTILE,
        "scheduler": result.scheduler,
        "trials": result.trials,
        "budgets": [
            {
                "budget": budget.budget,
                "epoch": budget.epoch,
                "trials": len(budget.points),
                "reason": budget.reason,
                "skipped": budget.skipped,
            }
            for budget in result.budgets
        ],
        "entries": [entry.to_dict() for entry in result.entries],
    }


def write_importance(result: ImportanceResult, study_dir: str | Path) -> Path:
    """Write `STUDY/importance.json` whole; returns its path."""
    path = Path(study_dir) / IMPORTANCE_FILE
    atomic_write_text(path, json.dumps(importance_record(result), indent=2) + "\n")
    return path


def mlflow_metrics(result: ImportanceResult | None) -> dict[str, float]:
    """`importance/<param>` (final budget) and `importance_first_rung/<param>`."""
    if result is None:
        return {}
    prefix = {FINAL: "importance", FIRST_RUNG: "importance_first_rung"}
    return {f"{prefix[e.budget]}/{e.parameter}": e.importance for e in result.entries}


def log_importance(study_dir: str | Path, result: ImportanceResult, files: Sequence[Path]) -> bool:
    """Log `files` and `mlflow_metrics` to the study's parent MLflow run; False (a warning
    logged) when there is no run or the store fails: the files on disk are the results."""
    study = load_study(study_dir, require_results=False)
    return log_to_study_run(
        study, files, mlflow_metrics(result), MLFLOW_ARTIFACT_PATH, "importance"
    )


# Plots --------------------------------------------------------------------------------------


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)  # the Agg canvas, without pyplot's global figures (analysis.plots)
    figure.savefig(path, format="png", dpi=100)
    return path


def _budget_label(budget: BudgetImportance) -> str:
    return f"first rung (epoch {budget.epoch})" if budget.budget == FIRST_RUNG else "final"


def _entry_label(entry: Entry) -> str:
    verdict = "matters" if entry.matters else "within control"
    return f"{entry.importance:.3f} [{entry.low:.3f}, {entry.high:.3f}], {verdict}"


def slice_figure(result: ImportanceResult, name: str) -> Figure:
    """One parameter's values against the score, a series per budget (log axis for a
    log-uniform parameter; categories side by side, trials spread within each)."""
    distribution = result.distributions[name]
    figure = Figure(figsize=(6.5, 4.2), layout="constrained")
    axes = figure.add_subplot()
    categories = (
        [_text(choice) for choice in distribution.choices]
        if isinstance(distribution, CategoricalDistribution)
        else None
    )
    titles = []
    for index, budget in enumerate(result.budgets):
        if not budget.points:
            continue
        values = [point.params[name] for point in budget.points]
        scores = [point.value for point in budget.points]
        if categories is not None:
            values = _spread([categories.index(_text(v)) for v in values])
        axes.scatter(
            values, scores, s=22, alpha=0.75, color=f"C{index}", label=_budget_label(budget)
        )
        entry = next((e for e in budget.entries if e.parameter == name), None)
        if entry is not None:
            titles.append(f"{_budget_label(budget)}: {_entry_label(entry)}")
    if categories is not None:
        axes.set_xticks(range(len(categories)))
        axes.set_xticklabels(categories)
        axes.set_xlim(-0.6, len(categories) - 0.4)
    elif isinstance(distribution, FloatDistribution) and distribution.log:
        axes.set_xscale("log")
    axes.set_xlabel(name + (" (log scale)" if getattr(distribution, "log", False) else ""))
    axes.set_ylabel(f"validation {result.metric.title}")
    axes.set_title(
        "\n".join([f"{name}: importance ({result.evaluator.name})", *titles]), fontsize="small"
    )
    if len([b for b in result.budgets if b.points]) > 1:
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _spread(positions: Sequence[int], width: float = 0.3) -> list[float]:
    """Category positions with the trials of each spread evenly across `width` (no
    randomness: the same study draws the same picture)."""
    counts = Counter(positions)
    seen: Counter = Counter()
    spread = []
    for position in positions:
        n, k = counts[position], seen[position]
        seen[position] += 1
        spread.append(position + (width * (k / (n - 1) - 0.5) if n > 1 else 0.0))
    return spread


def _unit(distribution: BaseDistribution, value: Any) -> float:
    """A value's place on its parameter's axis, 0 (low, first choice) to 1."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices.index(value) / max(len(distribution.choices) - 1, 1)
    low, high = distribution.low, distribution.high
    if getattr(distribution, "log", False):
        value, low, high = math.log(value), math.log(low), math.log(high)
    return (value - low) / (high - low) if high > low else 0.5


def _axis_labels(distribution: BaseDistribution) -> list[tuple[float, str]]:
    """Where a parameter's axis is labelled: every choice, or the range's two ends."""
    if isinstance(distribution, CategoricalDistribution):
        return [(_unit(distribution, c), _text(c)) for c in distribution.choices]
    return [(0.0, f"{distribution.low:.3g}"), (1.0, f"{distribution.high:.3g}")]


def parallel_figure(result: ImportanceResult, budget: BudgetImportance) -> Figure:
    """The trials of `budget` as lines across the parameters' axes (each from its lowest
    value, or first choice, to its highest), coloured by score, the best drawn on top."""
    names = list(result.distributions)
    figure = Figure(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5), layout="constrained")
    axes = figure.add_subplot()
    scores = [point.value for point in budget.points]
    norm = Normalize(min(scores), max(scores))
    cmap = colormaps["viridis"]
    for point in sorted(budget.points, key=lambda p: p.value):
        ys = [_unit(result.distributions[n], point.params[n]) for n in names]
        axes.plot(range(len(names)), ys, color=cmap(norm(point.value)), alpha=0.8, linewidth=1.2)
    for x, name in enumerate(names):
        axes.axvline(x, color="grey", linewidth=0.8)
        for y, label in _axis_labels(result.distributions[name]):
            axes.text(
                x + 0.03,
                y,
                label,
                va="center",
                fontsize="x-small",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
            )
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(names)
    axes.set_yticks([])
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlim(-0.3, len(names) - 0.7)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    mappable = axes.scatter([], [], c=[], cmap=cmap, norm=norm)
    figure.colorbar(mappable, ax=axes, label=f"validation {result.metric.title}")
    axes.set_title(f"Trials {_budget_label(budget)}: {len(budget.points)} trials", fontsize="small")
    return figure


def slice_file(name: str) -> str:
    return f"importance_slice_{name}.png"


def parallel_file(budget: str) -> str:
    return f"importance_parallel_{budget}.png"


def is_importance_plot(name: str) -> bool:
    """Whether a file name is one of `plot_importance`'s (a report folder holds them)."""
    return name.startswith(("importance_slice_", "importance_parallel_")) and name.endswith(".png")


def plot_importance(result: ImportanceResult, folder: str | Path) -> list[Path]:
    """Save a slice plot per searched parameter and a parallel-coordinates plot per budget
    (trials that have a score at it) into `folder`; returns the files written. None when
    no budget had the trials to compute importance at: a plot of too few trials says less
    than its absence."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not result.entries:
        return []
    written = [
        _save(slice_figure(result, name), folder / slice_file(name))
        for name in result.distributions
    ]
    for budget in result.budgets:
        if budget.entries:
            written.append(
                _save(parallel_figure(result, budget), folder / parallel_file(budget.budget))
            )
    return written


# The report's section -----------------------------------------------------------------------


def _interval(entry: Entry) -> str:
    return f"{entry.importance:.3f} [{entry.low:.3f}, {entry.high:.3f}]"


def importance_table(result: ImportanceResult) -> list[str]:
    """The table's Markdown lines: a row per parameter and budget."""
    rows = [
        (
            escape_markdown(entry.parameter),
            entry.budget,
            _interval(entry),
            f"{entry.control_p95:.3f}",
            "yes" if entry.matters else "no",
        )
        for entry in result.entries
    ]
    header = (
        "parameter",
        "budget",
        f"importance [{INTERVAL:.0%} interval]",
        "control p95",
        "matters",
    )
    return markdown_table(header, rows)


def _number(value: float) -> str:
    """Two significant digits; small and large values in powers of ten (a learning rate)."""
    return f"{value:.2g}" if value == 0 or 0.01 <= abs(value) < 1e4 else f"{value:.1e}"


def best_region(result: ImportanceResult, budget: BudgetImportance, name: str) -> str:
    """Where the best BEST_SHARE of the budget's trials lie for one parameter: a range of
    values, or for a categorical one how many of them took each value."""
    best = budget.ranked[: max(1, math.ceil(BEST_SHARE * len(budget.points)))]
    values = [point.params[name] for point in best]
    share = f"the best {BEST_SHARE:.0%} of trials ({len(best)} of {len(budget.points)})"
    distribution = result.distributions[name]
    if isinstance(distribution, CategoricalDistribution):
        counts = Counter(_text(value) for value in values).most_common()
        return f"{share} had " + ", ".join(f"{escape_markdown(v)} ({n})" for v, n in counts)
    searched = f"{_number(distribution.low)} to {_number(distribution.high)}"
    scale = ", log scale" if getattr(distribution, "log", False) else ""
    return (
        f"{share} had {_number(min(values))} to {_number(max(values))} (searched {searched}{scale})"
    )


def _explanation(result: ImportanceResult) -> str:
    text = (
        f"Importance of each searched parameter for the trials' best validation "
        f"{result.metric.title}: {result.evaluator.describes}, computed by Optuna "
        f"(`{result.evaluator.name}`, not normalised), with a {INTERVAL:.0%} interval from "
        f"{result.resamples} refits on bootstrap resamples of the trials. Control: the same "
        f"refits with the metric shuffled across trials ({result.controls} shuffles), the "
        "importance a parameter gets from noise. A parameter matters where its interval's low "
        f"end lies above the control's {CONTROL_PERCENTILE:.0f}th percentile."
    )
    first = next((b for b in result.budgets if b.budget == FIRST_RUNG), None)
    if first is not None:
        scheduler = SCHEDULER_NAMES.get(result.scheduler, result.scheduler)
        text += (
            f" The {scheduler} scheduler stopped trials at rungs, so they ran for unequal "
            f"budgets: `first_rung` scores every trial by its best up to epoch {first.epoch} "
            "(equal budgets), `final` only the trials that ran to the end."
        )
    return text


def importance_section(
    result: ImportanceResult | None, plots: Sequence[Path] = (), relative_to: Path | None = None
) -> list[str]:
    """The report's Markdown lines for "Which hyperparameters mattered" ([] when the study
    searched nothing). Images link to `plots` relative to `relative_to` (the report's
    folder), else by file name."""
    if result is None:
        return []
    lines = ["## Which hyperparameters mattered", "", _explanation(result), ""]
    if result.entries:
        lines += [*importance_table(result), ""]
    for budget in result.budgets:
        notes = [f"{_budget_label(budget)}: {budget.reason}."] if budget.reason else []
        notes += [
            f"{_budget_label(budget)}: {escape_markdown(name)} {why}."
            for name, why in budget.skipped.items()
        ]
        lines += [f"- {note}" for note in notes]
    if any(budget.reason or budget.skipped for budget in result.budgets):
        lines.append("")
    mattered = [
        (budget, entry) for budget in result.budgets for entry in budget.entries if entry.matters
    ]
    for budget, entry in mattered:
        lines.append(
            f"- {escape_markdown(entry.parameter)}, {_budget_label(budget)}: "
            f"{best_region(result, budget, entry.parameter)}."
        )
    if not mattered and result.entries:
        lines.append(
            "No parameter's importance rose above the control: over these trials this measure "
            "cannot tell any parameter's part from what a shuffled metric gives. It weighs "
            "unpaired trials; where rows ran over the same seeds, the paired tests of Rungs "
            "and Effects are the stronger evidence."
        )
    lines.append("")
    for path in plots:
        link = Path(path).relative_to(relative_to) if relative_to is not None else Path(path).name
        lines += [f"![{Path(path).stem}]({Path(link).as_posix()})", ""]
    return lines
