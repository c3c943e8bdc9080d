"""Federated learning on the coordinator: strategies that train one model with many workers.

This is where aggregation strategies live. :class:`FedAvg` (:mod:`fedproto.federated.fedavg`) drives
remote workers round after round through the public client API, and :func:`average_weights`
(:mod:`fedproto.federated.averaging`) is its aggregation step. What runs *on* a worker (the training
engine, train configs, losses) is in :mod:`fedproto.training`; this package only coordinates.
"""

from __future__ import annotations

from fedproto.federated.averaging import average_weights
from fedproto.federated.fedavg import FedAvg, FedAvgError, RoundCallback, RoundRecord, WorkerRound

__all__ = ["FedAvg", "FedAvgError", "RoundCallback", "RoundRecord", "WorkerRound", "average_weights"]
