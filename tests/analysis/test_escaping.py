"""User text (a study's name, trial names, the space's description) reaches Markdown inert:
shown as written, with no HTML and no formatting."""

from __future__ import annotations

import json

import pytest

from analysis.markdown import code_span, escape_markdown, markdown_table
from analysis.report import REPORT_FILE, write_report
from tests.analysis.conftest import read_json

SCRIPT_NAME = "<img src=x onerror=alert(1)>"


@pytest.mark.parametrize(
    "plain",
    [
        "smoke",
        "table1_repeated-2",
        "block GRU 256 (train_1a2b3_00000)",
        "Table 1 of Gerczuk et al. (MediaEval 2020): seeds 0-2, 18 trials.",
    ],
)
def test_plain_text_reads_as_it_is(plain):
    assert escape_markdown(plain) == plain


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        (SCRIPT_NAME, "&lt;img src=x onerror=alert(1)&gt;"),
        ("a & b", "a &amp; b"),
        ("*bold* _it_ `code`", "\\*bold\\* \\_it\\_ \\`code\\`"),
        ("[link](javascript:x) | ~~gone~~", "\\[link\\](javascript:x) \\| \\~\\~gone\\~\\~"),
        ("# heading\n- item\n1. one", "\\# heading\n\\- item\n1\\. one"),
        ("a\\*b", "a\\\\\\*b"),
    ],
)
def test_markdown_and_html_are_escaped(text, escaped):
    assert escape_markdown(text) == escaped


def test_table_cells_and_code_spans_hold_no_html():
    lines = markdown_table(("name", "score"), [("<b>x</b> & y | z", "1")])
    assert lines[2] == "| &lt;b&gt;x&lt;/b&gt; &amp; y \\| z | 1 |"
    assert code_span("/data/a`b") == "``/data/a`b``"
    assert code_span("`start") == "`` `start ``"


def test_a_report_shows_a_hostile_study_name_and_trial_name_as_text(hand_study):
    description = read_json(hand_study / "study.json")
    description["name"] = SCRIPT_NAME
    (hand_study / "study.json").write_text(json.dumps(description))
    for trial in (hand_study / "trials").iterdir():  # whichever is best, its name is in prose
        metrics = read_json(trial / "metrics.json")
        metrics["trial_name"] = f"<b onmouseover=x>{trial.name}</b> *"
        (trial / "metrics.json").write_text(json.dumps(metrics))
    report = write_report(hand_study, resamples=20, track=False)
    text = (report.out / REPORT_FILE).read_text()
    assert "<img" not in text and "<b" not in text
    assert text.splitlines()[0].startswith("# Study &lt;img src=x onerror=alert(1)&gt;: results")
    assert "&lt;b onmouseover=x&gt;t1&lt;/b&gt; \\* (t1)" in text  # the best, in prose


def test_the_mlflow_note_is_the_escaped_description(tmp_path):
    from mlflow import MlflowClient

    from tracking.names import NOTE_TAG
    from tracking.runs import study_experiment

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = study_experiment(client, "s", f"Rows of {SCRIPT_NAME}, *seeds* 0-2.\n")
    note = client.get_experiment(experiment_id).tags[NOTE_TAG]
    assert note == "Rows of &lt;img src=x onerror=alert(1)&gt;, \\*seeds\\* 0-2."
