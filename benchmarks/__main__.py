"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR] [--no-flower]``: run, store, report.

Without ``--out`` the results go to ``benchmarks/results/<name>.json`` (with the plots, as PNG files)
and the summary to ``docs/performance.md``; with ``--out DIR`` all of it goes under ``DIR`` (what the
smoke test does, so that a tiny run never replaces the real numbers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.harness import DOCS_DIR, RESULTS_DIR, write_result

WORKLOADS = ("bulk", "small", "fit", "federated", "simulation", "aggregation")


def _run_one(name: str, quick: bool, flower: bool, log: Any) -> dict[str, Any]:
    if name == "bulk":
        from benchmarks import bulk

        return bulk.run(quick, log)
    if name == "small":
        from benchmarks import small

        return small.run(quick, log)
    if name == "fit":
        from benchmarks import fit_overhead

        return fit_overhead.run(quick, log)
    if name == "aggregation":
        from benchmarks import aggregation

        return aggregation.run(quick, log)
    if name == "simulation":
        from benchmarks import simulation

        return simulation.run(quick, log, flower=flower)
    from benchmarks import federated

    return federated.run(quick, log, flower=flower)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks, not numbers")
    parser.add_argument("--only", default="", help=f"comma-separated workloads among {', '.join(WORKLOADS)}")
    parser.add_argument("--out", type=Path, help="write results and the summary under this folder instead")
    parser.add_argument("--no-flower", action="store_true", help="skip Flower (no virtual environment made)")
    args = parser.parse_args(argv)
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose among {', '.join(WORKLOADS)}")
    results_dir = args.out / "results" if args.out else RESULTS_DIR
    markdown = args.out / "performance.md" if args.out else DOCS_DIR / "performance.md"

    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

    def log(message: str) -> None:
        console.print(message, markup=False)

    started = time.perf_counter()
    failed: list[str] = []
    for name in chosen:
        t0 = time.perf_counter()
        console.rule(f"{name}{' (quick)' if args.quick else ''}")
        try:
            result = _run_one(name, args.quick, not args.no_flower, log)
        except Exception:
            failed.append(name)
            console.print(f"[red]{name} failed[/]")
            traceback.print_exc()
            continue
        result["seconds"] = time.perf_counter() - t0
        path = write_result(name, result, results_dir)
        log(f"  {name}: {result['seconds']:.0f} s -> {path}")
    seconds = time.perf_counter() - started
    meta = {
        "finished": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "seconds": seconds,
        "workloads": chosen,
        "quick": args.quick,
        "failed": failed,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "run.json").write_text(json.dumps(meta, indent=1) + "\n")

    from benchmarks import report

    results = report.load_results(results_dir)
    report.write_markdown(results, markdown, plot_folder=results_dir)
    console.print(report.console_table({k: v for k, v in results.items() if k in chosen}))
    console.print(f"summary: {markdown}  ({seconds:.0f} s in all)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
