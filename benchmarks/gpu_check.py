"""One command for a machine with a GPU: the CUDA tests and the GPU path's figures, in five minutes.

It needs what `mer_models` and the benchmarks need (PyTorch, numpy,
scikit-learn, PyYAML, filelock), and pytest for the tests; no Ray or MLflow:

    PYTHONPATH=. python benchmarks/gpu_check.py [--quick] [--json FILE]

In turn, each part guarded (a part that fails is a null figure and a line
in `errors`; the others still run):

1. the CUDA tests (those skipped without CUDA, in `CUDA_TEST_FILES`), in a
   pytest subprocess; without pytest they are not run, and `errors` says so;
2. `rnn_dtype`: the dtype the paper-size model's recurrent head runs in
   under bf16 autocast ("float32" is right: cuDNN's autocast RNN would give
   float16);
3. `dropout_graph_vs_eager`: the largest relative difference between the
   losses of 8 graphed and 8 eager steps with dropout 0.5 from the same
   random state (the same masks give ~1e-6; other masks ~1e-1);
4. `pinned_capture_ok`: one epoch of `train()` at paper size with 4 loader
   workers and pinned memory, the step captured while they run;
5. `samples_per_second` at paper size, batch 32, for the graphed, eager and
   torch.compile steps in bf16 and fp32 (`benchmarks/trainer.py`), and the
   graphed bf16 step's share of the GPU's dense bf16 peak (`PEAK_BF16_TFLOPS`
   by GPU name; null for a GPU not listed);
6. `shared_4_total_samples_per_second`: four paper-size trials training at
   once on the GPU, one process each, as `benchmarks/gpu_share.py` runs them.

A part is skipped once `--max-seconds` have passed. The last line printed
is one JSON object of the figures; `--json FILE` also writes it after every
part, so a run stopped from outside keeps what it measured. Without a CUDA
GPU it prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from concurrent_training import run_concurrently  # noqa: E402
from gpu_share import trial_config  # noqa: E402
from trainer import (  # noqa: E402
    SIZES,
    cuda_variants,
    flops_per_sample,
    make_batches,
    measure,
    measure_compiled,
)

from mer_models.config import TrainConfig  # noqa: E402
from mer_models.data.synthetic import synthetic_dataset  # noqa: E402
from mer_models.models import build_model  # noqa: E402
from mer_models.training.step import make_optimizer, make_step  # noqa: E402
from mer_models.training.trainer import train  # noqa: E402

# The test files that hold CUDA tests; those are the tests marked skipif there.
CUDA_TEST_FILES = (
    "tests/training/test_step.py",
    "tests/training/test_trainer.py",
    "tests/models/test_recurrent.py",
    "tests/data/test_augment.py",
)
CUDA_TESTS = "skipif and not slow"  # pytest -m: the tests skipped without CUDA
# Dense bf16 tensor-core peaks, TFLOP/s, by a part of the GPU's name: the first that matches.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
SPEEDS = ("graph_bf16", "eager_bf16", "compile_bf16", "graph_fp32", "eager_fp32")
# benchmarks/trainer.py's key suffix of each step design, and its name here.
TRAINER_VARIANTS = {
    "": "graph_bf16",
    "_eager": "eager_bf16",
    "_fp32": "graph_fp32",
    "_fp32_eager": "eager_fp32",
}
SHARED_TRIALS = 4
DROPOUT_TOLERANCE = 1e-4  # fp32, same masks: the graph replays the eager step's kernels


class Settings:
    """How long each part runs: the full check, or `--quick`'s shorter one."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.steps = 20 if quick else 40  # timed batches per pass
        self.repeats = 1 if quick else 2
        self.tracks = 600 if quick else 1200  # synthetic dataset: 60% of it trains
        self.shared_epochs = 2 if quick else 3  # the first is not timed
        self.test_timeout = 240


def peak_tflops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak, or None for a GPU not in `PEAK_BF16_TFLOPS`."""
    for part, peak in PEAK_BF16_TFLOPS:
        if part in device_name:
            return peak
    return None


def pytest_counts(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line ("3 passed, 1 failed, 2 skipped in 4.0s")."""
    summaries = [line for line in output.splitlines() if re.search(r"\d+ \w+.* in [\d.]+s", line)]
    if not summaries:
        raise ValueError("no pytest summary line in its output")
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, word in re.findall(r"(\d+) (\w+)", summaries[-1]):
        key = "errors" if word in ("error", "errors") else word
        if key in counts:
            counts[key] += int(number)
    return counts


