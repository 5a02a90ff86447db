"""Trainer benchmark: training samples per second, our loop against a bare PyTorch loop.

For the paper-size model (ResNet-18 width 64, 500-frame windows, batch 32)
and the small default of the quick budget, both loops run the same model
and the same pre-made batches, alternating, so that the ratio measures the
trainer's own overhead (finite-loss checks, metric bookkeeping, device
handling) and not data loading. FLOPs per sample come from torch's flop
counter.

On CUDA each size is measured as the trainer runs it by default (bf16 +
channels_last, the step as one CUDA graph: key prefix `paper_`), with the
graph off (`_eager`), in fp32 with and without the graph (`_fp32`,
`_fp32_eager`), and the alternative design, the model under
torch.compile(mode="reduce-overhead") with a fused Adam (`_compile`), each
with its share of the GPU's peak bf16 FLOP/s (--peak-tflops). The bare loop
is the eager step, so a graphed variant's `ratio_vs_bare` is its speed-up.

    python benchmarks/trainer.py [--steps N] [--repeats 3] [--peak-tflops 989] [--sizes paper]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mer_models.config import TrainConfig
from mer_models.data.augment import BatchPreprocess
from mer_models.data.scaling import BandStats
from mer_models.models import build_model
from mer_models.training.step import autocast_for, make_optimizer
from mer_models.training.trainer import TrainingLoop

SIZES = {
    "paper": TrainConfig(width=64, window=500, batch_size=32, cell="gru", units=256, cbam=True),
    "small": TrainConfig(width=8, window=128, batch_size=16, cell="gru", units=256, cbam=True),
}


def make_batches(config: TrainConfig, steps: int, device: torch.device) -> list:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        windows = torch.randn(config.batch_size, 1, 96, config.window, generator=generator)
        labels = (torch.rand(config.batch_size, 56, generator=generator) < 0.04).float()
        masks = torch.tensor([[10, 5, 200, 5]]).repeat(config.batch_size, 1)
        batches.append((windows.to(device), labels.to(device), masks.to(device)))
    return batches


def bare_loop(model, optimizer, batches, autocast, memory_format) -> None:
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for windows, labels, _ in batches:
        with autocast():
            logits = model(windows.to(memory_format=memory_format))
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def flops_per_sample(config: TrainConfig) -> float:
    """Forward and backward FLOPs of one training sample."""
    model = build_model(config, n_tags=56)
    windows = torch.randn(2, 1, 96, config.window)
    with FlopCounterMode(display=False) as counter:
        model(windows).sum().backward()
    return counter.get_total_flops() / 2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(config: TrainConfig, device: torch.device, steps: int, repeats: int) -> dict:
    """The trainer's loop (`TrainingLoop.train_epoch`) against the bare eager loop."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config, n_tags=56).to(device, memory_format=memory_format)
    bare_model = build_model(config, n_tags=56).to(device, memory_format=memory_format)
    bare_optimizer = torch.optim.Adam(bare_model.parameters(), lr=config.lr)
    bare_autocast = autocast_for(config.replace(cuda_graphs=False), device)
    unit = BandStats(np.zeros(96, np.float32), np.ones(96, np.float32))
    loop = TrainingLoop(
        model,
        make_optimizer(model, config, device),
        device,
        config,
        config.channels_last,
        BatchPreprocess(unit).to(device),
    )
    batches = make_batches(config, steps, device)
    samples = steps * config.batch_size
    loop.train_epoch(batches[:2], epoch=0)  # warm-up: kernels, allocator, autotuning, capture
    bare_loop(bare_model, bare_optimizer, batches[:2], bare_autocast, memory_format)
    ours, bare = [], []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        bare_loop(bare_model, bare_optimizer, batches, bare_autocast, memory_format)
        synchronize(device)
        bare.append(samples / (time.perf_counter() - started))
        started = time.perf_counter()
        loop.train_epoch(batches, epoch=0)
        synchronize(device)
        ours.append(samples / (time.perf_counter() - started))
    return {
        "samples_per_second": max(ours),
        "bare_samples_per_second": max(bare),
        "ratio_vs_bare": max(ours) / max(bare),
    }


