"""Coordinator memory while aggregating N client updates: streaming against buffered.

A child process (one per measurement; one for all of them with ``--quick``, which resets the peak
between measurements, glibc being told to return freed tensors to the system at once) builds the
reference weights of a float32 model, resets its peak resident memory, then receives N updates one
after the other, as replies arriving at the coordinator, and folds each into an aggregator of
:mod:`fedproto.federated.aggregation`:

- ``streaming``: :class:`~fedproto.federated.aggregation.StreamingMean`, the running float64 sum FedAvg
  uses by default; every update is dropped once folded in;
- ``buffered``: :class:`~fedproto.federated.aggregation.BufferedMean`, the same mean computed from every
  update kept until the end (what holding all replies costs);
- ``median``: :class:`~fedproto.federated.aggregation.CoordinateMedian`, a strategy that needs all of them.

The peak resident memory the aggregation added (``VmHWM`` after a reset, minus the resident memory
before) is reported in MiB and in model sizes. ``python -m benchmarks.aggregation [--quick]`` runs it
alone; ``python -m benchmarks --only aggregation`` stores it with the others.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import MIB, Ratio, Target, child_env, machine, python, reset_peak, rss, run_json

NAME = "aggregation"
MODES = ("streaming", "buffered", "median")


def measure(mode: str, updates: int, parameters: int, seed: int = 0) -> dict[str, Any]:
    """In this process: the peak memory of folding ``updates`` updates of a ``parameters``-float model."""
    import torch

    from fedproto.federated.aggregation import BufferedMean, CoordinateMedian, StreamingMean

    kinds = {"streaming": StreamingMean, "buffered": BufferedMean, "median": CoordinateMedian}
    quarter = parameters // 4
    reference = {f"layer{i}.weight": torch.zeros(quarter) for i in range(4)}
    generator = torch.Generator().manual_seed(seed)
    gc.collect()
    exact = reset_peak()
    before = rss()["rss"]
    started = time.perf_counter()
    aggregator = kinds[mode](reference)
    for k in range(updates):
        # a reply arriving: new tensors the aggregator may keep or drop
        update = {name: torch.randn(tensor.shape, generator=generator) for name, tensor in reference.items()}
        aggregator.add(update, 100 + k)
        del update
    result = aggregator.result()
    seconds = time.perf_counter() - started
    peak = rss()["hwm"] - before
    model_bytes = 4 * quarter * 4
    assert list(result) == list(reference)
    return {
        "mode": mode,
        "updates": updates,
        "parameters": 4 * quarter,
        "model_mib": model_bytes / MIB,
        "peak_mib": max(0, peak) / MIB,
        "peak_models": max(0, peak) / model_bytes,
        "seconds": seconds,
        "exact_peak": exact,
    }


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Every mode at N=10 and N=100 (a 1 MiB model when quick, 4 MiB otherwise); the workload's result."""
    parameters = 250_000 if quick else 1_000_000
    counts = (10, 100)
    plan = (
        [[(mode, n) for n in counts for mode in MODES]]
        if quick
        else [[(m, n)] for n in counts for m in MODES]
    )
    rows = []
    for batch in plan:
        spec = ",".join(f"{mode}:{n}" for mode, n in batch)
        found = run_json(
            [*python(), "-m", "benchmarks.aggregation", "--child", spec, str(parameters)],
            timeout=600,
            # a fixed mmap threshold: glibc then returns every freed tensor to the system at once,
            # so one measurement's leftovers cannot hide the next one's peak
            env=child_env(threads=1, MALLOC_MMAP_THRESHOLD_="131072"),
            name=f"aggregation {spec}",
        )
        for row in found:
            rows.append(row)
            log(
                f"  {row['mode']:>9} N={row['updates']:<3}: peak +{row['peak_mib']:7.1f} MiB "
                f"({row['peak_models']:5.1f} models of {row['model_mib']:.1f} MiB) in {row['seconds']:.2f} s"
            )
    by = {(row["mode"], row["updates"]): row for row in rows}
    low, high = counts
    streaming_growth = by[("streaming", high)]["peak_mib"] / max(by[("streaming", low)]["peak_mib"], 1e-9)
    ratio = by[("buffered", high)]["peak_mib"] / max(by[("streaming", high)]["peak_mib"], 1e-9)
    result: dict[str, Any] = {"workload": NAME, "quick": quick, "machine": machine(), "table": rows}
    result["ratios"] = [
        Ratio(
            f"aggregation peak memory at N={high}, buffered / streaming (higher: streaming saves more)",
            ratio,
            "every update kept (BufferedMean)",
            f"{parameters:,}-parameter float32 model",
        )
    ]
    result["targets"] = [
        Target(
            f"streaming peak memory grows at most 1.5x from N={low} to N={high} (O(model))",
            streaming_growth,
            "<=",
            1.5,
        )
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aggregation", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 1 MiB model instead of 4 MiB")
    parser.add_argument("--child", nargs=2, metavar=("MODE:N,...", "PARAMETERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec, parameters = args.child
        rows = []
        for item in spec.split(","):
            mode, _, updates = item.partition(":")
            if mode not in MODES:
                parser.error(f"mode must be one of {', '.join(MODES)}")
            rows.append(measure(mode, int(updates), int(parameters)))
            gc.collect()
        print(json.dumps(rows))
        return 0
    result = run(args.quick, print)
    for ratio in result["ratios"]:
        print(f"{ratio.what}: {ratio.value:.1f}")
    for target in result["targets"]:
        print(f"{target.name}: {target.measured:.2f} -> {'met' if target.met else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
