"""A worker that hosts many simulated clients: one :class:`~fedproto.Worker`, one dataset per client.

A simulated federation has far more clients than processes: each host is a real fedproto worker that
holds the datasets of a contiguous slice of the clients, under their keys (``client-00042``), and the
coordinator trains a client by fitting on that client's dataset key. A host does not receive its data:
it loads the digits and computes the partition again from the :class:`HostSpec` (the partition is
seeded, so every process gets the same one) and keeps only its own clients' samples.

``python -m fedproto.simulation.host --spec JSON`` runs one host in a process (the ``local`` backend
starts these): it reads its token from the environment variable ``FEDPROTO_SIMULATION_TOKEN``, listens
on a free loopback port, prints ``READY <url>`` on stdout once it accepts connections, and stops
gracefully on SIGTERM. The ``ray`` backend builds the same worker inside a Ray actor instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedproto.server import Worker
from fedproto.simulation.partition import client_key, load_digits_split, partition

__all__ = ["IDENTITY", "READY", "TEST_KEY", "TOKEN_ENV", "HostSpec", "build_host_worker", "main"]

#: The environment variable a host process reads its token from (never a command-line argument, which
#: any local user could read).
TOKEN_ENV = "FEDPROTO_SIMULATION_TOKEN"
#: The identity the coordinator connects as.
IDENTITY = "coordinator"
#: What a host process prints, followed by its URL, once it accepts connections.
READY = "READY"
#: The key of the held-out test digits every host also holds (the clients' evaluation dataset).
TEST_KEY = "test"


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """What one host holds: clients ``first`` up to (not including) ``stop`` of a seeded partition.

    ``clients``, ``partition``, ``alpha`` and ``seed`` describe the whole federation's data (the same on
    every host); ``worker_id`` names the worker in its Welcome.
    """

    worker_id: str
    clients: int
    partition: str
    alpha: float
    seed: int
    first: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.first < self.stop <= self.clients:
            raise ValueError(
                f"a host holds clients first..stop-1 with 0 <= first < stop <= {self.clients}, "
                f"got {self.first}..{self.stop - 1}"
            )

    @property
    def keys(self) -> list[str]:
        """The dataset keys of this host's clients."""
        return [client_key(index) for index in range(self.first, self.stop)]

    def to_json(self) -> str:
        """The spec as one JSON object (for a process's command line)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HostSpec:
        """The spec written by :meth:`to_json`."""
        return cls(**json.loads(text))


def build_host_worker(spec: HostSpec, token: str, *, training_threads: int = 1) -> Worker:
    """A worker holding the datasets of ``spec``'s clients and the test digits (``test``), requiring
    ``token`` (identity ``coordinator``).

    One PyTorch thread trains by default: a small model gains nothing from more, and several hosts share
    the machine's cores.
    """
    data = load_digits_split(spec.seed)
    parts = partition(data.y_train, spec.clients, scheme=spec.partition, alpha=spec.alpha, seed=spec.seed)
    worker = Worker(
        spec.worker_id, tokens={IDENTITY: token}, shutdown_grace=1.0, training_threads=training_threads
    )
    features = torch.from_numpy(data.x_train)
    targets = torch.from_numpy(data.y_train)
    for index in range(spec.first, spec.stop):
        rows = torch.from_numpy(parts[index])
        worker.add_dataset(
            (features[rows].clone(), targets[rows].clone()),
            key=client_key(index),
            description=f"simulated client {index} of {spec.clients} ({spec.partition})",
        )
    worker.add_dataset(
        (torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)),
        key=TEST_KEY,
        description="the held-out test digits",
    )
    return worker


async def _serve(spec: HostSpec, token: str) -> None:
    worker = build_host_worker(spec, token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await worker.start("127.0.0.1", 0)
    print(f"{READY} {worker.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await worker.stop(grace=1.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one host until SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fedproto.simulation.host", description=__doc__)
    parser.add_argument("--spec", required=True, help="the HostSpec as JSON")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"fedproto.simulation.host: set {TOKEN_ENV} to the coordinator's token", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = HostSpec.from_json(args.spec)
    except (ValueError, TypeError) as exc:
        print(f"fedproto.simulation.host: bad --spec: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(spec, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
