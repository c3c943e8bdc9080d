"""Workload 3, remote fit overhead: the same training locally and through ``fit`` on a worker.

For each model (a small MLP, and an MLP 1024-2048-1024-10 of about 4.2 million parameters) on random
data made for it, the same training (same initial weights, data, seed, batch size, epochs, SGD) runs:

- locally, as a plain PyTorch loop (``benchmarks.models.train``, the loop the worker documents);
- locally, through ``fedproto.training.TrainingState`` (the worker's engine, TorchScript model, no I/O);
- remotely: ``AsyncClient.fit`` on a worker in its own process that holds the data (the client's
  ``set_train_config`` is timed apart: it happens once, not every fit).

Each fit continues from the previous weights; the three take turns after a warm-up fit each, and the
first fits' final losses are compared (they must agree: same loop, same seed, same weights).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Ratio, ServerProcess, Target, child_env, machine, python, stats
from benchmarks.models import load_npz, random_classification, save_npz, seeded_mlp, train

NAME = "fit"
LR = 0.01
SEED = 7

CASES = {
    "small": {"dims": (32, 64, 10), "batch_size": 32, "batches": 400},
    "large": {"dims": (1024, 2048, 1024, 10), "batch_size": 64, "batches": 240},
}
QUICK_CASES = {
    "small": {"dims": (32, 64, 10), "batch_size": 16, "batches": 8},
    "large": {"dims": (256, 256, 10), "batch_size": 16, "batches": 8},
}


async def _run_case(name: str, case: dict[str, Any], folder: Path, rounds: int) -> dict[str, Any]:
    import torch

    import fedproto
    from fedproto.datasets import as_dataset
    from fedproto.training import ModelRegistry, TrainingState

    dims, batch_size = case["dims"], case["batch_size"]
    x, y = random_classification(case["batches"] * batch_size, dims[0], dims[-1], seed=SEED)
    path = save_npz(folder / f"{name}.npz", x, y)
    features, targets = load_npz(path)

    plain_model = seeded_mlp(dims, SEED)
    plain_optimizer = torch.optim.SGD(plain_model.parameters(), lr=LR)
    config = fedproto.TrainConfig(
        model=seeded_mlp(dims, SEED),
        loss_fn="cross_entropy",
        optimizer="SGD",
        optimizer_args={"lr": LR},
        batch_size=batch_size,
        epochs=1,
        shuffle=True,
        seed=SEED,
    )
    state = TrainingState.configure(
        config.to_spec(), registry=ModelRegistry(), weights_only=False, max_model_bytes=0
    )
    dataset = as_dataset((features, targets))

    def plain() -> float:
        return float(
            train(
                plain_model,
                features,
                targets,
                batch_size=batch_size,
                epochs=1,
                lr=LR,
                seed=SEED,
                optimizer=plain_optimizer,
            )["final_loss"]
        )

    def engine() -> float:
        return float(state.fit(dataset).final_loss)

    times: dict[str, list[float]] = {"plain": [], "engine": [], "remote": []}
    first: dict[str, float] = {}
    env = child_env()
    cmd = [*python(), "-m", "benchmarks.worker_server", "--dataset", f"train={path}"]
    with ServerProcess(cmd, env=env, name="worker") as worker:
        async with fedproto.AsyncClient.connect(f"ws://127.0.0.1:{worker.ready_line.split()[1]}") as client:
            t0 = time.perf_counter()
            await client.set_train_config(config)
            setup = time.perf_counter() - t0

            async def remote() -> float:
                return (await client.fit("train")).final_loss

            for turn in range(rounds + 1):  # the first turn warms up
                for label in ("plain", "engine", "remote"):
                    t0 = time.perf_counter()
                    loss = (
                        await remote() if label == "remote" else (plain() if label == "plain" else engine())
                    )
                    elapsed = time.perf_counter() - t0
                    if turn == 0:
                        first[label] = loss
                    else:
                        times[label].append(elapsed)
    agree = max(abs(first[k] - first["plain"]) for k in first) <= 1e-4 * max(1.0, abs(first["plain"]))
    summary = {label: stats(samples).to_dict() for label, samples in times.items()}
    return {
        "dims": list(dims),
        "parameters": sum(p.numel() for p in plain_model.parameters()),
        "batch_size": batch_size,
        "batches": case["batches"],
        "set_train_config_s": setup,
        "times": summary,
        "remote_over_plain": summary["remote"]["median"] / summary["plain"]["median"],
        "remote_over_engine": summary["remote"]["median"] / summary["engine"]["median"],
        "engine_over_plain": summary["engine"]["median"] / summary["plain"]["median"],
        "remote_over_plain_paired": statistics.median(
            r / p for r, p in zip(times["remote"], times["plain"], strict=True)
        ),
        "first_losses": first,
        "losses_agree": agree,
    }


def run(quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time local and remote fits of each model; returns the workload's result."""
    cases = QUICK_CASES if quick else CASES
    rounds = 1 if quick else 3
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as folder:
        for name, case in cases.items():
            row = asyncio.run(_run_case(name, case, Path(folder), rounds))
            results[name] = row
            t = row["times"]
            log(
                f"  {name:<5} MLP {'-'.join(map(str, row['dims']))} ({row['parameters']:,} parameters): "
                f"plain {t['plain']['median']:.3f} s, engine {t['engine']['median']:.3f} s, "
                f"remote {t['remote']['median']:.3f} s -> remote/local {row['remote_over_plain']:.3f}"
                f"  losses agree: {row['losses_agree']}"
            )
    result: dict[str, Any] = {"workload": NAME, "quick": quick, "machine": machine(), "results": results}
    ratios = []
    for name, row in results.items():
        ratios.append(
            Ratio(
                f"{name} MLP fit time, remote / local (lower is better)",
                row["remote_over_plain"],
                "plain PyTorch loop, same process",
                f"{row['parameters']:,} parameters",
            )
        )
        ratios.append(
            Ratio(
                f"{name} MLP fit time, remote / local engine (lower is better)",
                row["remote_over_engine"],
                "TrainingState in-process",
            )
        )
    result["ratios"] = ratios
    result["targets"] = [
        Target(
            "remote fit / local fit <= 1.05 (larger model)",
            results["large"]["remote_over_plain"],
            "<=",
            1.05,
            detail="against the plain PyTorch loop",
        )
    ]
    return result
