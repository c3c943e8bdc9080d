"""Workload 2, small requests: latency and requests per second on one connection.

fedproto's ``ping`` and a small custom call (``echo`` of 48 bytes, a plain function registered on the
worker as a user would write it) against a bare ``websockets`` echo of 64-byte messages (an 8-byte id
and a 56-byte body, matched to their futures by a reader task, the least a pipelining client needs),
and grpcio unary echo calls of the same 64 bytes for reference. The same Python client also measures the
Node worker (``benchmarks/node_worker_server.mjs``, the same echo method) beside the Python one.

Latency: one request in flight, each timed, p50 and p99. Throughput: 1, 8 and 64 requests in flight on
one connection (that many tasks issuing requests back to back), requests per second. Every server runs
in its own process; the clients run in the benchmark process, taking turns round after round.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.harness import (
    Ratio,
    ServerProcess,
    Target,
    child_env,
    machine,
    node_worker,
    percentile,
    python,
)

NAME = "small"
IN_FLIGHT = (1, 8, 64)
ECHO_ARG = b"e" * 48  # the call's frame is about 64 bytes
BARE_BODY = b"b" * 56  # 8-byte id + 56 bytes = 64 bytes
LABELS = {
    "fedproto_ping": "fedproto ping",
    "fedproto_echo": "fedproto echo call",
    "node_ping": "fedproto ping, Node worker",
    "node_echo": "fedproto echo call, Node worker",
    "ws_echo": "bare websockets echo",
    "grpc_echo": "grpcio unary echo",
}

Request = Callable[[], Awaitable[Any]]


async def _latencies(request: Request, count: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await request()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        await request()
        samples.append(time.perf_counter() - t0)
    return samples


async def _throughput(request: Request, in_flight: int, total: int, max_seconds: float) -> float:
    """Requests per second with ``in_flight`` tasks sharing ``total`` requests (or ``max_seconds``)."""
    counter = itertools.count()
    deadline = time.perf_counter() + max_seconds
    done = 0

    async def issue() -> None:
        nonlocal done
        while next(counter) < total and time.perf_counter() < deadline:
            await request()
            done += 1

    for _ in range(min(200, total)):  # warm up
        await request()
    started = time.perf_counter()
    await asyncio.gather(*(issue() for _ in range(in_flight)))
    return done / (time.perf_counter() - started)


async def _clients(ports: dict[str, int]) -> tuple[dict[str, Request], Callable[[], Awaitable[None]]]:
    import fedproto
    from benchmarks.baselines import grpc_raw, ws_bare

    client = await fedproto.AsyncClient.connect(f"ws://127.0.0.1:{ports['fedproto']}")
    node = await fedproto.AsyncClient.connect(f"ws://127.0.0.1:{ports['node']}")
    bare = ws_bare.PipelinedEcho(await ws_bare.open_client(ports["ws"]))
    grpc_client = grpc_raw.Client(ports["grpc"])
    grpc_message = b"g" * 64

    async def fedproto_echo() -> None:
        assert await client.call("echo", ECHO_ARG) == ECHO_ARG

    async def node_echo() -> None:
        assert await node.call("echo", ECHO_ARG) == ECHO_ARG

    async def ws_echo() -> None:
        await bare.request(BARE_BODY)

    async def grpc_echo() -> None:
        grpc_client.echo(grpc_message)  # blocking, one in flight: latency only

    async def close() -> None:
        await client.close()
        await node.close()
        await bare.close()
        grpc_client.close()

    requests: dict[str, Request] = {
        "fedproto_ping": client.ping,
        "fedproto_echo": fedproto_echo,
        "node_ping": node.ping,
        "node_echo": node_echo,
        "ws_echo": ws_echo,
        "grpc_echo": grpc_echo,
    }
    return requests, close


async def _measure(ports: dict[str, int], quick: bool) -> dict[str, Any]:
    requests, close = await _clients(ports)
    rounds = 1 if quick else 3
    count, warmup = (30, 10) if quick else (1500, 300)
    total, max_seconds = (60, 5.0) if quick else (8000, 3.0)
    latencies: dict[str, list[float]] = {name: [] for name in requests}
    rates: dict[str, dict[int, list[float]]] = {name: {k: [] for k in IN_FLIGHT} for name in requests}
    try:
        for _ in range(rounds):
            for name, request in requests.items():
                latencies[name] += await _latencies(request, count, warmup)
                for in_flight in IN_FLIGHT:
                    if name == "grpc_echo" and in_flight > 1:
                        continue
                    rates[name][in_flight].append(await _throughput(request, in_flight, total, max_seconds))
    finally:
        await close()
    out: dict[str, Any] = {}
    for name in requests:
        samples = latencies[name]
        out[name] = {
            "label": LABELS[name],
            "requests_timed": len(samples),
            "p50_us": percentile(samples, 50) * 1e6,
            "p99_us": percentile(samples, 99) * 1e6,
            "mean_us": statistics.fmean(samples) * 1e6,
            "rps": {str(k): statistics.median(v) for k, v in rates[name].items() if v},
            "rps_min": {str(k): min(v) for k, v in rates[name].items() if v},
            "rps_max": {str(k): max(v) for k, v in rates[name].items() if v},
        }
    return out


def run(quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure small requests for fedproto and its baselines; returns the workload's result."""
    env = child_env()
    with (
        ServerProcess([*python(), "-m", "benchmarks.worker_server"], env=env, name="worker") as worker,
        ServerProcess(node_worker(), env=env, name="node-worker") as node_server,
        ServerProcess(
            [*python(), "-m", "benchmarks.baselines.ws_bare", "--mode", "echo"], env=env, name="ws"
        ) as ws,
        ServerProcess(
            [*python(), "-m", "benchmarks.baselines.grpc_raw"], env=env, name="grpc"
        ) as grpc_server,
    ):
        ports = {
            "fedproto": int(worker.ready_line.split()[1]),
            "node": int(node_server.ready_line.split()[1]),
            "ws": int(ws.ready_line.split()[1]),
            "grpc": int(grpc_server.ready_line.split()[1]),
        }
        measured = asyncio.run(_measure(ports, quick))
    for row in measured.values():
        rps = "  ".join(f"{k} in flight {v:8.0f}/s" for k, v in row["rps"].items())
        log(f"  {row['label']:<22} p50 {row['p50_us']:7.0f} us  p99 {row['p99_us']:7.0f} us  {rps}")
    result: dict[str, Any] = {"workload": NAME, "quick": quick, "machine": machine(), "results": measured}
    result["ratios"], result["targets"] = _verdicts(measured)
    return result


