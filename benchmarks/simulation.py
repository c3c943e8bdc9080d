"""Workload 5, a simulated federation against Flower's Ray simulation: many virtual clients, few CPUs.

1,000 virtual clients share scikit-learn's digits (IID, ``fedproto.simulation.partition``, seeded); each
round 10 % of them train five local epochs of the digits MLP (64-64-10, SGD with momentum 0.9, batch 16;
a client holds one or two samples) and FedAvg averages them, 20 rounds, on this machine's CPUs with Ray:

- fedproto: ``fedproto.simulation.run(backend="ray")``: two Ray actors, each one real fedproto worker
  holding 500 clients' datasets, driven over loopback WebSockets by the coordinator;
- Flower: ``flwr.simulation.start_simulation`` (its Ray virtual client engine, one CPU per client
  actor) in ``benchmarks/.flower-venv``, on the same clients' data (``baselines/flower_simulation.py``).

Both start from the same seeded initial weights and evaluate the global model on the same held-out test
digits after each round, outside the timed span. Reported: the round time (median of the rounds after
the first), the final accuracy, the cost of one more client per round (the slope of fedproto's round
time between 100 clients, 10 per round, and 1,000 clients, 100 per round), and the coordinator's peak
memory at 100 and 1,000 clients with a wider model (64-1024-1024-10, 4.3 MiB of weights), as
multiples of one model: the most resident memory the coordinator held above its level at the end of
round 1 during the later rounds. Its allocator is told to map every block of 64 KiB or more on its own
(``MALLOC_MMAP_THRESHOLD_``), so that freed tensors leave the resident set at once and the peak is the
live memory, not what malloc kept for later.

The memory measurement alone, in a short configuration (local worker processes, a few rounds, every
pair of client and worker counts given):

    python -m benchmarks.simulation --memory --clients 20 100 --workers 1 2 4 [--rounds 3]

prints one line per run with the coordinator's peak in models (a ratio: the model is 4.3 MiB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BENCH_DIR,
    MIB,
    Ratio,
    Target,
    child_env,
    machine,
    python,
    reset_peak,
    rss,
    run_json,
)

NAME = "simulation"
FLOWER_SIMULATION = BENCH_DIR / "baselines" / "flower_simulation.py"

FULL: dict[str, Any] = {
    "clients": 1000,
    "fraction": 0.1,
    "rounds": 20,
    "epochs": 5,
    "batch_size": 16,
    "lr": 0.05,
    "backend": "ray",
    "workers": 2,
    "num_cpus": 2,
    "hidden": [64],
    "slope_clients": 100,
    "slope_rounds": 10,
    "memory_clients": [100, 1000],
    "memory_rounds": 4,
    "memory_hidden": [1024, 1024],
}
#: A check of the harness, not numbers: one local host, few clients, no slope or memory runs.
QUICK: dict[str, Any] = {
    "clients": 10,
    "fraction": 0.5,
    "rounds": 2,
    "epochs": 1,
    "batch_size": 16,
    "lr": 0.05,
    "backend": "local",
    "workers": 1,
    "num_cpus": 2,
    "hidden": [64],
    "slope_clients": None,
    "slope_rounds": 2,
    "memory_clients": [],
    "memory_rounds": 2,
    "memory_hidden": [64],
}
SEED = 0
#: Every block of this many bytes or more gets its own mapping, returned to the system when freed.
MMAP_THRESHOLD = 65536


# --------------------------------------------------------------------------------------------------
# fedproto's side (in its own process)


class _Peak:
    """The highest resident memory of this process from :meth:`reset` on.

    The kernel's high-water mark (``VmHWM``, reset through ``clear_refs``) sees every page, however
    briefly it was held; a sampling thread would miss the peaks inside C calls that hold the GIL (a
    protobuf parse, a tensor copy). Where the kernel does not allow the reset, a thread samples the
    resident set every millisecond instead, and says so (``exact`` is False).
    """

    def __init__(self) -> None:
        self.exact = False
        self.base = 0
        self._sampled = 0
        self._armed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def reset(self) -> int:
        self.exact = reset_peak()
        self.base = rss()["rss"]
        if not self.exact and not self._armed:
            self._sampled, self._armed = self.base, True
            self._thread.start()
        return self.base

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled, rss()["rss"])

    def stop(self) -> int:
        if self._armed:
            self._stop.set()
            self._thread.join()
            return self._sampled
        return rss()["hwm"]


def _fedproto_side(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from fedproto.simulation import run

    torch.set_num_threads(1)
    peak = _Peak()
    rounds: list[dict[str, Any]] = []
    baseline: dict[str, int] = {}

    def on_round(record: Any, accuracy: float) -> None:
        rounds.append(
            {
                "round": record.round,
                "seconds": record.seconds,
                "accuracy": accuracy,
                "finished": record.finished,
                "sampled": record.sampled,
            }
        )
        if record.round == 1:
            baseline["rss"] = peak.reset()

    t0 = time.perf_counter()
    result = run(
        clients=args.clients,
        fraction=args.fraction,
        rounds=args.rounds,
        backend=args.backend,
        workers=args.workers,
        num_cpus=args.num_cpus if args.backend == "ray" else None,
        partition="iid",
        strategy="fedavg",
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=tuple(args.hidden),
        progress=on_round,
    )
    total = time.perf_counter() - t0
    top = peak.stop()
    model_bytes = sum(t.numel() * t.element_size() for t in result.weights.values())
    return {
        "rounds": rounds,
        "initial_accuracy": result.initial_accuracy,
        "final_accuracy": result.accuracy,
        "startup_seconds": result.startup_seconds,
        "total_seconds": total,
        "model_bytes": model_bytes,
        "rss_after_round_1": baseline.get("rss"),
        "peak_rss_later_rounds": top if baseline else None,
        "peak_extra_models": (top - baseline["rss"]) / model_bytes if baseline else None,
        "peak_exact": peak.exact,
        "torch": torch.__version__,
    }


def _fedproto_args(config: dict[str, Any], *, clients: int, rounds: int, hidden: list[int]) -> list[str]:
    return [
        "--clients",
        str(clients),
        "--fraction",
        str(config["fraction"]),
        "--rounds",
        str(rounds),
        "--epochs",
        str(config["epochs"]),
        "--batch-size",
        str(config["batch_size"]),
        "--lr",
        str(config["lr"]),
        "--seed",
        str(SEED),
        "--backend",
        config["backend"],
        "--workers",
        str(config["workers"]),
        "--num-cpus",
        str(config["num_cpus"]),
        "--hidden",
        *map(str, hidden),
    ]


# --------------------------------------------------------------------------------------------------
# the clients' data for Flower (the very partition fedproto's hosts compute)


def write_flower_data(path: Path, clients: int) -> dict[str, Any]:
    """Write the digits, the test set and every client's sample indices (IID, seed SEED) to ``path``."""
    import numpy as np

    from fedproto.simulation.partition import load_digits_split, partition

    data = load_digits_split(SEED)
    parts = partition(data.y_train, clients, scheme="iid", seed=SEED)
    offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    np.savez(
        path,
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        indices=np.concatenate(parts).astype(np.int64),
        offsets=offsets,
    )
    sizes = [len(p) for p in parts]
    return {
        "source": "scikit-learn digits (8x8 images, 10 classes), IID",
        "train_samples": len(data.y_train),
        "test_samples": len(data.y_test),
        "client_samples": [min(sizes), max(sizes)],
    }


