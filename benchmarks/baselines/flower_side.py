"""Flower's side of the federated benchmark, run inside ``benchmarks/.flower-venv`` (never the project's).

``python flower_side.py --data DIR --port P --clients N --rounds R ...`` starts N Flower clients, each in
its own process (``flwr.client.start_client`` with a ``NumPyClient``), then a Flower server in this
process (``flwr.server.start_server`` with its ``FedAvg`` strategy, all clients in every round, no
federated evaluation), on 127.0.0.1, and prints one JSON line: each round's wall time (from the
strategy's ``configure_fit`` to the end of its ``aggregate_fit``: weights out, local training, weights
back, averaging) and the global model's accuracy on the test set, evaluated centrally after each round
(outside the timed span), exactly as the fedproto side does.

Client ``i`` trains on ``DIR/shard-i.npz`` with the loop in :mod:`benchmarks.models` (the one fedproto's
worker runs), the same model, seed, batch size, local epochs and learning rate. Telemetry is off
(``FLWR_TELEMETRY_ENABLED=0``): nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for benchmarks.models

import numpy as np
import torch

from benchmarks.models import accuracy, load_npz, seeded_mlp, train


def _weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def _load(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    state = dict(zip(model.state_dict().keys(), (torch.from_numpy(np.array(a)) for a in arrays), strict=True))
    model.load_state_dict(state, strict=True)


def client(args: argparse.Namespace) -> None:
    import flwr
    from flwr.client import NumPyClient

    features, targets = load_npz(Path(args.data) / f"shard-{args.cid}.npz")
    model = seeded_mlp(args.dims, args.seed)

    class Trainer(NumPyClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return _weights(model)

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict]:
            _load(model, parameters)
            out = train(
                model,
                features,
                targets,
                batch_size=args.batch_size,
                epochs=args.epochs,
                lr=args.lr,
                seed=args.seed,
            )
            return _weights(model), len(features), {"loss": out["mean_loss"]}

    flwr.client.start_client(
        server_address=f"127.0.0.1:{args.port}",
        client=Trainer().to_client(),
        insecure=True,
        max_retries=200,
        max_wait_time=60.0,
    )


def server(args: argparse.Namespace) -> dict[str, Any]:
    import flwr
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig
    from flwr.server.strategy import FedAvg

    test_x, test_y = load_npz(Path(args.data) / "test.npz")
    model = seeded_mlp(args.dims, args.seed)
    started: dict[int, float] = {}
    seconds: dict[int, float] = {}
    accuracies: dict[int, float] = {}

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
                raise RuntimeError(
                    f"round {server_round}: {len(failures)} Flower clients failed: {failures!r}"
                )
            return out

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.clients,
        min_evaluate_clients=0,
        min_available_clients=args.clients,
        evaluate_fn=evaluate,
        initial_parameters=ndarrays_to_parameters(_weights(model)),
    )
    env = dict(os.environ)
    script = str(Path(__file__).resolve())
    children = []
    try:
        for cid in range(args.clients):
            cmd = [sys.executable, script, "--role", "client", "--cid", str(cid), *_common(args)]
            children.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        t0 = time.perf_counter()
        flwr.server.start_server(
            server_address=f"127.0.0.1:{args.port}",
            config=ServerConfig(num_rounds=args.rounds, round_timeout=600),
            strategy=strategy,
        )
        total = time.perf_counter() - t0
    finally:
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
    rounds = [{"round": r, "seconds": seconds[r], "accuracy": accuracies.get(r)} for r in sorted(seconds)]
    return {
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "rounds": rounds,
        "initial_accuracy": accuracies.get(0),
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "total_seconds": total,
    }


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--data",
        args.data,
        "--port",
        str(args.port),
        "--clients",
        str(args.clients),
        "--rounds",
        str(args.rounds),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        "--dims",
        *map(str, args.dims),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=("server", "client"), default="server")
    parser.add_argument("--cid", type=int, default=0)
    parser.add_argument("--data", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", type=int, nargs="+", required=True)
    args = parser.parse_args()
    if args.role == "client":
        client(args)
        return
    result = server(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
