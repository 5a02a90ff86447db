"""The MLflow UI's view of a study's trials: the link that opens it on their comparison.

MLflow 3's UI keeps what its runs table shows (filter, sort, columns) in the
browser: the search in the URL, the columns in localStorage. The one place it
reads a whole view from the store is a *shared view*: an experiment tag
``mlflow.sharedViewState.<key>`` holding the view as JSON, applied when the
page's URL carries ``viewStateShareKey=<key>`` (the UI's own "Share" button
writes the same tag). The study writes that tag on its experiment, so the
link works in any browser, an empty profile included, for as long as the
experiment lives:

- ``searchFilter`` keeps the trial runs only: without their parent run in
  the page, the UI shows them flat, not folded under it;
- ``orderByKey``/``orderByAsc``: best validation selection metric first;
- ``selectedColumns``: what a comparison needs, in an order that fits a
  laptop's width (1,440 px) without scrolling: the selection metric's best
  validation value (once), the test macro ROC-AUC and PR-AUC, the epochs
  run and the end state (``mer.end_state``: which trials a scheduler
  stopped), then the searched params;
- ``groupBy``, for a study that repeats its rows (seeds 0..N-1, splits): the UI's own
  "Group by" on the ``mer.row`` tag, one group per row with its trials under
  it and the mean of their scores on the group's line (groups open, ordered
  by that mean). A study with one seed per row stays flat.

``workflowType=machine_learning`` in the URL overrides the UI's sidebar
toggle (kept in localStorage, GenAI by default), so the page opens on the
runs table, not the GenAI overview. Read from MLflow 3.17's UI build
(``mlflow/server/js/build/static/js``): the shared-view hook reads the tag
and picks the search keys (``searchFilter``, ``orderByKey``, ``orderByAsc``,
...) and the UI-state keys (``selectedColumns``, ``columnWidths``, ...; not
``runsExpanded``), ``groupBy`` and ``groupsExpanded`` among them; the
grouping reads ``groupBy`` as ``{aggregateFunction, groupByKeys: [{mode,
groupByData}]}`` (modes ``tag``, ``param``, ``dataset``; functions ``min``,
``average``, ``max``) and opens a group its ``groupsExpanded`` does not
close; the workflow-type provider prefers the URL's ``workflowType`` to
localStorage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlencode

from mer_models.training.metrics import DEFAULT_SELECTION, METRICS, selection_metric
from tracking.names import END_STATE_TAG, FINAL_METRICS, ROLE_TAG, ROW_TAG

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's prefix of a shared view's tag
VIEW_KEY = "trials"  # the study's view: `mlflow.sharedViewState.trials`
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the UI's id of the run name column
RUN_NAME_WIDTH = 260  # pixels: wide enough for "no attention LSTM 2x128 lr=3.0e-3"
CHARACTER_WIDTH, HEADER_PADDING, MIN_WIDTH = 7, 28, 72  # pixels: a column that fits its header


def column(kind: str, key: str) -> str:
    """A runs-table column's id as the UI names it: ``metrics.`test_roc_auc```."""
    return f"{kind}.`{key}`"


def comparison_metrics(metric: str = DEFAULT_SELECTION) -> tuple[str, ...]:
    """The trial runs' metrics the view shows: the best validation value of the selection
    `metric` (``val_roc_auc``: ``best_val_roc_auc``), the macro test scores at the best
    epoch and the epochs run."""
    macro = [found for found in METRICS if found.average == "macro"]
    return (
        selection_metric(metric).best,
        *(found.test for found in macro),
        FINAL_METRICS["epochs_run"],
    )


def row_grouping() -> dict:
    """The runs table's "Group by" the `mer.row` tag: a group per row, its seeds' mean."""
    return {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": ROW_TAG}],
    }


def comparison_view(
    searched: Iterable[str], repeats: int = 1, metric: str = DEFAULT_SELECTION
) -> dict:
    """The shared view of a study's trials: best by the selection `metric` first, its
    scores, end state and `searched` params (the fields its space varies) as columns; flat,
    or grouped by row when each row ran with `repeats` > 1 trials (seeds, splits)."""
    scores = comparison_metrics(metric)
    columns = [
        *(column("metrics", name) for name in scores),
        column("tags", END_STATE_TAG),
        *(column("params", name) for name in searched),
    ]
    # The UI applies widths only to the columns its order lists; a header's width fits it.
    widths = {RUN_NAME_COLUMN: RUN_NAME_WIDTH} | {
        name: max(MIN_WIDTH, CHARACTER_WIDTH * len(name.split("`")[1]) + HEADER_PADDING)
        for name in columns
    }
    view = {
        "searchFilter": f"tags.`{ROLE_TAG}` = 'trial'",
        "orderByKey": column("metrics", scores[0]),
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": list(widths),
        "columnWidths": widths,
        "runsHiddenMode": "SHOW_ALL",  # every trial in the charts, not the first ten
    }
    if repeats > 1:
        view["groupBy"] = row_grouping()
    return view


def comparison_tag(
    searched: Iterable[str], repeats: int = 1, metric: str = DEFAULT_SELECTION
) -> tuple[str, str]:
    """The experiment tag that holds the view: its key and JSON value."""
    view = comparison_view(searched, repeats, metric)
    return SHARED_VIEW_TAG + VIEW_KEY, json.dumps(view, sort_keys=True)


def comparison_url(ui: str, experiment_id: str) -> str:
    """The address of the experiment's trials in the UI at `ui` (``http://host:port``)."""
    query = urlencode({"viewStateShareKey": VIEW_KEY, "workflowType": "machine_learning"})
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