# --------------------------------------------------------------------------------------------------
# orchestration


def _later_median(rounds: list[dict[str, Any]]) -> float:
    later = [r["seconds"] for r in rounds[1:]] or [r["seconds"] for r in rounds]
    return statistics.median(later)


def memory_runs(
    clients: list[int],
    workers: list[int],
    *,
    rounds: int,
    hidden: list[int],
    backend: str = "local",
    fraction: float = 0.1,
    log: Callable[[str], None] = print,
    timeout: float = 900,
) -> list[dict[str, Any]]:
    """The coordinator's peak memory, in models, for every pair of client and worker counts.

    Each run is a process of its own (``--side fedproto``), one local epoch per client, so that the
    peak is the coordinator's alone and no run inherits another's heap.
    """
    env = child_env(threads=1, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    config = {
        "fraction": fraction,
        "epochs": 1,
        "batch_size": 16,
        "lr": 0.05,
        "backend": backend,
        "num_cpus": 2,
    }
    measured = []
    for hosts in workers:
        for count in clients:
            args = _fedproto_args({**config, "workers": hosts}, clients=count, rounds=rounds, hidden=hidden)
            side = run_json(
                [*python(), "-m", "benchmarks.simulation", "--side", "fedproto", *args],
                timeout=timeout,
                env=env,
                name=f"memory, {count} clients on {hosts} workers",
            )
            per_round = max(1, int(fraction * count + 1e-9))
            row = {
                "clients": count,
                "workers": hosts,
                "per_round": per_round,
                "model_mib": side["model_bytes"] / MIB,
                "peak_extra_models": side["peak_extra_models"],
                "round_median_s": _later_median(side["rounds"]),
            }
            log(
                f"  {count:>5} clients ({per_round} per round) on {hosts} {backend} workers: coordinator "
                f"peak {row['peak_extra_models']:.2f} models above round 1's level "
                f"(model {row['model_mib']:.2f} MiB), round {row['round_median_s']:.2f} s"
            )
            measured.append(row)
    return measured


def run(quick: bool = False, log: Callable[[str], None] = print, *, flower: bool = True) -> dict[str, Any]:
    """The simulation workload: fedproto's and Flower's simulations of the same federation."""
    from benchmarks.federated import ensure_flower_venv

    config = QUICK if quick else FULL
    result: dict[str, Any] = {"workload": NAME, "quick": quick, "machine": machine(), "config": config}
    timeout = 300 if quick else 900
    dims = [64, *config["hidden"], 10]
    # The allocator maps big blocks on their own, so freed tensors leave the resident set (see the top).
    env = child_env(threads=1, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))

    def ours(clients: int, rounds: int, hidden: list[int], label: str) -> dict[str, Any]:
        args = _fedproto_args(config, clients=clients, rounds=rounds, hidden=hidden)
        side = run_json(
            [*python(), "-m", "benchmarks.simulation", "--side", "fedproto", *args],
            timeout=timeout,
            env=env,
            name=label,
        )
        side["round_median_s"] = _later_median(side["rounds"])
        log(
            f"  {label}: {clients} clients, round {side['round_median_s']:.3f} s (median after round 1), "
            f"accuracy {side['initial_accuracy']:.3f} -> {side['final_accuracy']:.3f}"
            + (
                f", coordinator peak {side['peak_extra_models']:.2f} models above round 1's level"
                if side.get("peak_extra_models") is not None
                else ""
            )
        )
        return side

    main = ours(config["clients"], config["rounds"], config["hidden"], "fedproto simulation")
    result["fedproto"] = main
    slope = None
    if config["slope_clients"]:
        small = ours(
            config["slope_clients"], config["slope_rounds"], config["hidden"], "fedproto, fewer clients"
        )
        result["fedproto_small"] = small
        per_round_main = max(1, int(config["fraction"] * config["clients"] + 1e-9))
        per_round_small = max(1, int(config["fraction"] * config["slope_clients"] + 1e-9))
        if per_round_main != per_round_small:
            slope = (main["round_median_s"] - small["round_median_s"]) / (per_round_main - per_round_small)
            log(f"  one more client per round: {1000 * slope:.1f} ms of round time")
    result["seconds_per_extra_client"] = slope
    memory = memory_runs(
        config["memory_clients"],
        [config["workers"]],
        rounds=config["memory_rounds"],
        hidden=config["memory_hidden"],
        backend=config["backend"],
        fraction=config["fraction"],
        log=log,
        timeout=timeout,
    )
    result["memory"] = memory

    theirs = None
    if not flower:
        result["flower_error"] = "skipped (--no-flower)"
    else:
        try:
            interpreter = ensure_flower_venv(log)
            with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
                data_file = Path(tmp) / "clients.npz"
                result["data"] = write_flower_data(data_file, config["clients"])
                cmd = [
                    str(interpreter),
                    str(FLOWER_SIMULATION),
                    "--data",
                    str(data_file),
                    "--clients",
                    str(config["clients"]),
                    "--fraction",
                    str(config["fraction"]),
                    "--rounds",
                    str(config["rounds"]),
                    "--epochs",
                    str(config["epochs"]),
                    "--batch-size",
                    str(config["batch_size"]),
                    "--lr",
                    str(config["lr"]),
                    "--seed",
                    str(SEED),
                    "--num-cpus",
                    str(config["num_cpus"]),
                    "--dims",
                    *map(str, dims),
                ]
                theirs = run_json(cmd, timeout=timeout, env=child_env(threads=1), name="Flower simulation")
            if theirs.get("failures"):
                raise RuntimeError("; ".join(theirs["failures"]))
            theirs["round_median_s"] = _later_median(theirs["rounds"])
            log(
                f"  Flower {theirs['flwr']} simulation: round {theirs['round_median_s']:.3f} s, "
                f"accuracy {theirs['initial_accuracy']:.3f} -> {theirs['final_accuracy']:.3f}"
            )
            result["flower"] = theirs
        except (RuntimeError, OSError, ValueError) as exc:
            theirs = None
            result["flower_error"] = str(exc)
            log(f"  Flower's simulation could not run here: {str(exc).splitlines()[0]}")

    result["ratios"] = []
    if theirs is not None:
        result["ratios"] = [
            Ratio(
                "simulated round wall time, Flower / fedproto (higher: fedproto faster)",
                theirs["round_median_s"] / main["round_median_s"],
                f"Flower {theirs['flwr']} (Ray simulation)",
                f"{main['round_median_s']:.3f} vs {theirs['round_median_s']:.3f} s",
            ),
            Ratio(
                "final test accuracy, fedproto / Flower",
                main["final_accuracy"] / theirs["final_accuracy"] if theirs["final_accuracy"] else None,
                f"Flower {theirs['flwr']} (Ray simulation)",
                f"{main['final_accuracy']:.4f} vs {theirs['final_accuracy']:.4f}",
            ),
        ]
    worst = max((m["peak_extra_models"] for m in memory if m["peak_extra_models"] is not None), default=None)
    result["targets"] = [
        Target(
            "coordinator peak memory under 3 models however many clients report",
            worst,
            "<=",
            3.0,
            detail=", ".join(f"{m['clients']} clients: {m['peak_extra_models']:.2f}" for m in memory),
        )
    ]
    return result


