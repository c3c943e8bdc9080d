"""``python -m stress`` (``make stress``): the full-size load and network fuzz, then docs/reliability.md.

Runs once, bounded: 200 clients x 500 requests, then 1,000,000 fuzzed frames (the Node worker too, with
``--node-frames N`` when node/dist is built). The figures are written to docs/reliability.md from
stress/report.py's template; the command exits non-zero when any verdict fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from stress.load import memory_returned, run_load
from stress.netfuzz import FuzzResult, run_fuzz
from stress.report import write_report
from stress.worker_process import ROOT, WorkerProcess, token_of


def fuzz_passed(fuzz: FuzzResult) -> bool:
    """Whether a fuzz run met every verdict: no crash, hang or failure, and a healthy worker at the end."""
    return not (fuzz.crashed or fuzz.hangs or fuzz.failures) and fuzz.healthy_at_end


def main() -> None:
    """Run the bench and write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--node-frames", type=int, default=0)
    parser.add_argument(
        "--fuzz-seconds",
        type=float,
        default=1200.0,
        help="each fuzz run opens no connection after this many seconds and then fails (default 1200)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    figures: dict[str, object] = {"cpus": os.cpu_count()}
    with WorkerProcess(identities=args.clients) as worker:
        load = asyncio.run(run_load(worker, args.clients, args.requests))
    figures["load"] = load.summary()
    print(json.dumps(figures["load"], indent=2), flush=True)
    with WorkerProcess(identities=1) as worker:
        fuzz = asyncio.run(run_fuzz(worker, args.frames, token=token_of(0), max_seconds=args.fuzz_seconds))
    figures["fuzz"] = fuzz.summary()
    print(json.dumps(figures["fuzz"], indent=2), flush=True)
    ok = not load.failures and memory_returned(load)
    ok = ok and fuzz_passed(fuzz)
    if args.node_frames:
        with WorkerProcess(node=True) as node:
            node_fuzz = asyncio.run(run_fuzz(node, args.node_frames, max_seconds=args.fuzz_seconds))
        figures["node_fuzz"] = node_fuzz.summary()
        print(json.dumps(figures["node_fuzz"], indent=2), flush=True)
        # the second worker is held to the same verdicts: its failures fail the command too
        ok = ok and fuzz_passed(node_fuzz)
    (ROOT / "stress" / "results.json").write_text(json.dumps(figures, indent=2) + "\n")
    write_report(figures, args.out)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