def measure_compiled(config: TrainConfig, device: torch.device, steps: int, repeats: int) -> dict:
    """The alternative to the hand-captured graph: torch.compile(mode="reduce-overhead").

    Inductor fuses the model's kernels and replays forward and backward as
    CUDA graphs (cudagraph trees); the fused Adam update runs after them.
    """
    torch.manual_seed(0)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config, n_tags=56).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    compiled = torch.compile(model, mode="reduce-overhead")
    autocast = autocast_for(config.replace(cuda_graphs=False), device)
    loss_fn = nn.BCEWithLogitsLoss()
    batches = make_batches(config, steps, device)
    samples = steps * config.batch_size

    def run(part) -> None:
        running = torch.zeros((), device=device)
        for windows, labels, _ in part:
            torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                logits = compiled(windows.to(memory_format=memory_format))
            loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach()

    run(batches[:3])  # compile, record the graphs
    rates = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run(batches)
        synchronize(device)
        rates.append(samples / (time.perf_counter() - started))
    return {"samples_per_second": max(rates)}


def cuda_variants(config: TrainConfig) -> dict[str, TrainConfig]:
    """The trainer's step designs measured on CUDA, by key suffix: `config` as it is (bf16,
    channels_last, graphed by default), the graph off, fp32 with and without the graph."""
    fp32 = config.replace(bf16=False, channels_last=False)
    return {
        "": config,
        "_eager": config.replace(cuda_graphs=False),
        "_fp32": fp32,
        "_fp32_eager": fp32.replace(cuda_graphs=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="batches per timed pass (default: 6 CPU, 60 CUDA)"
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (60 if device.type == "cuda" else 6)
    figures: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
    }
    for size in args.sizes:
        config = SIZES[size]
        flops = flops_per_sample(config)
        figures[f"{size}_gflops_per_sample"] = round(flops / 1e9, 3)
        variants = {"": config}
        if device.type == "cuda":
            variants = {**cuda_variants(config), "_compile": config}
        for suffix, variant in variants.items():
            if suffix == "_compile":
                try:
                    result = measure_compiled(variant, device, steps, args.repeats)
                except Exception as error:  # no Triton, an Inductor failure: report, go on
                    figures[f"{size}_compile_error"] = f"{type(error).__name__}: {error}"[:300]
                    print(f"{size}_compile: failed ({figures[f'{size}_compile_error']})")
                    continue
            else:
                result = measure(variant, device, steps, args.repeats)
            for key, value in result.items():
                figures[f"{size}{suffix}_{key}"] = round(value, 3)
            achieved = result["samples_per_second"] * flops
            figures[f"{size}{suffix}_tflops"] = round(achieved / 1e12, 4)
            if device.type == "cuda":
                figures[f"{size}{suffix}_peak_fraction"] = round(
                    achieved / (args.peak_tflops * 1e12), 4
                )
            bare = (
                f", bare {result['bare_samples_per_second']:.1f}, "
                f"ratio {result['ratio_vs_bare']:.3f}"
                if "ratio_vs_bare" in result
                else ""
            )
            print(
                f"{size}{suffix}: ours {result['samples_per_second']:.1f} samples/s{bare}, "
                f"{achieved / 1e12:.3f} TFLOP/s ({flops / 1e9:.2f} GFLOP per sample)",
                flush=True,
            )
        if device.type == "cuda":
            graph = figures[f"{size}_samples_per_second"]
            compiled = figures.get(f"{size}_compile_samples_per_second", 0.0)
            figures[f"{size}_faster_design"] = "cuda_graph" if graph >= compiled else "compile"
    figures["ratio_vs_bare"] = min(v for k, v in figures.items() if k.endswith("ratio_vs_bare"))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
