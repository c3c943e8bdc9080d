"""Models, data and the training loop every benchmark shares, with no fedproto import.

The Flower side (``baselines/flower_side.py``) runs in its own virtual environment without fedproto and
imports this module too, so both stacks train exactly the same model on exactly the same data with
exactly the same loop: the loop fedproto's worker runs (``TrainingState.fit``): seeded afresh at every
fit, a seeded shuffle, SGD steps on slices of the dataset tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def seeded_mlp(dims: Sequence[int], seed: int) -> nn.Sequential:
    """:func:`mlp` initialised under ``torch.manual_seed(seed)`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return mlp(dims)


def random_classification(
    samples: int, features: int, classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features from N(0, 1) and targets that depend on them (a random linear teacher), so it learns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features), dtype=np.float32)
    teacher = rng.standard_normal((features, classes), dtype=np.float32)
    y = np.argmax(x @ teacher + 0.5 * rng.standard_normal((samples, classes), dtype=np.float32), axis=1)
    return x, y.astype(np.int64)


def save_npz(path: Path, features: np.ndarray, targets: np.ndarray) -> Path:
    """Write a dataset as fedproto's ``.npz`` layout (``features`` and ``targets``)."""
    np.savez(path, features=features, targets=targets)
    return path


def load_npz(path: Path | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a dataset written by :func:`save_npz`."""
    with np.load(path) as data:
        return torch.from_numpy(data["features"].copy()), torch.from_numpy(data["targets"].copy())


def train(
    model: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int,
    epochs: int,
    lr: float,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """fedproto's training loop (``TrainingState.fit``), run here: returns final and mean loss."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    size = len(features)
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(size, generator=generator)
            for start in range(0, size, batch_size):
                index = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = loss_fn(model(features[index]), targets[index])
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    return {"final_loss": losses[-1], "mean_loss": sum(losses) / len(losses), "samples": size * epochs}


def accuracy(model: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of samples whose argmax prediction is the target."""
    model.eval()
    with torch.no_grad():
        return float((model(features).argmax(dim=1) == targets).float().mean())