def _main() -> None:
    parser = argparse.ArgumentParser(
        description="fedproto's side of the simulation benchmark (--side fedproto), or the coordinator's "
        "memory alone (--memory)"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--side", choices=("fedproto",))
    mode.add_argument(
        "--memory",
        action="store_true",
        help="measure the coordinator's peak memory in models for each --clients and --workers",
    )
    parser.add_argument("--clients", type=int, nargs="+", required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--backend", default=None, help="ray for --side, local for --memory by default")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=None, help="default 64 (1024 1024 with --memory)"
    )
    args = parser.parse_args()
    if args.memory:
        if args.rounds < 2:
            parser.error("--memory needs --rounds 2 or more: the peak is of the rounds after the first")
        rows = memory_runs(
            args.clients,
            args.workers,
            rounds=args.rounds,
            hidden=args.hidden or FULL["memory_hidden"],
            backend=args.backend or "local",
            fraction=args.fraction,
        )
        print(json.dumps(rows), flush=True)
        return
    if len(args.clients) != 1 or len(args.workers) != 1:
        parser.error("--side takes one --clients and one --workers")
    args.clients, args.workers = args.clients[0], args.workers[0]
    args.backend = args.backend or "ray"
    args.hidden = args.hidden or [64]
    print(json.dumps(_fedproto_side(args)), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    _main()
