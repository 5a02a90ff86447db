"""Search spaces: YAML files that declare a study, validated before anything starts.

    parameters:            # TrainConfig fields
      lr: 3.0e-4                       # a fixed value
      cell: {grid: [gru, lstm]}        # every value (crossed with other grids)
      units: {choice: [128, 256]}      # sampled
      dropout: {uniform: [0.0, 0.5]}
      lr: {loguniform: [1.0e-5, 1.0e-2]}
      batch_size: {randint: [16, 64]}  # integers, both bounds included
    configs:               # an explicit list of (partial) configurations, one trial each
      - {cbam: false, cell: gru, units: 256}
    searcher: grid         # grid | random | optuna
    num_samples: 1         # grid: repeats of the grid; random and optuna: trials
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # or {type: fifo}, or
    scheduler: {type: race, grace_period: 2, reduction_factor: 3, alpha: 0.05}
                           # race: rows raced over their draws at synchronous rungs (study.race)
    metric: {name: val_roc_auc, mode: max}   # or val_pr_auc: trials, epochs, models by it
    budget: quick          # quick | paper (see study_folder.budgets)
    search_seed: 0         # seeds the random and optuna searchers: the same space, the same draws
    repeats: 1             # every configuration (row) with seeds 0..N-1 (grid and random)
    splits: [0, 1, 2, 3, 4]   # every trial on each of the dataset's official splits
                              # (default: the one --split names)
    reuse: ../ray_results/wide   # take over that study's ended trials of planned configs
                                 # (grid and random; relative to this file; study_folder.reuse)

Every error names the file, the key path and what is allowed. Spaces are
bounded (MAX_SPACE_BYTES, MAX_TRIALS, MAX_DESCRIPTION) so that a mistaken
file is refused in a second instead of loading for minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mer_models.config import FIELD_NAMES, TrainConfig
from mer_models.training.metrics import BY_EPOCH_NAME, DEFAULT_SELECTION
from study_folder.budgets import BUDGETS

SEARCH_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
METRIC = DEFAULT_SELECTION  # validation macro ROC-AUC, the paper's model selection
MODE = "max"
# The per-epoch validation scores a study may select trials, epochs and models by.
METRICS = tuple(BY_EPOCH_NAME)
SEARCHERS = ("grid", "random", "optuna")
SCHEDULERS = ("race", "asha", "fifo")
RUNG_SCHEDULERS = ("race", "asha")  # stop trials at rungs of grace_period * reduction_factor^k
TOP_KEYS = (
    "description",
    "parameters",
    "configs",
    "searcher",
    "num_samples",
    "scheduler",
    "metric",
    "budget",
    "search_seed",
    "repeats",
    "splits",
    "reuse",
)
# A space is a hand-written file: 1 MiB of YAML holds thousands of explicit configs.
MAX_SPACE_BYTES = 1 << 20
# Trials a study may plan: each becomes a folder, an MLflow run and a Ray trial.
MAX_TRIALS = 10_000
# The description becomes the MLflow experiment's note, an experiment tag (MLflow: 20,000).
MAX_DESCRIPTION = 20_000


RACE_WITH_OPTUNA = (
    "race compares whole rows over their draws at synchronous rungs, and optuna proposes its "
    "trials one by one as results come in; search with optuna under asha or fifo first, then "
    "race its best rows in a grid space (configs: [...], repeats: N)"
)


class SpaceError(ValueError):
    """A search space file is malformed; the message names file and key path."""


@dataclass(frozen=True)
class Distribution:
    """One `{kind: values}` form a parameter may take: how its values are checked and
    what Ray Tune draws from them. Random trials are drawn from `to_tune`'s domain by
    Ray's variant generator (`study.driver.planned_trials`) and Optuna's from the same
    domain (Ray's OptunaSearch converts it), so there is nothing else to say per kind."""

    kind: str
    # (ray.tune, the values) -> Ray Tune's domain (or grid_search); Ray is imported only
    # to run a study, so a space is checked in a second and a cluster's auth mode is read
    # (study/run.py use_cluster_token) before Ray is.
    to_tune: Callable[[Any, list], Any]
    example: tuple[str, list]  # a config field and valid values: the docs' and tests' case
    bounds: bool = False  # [low, high]; else a non-empty list of values
    integer: bool = False  # the bounds and the draws are integers
    positive: bool = False  # the bounds must be > 0 (a log scale)
    grid: bool = False  # every value in turn: multiplies the trials; optuna refuses it


# Adding a distribution is one entry here (the module docstring and README name each kind);
# tests/study/test_search_space.py runs every entry through validation, Ray and Optuna.
DISTRIBUTIONS = {
    d.kind: d
    for d in (
        Distribution(
            "grid", lambda tune, v: tune.grid_search(v), ("cell", ["gru", "lstm"]), grid=True
        ),
        Distribution("choice", lambda tune, v: tune.choice(v), ("units", [128, 256])),
        Distribution(
            "uniform", lambda tune, v: tune.uniform(*v), ("dropout", [0.0, 0.5]), bounds=True
        ),
        Distribution(
            "loguniform",
            lambda tune, v: tune.loguniform(*v),
            ("lr", [1.0e-5, 1.0e-2]),
            bounds=True,
            positive=True,
        ),
        Distribution(
            "randint",
            lambda tune, v: tune.randint(v[0], v[1] + 1),  # Ray's high is exclusive; ours not
            ("batch_size", [16, 64]),
            bounds=True,
            integer=True,
        ),
    )
}


@dataclass(frozen=True)
class Scheduler:
    type: str = "fifo"  # what a space without a scheduler gets
    grace_period: int = 1
    reduction_factor: int = 2
    max_epochs: int | None = None  # None: the budget's max_epochs
    alpha: float = 0.05  # race: the level at which a row is dropped as worse than the best


@dataclass(frozen=True)
class SearchSpace:
    file: Path
    parameters: dict[str, Any]  # field -> fixed value, or {distribution: values}
    configs: list[dict[str, Any]] = field(default_factory=list)
    searcher: str = "grid"
    num_samples: int = 1
    scheduler: Scheduler = field(default_factory=Scheduler)
    metric: str = METRIC
    mode: str = MODE
    budget: str = "quick"
    description: str = ""
    search_seed: int = 0
    repeats: int = 1  # seeds per configuration (row): 0..repeats-1
    splits: tuple[int, ...] = ()  # the official splits each trial runs on; (): the --split one
    reuse: Path | None = None  # a study whose ended trials it takes over (study_folder.reuse)
    text: str = ""  # the YAML it was read from: what study.json records and MLflow shows

    @property
    def draws(self) -> int:
        """Trials per configuration (row): its seeds times its splits."""
        return self.repeats * max(len(self.splits), 1)

    @property
    def name(self) -> str:
        return self.file.stem

    def with_scheduler(self, scheduler: str | None) -> SearchSpace:
        """This space with its scheduler's type replaced by `scheduler` (--scheduler), if given."""
        if scheduler is None or scheduler == self.scheduler.type:
            return self
        return replace(self, scheduler=replace(self.scheduler, type=scheduler))

    @property
    def trial_count(self) -> int:
        """The study's trials: every grid combination (configs rows included) num_samples
        times, Ray Tune's rule, each with `repeats` seeds on each of `splits`; optuna, which
        allows no grid, repeats or splits, runs num_samples."""
        count = self.num_samples * max(len(self.configs), 1) * self.draws
        for spec in self.parameters.values():
            if _is_grid(spec):
                ((_, values),) = spec.items()
                count *= len(values)
        return count


def find_space(name: str) -> Path:
    """A path as given, else `search_spaces/NAME` (with or without `.yaml`)."""
    given = Path(name).expanduser()
    if given.is_file():
        return given.resolve()
    for candidate in (SEARCH_SPACES / name, SEARCH_SPACES / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.name for p in SEARCH_SPACES.glob("*.yaml")))
    raise SpaceError(f"{name}: no such search space file (nor in {SEARCH_SPACES}: {known})")


