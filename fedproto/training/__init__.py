"""Remote training: train configs, the worker's training engine, built-in losses, federated averaging."""

from __future__ import annotations

from fedproto.training.averaging import average_weights
from fedproto.training.config import TrainConfig, TrainSpec
from fedproto.training.engine import (
    EvaluateResult,
    FitProgressEvent,
    FitResult,
    ModelRegistry,
    TrainingState,
)
from fedproto.training.losses import BUILTIN_LOSSES, builtin_loss

__all__ = [
    "BUILTIN_LOSSES",
    "EvaluateResult",
    "FitProgressEvent",
    "FitResult",
    "ModelRegistry",
    "TrainConfig",
    "TrainSpec",
    "TrainingState",
    "average_weights",
    "builtin_loss",
]