def _verdicts(measured: dict[str, Any]) -> tuple[list[Ratio], list[Target]]:
    bare = measured["ws_echo"]
    grpc_row = measured["grpc_echo"]
    ratios: list[Ratio] = []
    targets: list[Target] = []
    for name in ("fedproto_ping", "fedproto_echo"):
        ours = measured[name]
        label = LABELS[name]
        ratios.append(
            Ratio(
                f"{label} p50 latency (lower is better)",
                ours["p50_us"] / bare["p50_us"],
                LABELS["ws_echo"],
                f"{ours['p50_us']:.0f} vs {bare['p50_us']:.0f} us",
            )
        )
        ratios.append(
            Ratio(
                f"{label} p99 latency (lower is better)",
                ours["p99_us"] / bare["p99_us"],
                LABELS["ws_echo"],
                f"{ours['p99_us']:.0f} vs {bare['p99_us']:.0f} us",
            )
        )
        ratios.append(
            Ratio(
                f"{label} p50 latency (lower is better)",
                ours["p50_us"] / grpc_row["p50_us"],
                LABELS["grpc_echo"],
                f"{ours['p50_us']:.0f} vs {grpc_row['p50_us']:.0f} us",
            )
        )
        for k in IN_FLIGHT:
            ratios.append(
                Ratio(
                    f"{label} requests/s, {k} in flight",
                    ours["rps"][str(k)] / bare["rps"][str(k)],
                    LABELS["ws_echo"],
                    f"{ours['rps'][str(k)]:.0f} vs {bare['rps'][str(k)]:.0f} /s",
                )
            )
        targets.append(
            Target(
                f"{label} p50 latency <= 1.5x bare websockets echo",
                ours["p50_us"] / bare["p50_us"],
                "<=",
                1.5,
            )
        )
        targets.append(
            Target(
                f"{label} >= 20,000 requests/s with 64 in flight", ours["rps"]["64"], ">=", 20000.0, unit="/s"
            )
        )
    # The Node worker against the Python worker, same client, same run (no targets: a comparison).
    for node_name, python_name in (("node_ping", "fedproto_ping"), ("node_echo", "fedproto_echo")):
        node, python_row = measured[node_name], measured[python_name]
        ratios.append(
            Ratio(
                f"{LABELS[node_name]} p50 latency (lower is better)",
                node["p50_us"] / python_row["p50_us"],
                f"{LABELS[python_name]} (Python worker)",
                f"{node['p50_us']:.0f} vs {python_row['p50_us']:.0f} us",
            )
        )
        ratios.append(
            Ratio(
                f"{LABELS[node_name]} requests/s, 64 in flight",
                node["rps"]["64"] / python_row["rps"]["64"],
                f"{LABELS[python_name]} (Python worker)",
                f"{node['rps']['64']:.0f} vs {python_row['rps']['64']:.0f} /s",
            )
        )
    return ratios, targets