def load_space(name: str) -> SearchSpace:
    path = find_space(name)
    size = path.stat().st_size
    if size > MAX_SPACE_BYTES:
        raise SpaceError(
            f"{path}: {size:,} bytes; a search space may hold at most {MAX_SPACE_BYTES:,} "
            f"(a study plans at most {MAX_TRIALS:,} trials): use distributions and num_samples "
            "instead of listing configurations, or split the study"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SpaceError(
            f"{path}, line {line}: byte {data[error.start]:#04x} is not UTF-8 text"
        ) from None
    return space_from_text(text, path)


def space_from_text(text: str, path: Path) -> SearchSpace:
    """A space from its YAML text; `path` names it (a resumed study's recorded copy)."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: not valid YAML ({error})") from None
    return replace(parse_space(raw, path), text=text)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_space(raw: Any, path: Path) -> SearchSpace:
    check = _Checks(path)
    if not isinstance(raw, dict):
        raise check.error("", f"expected a mapping with keys {', '.join(TOP_KEYS)}")
    check.unknown_keys("", raw, TOP_KEYS)
    searcher = raw.get("searcher", "grid")
    check.choice("searcher", searcher, SEARCHERS)
    num_samples = raw.get("num_samples", 1)
    check.integer("num_samples", num_samples, minimum=1)
    budget = raw.get("budget", "quick")
    check.choice("budget", budget, tuple(BUDGETS))
    parameters = _parse_parameters(check, raw)
    configs = _parse_configs(check, raw)
    _check_grid_searcher(check, searcher, parameters, configs)
    scheduler = _parse_scheduler(check, raw["scheduler"]) if "scheduler" in raw else Scheduler()
    if scheduler.type == "race" and searcher == "optuna":
        raise check.error("scheduler.type", RACE_WITH_OPTUNA)
    metric = _parse_metric(check, raw)
    description = _parse_description(check, raw)
    search_seed = raw.get("search_seed", 0)
    check.integer("search_seed", search_seed, minimum=0)
    repeats = raw.get("repeats", 1)
    _check_repeats(check, repeats, searcher, parameters, configs)
    splits = _parse_splits(check, raw.get("splits"), searcher, parameters, configs)
    reuse = _parse_reuse(check, raw, searcher, path)
    space = SearchSpace(
        file=path,
        parameters=dict(parameters),
        configs=[dict(entry) for entry in configs],
        searcher=searcher,
        num_samples=num_samples,
        scheduler=scheduler,
        metric=metric,
        mode=MODE,
        budget=budget,
        description=description,
        search_seed=search_seed,
        repeats=repeats,
        splits=splits,
        reuse=reuse,
    )
    _check_trial_count(check, space)
    return space


def _parse_parameters(check: _Checks, raw: dict) -> dict[str, Any]:
    """`parameters:`, a mapping of config fields to fixed values or distributions."""
    parameters = raw.get("parameters", {}) or {}
    if not isinstance(parameters, dict):
        raise check.error("parameters", "expected a mapping of config fields")
    for key, spec in parameters.items():
        _check_parameter(check, key, spec)
    return parameters


def _parse_configs(check: _Checks, raw: dict) -> list[dict[str, Any]]:
    """`configs:`, a non-empty list of non-empty mappings of config fields (or none)."""
    configs = raw.get("configs", []) or []
    if not isinstance(configs, list):
        raise check.error("configs", "expected a list of mappings of config fields")
    if "configs" in raw and not configs:
        raise check.error("configs", "the list is empty; give at least one configuration")
    for index, entry in enumerate(configs):
        key = f"configs[{index}]"
        if not isinstance(entry, dict) or not entry:
            raise check.error(key, "expected a non-empty mapping of config fields")
        check.unknown_keys(key, entry, FIELD_NAMES)
        for name, value in entry.items():
            check.field_value(f"{key}.{name}", name, value)
    return configs


def _check_grid_searcher(
    check: _Checks, searcher: str, parameters: dict, configs: list[dict]
) -> None:
    """Optuna samples its own points: a space searched by it has no grid and no configs."""
    has_grid = bool(configs) or any(_is_grid(spec) for spec in parameters.values())
    if searcher == "optuna" and has_grid:
        raise check.error(
            "searcher",
            "optuna samples its own points: use choice instead of grid "
            "and configs, or searcher: grid",
        )


def _parse_metric(check: _Checks, raw: dict) -> str:
    """`metric: {name, mode}`: the name of the per-epoch score the study maximises."""
    metric = raw.get("metric", {"name": METRIC, "mode": MODE}) or {}
    if not isinstance(metric, dict):
        raise check.error("metric", "expected {name: val_roc_auc, mode: max}")
    check.unknown_keys("metric", metric, ("name", "mode"))
    check.choice("metric.name", metric.get("name", METRIC), METRICS)
    check.choice("metric.mode", metric.get("mode", MODE), ("max",))
    return metric.get("name", METRIC)


def _parse_description(check: _Checks, raw: dict) -> str:
    """`description:`, a string short enough to be the MLflow experiment's note."""
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise check.error("description", "expected a string")
    if len(description.strip()) > MAX_DESCRIPTION:
        raise check.error(
            "description",
            f"{len(description.strip()):,} characters; MLflow keeps at most {MAX_DESCRIPTION:,} "
            "as the experiment's note: shorten it",
        )
    return description


def _parse_reuse(check: _Checks, raw: dict, searcher: str, path: Path) -> Path | None:
    """`reuse:`, the folder of a study whose ended trials this one may take over, relative
    to the space file's folder (a study's confirm.yaml: `.`, that study)."""
    if raw.get("reuse") is None:
        return None
    folder = raw["reuse"]
    if not isinstance(folder, str) or not folder.strip():
        raise check.error("reuse", "expected the path of a study folder")
    if searcher == "optuna":
        raise check.error(
            "reuse",
            "optuna proposes its own points, so no trial of another study is planned here; "
            "take trials over in a grid or random space (configs: [...])",
        )
    return (Path(path).parent / Path(folder).expanduser()).resolve()


def _check_trial_count(check: _Checks, space: SearchSpace) -> None:
    if space.trial_count > MAX_TRIALS:
        raise check.error(
            "",
            f"plans {space.trial_count:,} trials (grids crossed, configs, num_samples, repeats, "
            "splits); a study "
            f"runs at most {MAX_TRIALS:,}: each is a Ray trial, an MLflow run and a folder. "
            "Sample the space (searcher: random or optuna, num_samples) or split the study",
        )


def _check_repeats(
    check: _Checks, repeats: Any, searcher: str, parameters: dict, configs: list[dict]
) -> None:
    """`repeats` seeds every row itself (0..N-1): the space may not set `seed` too, and
    optuna, which learns from one score per point it samples, takes no repeats."""
    check.integer("repeats", repeats, minimum=1)
    if repeats == 1:
        return
    if searcher == "optuna":
        raise check.error(
            "repeats",
            "optuna learns from one trial per point it samples and cannot repeat a point over "
            "seeds; search with optuna first, then repeat its best rows in a grid space "
            "(configs: [...], repeats: N)",
        )
    setting = _setting("seed", parameters, configs)
    if setting:
        raise check.error(
            setting[0],
            f"repeats: {repeats} runs every row with seeds 0..{repeats - 1}; the space may not "
            "fix or search seed too: remove it, or drop repeats",
        )


def _parse_splits(
    check: _Checks, splits: Any, searcher: str, parameters: dict, configs: list[dict]
) -> tuple[int, ...]:
    """`splits: [0, 1, ...]`: distinct official split numbers; every trial runs on each. The
    space may not set `split` itself, and optuna (one score per point) takes no splits."""
    setting = _setting("split", parameters, configs)
    if setting:
        raise check.error(
            setting[0],
            "a trial's split comes from the study (--split) or from the space's "
            "splits: [0, 1, ...] list, which runs every trial on each: use that",
        )
    if splits is None:
        return ()
    if (
        not isinstance(splits, list)
        or not splits
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in splits)
        or len(set(splits)) != len(splits)
    ):
        raise check.error(
            "splits",
            f"expected a list of distinct official split numbers >= 0, e.g. [0, 1, 2, 3, 4]; "
            f"got {splits!r:.80}",
        )
    if searcher == "optuna":
        raise check.error(
            "splits",
            "optuna learns from one trial per point it samples and cannot repeat a point over "
            "splits; search with optuna first, then run its best rows in a grid space "
            "(configs: [...], splits: [...])",
        )
    return tuple(splits)


