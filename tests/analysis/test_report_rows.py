"""The report of a study with repeated seeds: its Rows and Effects sections, the forest plot
and per-row curves, rows.json and effects.json, the parent MLflow run's metrics named by row
and factor, and the end of a study writing confirm.yaml (hand-built studies: no Ray run)."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow import MlflowClient

from analysis.conclude import conclude_study
from analysis.confirm import CONFIRM_FILE
from analysis.effects import EFFECTS_FILE
from analysis.plots import (
    Band,
    ForestItem,
    ForestPanel,
    band_from_curves,
    curve_from_history,
    forest_figure,
    per_tag_figure,
    row_curves_figure,
    validation_curves_figure,
)
from analysis.report import FOREST_FILE, REPORT_FILE, ROW_CURVES_FILE, write_report
from analysis.rows import ROWS_FILE
from study_folder.search_space import load_space
from tests.analysis.repeated import repeated_study
from tracking.names import effect_metric, row_metric

PNG = b"\x89PNG\r\n\x1a\n"
SEARCHED = ("cell", "units")
SEEDS = range(8)  # more than EXACT_UP_TO pairs: the paired t-test decides


def grid(scheduler: str = "fifo") -> list[tuple[dict, float]]:
    signal = {"gru": 0.6, "lstm": 0.0}  # LSTM rows cannot learn
    return [
        ({"cell": cell, "units": units}, signal[cell])
        for cell, units in itertools.product(("gru", "lstm"), (128, 256))
    ]


@pytest.fixture
def study(tmp_path, labelled_dataset):
    return repeated_study(tmp_path / "rep", labelled_dataset, grid(), SEEDS, SEARCHED)


def section(report: str, title: str) -> str:
    return report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_report_has_rows_effects_and_their_plots(study):
    report = write_report(study, resamples=20, track=False)
    text = (report.out / REPORT_FILE).read_text()
    rows = section(text, "Rows")
    assert "| block GRU 256 | block | CRNN | GRU | 256 | 8 |" in rows
    for row in report.rows.rows:
        summary = row.test_roc_auc
        half = 100 * (summary.high - summary.low) / 2
        assert f"{100 * summary.mean:.2f} ± {half:.2f}" in rows
        for trial in row.trials:  # trials by their run names, with their ids
            assert f"{trial.metrics['trial_name']} ({trial.key})" in rows
    effects = section(text, "Effects")
    assert "cell gru → lstm" in effects and "units 128 → 256" in effects
    assert "*" in effects.split("cell gru → lstm", 1)[1].splitlines()[0]  # significant
    assert "(t) |" in effects and "2 / 2^n" not in effects  # 8 pairs: the t-test decides
    # Published figures never stand in a column beside the study's own.
    assert "published" not in rows
    # The answer says it in words: the planted cell effect is detected, units' is not.
    answer = section(text, "Answer")
    assert "**cell** made a detectable difference in" in answer
    assert "**units** is undecided: no adjusted p at most 0.05" in answer
    assert "An undecided factor is not one shown not to matter" in answer
    assert f"The best row is **{report.rows.rows[0].name}** (n 8" in answer
    for name in (FOREST_FILE, ROW_CURVES_FILE):
        assert (report.out / name).read_bytes().startswith(PNG)
        assert f"]({name})" in text
    assert set(report.files) >= {report.out / FOREST_FILE, report.out / ROW_CURVES_FILE}
    assert json.loads((study / ROWS_FILE).read_text())[0]["row"] == report.rows.rows[0].name
    assert len(json.loads((study / EFFECTS_FILE).read_text())) == 8


def test_asha_with_repeats_says_the_budgets_were_unequal(tmp_path, labelled_dataset):
    folder = repeated_study(
        tmp_path / "asha", labelled_dataset, grid(), range(2), SEARCHED, scheduler="asha"
    )
    text = (write_report(folder, resamples=20, track=False).out / REPORT_FILE).read_text()
    assert "budgets were unequal within rows too" in text


def test_a_single_seed_study_has_no_rows_section_but_its_records(tmp_path, labelled_dataset):
    folder = repeated_study(tmp_path / "one", labelled_dataset, grid(), [0], SEARCHED)
    report = write_report(folder, resamples=20, track=False)
    text = (report.out / REPORT_FILE).read_text()
    assert "## Rows" not in text and "## Effects" not in text
    assert not (report.out / FOREST_FILE).exists()
    assert len(json.loads((folder / ROWS_FILE).read_text())) == 4
    assert json.loads((folder / EFFECTS_FILE).read_text()) == []


def test_the_parent_run_gets_rows_and_effects_as_metrics(study, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("rep")
    parent = client.create_run(experiment, tags={"mer.role": "study", "mer.study": "rep"})
    description = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**description, "tracking_uri": uri}))
    report = write_report(study, resamples=20)
    assert report.mlflow_logged
    metrics = client.get_run(parent.info.run_id).data.metrics
    best = report.rows.rows[0]
    assert metrics[row_metric(best.name, "test_roc_auc_mean")] == pytest.approx(
        best.test_roc_auc.mean
    )
    assert metrics[row_metric(best.name, "val_roc_auc_high")] == pytest.approx(best.validation.high)
    assert metrics[row_metric(best.name, "n")] == 8
    effect = report.effects.effects[0]
    name = effect_metric(effect.factor, effect.from_row, effect.to_row, "test_roc_auc_p_adjusted")
    assert name == f"effect/cell/{effect.from_row} to {effect.to_row}/test_roc_auc_p_adjusted"
    assert metrics[name] == pytest.approx(effect.p_adjusted)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"report/{ROWS_FILE}", f"report/{EFFECTS_FILE}", f"report/{FOREST_FILE}"} <= artifacts


def test_conclude_writes_a_confirm_yaml_that_loads(study):
    conclusion = conclude_study(study, resamples=20)
    assert any(line.startswith("confirm: ") for line in conclusion.lines)
    space = load_space(str(study / CONFIRM_FILE))
    # Eight seeds a row under FIFO already: more draws for the rows of the undecided effect.
    assert space.repeats == 16 and space.scheduler.type == "fifo" and len(space.configs) == 4


def test_legends_stay_outside_the_axes():
    """Every legend sits under its axes, so no line or band is hidden behind it."""
    curves = [
        curve_from_history(
            f"trial {i}", [{"epoch": e, "val_roc_auc": 0.5 + e / 20} for e in (1, 2)], "finished"
        )
        for i in range(8)
    ]
    band = band_from_curves("row", curves)
    assert band.trials == (8, 8) and band.low[0] == band.high[0] == pytest.approx(0.55)
    for figure in (
        validation_curves_figure(curves),
        row_curves_figure([band, Band("empty", (), (), (), (), ())]),
    ):
        FigureCanvasAgg(figure).draw()
        axes = figure.axes[0]
        legend = figure.legends[0].get_window_extent()
        assert legend.y1 <= axes.get_window_extent().y0  # entirely below the axes
    forest = forest_figure(
        [
            ForestPanel(
                "p", "x", (ForestItem("a", 1.0, 0.5, 1.5), ForestItem("b", 2.0, None, None)), 0.0
            )
        ]
    )
    assert len(forest.axes) == 1


def test_a_wide_studys_long_trial_names_keep_their_legend_in_the_picture():
    """24 trials named by their parameters: the legend takes one column, fits the figure and
    lies under the axes (three columns of such names were wider than the figure, and the
    constrained layout dropped the legend out of the picture, with a warning)."""
    name = "06990_000{:02d} no attention LSTM 2x128 lr=1.3e-3 drop=0.053 batch=64 win=192"
    curves = [
        curve_from_history(
            name.format(i),
            [{"epoch": e, "val_roc_auc": 0.5 + e / 20} for e in (1, 2)],
            "asha_stopped" if i % 2 else "finished",
        )
        for i in range(24)
    ]
    bands = [band_from_curves(name.format(i), curves[i : i + 1]) for i in range(24)]
    for figure in (validation_curves_figure(curves), row_curves_figure(bands)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "constrained_layout not applied" fails the test
            FigureCanvasAgg(figure).draw()
        axes, legend = figure.axes[0], figure.legends[0]
        box, picture = legend.get_window_extent(), figure.bbox
        assert len({text.get_window_extent().x0 for text in legend.get_texts()}) == 1  # 1 column
        assert picture.x0 <= box.x0 and box.x1 <= picture.x1
        assert picture.y0 <= box.y0 and box.y1 <= axes.get_window_extent().y0
        assert len(legend.get_texts()) >= 24


def test_per_tag_bars_stand_side_by_side_within_their_tag():
    """Two systems: two bars a tag, each 0.4 of a tag position wide, within that tag's slot."""
    tags = [f"mood/theme---tag{j}" for j in range(56)]
    rng = np.random.default_rng(0)
    series = {"best single: a long trial name " * 3: rng.random(56), "fusion top2": rng.random(56)}
    figure = per_tag_figure(tags, series)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FigureCanvasAgg(figure).draw()
    bars = [patch for container in figure.axes[0].containers for patch in container]
    assert len(bars) == 112
    for j, bar in enumerate(bars):
        assert bar.get_width() == pytest.approx(0.4)
        slot = j % 56
        assert (
            slot - 0.4 - 1e-9 <= bar.get_x() <= bar.get_x() + bar.get_width() <= slot + 0.4 + 1e-9
        )
    box = figure.legends[0].get_window_extent()
    assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 and figure.bbox.y0 <= box.y0


