"""Turn the results JSON files into ``docs/performance.md``, its plots and the closing console table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from benchmarks.harness import MIB, REPO

WORKLOADS = ("bulk", "small", "fit", "federated", "simulation", "aggregation")
TITLES = {
    "bulk": "Bulk tensor transfer",
    "small": "Small requests",
    "fit": "Remote fit overhead",
    "federated": "A federated round against Flower",
    "simulation": "A simulated federation against Flower's Ray simulation",
    "aggregation": "Coordinator memory while aggregating client updates",
}


#: Hand-written analysis of the missed targets, copied into the generated page.
MISSED_TARGETS_NOTES = Path(__file__).with_name("missed_targets.md")


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """Every workload's latest result found in ``folder``, by name."""
    found = {}
    for name in (*WORKLOADS, "run"):
        path = folder / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def _fmt(value: float | None, unit: str = "x") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**missed**")


def _relative(path: Path, start: Path) -> str:
    """``path`` as a link from a document in ``start`` (``../benchmarks/...`` from ``docs/``)."""
    return os.path.relpath(path.resolve(), start.resolve())


# --------------------------------------------------------------------------------------------------
# plots


def _plots(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, Path] = {}
    bulk = results.get("bulk")
    if bulk:
        table = bulk["table"]
        transports = list(dict.fromkeys(row["label"] for row in table))
        sizes = sorted({row["bytes"] for row in table})
        fig, ax = plt.subplots(figsize=(8, 4.6), dpi=100)
        width = 0.8 / len(transports)
        for index, label in enumerate(transports):
            rows = {row["bytes"]: row for row in table if row["label"] == label}
            values = [rows[s]["mbps"] for s in sizes]
            errors = [
                [rows[s]["mbps"] - rows[s]["mbps_q1"] for s in sizes],
                [rows[s]["mbps_q3"] - rows[s]["mbps"] for s in sizes],
            ]
            positions = [i + (index - (len(transports) - 1) / 2) * width for i in range(len(sizes))]
            ax.bar(positions, values, width, label=label, yerr=errors, capsize=2)
        ax.set_xticks(range(len(sizes)), [f"{s / MIB:g} MiB" for s in sizes])
        ax.set_yscale("log")
        ax.set_ylabel("MB/s, send + get back (log)")
        ax.set_title("Bulk float32 tensor round trip (median, bars: interquartile range)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        made["bulk"] = folder / "performance-bulk.png"
        fig.savefig(made["bulk"])
        plt.close(fig)
    small = results.get("small")
    if small:
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        for row in small["results"].values():
            points = sorted((int(k), v) for k, v in row["rps"].items())
            if len(points) > 1:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=row["label"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("requests in flight on one connection")
        ax.set_ylabel("requests per second")
        ax.set_title("Small requests (~64 bytes)")
        ax.axhline(20000, color="grey", linestyle=":", linewidth=1, label="target at 64 in flight")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        made["small"] = folder / "performance-small.png"
        fig.savefig(made["small"])
        plt.close(fig)
    federated = results.get("federated")
    if federated and federated.get("flower"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
        for key, label in (("fedproto", "fedproto"), ("flower", f"Flower {federated['flower']['flwr']}")):
            rounds = federated[key]["rounds"]
            left.plot([r["round"] for r in rounds], [r["seconds"] for r in rounds], marker="o", label=label)
            right.plot(
                [0] + [r["round"] for r in rounds],
                [federated[key]["initial_accuracy"]] + [r["accuracy"] for r in rounds],
                marker="o",
                label=label,
            )
        left.set_yscale("log")
        left.set_xlabel("round")
        left.set_ylabel("wall time per round, s (log)")
        right.set_xlabel("round")
        right.set_ylabel("test accuracy")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("FedAvg, same model, shards, clients and epochs")
        fig.tight_layout()
        made["federated"] = folder / "performance-federated.png"
        fig.savefig(made["federated"])
        plt.close(fig)
    simulation = results.get("simulation")
    if simulation and simulation.get("flower"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
        stacks = (("fedproto", "fedproto (Ray)"), ("flower", f"Flower {simulation['flower']['flwr']} (Ray)"))
        for key, label in stacks:
            rounds = simulation[key]["rounds"]
            left.plot([r["round"] for r in rounds], [r["seconds"] for r in rounds], marker=".", label=label)
            right.plot(
                [0] + [r["round"] for r in rounds],
                [simulation[key]["initial_accuracy"]] + [r["accuracy"] for r in rounds],
                marker=".",
                label=label,
            )
        left.set_xlabel("round")
        left.set_ylabel("wall time per round, s")
        right.set_xlabel("round")
        right.set_ylabel("test accuracy")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        config = simulation["config"]
        fig.suptitle(
            f"{config['clients']} simulated clients, {config['fraction']:.0%} per round, "
            f"on {machine_cpus(simulation)}"
        )
        fig.tight_layout()
        made["simulation"] = folder / "performance-simulation.png"
        fig.savefig(made["simulation"])
        plt.close(fig)
    return made


def machine_cpus(result: dict[str, Any]) -> str:
    """``"2 CPUs"``: the machine a result was measured on."""
    return f"{result.get('machine', {}).get('cpus', '?')} CPUs"


# --------------------------------------------------------------------------------------------------
# markdown


def _targets_table(results: dict[str, Any]) -> list[str]:
    lines = ["| workload | target | measured | verdict |", "|---|---|---|---|"]
    for name in WORKLOADS:
        for target in results.get(name, {}).get("targets", []):
            measured = _fmt(target["measured"], target.get("unit", "x"))
            lines.append(f"| {name} | {target['name']} | {measured} | {_verdict(target['met'])} |")
    return lines


def _ratios_table(result: dict[str, Any]) -> list[str]:
    lines = ["| measure | baseline | ratio | numbers |", "|---|---|---|---|"]
    for ratio in result.get("ratios", []):
        lines.append(
            f"| {ratio['what']} | {ratio['baseline']} | {_fmt(ratio['value'])} | {ratio['detail']} |"
        )
    return lines


def _bulk(result: dict[str, Any], plot: Path | None, docs: Path) -> list[str]:
    sweep = result["frame_sweep"]
    frames = (
        ", ".join(
            f"{int(f) >> 10} KiB: {2 * sweep['payload'] / s['median'] / 1e6:,.0f} MB/s"
            for f, s in sweep["frames"].items()
        )
        or "no sweep in quick mode"
    )
    lines = [
        "Send a float32 tensor to a server, get it back; every server in its own process and every client in",
        "another, so each side's memory is its own. MB/s counts both directions (2 x payload / round-trip",
        "time), median of the timed rounds after warm-up, with the interquartile range. Peak memory is the",
        "most resident memory a side added during one round trip above what it held just before (VmHWM reset",
        "through `/proc/<pid>/clear_refs`), as a multiple of the payload: the server keeps one copy and the",
        "client receives one, so 1x is the floor. CPU is the seconds both processes spent per GB moved.",
        "",
        f"The bare websockets ceiling uses the frame size that moved {sweep['payload'] / MIB:g} MiB fastest "
        f"in the same run ({frames}; chosen: {sweep['best_frame'] >> 10} KiB); fedproto uses its default "
        "256 KiB chunks. The Node worker rows are the same Python client against",
        "`benchmarks/node_worker_server.mjs`. This section alone:",
        "`.venv/bin/python -m benchmarks --only bulk` (about 3 minutes).",
        *_digest_lines(result),
        "",
        "| transport | payload | MB/s (IQR) | send MB/s | get MB/s | CPU s/GB | peak client | peak server "
        "| rounds | intact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["table"]:
        lines.append(
            f"| {row['label']} | {row['bytes'] / MIB:g} MiB | {row['mbps']:,.0f} "
            f"({row['mbps_q1']:,.0f}-{row['mbps_q3']:,.0f}) | {row['send_mbps']:,.0f}"
            f" | {row['get_mbps']:,.0f}"
            f" | {row.get('cpu_s_per_gb', float('nan')):.2f} | {row['peak_client_x']:.2f}x"
            f" | {row['peak_server_x']:.2f}x | {row['repeats']} | {row['correct']} |"
        )
    lines += ["", *_ratios_table(result)]
    if plot:
        lines += ["", f"![bulk transfer throughput]({_relative(plot, docs)})"]
    return lines


def _digest_lines(result: dict[str, Any]) -> list[str]:
    """Which payload digest each fedproto row ran under (docs/protocol.md section 7.5)."""
    digests = result.get("digests")
    if not digests:  # results of a run from before the digest was negotiated
        return []
    labels = {row["transport"]: row["label"] for row in result["table"]}
    chosen = "; ".join(f"{labels.get(t, t)}: {name}" for t, name in digests.items())
    return [
        "The fedproto client offers its default digests (`xxh3-128`, `blake3`, `sha256`, protocol §7.5) and",
        'the "SHA-256 only" rows offer `sha256` alone, as every transfer was checked before the digest was',
        f"negotiated. Digest each connection negotiated: {chosen}.",
    ]


def _small(result: dict[str, Any], plot: Path | None, docs: Path) -> list[str]:
    lines = [
        "`ping` and a custom call (`echo` of 48 bytes, a plain function registered with `@worker.method`)",
        "against a bare websockets echo of 64-byte messages (an id prefix matched to futures by a reader",
        "task) and grpcio unary echo calls of 64 bytes. Latency: one request in flight, every request timed.",
        "Throughput: that many tasks issuing requests back to back on one connection. The clients take turns",
        "round after round; the servers run in their own processes. The Node worker rows are the same Python",
        "client against `benchmarks/node_worker_server.mjs` (the Node package's worker, same `echo`).",
        "",
        "| client | p50 | p99 | 1 in flight | 8 in flight | 64 in flight |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["results"].values():
        rps = [row["rps"].get(k) for k in ("1", "8", "64")]
        cells = " | ".join("-" if v is None else f"{v:,.0f}/s" for v in rps)
        lines.append(f"| {row['label']} | {row['p50_us']:,.0f} us | {row['p99_us']:,.0f} us | {cells} |")
    lines += ["", *_ratios_table(result)]
    if plot:
        lines += ["", f"![requests per second]({_relative(plot, docs)})"]
    return lines


def _fit(result: dict[str, Any]) -> list[str]:
    lines = [
        "The same training (initial weights, random data, seed, batch size, one epoch, SGD) locally as a",
        "plain PyTorch loop, locally through `fedproto.training.TrainingState` (the worker's engine,",
        "TorchScript model), and through `AsyncClient.fit` on a worker in its own process. They take turns",
        "after a warm-up fit each. The first fits' losses must agree: same loop, same numbers.",
        "",
        "| model | parameters | batches | plain loop | engine in-process | remote fit | remote / plain | "
        "remote / engine | losses agree |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["results"].items():
        t = row["times"]
        lines.append(
            f"| {name} MLP {'-'.join(map(str, row['dims']))} | {row['parameters']:,} | {row['batches']}"
            f" | {t['plain']['median']:.3f} s | {t['engine']['median']:.3f} s | {t['remote']['median']:.3f} s"
            f" | {row['remote_over_plain']:.3f} | {row['remote_over_engine']:.3f} | {row['losses_agree']} |"
        )
    lines += [
        "",
        "`set_train_config` (scripting and sending the model, once) took "
        + ", ".join(f"{row['set_train_config_s']:.2f} s ({name})" for name, row in result["results"].items())
        + ".",
    ]
    return lines


def _federated(result: dict[str, Any], plot: Path | None, docs: Path) -> list[str]:
    config = result["config"]
    data = result["data"]
    lines = [
        f"{config['clients']} clients, {config['rounds']} rounds of FedAvg, {config['epochs']} local epochs, "
        f"batch size {config['batch_size']}, SGD lr {config['lr']}, "
        f"MLP {'-'.join(map(str, config['dims']))}, on "
        f"{data['source']}: {data['shard_samples']} training samples per client, {data['test_samples']} test "
        "samples. Each client is a process limited to one torch thread; the same seeded initial weights and",
        "training loop on both sides. A round runs from sending the global weights to having averaged the",
        "trained ones; the global model is evaluated on the test set after each round, outside that span.",
        "The first round is reported apart (fedproto sends the model then; Flower waits for its clients).",
        "",
    ]
    if result.get("flower"):
        lines += [
            "| stack | round (median after the first) | fastest | slowest | first round | all rounds | "
            "initial accuracy | final accuracy |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, label in (("fedproto", "fedproto FedAvg"), ("flower", f"Flower {result['flower']['flwr']}")):
            s = result[key]["summary"]
            lines.append(
                f"| {label} | {s['round_median_s']:.3f} s | {s['round_min_s']:.3f} s"
                f" | {s['round_max_s']:.3f} s"
                f" | {s['first_round_s']:.3f} s | {s['rounds_total_s']:.2f} s | {s['initial_accuracy']:.3f}"
                f" | {s['final_accuracy']:.3f} |"
            )
        lines += ["", *_ratios_table(result)]
        if plot:
            lines += ["", f"![FedAvg rounds]({_relative(plot, docs)})"]
    else:
        lines += [
            "Flower could not run here; the exact error:",
            "",
            "```",
            result.get("flower_error", "?"),
            "```",
        ]
    return lines


def _simulation(result: dict[str, Any], plot: Path | None, docs: Path) -> list[str]:
    config = result["config"]
    ours = result["fedproto"]
    per_round = max(1, int(config["fraction"] * config["clients"] + 1e-9))
    lines = [
        f"{config['clients']} virtual clients sharing scikit-learn's digits (IID, seeded), {per_round} "
        f"sampled per round, {config['rounds']} rounds of FedAvg, {config['epochs']} local epoch(s), "
        f"batch size {config['batch_size']}, SGD lr {config['lr']} with momentum 0.9 (fresh per fit), MLP "
        f"{'-'.join(map(str, [64, *config['hidden'], 10]))}, on {config['num_cpus']} CPUs. fedproto: "
        f'`fedproto.simulation.run(backend="{config["backend"]}")`, {config["workers"]} host(s) ('
        f"{'Ray actors' if config['backend'] == 'ray' else 'local processes'}), each serving one fedproto "
        "worker holding its share of the clients' datasets, driven over",
        "loopback WebSockets. Flower: `flwr.simulation.start_simulation` (its Ray virtual client engine, one",
        "CPU per client actor) on the same clients' data. Both evaluate the global model on the held-out",
        "test digits after each round outside the timed span (the accuracy columns); fedproto's round also",
        "holds FedAvg's own evaluation on the hosts, through the protocol (`simulate`'s default), which",
        "Flower's does not. The round time is the median after round 1.",
        "",
        "| stack | round (median after the first) | first round | all rounds | initial accuracy "
        "| final accuracy |",
        "|---|---|---|---|---|---|",
    ]
    stacks = [("fedproto", "fedproto simulation")]
    if result.get("flower"):
        stacks.append(("flower", f"Flower {result['flower']['flwr']} simulation"))
    for key, label in stacks:
        side = result[key]
        rounds = side["rounds"]
        lines.append(
            f"| {label} | {side['round_median_s']:.3f} s | {rounds[0]['seconds']:.3f} s"
            f" | {sum(r['seconds'] for r in rounds):.1f} s | {side['initial_accuracy']:.3f}"
            f" | {side['final_accuracy']:.3f} |"
        )
    slope = result.get("seconds_per_extra_client")
    small = result.get("fedproto_small")
    if slope is not None and small is not None:
        lines += [
            "",
            f"One more client per round costs {1000 * slope:.1f} ms of round time: fedproto's median round "
            "took "
            f"{small['round_median_s']:.3f} s with {small['rounds'][0]['sampled']} clients per round "
            f"and {ours['round_median_s']:.3f} s with {ours['rounds'][0]['sampled']}.",
        ]
    memory = result.get("memory") or []
    if memory:
        lines += [
            "",
            f"Coordinator memory with a {memory[0]['model_mib']:.1f} MiB model "
            f"(MLP 64-{'-'.join(map(str, config['memory_hidden']))}-10): the most resident memory the",
            "coordinator held during rounds 2 and later above its level at the end of round 1, in models",
            "(the kernel's high-water mark, VmHWM, reset after round 1; the allocator maps blocks of 64 KiB",
            "or more on their own, so freed tensors leave at once and the peak is live memory).",
            "",
            "| clients | reporting per round | peak above steady state | round (median) |",
            "|---|---|---|---|",
        ]
        for row in memory:
            lines.append(
                f"| {row['clients']:,} | {row['per_round']} | {row['peak_extra_models']:.2f} models"
                f" | {row['round_median_s']:.3f} s |"
            )
    if result.get("flower"):
        lines += ["", *_ratios_table(result)]
        if plot:
            lines += ["", f"![simulated rounds]({_relative(plot, docs)})"]
    else:
        lines += [
            "",
            "Flower's simulation could not run here; the exact error:",
            "",
            "```",
            result.get("flower_error", "?"),
            "```",
        ]
    return lines


def _aggregation(result: dict[str, Any]) -> list[str]:
    lines = [
        "The coordinator folds N client updates of a float32 model into an aggregator, each update arriving",
        "as new tensors (`benchmarks/aggregation.py`; a process per row, one for all in quick mode): the",
        "default `streaming` running float64 sum of FedAvg (O(model)), `buffered` the same mean from every",
        "update kept, `median` a strategy that needs them all. Peak: resident memory added (VmHWM).",
        "",
        "| aggregator | N | model | peak added | in model sizes | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["table"]:
        lines.append(
            f"| {row['mode']} | {row['updates']} | {row['model_mib']:.1f} MiB | {row['peak_mib']:.1f} MiB"
            f" | {row['peak_models']:.1f} | {row['seconds']:.2f} |"
        )
    return lines


def write_markdown(results: dict[str, Any], path: Path, plot_folder: Path | None = None) -> Path:
    """Write the summary (and its plots, next to it unless told otherwise); returns its path."""
    docs = path.parent
    docs.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, plot_folder or docs)
    meta = results.get("run", {})
    machine = next((r["machine"] for r in results.values() if isinstance(r, dict) and "machine" in r), {})
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`python -m benchmarks`); do not edit by hand. Every number below was",
        "measured on the machine described here, with fedproto and each alternative in the same run, and",
        "every claim is a ratio between them. Raw results: `benchmarks/results/*.json`.",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('memory_gib', '?')} GiB, "
        f"Python {machine.get('python', '?')}, {machine.get('platform', '?')}. "
        + (f"Run of {meta['finished']}, {meta['seconds']:.0f} s in all" if meta else "")
        + (" (quick mode: tiny sizes, not representative)." if meta.get("quick") else "."),
        "The machine is shared: medians of interleaved rounds and interquartile ranges are given so that a",
        "noisy neighbour shows rather than hides.",
        "",
        "## Targets",
        "",
        *_targets_table(results),
    ]
    sections = {
        "bulk": lambda r: _bulk(r, plots.get("bulk"), docs),
        "small": lambda r: _small(r, plots.get("small"), docs),
        "fit": _fit,
        "federated": lambda r: _federated(r, plots.get("federated"), docs),
        "simulation": lambda r: _simulation(r, plots.get("simulation"), docs),
        "aggregation": _aggregation,
    }
    for name in WORKLOADS:
        if name in results:
            lines += ["", f"## {TITLES[name]}", "", *sections[name](results[name])]
    if MISSED_TARGETS_NOTES.exists():
        lines += ["", "## Where a target is missed, and why", "", MISSED_TARGETS_NOTES.read_text().rstrip()]
    lines += [
        "",
        "## Reproducing",
        "",
        "```sh",
        "make bench                                  # everything, writes this page",
        ".venv/bin/python -m benchmarks --only bulk  # one workload (the others keep their last results)",
        ".venv/bin/python -m benchmarks --quick      # a tiny run that checks the harness, not the numbers",
        "```",
        "",
        "The Flower side runs in `benchmarks/.flower-venv`, created on first use from",
        "`benchmarks/flower-requirements.txt` (Flower pins protobuf 6, the project uses 7).",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def console_table(results: dict[str, Any]) -> Any:
    """A rich table with every ratio and every target's verdict."""
    from rich.table import Table

    table = Table(title="fedproto against its baselines (same machine, same run)", show_lines=False)
    table.add_column("workload")
    table.add_column("measure")
    table.add_column("baseline / target")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    for name in WORKLOADS:
        result = results.get(name)
        if not result:
            continue
        for ratio in result.get("ratios", []):
            table.add_row(name, ratio["what"], ratio["baseline"], _fmt(ratio["value"]), "")
        for target in result.get("targets", []):
            met = target["met"]
            verdict = (
                "[yellow]not measured[/]" if met is None else ("[green]met[/]" if met else "[red]missed[/]")
            )
            table.add_row(
                name,
                f"[bold]{target['name']}[/]",
                f"{target['op']} {_fmt(target['threshold'], target.get('unit', 'x'))}",
                _fmt(target["measured"], target.get("unit", "x")),
                verdict,
            )
        table.add_section()
    return table


__all__ = ["REPO", "console_table", "load_results", "write_markdown"]
