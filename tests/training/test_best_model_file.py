"""best_model.pt: one writer, one reader, and nothing in it runs code when read."""

from __future__ import annotations

import pickle

import pytest
import torch

from mer_models.training.checkpoint import CheckpointDamaged, load_best_model, save_best_model


class Planted:
    """What a planted file would unpickle: a call on load."""

    def __reduce__(self):
        return (print, ("planted code ran",))


def test_a_best_model_reads_back_as_written(tmp_path):
    weights = {"layer.weight": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "best_model.pt"
    save_best_model(path, weights, {"model": "crnn"}, ["a", "b"], {"mean": [0.0], "std": [1.0]})
    saved = load_best_model(path)
    assert torch.equal(saved["model"]["layer.weight"], weights["layer.weight"])
    assert saved["tags"] == ["a", "b"] and saved["config"] == {"model": "crnn"}
    assert not list(tmp_path.glob("*.partial*"))


def test_a_planted_pickle_or_an_incomplete_file_is_refused(tmp_path, capsys):
    planted = tmp_path / "planted.pt"
    torch.save({"model": {}, "config": Planted(), "tags": [], "band_stats": {}}, planted)
    with pytest.raises(CheckpointDamaged, match="does not load as a checkpoint"):
        load_best_model(planted)
    assert "planted code ran" not in capsys.readouterr().out
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Planted()))
    with pytest.raises(CheckpointDamaged):
        load_best_model(raw)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}, "tags": []}, partial)
    with pytest.raises(CheckpointDamaged, match="missing config, band_stats"):
        load_best_model(partial)