def test_effect_levels_read_as_run_names_write_them():
    from analysis.comparison import effects_section
    from analysis.effects import SIGN_FLIP, Effect, Effects

    effect = Effect(
        "cbam", False, True, "no attention GRU 8", "block GRU 8", "test_roc_auc", ((0,), (1,)),
        (0.01, 0.03), 0.02, -0.1, 0.14, 0.5, 0.3, SIGN_FLIP, 0.5,
    )  # fmt: skip
    text = "\n".join(effects_section(Effects((effect,), ())))
    assert "| cbam false → true | no attention GRU 8 → block GRU 8 | ROC-AUC | 2 |" in text
    assert "+2.00 [-10.00, +14.00]" in text


@pytest.mark.slow  # several reports
def test_the_answer_of_a_study_without_effects_says_none_was_detected(tmp_path, labelled_dataset):
    flat = [(overrides, 0.6) for overrides, _ in grid()]  # every row learns alike
    folder = repeated_study(tmp_path / "flat", labelled_dataset, flat, SEEDS, SEARCHED)
    answer = section(
        (write_report(folder, resamples=20, track=False).out / REPORT_FILE).read_text(), "Answer"
    )
    assert "**cell** is undecided: no adjusted p at most 0.05" in answer
    assert "**units** is undecided: no adjusted p at most 0.05" in answer
    assert "made a detectable difference" not in answer and "no detectable" not in answer
    assert "cut learning short" not in answer and "ran once" not in answer


