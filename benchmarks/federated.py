"""Workload 4, a federated round against Flower: same model, data shards, clients, epochs and rounds.

The data (scikit-learn's digits when installed, else a random classification task) is split once, here,
into a test set and one shard per client, written as ``.npz`` files both sides read. Both sides:

- start one process per client (a ``fedproto.Worker`` holding its shard; a Flower ``NumPyClient``),
  each limited to one torch thread, plus one coordinating process;
- train ``benchmarks.models.mlp`` from the same seeded initial weights with the same loop, seed, batch
  size, local epochs and learning rate, every client in every round, FedAvg weighted by shard size;
- time each round from sending the global weights to having averaged the trained ones, and evaluate
  the new global model on the test set after each round, outside the timed span.

fedproto's side uses ``fedproto.FedAvg`` (``python -m benchmarks.federated --side fedproto``); Flower's
runs ``baselines/flower_side.py`` inside ``benchmarks/.flower-venv`` (Flower pins a protobuf that the
project's own environment cannot have), created on first use from ``flower-requirements.txt``. When
Flower cannot be installed or run, the result keeps the exact error and the target is reported as not
measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BENCH_DIR,
    REPO,
    Ratio,
    ServerProcess,
    Target,
    child_env,
    free_port,
    machine,
    python,
    run_json,
)
from benchmarks.models import accuracy, load_npz, save_npz, seeded_mlp

NAME = "federated"
FLOWER_VENV = BENCH_DIR / ".flower-venv"
FLOWER_REQUIREMENTS = BENCH_DIR / "flower-requirements.txt"
FLOWER_SIDE = BENCH_DIR / "baselines" / "flower_side.py"

FULL = {"clients": 3, "rounds": 8, "epochs": 2, "batch_size": 32, "lr": 0.05, "dims": [64, 1024, 1024, 10]}
QUICK = {"clients": 2, "rounds": 2, "epochs": 1, "batch_size": 16, "lr": 0.05, "dims": [64, 32, 10]}
SEED = 3


# --------------------------------------------------------------------------------------------------
# data


def make_data(folder: Path, clients: int, quick: bool) -> dict[str, Any]:
    """Write ``test.npz`` and ``shard-<i>.npz`` (one per client) into ``folder``; describe them."""
    import numpy as np

    from benchmarks.models import random_classification

    source = "random classification task (64 features, 10 classes)"
    x = y = None
    if not quick:
        try:
            from sklearn.datasets import load_digits

            digits = load_digits()
            x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
            source = "scikit-learn digits (8x8 images, 10 classes)"
        except ImportError:
            pass
    if x is None or y is None:
        x, y = random_classification(240 if quick else 1800, 64, 10, seed=SEED)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    test = len(x) // 5
    save_npz(folder / "test.npz", x[:test], y[:test])
    shards = np.array_split(np.arange(test, len(x)), clients)
    for index, rows in enumerate(shards):
        save_npz(folder / f"shard-{index}.npz", x[rows], y[rows])
    return {"source": source, "test_samples": int(test), "shard_samples": [len(s) for s in shards]}


# --------------------------------------------------------------------------------------------------
# fedproto's side (in its own process)


async def _fedproto_side(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import fedproto

    torch.set_num_threads(1)
    folder = Path(args.data)
    test_x, test_y = load_npz(folder / "test.npz")
    model = seeded_mlp(args.dims, args.seed)
    config = fedproto.TrainConfig(
        model=model,
        loss_fn="cross_entropy",
        optimizer="SGD",
        optimizer_args={"lr": args.lr},
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        seed=args.seed,
    )
    env = child_env(threads=1)
    servers = [
        ServerProcess(
            [
                *python(),
                "-m",
                "benchmarks.worker_server",
                "--id",
                f"w{i}",
                "--dataset",
                f"train={folder}/shard-{i}.npz",
            ],
            env=env,
            name=f"worker{i}",
        )
        for i in range(args.clients)
    ]
    rounds: list[dict[str, Any]] = []
    clients: list[fedproto.AsyncClient] = []
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # start them all at once
            list(pool.map(ServerProcess.__enter__, servers))
        for server in servers:
            clients.append(
                await fedproto.AsyncClient.connect(f"ws://127.0.0.1:{server.ready_line.split()[1]}")
            )
        initial = accuracy(model, test_x, test_y)

        def on_round(record: Any) -> None:
            if record.failed:
                raise RuntimeError(f"round {record.round}: {[w.error for w in record.failed]}")
            rounds.append(
                {
                    "round": record.round,
                    "seconds": record.seconds,
                    "accuracy": accuracy(fedavg.model, test_x, test_y),
                }
            )

        fedavg = fedproto.FedAvg(
            clients,
            model,
            config,
            dataset_key="train",
            evaluate=False,
            progress=on_round,
            min_workers=args.clients,
        )
        t0 = time.perf_counter()
        await fedavg.run_async(args.rounds)
        total = time.perf_counter() - t0
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            server.stop()
    return {
        "rounds": rounds,
        "initial_accuracy": initial,
        "final_accuracy": rounds[-1]["accuracy"],
        "total_seconds": total,
        "torch": torch.__version__,
    }


def _side_args(config: dict[str, Any], folder: Path) -> list[str]:
    return [
        "--data",
        str(folder),
        "--clients",
        str(config["clients"]),
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
        "--dims",
        *map(str, config["dims"]),
    ]


# --------------------------------------------------------------------------------------------------
# Flower's environment


def flower_python() -> Path:
    return FLOWER_VENV / "bin" / "python"


def ensure_flower_venv(log: Callable[[str], None] = print) -> Path:
    """Create ``benchmarks/.flower-venv`` with ``flower-requirements.txt`` unless it is already there.

    A stamp holding the requirements' SHA-256 tells whether the environment matches them; a mismatch
    (or a broken environment) makes a new one. torch is pinned to the CPU build pip finds through its
    configured find-links, so no CUDA build is ever resolved. Raises ``RuntimeError`` with pip's output.
    """
    wanted = hashlib.sha256(FLOWER_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = FLOWER_VENV / ".requirements-sha256"
    if flower_python().exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return flower_python()
    log(f"  creating {FLOWER_VENV.relative_to(REPO)} (first use; pip install -r {FLOWER_REQUIREMENTS.name})")
    started = time.perf_counter()
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(FLOWER_VENV)],
        [
            str(flower_python()),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(FLOWER_REQUIREMENTS),
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, cwd=REPO)
        if done.returncode != 0:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if "is ignored" not in line]
            raise RuntimeError(f"{' '.join(step[:4])} ... failed:\n" + "\n".join(lines[-15:]))
    stamp.write_text(wanted + "\n")
    log(f"  {FLOWER_VENV.relative_to(REPO)} ready in {time.perf_counter() - started:.0f} s")
    return flower_python()


# --------------------------------------------------------------------------------------------------
# orchestration


def _pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one side as one: the first run's record, every run's later round times pooled."""
    pooled = dict(runs[0])
    pooled["runs"] = len(runs)
    pooled["later_round_seconds"] = [r["seconds"] for run in runs for r in run["rounds"][1:]]
    pooled["final_accuracies"] = [run["final_accuracy"] for run in runs]
    return pooled