def _setting(name: str, parameters: dict, configs: list[dict]) -> list[str]:
    """The key paths at which a space sets config field `name` itself."""
    paths = [f"parameters.{name}"] if name in parameters else []
    return paths + [f"configs[{i}].{name}" for i, entry in enumerate(configs) if name in entry]


def _kind(spec: Any) -> str | None:
    return next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else None


def distribution_of(spec: Any) -> Distribution | None:
    """A parameter's distribution; None for a fixed value (or an unknown kind)."""
    return DISTRIBUTIONS.get(_kind(spec))


def _is_grid(spec: Any) -> bool:
    distribution = distribution_of(spec)
    return distribution is not None and distribution.grid


def tune_value(spec: Any) -> Any:
    """A validated parameter in Ray Tune's terms: a fixed value as is, else its domain."""
    if not isinstance(spec, dict):
        return spec
    distribution = distribution_of(spec)
    if distribution is None:  # parse_space refuses these; a hand-built space may not
        raise SpaceError(
            f"{spec!r}: not a distribution; expected one of {{{' | '.join(DISTRIBUTIONS)}: ...}}"
        )
    from ray import tune

    return distribution.to_tune(tune, spec[distribution.kind])


def _check_parameter(check: _Checks, key: str, spec: Any) -> None:
    path = f"parameters.{key}"
    if key not in FIELD_NAMES:
        raise check.error(path, f"unknown config field; valid fields are: {', '.join(FIELD_NAMES)}")
    if not isinstance(spec, dict):
        check.field_value(path, key, spec)
        return
    distribution = distribution_of(spec)
    if distribution is None:
        raise check.error(
            path,
            f"expected a fixed value or one of {{{' | '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}",
        )
    kind = distribution.kind
    values = spec[kind]
    path = f"{path}.{kind}"
    if not distribution.bounds:
        if not isinstance(values, list) or not values:
            raise check.error(path, "expected a non-empty list of values")
        for index, value in enumerate(values):
            check.field_value(f"{path}[{index}]", key, value)
        return
    if not isinstance(values, list) or len(values) != 2:
        raise check.error(path, "expected [low, high]")
    low, high = values
    for bound, value in (("low", low), ("high", high)):
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise check.error(path, f"{bound} bound must be a finite number, got {value!r}")
        if distribution.integer and not isinstance(value, int):
            raise check.error(path, f"{kind} bounds must be integers, got {value!r}")
    if not low < high:
        raise check.error(
            path, f"bounds the wrong way round or empty: low {low} must be < high {high}"
        )
    if distribution.positive and low <= 0:
        raise check.error(path, f"{kind} bounds must be > 0, got low {low}")
    for value in (low, high):
        check.field_value(path, key, int(value) if distribution.integer else value)


