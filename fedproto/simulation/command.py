"""``fedproto simulate``: a federation of many simulated clients on local worker processes or Ray.

    fedproto simulate --clients 100 --fraction 0.1 --rounds 5 [--backend local|ray]
        [--address RAY_ADDRESS] [--partition iid|dirichlet --alpha A] [--strategy fedavg]
        [--run-dir DIR] [--resume] [--seed S] [--workers W] [--epochs E]

Every setting is checked before anything starts; a bad one ends in one line on stderr and exit
status 2. A run that fails later (a host that does not start, a round that cannot count) ends in one
line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from fedproto.errors import FedprotoError, ProtocolError
from fedproto.federated.records import RoundRecord
from fedproto.simulation.backends import BACKENDS, HostStartError
from fedproto.simulation.engine import (
    STRATEGY_NAMES,
    SimulationConfigError,
    SimulationResult,
    round_line,
    run,
)
from fedproto.simulation.partition import PARTITIONS

__all__ = ["build_parser", "main"]

PROG = "fedproto simulate"


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``fedproto simulate: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``fedproto simulate``."""
    parser = _OneLineParser(
        prog=PROG,
        description="Federated training of a digits MLP over many simulated clients hosted by a few "
        "real workers (local processes or Ray actors).",
    )
    parser.add_argument("--clients", type=int, default=100, help="virtual clients (default 100)")
    parser.add_argument(
        "--fraction", type=float, default=0.1, help="share of the clients trained per round (default 0.1)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds in all, resumed ones included (default 5)"
    )
    parser.add_argument("--backend", default="local", help=f"{' or '.join(BACKENDS)} (default local)")
    parser.add_argument("--address", help="join this Ray cluster ('auto' or HOST:PORT; ray backend)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the private Ray instance (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="worker hosts sharing the clients (default 2)")
    parser.add_argument("--partition", default="iid", help=f"{' or '.join(PARTITIONS)} (default iid)")
    parser.add_argument(
        "--alpha",
        type=float,
        help="Dirichlet concentration, with --partition dirichlet; smaller is more skewed (default 0.5)",
    )
    parser.add_argument("--strategy", default="fedavg", help=f"{', '.join(STRATEGY_NAMES)} (default fedavg)")
    parser.add_argument(
        "--min-fit-clients", type=int, default=1, help="the fewest clients trained per round (default 1)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round (default 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="local batch size (default 16)")
    parser.add_argument("--lr", type=float, default=0.05, help="local SGD learning rate (default 0.05)")
    parser.add_argument("--run-dir", type=Path, help="keep checkpoints and round records here")
    parser.add_argument("--resume", action="store_true", help="go on from the run directory's last round")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data, sampling and model (default 0)"
    )
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, ProtocolError) else f"{exc.code.name}: {exc.message}"
    return " ".join(text.split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fedproto simulate``; returns the exit status (0, 1 on failure, 2 on bad settings, 130)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad option (2): argparse has printed its line
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    console = Console(stderr=True, highlight=False)

    def on_round(record: RoundRecord, accuracy: float) -> None:
        console.print(round_line(record, accuracy))

    try:
        result = run(
            clients=args.clients,
            fraction=args.fraction,
            rounds=args.rounds,
            backend=args.backend,
            address=args.address,
            num_cpus=args.num_cpus,
            workers=args.workers,
            partition=args.partition,
            alpha=args.alpha,
            strategy=args.strategy,
            min_fit_clients=args.min_fit_clients,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            run_dir=args.run_dir,
            resume=args.resume,
            seed=args.seed,
            progress=on_round,
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SimulationConfigError as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (FedprotoError, HostStartError, ImportError, OSError, ValueError) as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return 1
    _summary(result)
    return 0


def _summary(result: SimulationResult) -> None:
    config = result.config
    low, high = result.client_sizes
    print(
        f"{config.clients} clients ({config.partition}"
        + (f", alpha {config.alpha:g}" if config.partition == "dirichlet" else "")
        + f", {low}..{high} samples each, label skew {result.label_skew:.2f}) on {config.workers} "
        f"{config.backend} hosts; {config.sampled} clients per round, strategy {config.strategy}"
    )
    if result.records:
        seconds = sum(r.seconds for r in result.records)
        print(
            f"{result.rounds} rounds in {seconds:.1f} s ({seconds / result.rounds:.2f} s per round; "
            f"hosts started in {result.startup_seconds:.1f} s)"
        )
    else:
        print("no round left to run")
    print(f"test accuracy {result.initial_accuracy:.3f} -> {result.accuracy:.3f} (loss {result.loss:.4f})")
