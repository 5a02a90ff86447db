"""analysis/rungs.py: the report's Rungs section from a study's rungs.json."""

from __future__ import annotations

import json

import pytest

from analysis.rungs import read_rungs, rungs_section
from study.race import decide


def entries() -> list[dict]:
    scores = {
        "block GRU 256": {0: 0.80, 1: 0.81, 2: 0.79},
        "no attention GRU 256": {0: 0.80, 1: 0.795, 2: 0.805},
        "attention CNN": {0: 0.62, 1: 0.64, 2: 0.61},
    }
    return [d.to_dict() for d in decide(1, 6, scores, 2, 0.05)]


def test_a_race_without_rungs_json_has_no_section(tmp_path):
    assert read_rungs(tmp_path) is None


def test_the_section_shows_every_row_and_the_evidence_that_dropped_one(tmp_path):
    (tmp_path / "rungs.json").write_text(json.dumps(entries()))
    lines = rungs_section(read_rungs(tmp_path), "macro ROC-AUC")
    text = "\n".join(lines)
    assert lines[0] == "## Rungs"
    table = [line for line in lines if line.startswith("| 1 | 6 |")]
    assert len(table) == 3
    assert table[0].endswith("| best (the best mean) |")
    assert table[1].endswith("| kept (in the top 2 of 3) |")  # kept whatever its p
    assert table[2].endswith("| dropped (significantly worse) |")
    assert "| attention CNN | 3 | 62.3 | -17.7 [" in table[2]
    assert "- attention CNN: dropped at rung 1 (epoch 6), -17.7 [" in text
    assert "points against block GRU 256 (p adjusted " in text


def test_a_rungs_json_written_before_decisions_said_why_still_reads(tmp_path):
    older = [{k: v for k, v in entry.items() if k != "why"} for entry in entries()]
    (tmp_path / "rungs.json").write_text(json.dumps(older))
    table = [line for line in rungs_section(read_rungs(tmp_path), "x") if "| 1 | 6 |" in line]
    assert [line.rsplit("|", 2)[1].strip() for line in table] == ["best", "kept", "dropped"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not readable JSON"),
        ('{"rung": 1}', "expected a JSON array"),
        ('[{"rung": 1, "epoch": 2}]', "entry 0 lacks row, n, mean, difference_to_best"),
    ],
)
def test_a_damaged_rungs_json_is_refused_with_the_file_named(tmp_path, content, expected):
    (tmp_path / "rungs.json").write_text(content)
    with pytest.raises(ValueError, match=expected) as raised:
        read_rungs(tmp_path)
    assert str(tmp_path / "rungs.json") in str(raised.value)