def _summary(side: dict[str, Any]) -> dict[str, Any]:
    rounds = side["rounds"]
    later = (
        side.get("later_round_seconds")
        or [r["seconds"] for r in rounds[1:]]
        or [r["seconds"] for r in rounds]
    )
    return {
        "first_round_s": rounds[0]["seconds"],
        "round_median_s": statistics.median(later),
        "round_min_s": min(later),
        "round_max_s": max(later),
        "rounds_total_s": sum(r["seconds"] for r in rounds),
        "final_accuracy": side["final_accuracy"],
        "initial_accuracy": side["initial_accuracy"],
    }


def run(quick: bool = False, log: Callable[[str], None] = print, *, flower: bool = True) -> dict[str, Any]:
    """FedAvg rounds with fedproto and with Flower on the same work; returns the workload's result."""
    config = QUICK if quick else FULL
    result: dict[str, Any] = {"workload": NAME, "quick": quick, "machine": machine(), "config": config}
    timeout = 120 if quick else 400
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp:
        folder = Path(tmp)
        result["data"] = make_data(folder, config["clients"], quick)
        args = _side_args(config, folder)
        # The two stacks take turns (twice each in a full run), so that a noisy neighbour hurts both alike.
        turns = 1 if quick else 2
        ours_runs: list[dict[str, Any]] = []
        theirs_runs: list[dict[str, Any]] = []
        interpreter = None
        if flower:
            try:
                interpreter = ensure_flower_venv(log)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                result["flower_error"] = str(exc)
                log(f"  Flower could not be installed here: {str(exc).splitlines()[0]}")
        else:
            result["flower_error"] = "skipped (--no-flower)"
        for _ in range(turns):
            ours_runs.append(
                run_json(
                    [*python(), "-m", "benchmarks.federated", "--side", "fedproto", *args],
                    timeout=timeout,
                    env=child_env(threads=1),
                    name="fedproto FedAvg",
                )
            )
            if interpreter is not None and "flower_error" not in result:
                try:
                    cmd = [str(interpreter), str(FLOWER_SIDE), "--port", str(free_port()), *args]
                    theirs_runs.append(
                        run_json(cmd, timeout=timeout, env=child_env(threads=1), name="Flower")
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
                    result["flower_error"] = str(exc)
                    log(f"  Flower could not run here: {str(exc).splitlines()[0]}")
        ours = _pool(ours_runs)
        result["fedproto"] = ours | {"summary": _summary(ours)}
        s = result["fedproto"]["summary"]
        log(
            f"  fedproto FedAvg: round {s['round_median_s']:.3f} s (median after round 1; round 1 "
            f"{s['first_round_s']:.3f} s), accuracy {s['initial_accuracy']:.3f} -> {s['final_accuracy']:.3f}"
        )
        theirs = _pool(theirs_runs) if theirs_runs and "flower_error" not in result else None
    if theirs is not None:
        result["flower"] = theirs | {"summary": _summary(theirs)}
        f = result["flower"]["summary"]
        log(
            f"  Flower {theirs['flwr']} FedAvg: round {f['round_median_s']:.3f} s "
            f"(round 1 {f['first_round_s']:.3f} s),"
            f" accuracy {f['initial_accuracy']:.3f} -> {f['final_accuracy']:.3f}"
        )
        speedup = f["round_median_s"] / s["round_median_s"]
        result["ratios"] = [
            Ratio(
                "FedAvg round wall time, Flower / fedproto (higher: fedproto faster)",
                speedup,
                f"Flower {theirs['flwr']}",
                f"{s['round_median_s']:.3f} vs {f['round_median_s']:.3f} s",
            ),
            Ratio(
                "final test accuracy, fedproto / Flower",
                s["final_accuracy"] / f["final_accuracy"] if f["final_accuracy"] else None,
                f"Flower {theirs['flwr']}",
                f"{s['final_accuracy']:.4f} vs {f['final_accuracy']:.4f}",
            ),
        ]
        result["targets"] = [
            Target(
                "FedAvg round faster than Flower's on the same work",
                speedup,
                ">=",
                1.0,
                detail="Flower's median round time / fedproto's (rounds after the first)",
            )
        ]
    else:
        result["ratios"] = []
        result["targets"] = [
            Target(
                "FedAvg round faster than Flower's on the same work",
                None,
                ">=",
                1.0,
                detail=result.get("flower_error", ""),
            )
        ]
    return result


def _main() -> None:
    parser = argparse.ArgumentParser(description="one side of the federated benchmark (run by the benchmark)")
    parser.add_argument("--side", choices=("fedproto",), required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--dims", type=int, nargs="+", required=True)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps(asyncio.run(_fedproto_side(args))), flush=True)


if __name__ == "__main__":
    _main()
