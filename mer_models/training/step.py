"""One training step (forward, BCE loss, backward, Adam update), eager or as one CUDA graph.

At the paper's batch of 32 the model is launch-bound on a GPU: an H100 runs
the eager step at ~1,200 samples/s (1.2% of its bf16 peak), the same step
captured whole in one CUDA graph at ~4,100. `GraphedStep` captures forward,
loss, backward and the optimizer update once, on static tensors, and then
replays the graph for every full batch. Both steps share one interface,
`step(windows, labels) -> loss`, and `make_step` picks one from the config and
the device: the graph only on CUDA with `cuda_graphs` on, never on CPU.

The graph changes no result's meaning: every step a run takes, the first
included, is a replay (warm-up iterations run on a copy of the state that is
then put back), a short batch runs the same step eagerly on the same
gradient tensors, and the optimizer state loads between graph and eager runs
(`load_optimizer_state`). A capture that fails ends the run with
`GraphCaptureFailed` (one paragraph: the model, the batch, `--no-cuda-graphs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mer_models.config import TrainConfig

Autocast = Callable[[], contextlib.AbstractContextManager]

# Warm-up iterations before capture: cuDNN picks its algorithms, autograd and
# the optimizer allocate their state, outside the graph.
WARMUP_STEPS = 3


def uses_cuda_graphs(config: TrainConfig, device: torch.device) -> bool:
    """True where training steps run as one CUDA graph: CUDA, with `cuda_graphs` on."""
    return config.cuda_graphs and device.type == "cuda"


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam over the model's parameters; capturable and fused where steps are graphed.

    A capturable Adam keeps its step counts on the device, so that the update
    reads them inside the graph; fused runs the whole update as one kernel.
    """
    graphed = uses_cuda_graphs(config, device)
    return torch.optim.Adam(
        model.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        capturable=graphed,
        fused=True if graphed else None,
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a saved optimizer state whichever kind of step (graph or eager) saved it.

    `load_state_dict` takes the saved groups' `capturable`/`fused`/`foreach`
    flags as its own and places `step` by them; the live optimizer keeps its
    flags instead, so a graph run's checkpoint continues eagerly on a CPU and
    an eager run's continues in a graph. Moments take their parameter's
    memory layout.
    """
    flags = ("capturable", "fused", "foreach")
    live = [{name: group.get(name) for name in flags} for group in optimizer.param_groups]
    groups = [{**group, **own} for group, own in zip(saved["param_groups"], live, strict=True)]
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})
    # A fused update needs each moment laid out like its parameter; a CPU run's
    # state is contiguous while a CUDA model may be channels_last.
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                if value.stride() != param.stride():
                    state[key] = torch.empty_like(param).copy_(value)


def autocast_for(config: TrainConfig, device: torch.device) -> Autocast:
    """bf16 autocast on CUDA with `bf16` on; otherwise a context that does nothing.

    Where steps are graphed the weight-cast cache is off: a cast cached
    during capture would be a stale copy on replay.
    """
    if config.bf16 and device.type == "cuda":
        cache = not uses_cuda_graphs(config, device)
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext


@dataclass
class EagerStep:
    """The step as plain PyTorch calls: the CPU path, and CUDA with `cuda_graphs` off."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    autocast: Autocast

    def __call__(self, windows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Train on one batch already on the device; returns the batch's mean loss (detached)."""
        self.optimizer.zero_grad(set_to_none=True)
        return self.forward_backward_update(windows, labels)

    def forward_backward_update(self, windows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.model(windows)
        loss = self.loss_fn(logits.float(), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class GraphCaptureFailed(RuntimeError):
    """The training step could not be captured as a CUDA graph; the message is one paragraph
    that names the model, the batch and how to train without the graph.

    The run ends here: a raise inside `torch.cuda.graph` can leave the capture
    stream current, so continuing eagerly in the same process is not safe.
    """


def capture_failure(model_name: str, windows: torch.Tensor, error: BaseException) -> str:
    """The one paragraph a failed capture ends a run with."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return (
        f"the training step of model {model_name} could not be captured as a CUDA graph on its "
        f"first full batch (windows of shape {tuple(windows.shape)}, {windows.dtype}): {cause}. "
        "The run stops here (an eager step in the same process is not safe after a failed "
        "capture); train without the graph: --no-cuda-graphs (python -m mer_models.train, "
        "study/run.py) or cuda_graphs: false in the config."
    )


class GraphedStep:
    """The step captured whole in one CUDA graph on its first full batch, then replayed.

    Full batches (`batch_size` rows) are copied into the graph's static
    input tensors and the graph replays; any other batch runs the same step
    eagerly. Before capture, `WARMUP_STEPS` iterations run on a side stream
    on the first batch; the model's parameters and buffers, the optimizer's
    state and the CUDA random state are put back afterwards, so the warm-up
    trains nothing and a restored run replays exactly what an uninterrupted
    one does. Dropout draws from the default CUDA generator inside the graph
    too (each replay advances its Philox offset), so `torch.manual_seed`
    before an epoch fixes its masks.

    The optimizer must be capturable (`make_optimizer` builds it so), and its
    state tensors must stay the ones the graph captured: load any saved
    state before the first step. Its learning rate and weight decay are
    captured as constants (the trainer keeps them fixed); a schedule would
    need them as device tensors. A capture that fails raises
    `GraphCaptureFailed`, whose one-paragraph message names `model_name`,
    the batch's shape and the switch that turns the graph off.
    """

    def __init__(
        self,
        eager: EagerStep,
        batch_size: int,
        memory_format: torch.memory_format = torch.contiguous_format,
        model_name: str | None = None,
    ) -> None:
        for index, group in enumerate(eager.optimizer.param_groups):
            if not group.get("capturable"):
                fused = " (fused alone is not enough)" if group.get("fused") else ""
                raise ValueError(
                    f"GraphedStep: the optimizer's parameter group {index} is not capturable"
                    f"{fused}; an update replayed in a CUDA graph needs capturable=True, which "
                    "keeps the step counts on the device: build it with make_optimizer"
                )
        self.eager = eager
        self.batch_size = batch_size
        self.memory_format = memory_format
        self.model_name = model_name or type(eager.model).__name__
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_windows: torch.Tensor | None = None
        self.static_labels: torch.Tensor | None = None
        self.static_loss: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, windows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Train on one batch already on the device; returns the batch's mean loss (detached)."""
        if windows.shape[0] != self.batch_size:
            return self._eager(windows, labels)
        if self.graph is None:
            try:
                self._capture(windows, labels)
            except Exception as error:
                message = capture_failure(self.model_name, windows, error)
                raise GraphCaptureFailed(message) from error
        self.static_windows.copy_(windows, non_blocking=True)
        self.static_labels.copy_(labels, non_blocking=True)
        self.graph.replay()
        return self.static_loss.clone()  # the next replay overwrites static_loss

    def _eager(self, windows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            return self.eager(windows, labels)
        # Zeroed in place, not dropped: the graph reads and writes these gradient tensors.
        self.eager.optimizer.zero_grad(set_to_none=False)
        return self.eager.forward_backward_update(windows, labels)

    def _capture(self, windows: torch.Tensor, labels: torch.Tensor) -> None:
        model, optimizer = self.eager.model, self.eager.optimizer
        for module in model.modules():
            if isinstance(module, nn.RNNBase):
                module.flatten_parameters()  # cuDNN's one weight buffer, captured by address
        self.static_windows = windows.clone(memory_format=self.memory_format)
        self.static_labels = labels.clone()
        saved = TrainingSnapshot(model, optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.eager(self.static_windows, self.static_labels)
        torch.cuda.current_stream().wait_stream(side)
        saved.restore()
        optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates them
        graph = torch.cuda.CUDAGraph()
        # thread_local: the loader's pin-memory thread may allocate while we capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            with self.eager.autocast():
                logits = model(self.static_windows)
            loss = self.eager.loss_fn(logits.float(), self.static_labels)
            loss.backward()
            optimizer.step()
        self.static_loss = loss.detach()  # what a replay returns holds no autograd graph
        saved.restore_random_state()
        self.graph = graph


class TrainingSnapshot:
    """Copies of everything a training step changes, put back in place (same tensors).

    Adam's state for a parameter that had none is put back as zeros with a
    zero step count: exactly the state Adam creates on its first step. The
    random state is that of the generator the model's dropout draws from:
    its CUDA device's, or the CPU's.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.tensors = {name: t.detach().clone() for name, t in model.state_dict().items()}
        self.optimizer_state = {
            param: {key: _clone(value) for key, value in state.items()}
            for param, state in optimizer.state.items()
        }
        self.device = next(model.parameters()).device
        cuda = self.device.type == "cuda"
        self.random_state = torch.cuda.get_rng_state(self.device) if cuda else torch.get_rng_state()

    @torch.no_grad()
    def restore(self) -> None:
        for name, tensor in self.model.state_dict().items():
            tensor.copy_(self.tensors[name])
        for param, state in self.optimizer.state.items():
            before = self.optimizer_state.get(param)
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue
                if before is None:
                    value.zero_()
                else:
                    value.copy_(before[key])
        self.restore_random_state()

    def restore_random_state(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(self.random_state, self.device)
        else:
            torch.set_rng_state(self.random_state)


def _clone(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def make_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> EagerStep | GraphedStep:
    """The training step for this config and device: graphed on CUDA (unless
    `cuda_graphs` is off), eager everywhere else."""
    eager = EagerStep(model, optimizer, nn.BCEWithLogitsLoss(), autocast_for(config, device))
    if uses_cuda_graphs(config, device):
        return GraphedStep(eager, config.batch_size, memory_format, model_name=config.model)
    return eager
