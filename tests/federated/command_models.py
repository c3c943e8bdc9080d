"""Model factories the ``fedproto fedavg`` tests name with ``--model command_models:...``."""

from __future__ import annotations

from torch import nn


def classifier() -> nn.Module:
    """A small classifier of 4 features into 3 classes."""
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))


def other_classifier() -> nn.Module:
    """The same task with another architecture (other parameter names and shapes)."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
