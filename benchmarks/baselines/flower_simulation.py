"""Flower's Ray simulation of the simulation benchmark, run inside ``benchmarks/.flower-venv``.

``python flower_simulation.py --data FILE --clients N --fraction F --rounds R ...`` runs
``flwr.simulation.start_simulation`` (Flower's Ray-based virtual client engine) over N virtual clients,
each a ``NumPyClient`` made on demand by ``client_fn`` for the partition Flower hands it, with
``FedAvg(fraction_fit=F)``, one CPU per client actor on a private Ray instance of ``--num-cpus`` CPUs
(no dashboard), and prints one JSON line: each round's wall time (from the strategy's
``configure_fit`` to the end of its ``aggregate_fit``), the global model's accuracy on the test
digits after each round (evaluated centrally, outside the timed span, as the fedproto side does) and
this process's peak resident memory during the rounds.

``FILE`` (written by ``benchmarks/simulation.py`` from ``fedproto.simulation.partition``, so that both
sides train the very same clients) holds the training and test digits and every client's sample
indices. Each client trains with the loop in :mod:`benchmarks.models` (the one fedproto's worker runs)
with SGD with momentum 0.9 made afresh per fit, like the fedproto side's ``reset_optimizer``.
Telemetry is off (``FLWR_TELEMETRY_ENABLED=0``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for benchmarks.models

import numpy as np
import torch

from benchmarks.models import accuracy, seeded_mlp, train


def _weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def _load(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    state = dict(zip(model.state_dict().keys(), (torch.from_numpy(np.array(a)) for a in arrays), strict=True))
    model.load_state_dict(state, strict=True)


@functools.lru_cache(maxsize=1)
def _data(path: str) -> dict[str, np.ndarray]:
    """The data file, read once per process (Flower makes a client per call, in long-lived actors)."""
    with np.load(path) as data:
        return {name: data[name].copy() for name in data.files}


def _rss() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
    """Samples this process's resident memory every 5 ms; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class ClientFactory:
    """Flower's ``client_fn``: ``factory(context)`` is the client of the partition Flower hands it.

    A class of this module rather than a closure, so that Ray's workers unpickle it by reference, with a
    one-argument ``__call__``, the signature Flower checks for.
    """

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def __call__(self, context: Any) -> Any:
        return _client(int(context.node_config["partition-id"]), **self.settings)


def _client(
    cid: int, *, data_path: str, dims: tuple[int, ...], seed: int, lr: float, batch_size: int, epochs: int
) -> Any:
    from flwr.client import NumPyClient

    class Trainer(NumPyClient):
        def __init__(self, cid: int) -> None:
            arrays = _data(data_path)
            rows = arrays["indices"][arrays["offsets"][cid] : arrays["offsets"][cid + 1]]
            self.features = torch.from_numpy(arrays["x_train"][rows])
            self.targets = torch.from_numpy(arrays["y_train"][rows])
            self.model = seeded_mlp(dims, seed)

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict]:
            _load(self.model, parameters)
            torch.set_num_threads(1)
            optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
            out = train(
                self.model,
                self.features,
                self.targets,
                batch_size=batch_size,
                epochs=epochs,
                lr=lr,
                seed=seed,
                optimizer=optimizer,
            )
            return _weights(self.model), len(self.features), {"loss": out["mean_loss"]}

    return Trainer(cid).to_client()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--fraction", type=float, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--dims", type=int, nargs="+", required=True)
    args = parser.parse_args()

    import flwr
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import start_simulation

    # Ray's workers unpickle client_fn by reference: its class must come from this module under its
    # import name, not from __main__.
    from benchmarks.baselines import flower_simulation as this

    data_path = str(Path(args.data).resolve())
    data = _data(data_path)
    test_x, test_y = torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"])
    model = seeded_mlp(args.dims, args.seed)
    client_fn = this.ClientFactory(
        data_path=data_path,
        dims=tuple(args.dims),
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
    )

    started: dict[int, float] = {}
    seconds: dict[int, float] = {}
    accuracies: dict[int, float] = {}
    failed: list[str] = []

    def evaluate(server_round: int, arrays: list[np.ndarray], config: dict[str, Any]) -> tuple[float, dict]:
        _load(model, arrays)
        accuracies[server_round] = accuracy(model, test_x, test_y)
        return 0.0, {"accuracy": accuracies[server_round]}

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            started[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, results, failures)
            seconds[server_round] = time.perf_counter() - started[server_round]
            if failures:
                failed.append(f"round {server_round}: {len(failures)} clients failed: {failures[0]!r}")
            return out

    sampled = max(1, int(args.fraction * args.clients + 1e-9))
    strategy = TimedFedAvg(
        fraction_fit=args.fraction,
        fraction_evaluate=0.0,
        min_fit_clients=sampled,
        min_evaluate_clients=0,
        min_available_clients=args.clients,
        evaluate_fn=evaluate,
        initial_parameters=ndarrays_to_parameters(_weights(model)),
    )
    rss_before = _rss()
    peak = _PeakRss()
    t0 = time.perf_counter()
    start_simulation(
        client_fn=client_fn,
        num_clients=args.clients,
        config=ServerConfig(num_rounds=args.rounds),
        strategy=strategy,
        client_resources={"num_cpus": 1, "num_gpus": 0.0},
        ray_init_args={"include_dashboard": False, "num_cpus": args.num_cpus, "ignore_reinit_error": True},
    )
    total = time.perf_counter() - t0
    peak_rss = peak.stop()
    rounds = [{"round": r, "seconds": seconds[r], "accuracy": accuracies.get(r)} for r in sorted(seconds)]
    print(
        json.dumps(
            {
                "flwr": flwr.__version__,
                "torch": torch.__version__,
                "rounds": rounds,
                "initial_accuracy": accuracies.get(0),
                "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
                "total_seconds": total,
                "rss_before": rss_before,
                "peak_rss": peak_rss,
                "failures": failed,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
