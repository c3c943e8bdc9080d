"""Federated clients as (worker, dataset) pairs.

In federated learning a *client* is one party's data. A fedproto worker may hold many such datasets
(one per simulated device, say), so a client is a connection to a worker plus the key of a dataset on
it: :class:`FederatedClient`. A round samples clients, not connections; the clients of one worker train
one after the other on that worker (its training state is per identity), different workers at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fedproto.client import AsyncClient, Client
from fedproto.federated.errors import FedAvgConfigError

__all__ = ["FederatedClient", "clients_of"]


@dataclass(frozen=True, slots=True)
class FederatedClient:
    """One federated client: a connected worker and the key of the dataset it trains on there.

    - ``connection``: a :class:`~fedproto.AsyncClient` or :class:`~fedproto.Client` connected to the
      worker (several clients may share one connection: they are then trained one after the other).
    - ``dataset_key``: the worker's dataset this client trains on.
    - ``eval_dataset_key``: the dataset evaluating the global model for this client (None: the
      coordinator's default, see :class:`~fedproto.federated.FedAvg`).
    - ``name``: the client's id in round records, checkpoints and sampling (None: the worker's id, and
      ``"<worker id>/<dataset key>"`` when a worker holds several clients). Ids must be unique.
    """

    connection: AsyncClient | Client
    dataset_key: str
    eval_dataset_key: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.connection, (AsyncClient, Client)):
            raise TypeError(
                f"expected fedproto.AsyncClient or fedproto.Client, not {type(self.connection).__name__}"
            )
        if not isinstance(self.dataset_key, str) or not self.dataset_key:
            raise FedAvgConfigError(f"a client needs a non-empty dataset_key, got {self.dataset_key!r}")
        if self.eval_dataset_key is not None and (
            not isinstance(self.eval_dataset_key, str) or not self.eval_dataset_key
        ):
            raise FedAvgConfigError(
                f"eval_dataset_key must be None or non-empty, got {self.eval_dataset_key!r}"
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise FedAvgConfigError(f"a client's name must be None or non-empty, got {self.name!r}")


def clients_of(
    connection: AsyncClient | Client,
    dataset_keys: Iterable[str],
    *,
    eval_dataset_key: str | None = None,
) -> list[FederatedClient]:
    """One :class:`FederatedClient` per dataset key, all on ``connection``.

    ``clients_of(worker, [f"client-{i}" for i in range(100)])`` makes 100 clients of one worker.
    """
    keys: Sequence[str] = list(dataset_keys)
    if isinstance(dataset_keys, str):
        raise TypeError("dataset_keys must be an iterable of keys, not one string")
    if len(set(keys)) != len(keys):
        raise FedAvgConfigError(f"dataset keys repeat: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return [FederatedClient(connection, key, eval_dataset_key) for key in keys]
