"""Federated learning on the coordinator: many clients train one model, round after round.

- :class:`FedAvg` (:mod:`fedproto.federated.fedavg`) drives the rounds over remote workers through the
  public client API: availability, sampling, training, streaming aggregation, evaluation, checkpoints.
- A client is a (worker, dataset) pair: :class:`FederatedClient`, :func:`clients_of`
  (:mod:`fedproto.federated.clients`); a round samples clients with a :class:`ClientSampler`, by
  default the reproducible :class:`SeededSampler` (:mod:`fedproto.federated.sampling`).
- Strategies over one interface, :class:`Strategy` (:mod:`fedproto.federated.strategies`):
  :class:`FedAvgStrategy`, :class:`FedProx`, :class:`FedAdam`, :class:`FedYogi`, :class:`Median`,
  :class:`TrimmedMeanStrategy`; their aggregators (streaming or buffered) are in
  :mod:`fedproto.federated.aggregation`, and :func:`average_weights` is the plain weighted mean.
- Records (:class:`RoundRecord`, :class:`ClientRound`), run directories
  (:mod:`fedproto.federated.checkpoint`) and errors (:class:`FedAvgError`, :class:`FedAvgConfigError`,
  :class:`ResumeError`).

What runs *on* a worker (the training engine, train configs, losses) is in :mod:`fedproto.training`;
this package only coordinates.
"""

from __future__ import annotations

from fedproto.federated.aggregation import (
    Aggregator,
    BufferedMean,
    CoordinateMedian,
    StreamingMean,
    TrimmedMean,
    UpdateMismatchError,
)
from fedproto.federated.averaging import average_weights
from fedproto.federated.checkpoint import RunDirectory
from fedproto.federated.clients import FederatedClient, clients_of
from fedproto.federated.errors import FedAvgConfigError, FedAvgError, ResumeError
from fedproto.federated.fedavg import FedAvg
from fedproto.federated.records import ClientRound, RoundCallback, RoundRecord, WorkerRound
from fedproto.federated.sampling import ClientSampler, SeededSampler
from fedproto.federated.strategies import (
    FedAdam,
    FedAvgStrategy,
    FedProx,
    FedYogi,
    Median,
    Strategy,
    TrimmedMeanStrategy,
)

__all__ = [
    "Aggregator",
    "BufferedMean",
    "ClientRound",
    "ClientSampler",
    "CoordinateMedian",
    "FedAdam",
    "FedAvg",
    "FedAvgConfigError",
    "FedAvgError",
    "FedAvgStrategy",
    "FedProx",
    "FedYogi",
    "FederatedClient",
    "Median",
    "ResumeError",
    "RoundCallback",
    "RoundRecord",
    "RunDirectory",
    "SeededSampler",
    "Strategy",
    "StreamingMean",
    "TrimmedMean",
    "TrimmedMeanStrategy",
    "UpdateMismatchError",
    "WorkerRound",
    "average_weights",
    "clients_of",
]