def _parse_scheduler(check: _Checks, raw: Any) -> Scheduler:
    if not isinstance(raw, dict):
        raise check.error(
            "scheduler",
            "expected {type: race, grace_period: N, reduction_factor: N, alpha: A}, "
            "{type: asha, grace_period: N, reduction_factor: N} or {type: fifo}",
        )
    kind = raw.get("type")
    check.choice("scheduler.type", kind, SCHEDULERS)
    if kind == "fifo":
        check.unknown_keys("scheduler", raw, ("type",))
        return Scheduler(type="fifo")
    keys = ("type", "grace_period", "reduction_factor", "max_epochs")
    check.unknown_keys("scheduler", raw, (*keys, "alpha") if kind == "race" else keys)
    alpha = raw.get("alpha", 0.05)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not math.isfinite(alpha)
        or not 0 < alpha <= 1
    ):
        raise check.error(
            "scheduler.alpha",
            f"expected a level in (0, 1] (0.05: drop a row at 5% risk; 1: plain successive "
            f"halving), got {alpha!r}",
        )
    grace = raw.get("grace_period", 1)
    check.integer("scheduler.grace_period", grace, minimum=1)
    factor = raw.get("reduction_factor", 2)
    check.integer("scheduler.reduction_factor", factor, minimum=2)
    max_epochs = raw.get("max_epochs")
    if max_epochs is not None:
        check.integer("scheduler.max_epochs", max_epochs, minimum=1)
        if max_epochs < grace:
            raise check.error(
                "scheduler.max_epochs", f"{max_epochs} is below the grace period {grace}"
            )
    return Scheduler(kind, grace, factor, max_epochs, float(alpha))


class _Checks:
    """Builds errors that name the file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, message: str) -> SpaceError:
        return SpaceError(f"{self.path}: {key + ': ' if key else ''}{message}")

    def unknown_keys(self, key: str, mapping: dict, allowed: tuple[str, ...]) -> None:
        unknown = [k for k in mapping if k not in allowed]
        if unknown:
            place = f"{key}." if key else ""
            raise self.error(
                f"{place}{unknown[0]}", f"unknown key; allowed here: {', '.join(allowed)}"
            )

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise self.error(key, f"{value!r} is not allowed; expected one of {', '.join(allowed)}")

    def integer(self, key: str, value: Any, minimum: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {value!r}")

    def field_value(self, key: str, name: str, value: Any) -> None:
        """A value must be valid for its TrainConfig field on its own."""
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value}")
        try:
            TrainConfig.from_dict({name: value})
        except ValueError as error:
            raise self.error(key, str(error).removeprefix("config: ")) from None
