"""Which trial failures Ray may retry: a failed CUDA graph capture is never one of them."""

from __future__ import annotations

import torch

from mer_models.training.step import GraphCaptureFailed
from study.trainable import _one_line, _retryable


def test_a_failed_capture_fails_the_trial_for_good_with_its_paragraph():
    """Every retry would capture the same graph: the study shows the failure once."""
    paragraph = "the training step of model crnn could not be captured ... --no-cuda-graphs"
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory during capture")
        except torch.OutOfMemoryError as error:
            raise GraphCaptureFailed(paragraph) from error
    except GraphCaptureFailed as failure:
        assert not _retryable(failure)
        assert _one_line(failure) == f"GraphCaptureFailed: {paragraph}"
    assert _retryable(torch.OutOfMemoryError("CUDA out of memory"))  # outside a capture