class Check:
    """The figures so far, each part timed and guarded: a part that raises is recorded in
    `errors` (its figure stays null) and the check goes on."""

    def __init__(self, device_name: str, max_seconds: float, json_path: Path | None) -> None:
        self.started = time.perf_counter()
        self.max_seconds = max_seconds
        self.json_path = json_path
        self.figures: dict[str, Any] = {
            "device": device_name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tests_passed": None,
            "tests_failed": None,
            "tests_skipped": None,
            "rnn_dtype": None,
            "dropout_graph_vs_eager": None,
            "pinned_capture_ok": None,
            "samples_per_second": dict.fromkeys(SPEEDS),
            "gflops_per_sample": None,
            "peak_bf16_tflops": peak_tflops(device_name),
            "peak_share_graph_bf16": None,
            "shared_4_total_samples_per_second": None,
            "shared_4_per_trial_samples_per_second": None,
            "seconds": {},
            "errors": [],
        }

    def run(self, name: str, part: Callable[[], Any]) -> Any:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.max_seconds:
            self.errors(name, f"not run: {elapsed:.0f} s of --max-seconds {self.max_seconds:.0f}")
            return None
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        try:
            return part()
        except Exception as error:  # noqa: BLE001 - recorded; the other parts still run
            lines = str(error).strip().splitlines()
            self.errors(name, f"{type(error).__name__}: {lines[0] if lines else ''}"[:500])
            return None
        finally:
            self.figures["seconds"][name] = round(time.perf_counter() - started, 1)
            gc.collect()
            torch.cuda.empty_cache()
            self.save()

    def errors(self, name: str, message: str) -> None:
        self.figures["errors"].append(f"{name}: {message}")
        print(f"{name}: {message}", flush=True)

    def save(self) -> None:
        if self.json_path is not None:
            self.json_path.write_text(json.dumps(self.figures, indent=2))


def run_cuda_tests(settings: Settings) -> dict[str, int]:
    if importlib.util.find_spec("pytest") is None:
        raise ModuleNotFoundError(
            "pytest is not installed here, so the CUDA tests did not run (put pytest on "
            "PYTHONPATH, or pip install pytest)"
        )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", CUDA_TESTS]
    paths = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run(
        [*command, *CUDA_TEST_FILES],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": paths},
        capture_output=True,
        text=True,
        timeout=settings.test_timeout,
    )
    for line in done.stdout.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            print(f"  {line}", flush=True)
    if done.returncode not in (0, 1):  # 0: all passed, 1: some failed; else it did not run
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"pytest exited with status {done.returncode}: {tail}")
    counts = pytest_counts(done.stdout)
    if counts["passed"] + counts["failed"] + counts["errors"] == 0:
        raise RuntimeError(
            f"no CUDA test ran ({counts['skipped']} skipped): pytest's process sees no GPU"
        )
    return counts


def rnn_dtype(device: torch.device) -> str:
    """The dtypes of the recurrent head's RNN outputs, logits and gradients under bf16
    autocast, in the paper-size model as it trains (channels_last): "float32" when all are
    float32, else each named ("rnn float16, logits float32, gradients float32")."""
    config = SIZES["paper"]
    model = build_model(config, n_tags=56).to(device, memory_format=torch.channels_last)
    seen: dict[str, torch.dtype] = {}
    model.head.rnn.register_forward_hook(lambda m, i, out: seen.update(rnn=out[0].dtype))
    windows = make_batches(config.replace(batch_size=4), 1, device)[0][0]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(windows.contiguous(memory_format=torch.channels_last))
    logits.float().sum().backward()
    gradients = sorted({str(p.grad.dtype) for p in model.head.parameters()})
    found = {"rnn": str(seen["rnn"]), "logits": str(logits.dtype), "gradients": "/".join(gradients)}
    if set(found.values()) == {"torch.float32"}:
        return "float32"
    return ", ".join(f"{part} {dtype.replace('torch.', '')}" for part, dtype in found.items())


def dropout_graph_vs_eager(device: torch.device) -> float:
    """Largest relative loss difference, graphed against eager steps, from one random state."""
    config = TrainConfig(
        width=8, units=32, window=128, batch_size=16, dropout=0.5, bf16=False, channels_last=False
    )
    batches = make_batches(config, 8, device)

    def losses(graphed: bool) -> list[float]:
        torch.manual_seed(0)
        model = build_model(config, n_tags=56).to(device)
        optimizer = make_optimizer(model, config.replace(cuda_graphs=True), device)
        step = make_step(model, optimizer, config.replace(cuda_graphs=graphed), device)
        model.train()
        torch.manual_seed(5)
        return [float(step(windows, labels)) for windows, labels, _ in batches]

    graph, eager = losses(graphed=True), losses(graphed=False)
    return max(abs(g - e) / abs(e) for g, e in zip(graph, eager, strict=True))


