"""Export a trained model as one file that loads with PyTorch alone.

    python -m tagging.export WHAT --out model.pt2

WHAT is what `python -m tagging --model` takes (a run folder, a study
trial, or a study's best trial). The file is a `torch.export` program
(``torch.export.load(path).module()``): no project code, no Python class of
ours, is needed to run it. It takes raw dB mel windows, (batch, 1, 96,
window) float32 as the dataset's front end makes them, and returns tag
probabilities (batch, tags): standardisation with the training band
statistics and the sigmoid are inside. ``metadata.json`` inside the file
holds the tags, the decision thresholds and the window length.

Why not ONNX: `torch.onnx.export` now needs `onnx` and `onnxscript`, and
checking the result needs `onnxruntime` (about 40 MB of wheels), while
TorchScript (`torch.jit`) is deprecated in the PyTorch we pin. A
`torch.export` program keeps the GRU/LSTM and attention head exact and
loads with the PyTorch the models need anyway.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from mer_models.audio.frontend import FRAME_SIZE, HOP_SIZE, N_BANDS, SAMPLE_RATE
from mer_models.data.augment import BatchPreprocess
from mer_models.data.windows import PAD_DB
from mer_models.files import PARTIAL, umask_mode
from tagging.tagger import ModelSourceError, Tagger, TrainedModel, load_tagger

METADATA = "metadata.json"
_MAX_BATCH = 1 << 16


class Probabilities(nn.Module):
    """Raw dB windows (B, 1, bands, window) -> tag probabilities (B, tags)."""

    def __init__(self, model: TrainedModel) -> None:
        super().__init__()
        self.standardise = BatchPreprocess(model.stats)
        self.network = model.network

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(self.standardise(windows)))


def export_model(tagger: Tagger, out: str | Path) -> Path:
    """Write the single model of ``tagger`` as a torch.export program with its metadata."""
    if len(tagger.members) != 1:
        raise ModelSourceError(
            f"{tagger.description}: a fusion of {len(tagger.members)} models; export its "
            f"members one by one (their trial folders) and average their probabilities"
        )
    out = Path(out)
    model = tagger.members[0]
    module = Probabilities(model).eval()
    example = torch.zeros(2, 1, N_BANDS, model.config.window)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    with torch.no_grad(), warnings.catch_warnings():
        # nn.GRU/LSTM re-assign their flat weights while traced: harmless, the values are equal.
        warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights")
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    metadata = {
        "model": tagger.description,
        "input": f"(batch, 1, {N_BANDS}, {model.config.window}) float32 dB mel windows",
        "output": f"(batch, {len(tagger.tags)}) tag probabilities; average them over windows",
        "front_end": {
            "sample_rate": SAMPLE_RATE,
            "frame_size": FRAME_SIZE,
            "hop_size": HOP_SIZE,
            "bands": N_BANDS,
        },
        "window": model.config.window,
        "pad_db": PAD_DB,
        "tags": list(tagger.tags),
        "thresholds": [float(value) for value in tagger.thresholds],
        "config": model.config.to_dict(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # The archive's root folder is named after the file, so the staging file has the final
    # name, in a temporary folder beside the target (one rename away, on one filesystem).
    staging_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL}-", dir=out.parent))
    try:
        staging = staging_dir / out.name
        torch.export.save(program, staging, extra_files={METADATA: json.dumps(metadata, indent=2)})
        staging.chmod(umask_mode())
        staging.replace(out)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagging.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="run folder, trial folder or study")
    parser.add_argument("--out", required=True, help="output file (.pt2)")
    parser.add_argument("--results", default="ray_results", help="where study names are looked up")
    args = parser.parse_args(argv)
    if Path(args.out).suffix.lower() == ".onnx":
        parser.error("--out: the export is a torch.export program (.pt2), not ONNX; see --help")
    try:
        tagger = load_tagger(args.model, results_root=args.results)
        out = export_model(tagger, args.out)
    except (ModelSourceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{out}: {tagger.description}, {len(tagger.tags)} tags")
    return 0


if __name__ == "__main__":
    sys.exit(main())
