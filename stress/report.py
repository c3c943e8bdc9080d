"""docs/reliability.md from the figures of ``python -m stress`` (stress/results.json)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def _fuzz_section(title: str, fuzz: dict[str, Any]) -> str:
    lines = [f"### {title}", ""]
    planned = fuzz.get("frames_planned", fuzz["frames"])
    of_planned = f" (of {planned:,} planned)" if planned != fuzz["frames"] else ""
    lines.append(
        f"{fuzz['frames']:,} frames{of_planned} over {fuzz['connections']:,} connections in "
        f"{fuzz['seconds']} s "
        f"({fuzz['frames_per_second']:,} frames/s). Crashed: **{fuzz['crashed']}**; "
        f"hangs: **{fuzz['hangs']}**; failures: **{fuzz['failures']}**; a well-behaved client served at "
        f"the end: **{fuzz['healthy_at_end']}**; worker peak RSS {fuzz['rss_peak_mib']} MiB."
    )
    header = "| class | frames sent | what came back (replies by body or Error code) | closes |"
    lines += ["", header, "|---|---:|---|---|"]
    for kind, count in sorted(fuzz["sent"].items()):
        got = sorted(fuzz["errors"].get(kind, {}).items(), key=lambda kv: -kv[1])
        replies = ", ".join(f"{k} {v:,}" for k, v in got)
        closes = ", ".join(f"{c}: {n}" for c, n in sorted(fuzz["closes"].get(kind, {}).items()))
        lines.append(f"| {kind} | {count:,} | {replies or '-'} | {closes or '-'} |")
    if fuzz.get("first_failures"):
        lines += ["", "First failures:", ""] + [f"- {f}" for f in fuzz["first_failures"]]
    return "\n".join(lines)


def write_report(figures: dict[str, Any], out: Path) -> None:
    """Write the report of ``figures`` to ``out``."""
    load = figures["load"]
    text = [
        "# Reliability figures",
        "",
        "Written by `make stress` (`python -m stress`) from its own run; do not edit by hand. Measured on a "
        f"shared machine with {figures['cpus']} CPUs ({platform.machine()}, Python "
        f"{sys.version.split()[0]}), worker and clients on loopback, the worker in a process of its own, "
        "while other work ran: the numbers are indicative, not a benchmark. What each verdict means, and "
        "the tests that hold the same properties in `make test`, is in [security.md](security.md).",
        "",
        "## Load",
        "",
        f"{load['clients']} clients, each with its own token and identity, x {load['requests_per_client']} "
        "mixed requests (calls, pings, small sends and gets, listings, counts, chunked send+get of 300 KiB, "
        "calls cancelled while they run), four at a time per client (`stress/load.py`).",
        "",
        _table(
            [
                ("requests", f"{load['requests']:,}"),
                ("failed or wrong replies", str(load["failures"])),
                ("requests by kind", ", ".join(f"{k} {v:,}" for k, v in sorted(load["kinds"].items()))),
                ("wall time", f"{load['seconds']} s"),
                ("requests/s", f"{load['requests_per_second']:,}"),
                ("latency p50 / p99", f"{load['p50_ms']} ms / {load['p99_ms']} ms"),
                ("worker RSS idle (after a priming round)", f"{load['rss_idle_mib']} MiB"),
                ("worker RSS peak", f"{load['rss_peak_mib']} MiB"),
                ("worker RSS after the load", f"{load['rss_after_mib']} MiB"),
                ("memory back to idle (at most 64 MiB above)", str(load["memory_returned"])),
            ]
        ),
        "",
        "## Network fuzzing",
        "",
        "Random and mutated frames (`stress/netfuzz.py`): each batch of 100 frames is of one class and is "
        "followed by a Ping whose Pong proves the worker read it; the replies before that Pong are the "
        "class's.",
        "",
        _fuzz_section("Python worker", figures["fuzz"]),
    ]
    if "node_fuzz" in figures:
        node_title = "Node worker (`node node/dist/cli.js serve --conformance`)"
        text += ["", _fuzz_section(node_title, figures["node_fuzz"])]
    out.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    write_report(json.loads((root / "stress" / "results.json").read_text()), root / "docs" / "reliability.md")
