"""Simulated federations: many virtual clients hosted by a few real fedproto workers, local or on Ray.

:func:`run` deals a real data set (scikit-learn's digits) out to ``clients`` virtual clients
(:mod:`~fedproto.simulation.partition`: IID or Dirichlet label skew), starts a few hosts that each hold
a slice of the clients' datasets (:mod:`~fedproto.simulation.backends`: worker processes on loopback,
or Ray actors), and trains a model with :class:`~fedproto.federated.FedAvg` over the real protocol,
sampling a fraction of the clients every round. ``fedproto simulate`` is its command line
(:mod:`~fedproto.simulation.command`).
"""

from __future__ import annotations

from fedproto.simulation.engine import (
    STRATEGY_NAMES,
    SimulationConfig,
    SimulationConfigError,
    SimulationResult,
    digits_mlp,
    round_line,
    run,
)
from fedproto.simulation.partition import PartitionError, label_skew, load_digits_split, partition

__all__ = [
    "STRATEGY_NAMES",
    "PartitionError",
    "SimulationConfig",
    "SimulationConfigError",
    "SimulationResult",
    "digits_mlp",
    "label_skew",
    "load_digits_split",
    "partition",
    "round_line",
    "run",
]
