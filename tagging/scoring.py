"""Tag probabilities of one mel-spectrogram: windows, standardisation, batched inference.

A track is cut into windows of the model's training length: every window
(hop = window, the last one aligned with the end of the track so every frame
is seen and none is padding), or K windows spread over the track
(``crops``), as validation does with ``eval_crops``. A track shorter than
one window is padded with `PAD_DB` (-200 dB, silence), as training pads. Each window is
standardised with the training split's band statistics, and the sigmoid
probabilities are averaged over windows, then over fusion members.
"""

from __future__ import annotations

import numpy as np
import torch

from mer_models.data.augment import BatchPreprocess
from mer_models.data.windows import centred_starts, read_window
from tagging.tagger import Tagger, TrainedModel


def window_starts(n_frames: int, window: int, crops: int | None = None) -> np.ndarray:
    """Window starts: K spread windows with ``crops``, else every window to the end."""
    if crops is not None:
        if crops < 1:
            raise ValueError(f"crops must be >= 1, got {crops}")
        return centred_starts(n_frames, window, crops)
    if n_frames <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_frames - window + 1, window, dtype=np.int64)
    if starts[-1] + window < n_frames:
        starts = np.append(starts, n_frames - window)
    return starts


@torch.no_grad()
def model_probabilities(
    model: TrainedModel,
    melspec: np.ndarray,
    device: torch.device,
    crops: int | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, int]:
    """float64 (tags,) mean sigmoid over the windows of a (96, T) melspec, and the window count."""
    window = model.config.window
    starts = window_starts(melspec.shape[1], window, crops)
    standardise = BatchPreprocess(model.stats).to(device)  # as evaluation does: no masks
    total = torch.zeros(len(model.tags), dtype=torch.float64)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        windows = np.stack([read_window(melspec, int(s), window) for s in chunk])[:, None]
        inputs = standardise(torch.from_numpy(windows).to(device))  # (B, 1, bands, window)
        logits = model.network(inputs)  # (B, tags)
        total += torch.sigmoid(logits.float()).sum(dim=0).double().cpu()
    return (total / len(starts)).numpy(), len(starts)


def tag_probabilities(
    tagger: Tagger,
    melspec: np.ndarray,
    device: torch.device,
    crops: int | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, int]:
    """The weighted mean over the tagger's members; returns (tags,) and the first's windows."""
    fused = np.zeros(len(tagger.tags))
    counts = []
    for model, weight in zip(tagger.members, tagger.weights, strict=True):
        probabilities, count = model_probabilities(model, melspec, device, crops, batch_size)
        fused += weight * probabilities
        counts.append(count)
    return fused / sum(tagger.weights), counts[0]
