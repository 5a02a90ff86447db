"""Budgets: the training protocol a study runs its search space under.

Precedence, lowest first: TrainConfig defaults, the budget, the search
space's fixed values and sampled parameters.
"""

from __future__ import annotations

BUDGETS: dict[str, dict[str, object]] = {
    # The paper's protocol (Gerczuk et al., MediaEval 2020): ResNet-18 width,
    # 500-frame windows, up to 100 epochs, early stopping after 20.
    "paper": {
        "max_epochs": 100,
        "patience": 20,
        "window": 500,
        "width": 64,
        "batch_size": 32,
        "lr": 3e-4,
    },
    # A few CPU minutes for a whole study on the synthetic dataset: narrow
    # trunk, short windows, a handful of epochs.
    "quick": {
        "max_epochs": 12,
        "patience": 4,
        "window": 128,
        "width": 8,
        "batch_size": 16,
        "lr": 1e-3,
    },
}
