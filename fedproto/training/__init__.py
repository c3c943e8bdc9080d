"""Training on a worker: train configs as the client writes them, built-in losses, the worker's engine.

- :mod:`fedproto.training.config`: :class:`TrainConfig`, what a client sends (it becomes a
  :class:`~fedproto.types.TrainSpec` on the wire);
- :mod:`fedproto.training.losses`: the built-in losses a config may name;
- :mod:`fedproto.training.engine`: :class:`TrainingState`, the worker's fit/evaluate loop, and
  :class:`ModelRegistry`, the architectures a worker offers by name.

The records a fit or an evaluation returns (:class:`FitResult`, :class:`EvaluateResult` and its
:class:`EvaluateKind`, :class:`FitProgressEvent`) live in :mod:`fedproto.types` beside the other wire
records, so the codec needs no training code; they are re-exported here. Coordinating many workers
(FedAvg, averaging) is :mod:`fedproto.federated`.
"""

from __future__ import annotations

from fedproto.training.config import TrainConfig
from fedproto.training.engine import ModelRegistry, TrainingState
from fedproto.training.losses import BUILTIN_LOSSES, builtin_loss
from fedproto.types import EvaluateKind, EvaluateResult, FitProgressEvent, FitResult, TrainSpec

__all__ = [
    "BUILTIN_LOSSES",
    "EvaluateKind",
    "EvaluateResult",
    "FitProgressEvent",
    "FitResult",
    "ModelRegistry",
    "TrainConfig",
    "TrainSpec",
    "TrainingState",
    "builtin_loss",
]
