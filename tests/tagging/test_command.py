"""python -m mer_models.tag: the JSON lines other tools read, the table, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mer_models.audio.frontend import melspec_file
from mer_models.training.thresholds import read_thresholds
from tagging.command import main
from tests.tagging.conftest import expected_probabilities

pytestmark = pytest.mark.slow


def _lines(capsys):
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_json_lines_carry_top_n_and_the_tags_that_pass(runs, songs, capsys):
    run = runs["seed0"]
    files = [str(songs["song"]), str(songs["short"])]
    assert main([*files, "--model", str(run), "--top", "4", "--json"]) == 0
    records, _ = _lines(capsys)
    tags, thresholds = read_thresholds(run / "thresholds.txt")
    for record, path in zip(records, files, strict=True):
        assert list(record) == ["file", "top", "passed"] and record["file"] == path
        melspec = melspec_file(path)
        frames = melspec.shape[1]
        starts = [0, 128, frames - 128] if frames > 256 else [0]  # 8 s and 1 s
        expected = expected_probabilities(run, melspec, starts)
        order = np.argsort(-expected, kind="stable")
        assert [entry["tag"] for entry in record["top"]] == [tags[i] for i in order[:4]]
        probabilities = [entry["probability"] for entry in record["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
        np.testing.assert_allclose(probabilities, expected[order[:4]], atol=2e-6)
        passing = {tags[i] for i in range(len(tags)) if expected[i] > thresholds[i]}
        assert set(record["passed"]) == passing


def test_a_fusion_averages_its_members(study, songs, capsys):
    song = str(songs["song"])
    for trial in ("seed0", "seed1"):
        main([song, "--model", str(study / "trials" / trial), "--top", "56", "--json"])
    main([song, "--model", str(study), "--fusion", "top2", "--top", "56", "--json"])
    (first, second, fused), _ = _lines(capsys)

    def as_dict(record):
        return {entry["tag"]: entry["probability"] for entry in record["top"]}

    a, b, f = as_dict(first), as_dict(second), as_dict(fused)
    assert len(f) == 56
    for tag in f:
        assert f[tag] == pytest.approx((a[tag] + b[tag]) / 2, abs=2e-6)


def test_a_bad_file_is_named_and_the_others_are_still_tagged(runs, songs, capsys):
    files = [str(songs["broken"]), str(songs["song"]), str(songs["empty"])]
    assert main([*files, "--model", str(runs["seed0"]), "--json", "--top", "2"]) == 1
    records, err = _lines(capsys)
    assert [record["file"] for record in records] == files  # one line per file, in order
    assert ["error" in record for record in records] == [True, False, True]
    assert "cannot decode the audio" in records[0]["error"] and "top" in records[1]
    assert "broken.mp3: cannot decode the audio" in err
    assert "empty.wav: the recording is empty" in err
    assert "2 of 3 file(s) could not be tagged" in err


def test_the_table_lists_top_tags_thresholds_and_passed(runs, songs, capsys):
    assert main([str(songs["song"]), "--model", str(runs["seed1"]), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model: run {runs['seed1']}")
    assert "song.wav  (3 windows)" in out
    assert out.count("mood/theme---") >= 3 and "passed:" in out


def test_a_model_folder_without_its_files_is_an_error(tmp_path, songs, capsys):
    (tmp_path / "run").mkdir()
    assert main([str(songs["song"]), "--model", str(tmp_path / "run")]) == 1
    assert "best_model.pt" in capsys.readouterr().err


def test_the_printed_model_path_tags_and_a_fusion_needs_its_study(study, songs, capsys):
    song = str(songs["song"])
    trial = study / "trials" / "seed0"
    assert main([song, "--model", str(trial), "--top", "3", "--json"]) == 0
    assert main([song, "--model", str(trial / "best_model.pt"), "--top", "3", "--json"]) == 0
    (by_folder, by_file), _ = _lines(capsys)
    assert by_file == by_folder  # the best_model.pt path a study prints names the trial
    assert main([song, "--model", str(trial), "--fusion", "top2"]) == 1
    err = capsys.readouterr().err
    assert "--fusion top2 names a fusion of a study" in err and f"give the study ({study})" in err
    missing = study.parent / "nowhere"
    assert main([song, "--model", str(missing)]) == 1
    assert f"no study.json in {missing})" in capsys.readouterr().err  # the place named once