@pytest.mark.slow  # several reports
def test_the_answer_says_what_a_single_seed_or_a_short_budget_cannot_say(
    tmp_path, labelled_dataset
):
    once = repeated_study(tmp_path / "once", labelled_dataset, grid(), [0], SEARCHED)
    answer = section(
        (write_report(once, resamples=20, track=False).out / REPORT_FILE).read_text(), "Answer"
    )
    assert "The best configuration is **" in answer and "Each configuration ran once" in answer

    # Three seeds: the planted cell effect is there, but no test at 3 pairs can show it.
    few = repeated_study(tmp_path / "few", labelled_dataset, grid(), range(3), SEARCHED)
    answer = section(
        (write_report(few, resamples=20, track=False).out / REPORT_FILE).read_text(), "Answer"
    )
    assert "**cell** is undecided: too few seeds" in answer
    assert "no detectable difference" not in answer and "detectable difference in" not in answer
    assert "undecided: 3 pairs cannot show a difference (p >= 0.25)" in answer
    assert "with 3 seeds a row pair cannot show a difference" in answer

    short = repeated_study(tmp_path / "short", labelled_dataset, grid(), SEEDS, SEARCHED)
    for path in sorted((short / "trials").glob("*/metrics.json")):
        config = json.loads((path.parent / "config.json").read_text())
        metrics = json.loads(path.read_text())
        late = path.parent.name.startswith("r0")  # the first row's trials still improved
        metrics["epochs_run"] = config["max_epochs"]
        metrics["best_epoch"] = config["max_epochs"] if late else config["max_epochs"] // 2
        path.write_text(json.dumps(metrics))
    answer = section(
        (write_report(short, resamples=20, track=False).out / REPORT_FILE).read_text(), "Answer"
    )
    assert "cut learning short" not in answer  # one row of four: not most trials
    for path in sorted((short / "trials").glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        metrics["best_epoch"] = metrics["epochs_run"]
        path.write_text(json.dumps(metrics))
    answer = section(
        (write_report(short, resamples=20, track=False).out / REPORT_FILE).read_text(), "Answer"
    )
    assert "The budget cut learning short: 32 of 32 trial(s)" in answer


def test_confirm_proposes_more_draws_only_where_effects_were_undecided(tmp_path, labelled_dataset):
    from analysis.confirm import CONFIRM_REPEATS, confirm_plan
    from analysis.effects import factor_effects
    from analysis.rows import row_results
    from study_folder.records import load_study

    def plan(rows, seeds, name):
        folder = repeated_study(tmp_path / name, labelled_dataset, rows, seeds, SEARCHED)
        study = load_study(folder)
        table = row_results(study)
        return confirm_plan(study, table, factor_effects(table))

    searched = plan(grid(), [0], "search")  # one seed per row: its top rows, five seeds
    assert len(searched.rows) == 3 and searched.repeats == CONFIRM_REPEATS
    undecided = plan(grid(), SEEDS, "undecided")  # cell decided, units not: units' rows
    assert {row.name for row in undecided.rows} == {
        "block GRU 128",
        "block GRU 256",
        "block LSTM 128",
        "block LSTM 256",
    }
    assert undecided.repeats == 2 * len(SEEDS) and "undecided effects" in undecided.why
    signal = {("gru", 128): 0.3, ("gru", 256): 0.7, ("lstm", 128): 0.0, ("lstm", 256): 0.35}
    decided = [({"cell": cell, "units": units}, value) for (cell, units), value in signal.items()]
    done = plan(decided, SEEDS, "decided")
    assert done.rows == () and done.why.startswith("nothing to confirm")


def test_thirty_curves_have_thirty_looks():
    """No two trials' lines share a colour and a dash: the default cycle repeats ten colours."""
    curves = [
        curve_from_history(
            f"trial {i}", [{"epoch": e, "val_roc_auc": 0.5 + e / 20} for e in (1, 2)], "finished"
        )
        for i in range(30)
    ]
    axes = validation_curves_figure(curves).axes[0]
    looks = {(tuple(line.get_color()), line.get_linestyle()) for line in axes.get_lines()}
    assert len(looks) == 30


def test_the_report_says_which_searched_parameters_mattered(study):
    report = write_report(study, resamples=20, track=False)
    text = (report.out / REPORT_FILE).read_text()
    assert text.index("## Answer") < text.index("## Which hyperparameters mattered")
    assert text.index("## Which hyperparameters mattered") < text.index("## Rows")
    importance = json.loads((study / "importance.json").read_text())
    matters = {(e["parameter"], e["matters"]) for e in importance["entries"]}
    assert matters == {("cell", True), ("units", False)}  # planted: cell; seeds are no parameter
    assert report.metrics["importance/cell"] > report.metrics["importance/units"]
    assert study / "importance.json" in report.tables
    assert (report.out / "importance_slice_cell.png").read_bytes().startswith(PNG)
