"""The training step: eager on CPU, one CUDA graph on CUDA, the same losses either way.

The CUDA tests are skipped without a GPU. Tolerances there: the graph
replays the very kernels the eager step launches, so fp32 losses agree to
1e-4 relative over 12 steps (cuDNN may still pick another algorithm for a
replay); under bf16 autocast 2e-2.
"""

from __future__ import annotations

import contextlib
import io
import re
import time

import numpy as np
import pytest
import torch

from mer_models.config import TrainConfig
from mer_models.data.augment import BatchPreprocess
from mer_models.data.dataset import EvalWindows, make_loader
from mer_models.data.scaling import BandStats, band_stats
from mer_models.data.sources import window_source
from mer_models.models import build_model
from mer_models.training.step import (
    EagerStep,
    GraphCaptureFailed,
    GraphedStep,
    TrainingSnapshot,
    load_optimizer_state,
    make_optimizer,
    make_step,
    uses_cuda_graphs,
)
from mer_models.training.trainer import TrainingLoop, split_tables
from tests.conftest import write_dataset

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
SMALL = TrainConfig(width=4, units=8, window=64, batch_size=4, cbam=True, workers=0, seed=0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster than two on a shared machine, and as exact."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batches(config: TrainConfig, steps: int, device: torch.device, n_tags: int = 6) -> list:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        windows = torch.randn(config.batch_size, 1, 96, config.window, generator=generator)
        labels = (torch.rand(config.batch_size, n_tags, generator=generator) < 0.3).float()
        out.append((windows.to(device), labels.to(device)))
    return out


def model_and_optimizer(config: TrainConfig, device: torch.device, **adam):
    torch.manual_seed(config.seed)
    model = build_model(config, n_tags=6).to(device)
    if adam:
        return model, torch.optim.Adam(model.parameters(), lr=config.lr, **adam)
    return model, make_optimizer(model, config, device)


def test_cpu_never_uses_the_graph():
    config = SMALL.replace(cuda_graphs=True)
    assert not uses_cuda_graphs(config, CPU)
    assert uses_cuda_graphs(config, CUDA)
    assert not uses_cuda_graphs(config.replace(cuda_graphs=False), CUDA)
    model, optimizer = model_and_optimizer(config, CPU)
    assert optimizer.param_groups[0]["capturable"] is False
    assert optimizer.param_groups[0]["fused"] is None
    step = make_step(model, optimizer, config, CPU)
    assert type(step) is EagerStep
    unit = BandStats(np.zeros(96, np.float32), np.ones(96, np.float32))
    loop = TrainingLoop(model, optimizer, CPU, config, False, BatchPreprocess(unit))
    assert type(loop.step) is EagerStep


def _eager_step(model, optimizer) -> EagerStep:
    return EagerStep(model, optimizer, torch.nn.BCEWithLogitsLoss(), contextlib.nullcontext)


@pytest.mark.parametrize(
    ("adam", "says"),
    [
        ({}, "parameter group 0 is not capturable;"),
        ({"fused": True}, "not capturable (fused alone is not enough)"),
    ],
)
def test_the_graphed_step_refuses_an_optimizer_it_cannot_capture(adam, says):
    """Plain, or fused but not capturable: Adam's update would fail at capture."""
    model, optimizer = model_and_optimizer(SMALL, CPU, **adam)
    with pytest.raises(ValueError, match=re.escape(says)) as refused:
        GraphedStep(_eager_step(model, optimizer), batch_size=4)
    assert "make_optimizer" in str(refused.value)
    capturable = torch.optim.Adam(model.parameters(), capturable=True, fused=True)
    assert GraphedStep(_eager_step(model, capturable), batch_size=4).model_name == "AttentionCRNN"


def test_a_failed_capture_ends_the_run_with_one_paragraph():
    """Here the capture fails for want of CUDA; any failure reads the same way: the model,
    the batch, the cause, and the switch that trains without the graph."""
    config = SMALL.replace(cuda_graphs=True)
    model, _ = model_and_optimizer(config, CPU)
    capturable = torch.optim.Adam(model.parameters(), capturable=True)
    step = GraphedStep(_eager_step(model, capturable), batch_size=4, model_name="crnn")
    windows, labels = batches(config, 1, CPU)[0]
    with pytest.raises(GraphCaptureFailed) as failure:
        step(windows, labels)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("the training step of model crnn could not be captured")
    assert "(windows of shape (4, 1, 96, 64), torch.float32)" in message
    assert "--no-cuda-graphs" in message and "cuda_graphs: false" in message
    assert isinstance(failure.value.__cause__, RuntimeError)
    assert str(failure.value.__cause__).splitlines()[0] in message
    assert not step.captured
    with pytest.raises(GraphCaptureFailed):  # no eager fallback: it fails again, never trains
        step(windows, labels)


def test_the_eager_step_is_the_plain_pytorch_step():
    data = batches(SMALL, 4, CPU)
    model, optimizer = model_and_optimizer(SMALL, CPU)
    step = make_step(model, optimizer, SMALL, CPU)
    ours = [float(step(w, y)) for w, y in data]
    model, optimizer = model_and_optimizer(SMALL, CPU, weight_decay=0.0)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bare = []
    for windows, labels in data:
        loss = loss_fn(model(windows), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bare.append(float(loss.detach()))
    assert ours == bare
    assert ours[-1] != ours[0]  # it trains


@pytest.mark.parametrize("trained_before", [False, True])
def test_a_snapshot_undoes_the_warm_up_steps(trained_before):
    """What the graph's warm-up relies on: after `restore`, training repeats a run without it."""
    config = SMALL.replace(dropout=0.5)
    data = batches(config, 5, CPU)

    def run(with_warm_up: bool) -> list[float]:
        model, optimizer = model_and_optimizer(config, CPU)
        step = make_step(model, optimizer, config, CPU)
        if trained_before:
            step(*data[4])
        torch.manual_seed(9)
        if with_warm_up:
            snapshot = TrainingSnapshot(model, optimizer)
            for _ in range(3):
                step(*data[0])
            snapshot.restore()
        losses = [float(step(w, y)) for w, y in data[:4]]
        return losses + [float(t.sum()) for t in model.state_dict().values()]

    assert run(with_warm_up=True) == run(with_warm_up=False)


def test_loaded_moments_take_the_layout_of_a_channels_last_model():
    """A CPU run's contiguous Adam state, loaded for a channels_last (CUDA-style) model."""
    data = batches(SMALL, 2, CPU)
    model, optimizer = model_and_optimizer(SMALL, CPU)
    step = make_step(model, optimizer, SMALL, CPU)
    for windows, labels in data:
        step(windows, labels)
    saved = _round_trip(optimizer.state_dict())
    torch.manual_seed(SMALL.seed)
    last = build_model(SMALL, n_tags=6).to(memory_format=torch.channels_last)
    fused = torch.optim.Adam(last.parameters(), lr=SMALL.lr, fused=True)
    load_optimizer_state(fused, saved)
    convs = [p for p in last.parameters() if p.dim() == 4 and min(p.shape[1:]) > 1]
    assert convs and all(not p.is_contiguous() for p in convs)  # really channels_last
    for param in last.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert fused.state[param][key].stride() == param.stride()
    pairs = zip(model.parameters(), last.parameters(), strict=True)
    for before, after in pairs:
        torch.testing.assert_close(
            fused.state[after]["exp_avg"], optimizer.state[before]["exp_avg"]
        )


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=False)


def test_a_graph_runs_optimizer_state_continues_exactly_in_an_eager_run():
    """A capturable, fused Adam's saved state (flags and all) resumes a plain Adam exactly."""
    data = batches(SMALL, 6, CPU)

    def run(model, optimizer, part):
        step = make_step(model, optimizer, SMALL, CPU)
        return [float(step(w, y)) for w, y in part]

    model, optimizer = model_and_optimizer(SMALL, CPU)
    uninterrupted = run(model, optimizer, data)
    final = {name: t.clone() for name, t in model.state_dict().items()}

    model, optimizer = model_and_optimizer(SMALL, CPU)
    first = run(model, optimizer, data[:3])
    saved = _round_trip({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    for group in saved["optimizer"]["param_groups"]:  # as a graph run on CUDA saves it
        group.update(capturable=True, fused=True)
    model, optimizer = model_and_optimizer(SMALL, CPU)
    model.load_state_dict(saved["model"])
    load_optimizer_state(optimizer, saved["optimizer"])
    assert optimizer.param_groups[0]["capturable"] is False
    assert optimizer.param_groups[0]["fused"] is None
    second = run(model, optimizer, data[3:])
    assert first + second == uninterrupted
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=0)


def test_an_eager_runs_optimizer_state_loads_into_a_fused_adam():
    """The other way: `step` moves to where a fused (or capturable) Adam keeps it."""
    data = batches(SMALL, 3, CPU)
    model, optimizer = model_and_optimizer(SMALL, CPU)
    step = make_step(model, optimizer, SMALL, CPU)
    for windows, labels in data:
        step(windows, labels)
    saved = _round_trip(optimizer.state_dict())
    fused_model, fused = model_and_optimizer(SMALL, CPU, fused=True)
    fused_model.load_state_dict(model.state_dict())
    load_optimizer_state(fused, saved)
    assert fused.param_groups[0]["fused"] is True
    state = next(iter(fused.state.values()))
    assert state["step"].dtype == torch.float32 and float(state["step"]) == 3.0
    windows, labels = data[0]
    expected = float(step(windows, labels))
    fused_step = _eager_step(fused_model, fused)
    assert float(fused_step(windows, labels)) == pytest.approx(expected, rel=1e-6)
    fused_weights = fused_model.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fused_weights[name], tensor, rtol=1e-5, atol=1e-6)


def test_evaluation_at_its_own_batch_size_gives_the_same_predictions(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    paths = write_dataset(
        tmp_path / "data", {"train": [200] * 6, "validation": [150] * 11, "test": [120] * 2}
    )
    tables = split_tables(paths)
    config = SMALL.replace(eval_crops=3)
    stats = band_stats(tables["train"], paths, config.window)
    model = build_model(config, n_tags=len(tables["train"].tags))
    optimizer = make_optimizer(model, config, CPU)
    loop = TrainingLoop(model, optimizer, CPU, config, False, BatchPreprocess(stats))
    source = window_source(paths, tables["validation"])
    dataset = EvalWindows(tables["validation"], source, config.window, 3)
    at_training_size = loop.predict(make_loader(dataset, config.batch_size, 0))
    at_eval_size = loop.predict(make_loader(dataset, 8, 0))
    one_at_a_time = loop.predict(make_loader(dataset, 1, 0))
    assert at_eval_size.dtype == np.float32 and at_eval_size.shape == (11, 4)
    np.testing.assert_allclose(at_eval_size, at_training_size, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one_at_a_time, at_training_size, rtol=0, atol=1e-6)
    assert not torch.is_inference_mode_enabled()
    assert not model.training


# --- CUDA only ---------------------------------------------------------------------------


def _losses(config: TrainConfig, graphed: bool, steps: int = 12, short_last: bool = False):
    data = batches(config, steps, CUDA)
    if short_last:
        data.append((data[0][0][:3], data[0][1][:3]))
    model, optimizer = model_and_optimizer(config.replace(cuda_graphs=True), CUDA)
    step = make_step(model, optimizer, config.replace(cuda_graphs=graphed), CUDA)
    torch.manual_seed(5)
    losses = [float(step(w, y)) for w, y in data]
    return losses, step, model


@needs_cuda
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bf16", [False, True])
def test_graph_and_eager_steps_give_the_same_losses(cell, bf16):
    config = SMALL.replace(cell=cell, bf16=bf16, batch_size=8, layers=2)
    eager, eager_step, eager_model = _losses(config, graphed=False, short_last=True)
    graph, graph_step, graph_model = _losses(config, graphed=True, short_last=True)
    assert type(eager_step) is EagerStep and type(graph_step) is GraphedStep
    assert graph_step.captured
    tolerance = 2e-2 if bf16 else 1e-4
    np.testing.assert_allclose(graph, eager, rtol=tolerance)
    assert graph[0] != graph[-2]  # it trains: the first step is a replay, not a warm-up
    graph_weights = graph_model.state_dict()
    for name, tensor in eager_model.state_dict().items():
        torch.testing.assert_close(graph_weights[name], tensor, rtol=tolerance * 10, atol=tolerance)


@needs_cuda
def test_the_attention_cnn_runs_in_a_graph():
    config = SMALL.replace(model="attention_cnn", batch_size=8, bf16=False)
    eager, *_ = _losses(config, graphed=False)
    graph, step, _ = _losses(config, graphed=True)
    assert step.captured
    np.testing.assert_allclose(graph, eager, rtol=1e-4)


@needs_cuda
def test_dropout_in_the_graph_is_seeded():
    config = SMALL.replace(dropout=0.5, batch_size=8, bf16=False)
    first, *_ = _losses(config, graphed=True)
    second, *_ = _losses(config, graphed=True)
    assert first == second


@needs_cuda
def test_the_graphed_step_returns_a_detached_loss():
    """A replay's loss holds no autograd graph: the epoch's running sum would keep nodes."""
    config = SMALL.replace(batch_size=8, bf16=False)
    model, optimizer = model_and_optimizer(config.replace(cuda_graphs=True), CUDA)
    step = make_step(model, optimizer, config.replace(cuda_graphs=True), CUDA)
    for windows, labels in batches(config, 2, CUDA):
        loss = step(windows, labels)
        assert loss.grad_fn is None and not loss.requires_grad
    assert step.captured and step.static_loss.grad_fn is None


@needs_cuda
def test_dropout_masks_in_the_graph_are_the_eager_steps_masks():
    """The same random state gives the same masks, replayed or eager: equal losses, where
    another seed's masks (or none) would differ far beyond the tolerance."""
    config = SMALL.replace(dropout=0.5, batch_size=8, bf16=False)
    eager, *_ = _losses(config, graphed=False)
    graph, step, _ = _losses(config, graphed=True)
    assert step.captured
    np.testing.assert_allclose(graph, eager, rtol=1e-4)
    without, *_ = _losses(config.replace(dropout=0.0), graphed=False)
    assert not np.allclose(without, eager, rtol=1e-3)  # the masks matter to the losses


class SlowWindows(torch.utils.data.Dataset):
    """The `batches` data, a few milliseconds a sample: loader workers still deliver (and
    the pin-memory thread still pins) while the step is captured."""

    def __init__(self, data: list) -> None:
        self.windows = torch.cat([windows for windows, _ in data])
        self.labels = torch.cat([labels for _, labels in data])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        time.sleep(0.003)
        return self.windows[index], self.labels[index]


@needs_cuda
def test_the_graph_captures_while_pinned_loader_workers_run():
    """The trainer's loader: 4 workers and pinned memory. Its pin-memory thread allocates
    host memory during the capture, which a global-mode capture would refuse."""
    config = SMALL.replace(batch_size=8, bf16=False)
    data = batches(config, 24, CPU)
    loader = make_loader(SlowWindows(data), config.batch_size, workers=4)
    assert loader.pin_memory
    model, optimizer = model_and_optimizer(config.replace(cuda_graphs=True), CUDA)
    step = make_step(model, optimizer, config.replace(cuda_graphs=True), CUDA)
    torch.manual_seed(5)
    losses = []
    for windows, labels in loader:
        assert windows.is_pinned()
        windows = windows.to(CUDA, non_blocking=True)
        losses.append(float(step(windows, labels.to(CUDA, non_blocking=True))))
    assert step.captured and len(losses) == 24
    model, optimizer = model_and_optimizer(config.replace(cuda_graphs=True), CUDA)
    eager = make_step(model, optimizer, config.replace(cuda_graphs=False), CUDA)
    torch.manual_seed(5)
    expected = [float(eager(w.to(CUDA), y.to(CUDA))) for w, y in data]
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