def pinned_capture(paths, work: Path) -> bool:
    """One epoch of the trainer at paper size, 4 pinned loader workers, the step graphed
    (captured on the first full batch while the workers and the pin-memory thread run)."""
    config = SIZES["paper"].replace(workers=4, max_epochs=1, patience=1)
    metrics = train(config, paths, work / "pinned", device="cuda", check_data=False)
    return metrics["epochs_run"] == 1


def speeds(check: Check, settings: Settings, device: torch.device) -> None:
    """samples/s of each step design at paper size, batch 32 (benchmarks/trainer.py)."""
    paper = SIZES["paper"]
    rates = check.figures["samples_per_second"]
    for suffix, config in cuda_variants(paper).items():
        name = TRAINER_VARIANTS[suffix]
        result = check.run(
            name, lambda c=config: measure(c, device, settings.steps, settings.repeats)
        )
        if result is not None:
            rates[name] = round(result["samples_per_second"], 1)
            print(f"  {name}: {rates[name]} samples/s", flush=True)
    flops = check.run("flops", lambda: flops_per_sample(paper))
    if flops is not None:
        check.figures["gflops_per_sample"] = round(flops / 1e9, 3)
        peak = check.figures["peak_bf16_tflops"]
        if peak is not None and rates["graph_bf16"] is not None:
            share = rates["graph_bf16"] * flops / (peak * 1e12)
            check.figures["peak_share_graph_bf16"] = round(share, 4)


def shared_trials(settings: Settings, paths, work: Path) -> list[float]:
    """Each of `SHARED_TRIALS` paper-size trials' samples/s while they train at once."""
    config = trial_config("paper", SHARED_TRIALS, settings.shared_epochs, None, "cuda")
    trials = {f"trial{i}": config for i in range(SHARED_TRIALS)}
    return [timing.samples_per_second for timing in run_concurrently(trials, paths, work, "cuda")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, epochs and tracks")
    parser.add_argument("--json", type=Path, help="also write the figures here, after each part")
    parser.add_argument("--max-seconds", type=float, default=280.0, help="skip parts begun later")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check.py: no CUDA GPU is visible (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); this check is for a machine with one",
            file=sys.stderr,
        )
        return 1
    settings = Settings(args.quick)
    device = torch.device("cuda")
    check = Check(torch.cuda.get_device_name(), args.max_seconds, args.json)
    figures = check.figures
    figures["quick"] = settings.quick
    counts = check.run("tests", lambda: run_cuda_tests(settings))
    if counts is not None:
        figures["tests_passed"] = counts["passed"]
        figures["tests_failed"] = counts["failed"] + counts["errors"]
        figures["tests_skipped"] = counts["skipped"]
        print(f"  {counts}", flush=True)
    figures["rnn_dtype"] = check.run("rnn_dtype", lambda: rnn_dtype(device))
    if figures["rnn_dtype"] not in (None, "float32"):
        check.errors("rnn_dtype", "the recurrent head does not run in float32 under bf16")
    worst = check.run("dropout_graph_vs_eager", lambda: dropout_graph_vs_eager(device))
    if worst is not None:
        figures["dropout_graph_vs_eager"] = float(f"{worst:.3g}")
        if worst > DROPOUT_TOLERANCE:
            check.errors(
                "dropout_graph_vs_eager",
                f"the graph's dropout masks are not the eager step's (losses differ by up to "
                f"{worst:.2e}, over {DROPOUT_TOLERANCE:g})",
            )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work = Path(folder)
        paths = check.run("dataset", lambda: synthetic_dataset(tracks=settings.tracks))
        if paths is not None:  # False: the capture (or the epoch around it) failed
            ran = check.run("pinned_capture", lambda: pinned_capture(paths, work))
            figures["pinned_capture_ok"] = ran is True
        speeds(check, settings, device)
        if paths is not None:
            rates = check.run("shared_4", lambda: shared_trials(settings, paths, work / "shared"))
            if rates is not None:
                figures["shared_4_total_samples_per_second"] = round(sum(rates), 1)
                figures["shared_4_per_trial_samples_per_second"] = [round(r, 1) for r in rates]
    compiled = check.run(
        "compile_bf16",
        lambda: measure_compiled(SIZES["paper"], device, settings.steps, settings.repeats),
    )
    if compiled is not None:
        figures["samples_per_second"]["compile_bf16"] = round(compiled["samples_per_second"], 1)
    figures["seconds"]["total"] = round(time.perf_counter() - check.started, 1)
    check.save()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
