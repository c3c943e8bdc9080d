"""Workload 1, bulk tensor transfer: a float32 tensor sent to a server and fetched back.

Every transport runs its server in a process of its own and its client in another, so that each side's
resident memory is its own. For each payload size the client times ``send`` and ``get`` separately
(after warm-up rounds), checks once that the bytes came back intact, and measures the peak resident
memory each side added during one round trip, above what it held just before (the client already holds
the tensor to send, the server holds nothing yet; the server keeps one copy and the client receives one,
so 1x on each side is the floor).

Transports: fedproto (``AsyncClient`` against ``fedproto.Worker``, and the same client against the Node
worker, ``benchmarks/node_worker_server.mjs``), each with the client's default digest offer (xxh3-128
first, docs/protocol.md section 7.5), and the Python pair once more with only ``sha256`` offered (the
protocol as first written: every payload hashed with SHA-256), bare ``websockets`` at its best frame
size (the ceiling; the frame size is chosen by a sweep in the same run) and as one message, PySyft 0.2's
wire, and grpcio unary calls with raw bytes.

The client side runs as ``python -m benchmarks.bulk --client TRANSPORT ...`` and prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.harness import (
    MIB,
    PeakMemory,
    Ratio,
    ServerProcess,
    Stats,
    Target,
    child_env,
    machine,
    node_worker,
    python,
    run_json,
    stats,
)

NAME = "bulk"
TRANSPORTS = ("fedproto", "fedproto_sha256", "fedproto_node", "ws_bare", "ws_one_message", "pysyft", "grpc")
LABELS = {
    "fedproto": "fedproto",
    "fedproto_sha256": "fedproto, SHA-256 only",
    "fedproto_node": "fedproto, Node worker",
    "ws_bare": "bare websockets (best frame)",
    "ws_one_message": "bare websockets (one message)",
    "pysyft": "PySyft 0.2 wire",
    "grpc": "grpcio unary",
}

# --------------------------------------------------------------------------------------------------
# client side (in its own process)


def _plan(size: int, quick: bool) -> dict[str, Any]:
    """Warm-up rounds, timed rounds and a time budget for one payload size."""
    if quick:
        return {"warmup": 1, "repeats": 1, "max_seconds": 5.0, "min_repeats": 1}
    if size <= 2 * MIB:
        return {"warmup": 3, "repeats": 15, "max_seconds": 4.0, "min_repeats": 5}
    if size <= 32 * MIB:
        return {"warmup": 1, "repeats": 7, "max_seconds": 6.0, "min_repeats": 3}
    return {"warmup": 1, "repeats": 3, "max_seconds": 12.0, "min_repeats": 2}


class _Ops:
    """send/get/drop for one transport; ``get`` returns something with the tensor's bytes."""

    async def open(self) -> None: ...

    async def send(self, tensor: Any) -> None: ...

    async def get(self) -> Any: ...

    async def drop(self) -> None: ...

    async def close(self) -> None: ...


class _Fedproto(_Ops):
    def __init__(self, port: int, digests: tuple[str, ...] | None = None) -> None:
        self.url = f"ws://127.0.0.1:{port}"
        self.object_id = "payload"
        self.digests = digests

    async def open(self) -> None:
        import fedproto

        if self.digests is None:  # the client's default offer
            self.client = await fedproto.AsyncClient.connect(self.url)
        else:
            self.client = await fedproto.AsyncClient.connect(self.url, digests=self.digests)
        self.digest = self.client.digest

    async def send(self, tensor: Any) -> None:
        await self.client.send(tensor, id=self.object_id)

    async def get(self) -> Any:
        return await self.client.get(self.object_id)

    async def drop(self) -> None:
        await self.client.delete(self.object_id)

    async def close(self) -> None:
        await self.client.close()


class _WsBare(_Ops):
    def __init__(self, port: int, frame: int) -> None:
        self.port = port
        self.frame = frame
        self.nbytes = 0

    async def open(self) -> None:
        from benchmarks.baselines import ws_bare

        self.mod = ws_bare
        self.ws = await ws_bare.open_client(self.port)

    async def send(self, tensor: Any) -> None:
        view = memoryview(tensor.numpy()).cast("B")
        self.nbytes = view.nbytes
        await self.mod.put(self.ws, view, self.frame or view.nbytes)

    async def get(self) -> Any:
        import torch

        buffer = await self.mod.get(self.ws, self.nbytes, self.frame or self.nbytes)
        return torch.frombuffer(buffer, dtype=torch.float32)

    async def drop(self) -> None:
        await self.mod.drop(self.ws)

    async def close(self) -> None:
        await self.ws.close()


class _PySyft(_Ops):
    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        from benchmarks.baselines import pysyft_wire

        self.mod = pysyft_wire
        self.ws = pysyft_wire.open_client(self.port)

    async def send(self, tensor: Any) -> None:
        self.mod.send(self.ws, tensor, 42)

    async def get(self) -> Any:
        return self.mod.get(self.ws, 42)

    async def drop(self) -> None:
        self.mod.delete(self.ws, 42)

    async def close(self) -> None:
        self.ws.close()


class _Grpc(_Ops):
    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        from benchmarks.baselines import grpc_raw

        self.client = grpc_raw.Client(self.port)

    async def send(self, tensor: Any) -> None:
        self.client.put(tensor.numpy().tobytes())  # grpcio wants bytes: one copy, unavoidable

    async def get(self) -> Any:
        import numpy as np

        return np.frombuffer(self.client.get(b""), dtype=np.float32)  # a view, no copy

    async def drop(self) -> None:
        self.client.drop(b"")

    async def close(self) -> None:
        self.client.close()


def _ops(transport: str, port: int, frame: int) -> _Ops:
    if transport in ("fedproto", "fedproto_node"):  # the same Python client against either worker
        return _Fedproto(port)
    if transport == "fedproto_sha256":
        return _Fedproto(port, digests=("sha256",))
    if transport in ("ws_bare", "ws_one_message"):
        return _WsBare(port, frame if transport == "ws_bare" else 0)
    if transport == "pysyft":
        return _PySyft(port)
    if transport == "grpc":
        return _Grpc(port)
    raise ValueError(transport)


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    ops = _ops(args.client, args.port, args.frame)
    await ops.open()
    out: dict[str, Any] = {"transport": args.client, "frame": args.frame, "sizes": {}}
    if isinstance(ops, _Fedproto):
        out["digest"] = ops.digest  # what the worker chose from the offer
    try:
        for size in args.sizes:
            tensor = torch.randn(size // 4, generator=torch.Generator().manual_seed(size))
            plan = _plan(size, args.quick)
            turns = int(args.share.split("/")[1])
            plan["repeats"] = max(1, -(-plan["repeats"] // turns))
            plan["min_repeats"] = max(1, -(-plan["min_repeats"] // turns))
            plan["max_seconds"] /= turns
            if args.client == "pysyft" and size > 32 * MIB and not args.quick:
                plan["warmup"] = 0  # tens of seconds a round; smaller sizes warmed the code paths
            send_times: list[float] = []
            get_times: list[float] = []
            peaks: dict[str, list[int]] = {"client": [], "server": []}
            cpu: dict[str, list[float]] = {"client": [], "server": []}
            correct = None
            started = time.perf_counter()
            rounds = plan["warmup"] + plan["repeats"]
            for index in range(rounds):
                gc.collect()
                with PeakMemory({"client": None, "server": args.server_pid}) as peak:
                    t0 = time.perf_counter()
                    await ops.send(tensor)
                    t1 = time.perf_counter()
                    received = await ops.get()
                    t2 = time.perf_counter()
                if correct is None:
                    got = received.numpy() if isinstance(received, torch.Tensor) else received
                    correct = bool(np.array_equal(np.asarray(got).reshape(-1), tensor.numpy()))
                del received
                await ops.drop()
                if index < plan["warmup"]:
                    started = time.perf_counter()
                    continue
                send_times.append(t1 - t0)
                get_times.append(t2 - t1)
                peaks["client"].append(peak.added["client"])
                peaks["server"].append(peak.added["server"])
                cpu["client"].append(peak.cpu["client"])
                cpu["server"].append(peak.cpu["server"])
                timed = len(send_times)
                if timed >= plan["min_repeats"] and time.perf_counter() - started > plan["max_seconds"]:
                    break
            round_trip = [s + g for s, g in zip(send_times, get_times, strict=True)]
            out["sizes"][str(size)] = {
                "bytes": size,
                "send": stats(send_times).to_dict(),
                "get": stats(get_times).to_dict(),
                "round_trip": stats(round_trip).to_dict(),
                "peak_client_bytes": max(peaks["client"]),
                "peak_server_bytes": max(peaks["server"]),
                "cpu_client_s": stats(cpu["client"]).median,
                "cpu_server_s": stats(cpu["server"]).median,
                "correct": correct,
            }
            del tensor
    finally:
        await ops.close()
    return out


async def _sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Bare websockets at several frame sizes on one payload: which frame size moves it fastest."""
    import torch

    from benchmarks.baselines import ws_bare

    ws = await ws_bare.open_client(args.port)
    size = args.sizes[0]
    tensor = torch.randn(size // 4, generator=torch.Generator().manual_seed(1))
    view = memoryview(tensor.numpy()).cast("B")
    results: dict[str, Any] = {}
    try:
        for frame in args.frames:
            samples = []
            for index in range(1 + args.repeats):
                t0 = time.perf_counter()
                await ws_bare.put(ws, view, frame)
                await ws_bare.get(ws, size, frame)
                elapsed = time.perf_counter() - t0
                await ws_bare.drop(ws)
                if index:
                    samples.append(elapsed)
            results[str(frame)] = stats(samples).to_dict()
    finally:
        await ws.close()
    best = min(results, key=lambda f: results[f]["median"])
    return {"payload": size, "frames": results, "best_frame": int(best)}


# --------------------------------------------------------------------------------------------------
# orchestration (in the benchmark process)


def _server_cmd(transport: str) -> list[str]:
    if transport in ("fedproto", "fedproto_sha256"):
        return [*python(), "-m", "benchmarks.worker_server"]
    if transport == "fedproto_node":
        return node_worker()
    if transport in ("ws_bare", "ws_one_message"):
        return [*python(), "-m", "benchmarks.baselines.ws_bare", "--mode", "bulk"]
    if transport == "pysyft":
        return [*python(), "-m", "benchmarks.baselines.pysyft_wire"]
    return [*python(), "-m", "benchmarks.baselines.grpc_raw"]


def _client_cmd(transport: str, port: int, pid: int, sizes: list[int], quick: bool, frame: int) -> list[str]:
    cmd = [*python(), "-m", "benchmarks.bulk", "--client", transport, "--port", str(port)]
    cmd += ["--server-pid", str(pid), "--frame", str(frame), "--sizes", *map(str, sizes)]
    return cmd + (["--quick"] if quick else [])


def _merge(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """One transport's passes as one measurement: samples pooled, the worst peaks kept."""
    merged: dict[str, Any] = {"transport": passes[0]["transport"], "frame": passes[0]["frame"], "sizes": {}}
    if "digest" in passes[0]:
        merged["digest"] = passes[0]["digest"]
    for key in passes[0]["sizes"]:
        rows = [p["sizes"][key] for p in passes]
        row = dict(rows[0])
        for part in ("send", "get", "round_trip"):
            row[part] = stats([x for r in rows for x in r[part]["samples"]]).to_dict()
        for part in ("peak_client_bytes", "peak_server_bytes"):
            row[part] = max(r[part] for r in rows)
        for part in ("cpu_client_s", "cpu_server_s"):
            row[part] = statistics.median(r[part] for r in rows)
        row["correct"] = all(r["correct"] for r in rows)
        merged["sizes"][key] = row
    return merged


def _mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def run(quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every transport and return the workload's result (ratios and targets included)."""
    sizes = [3 * MIB] if quick else [MIB, 16 * MIB, 256 * MIB]  # quick: still chunked (over 1 MiB)
    sweep_payload = 2 * MIB if quick else 64 * MIB
    frames = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
    env = child_env()
    timeout = 120 if quick else 400
    result: dict[str, Any] = {"workload": NAME, "quick": quick, "machine": machine(), "sizes": sizes}

    if quick:  # a check of the harness, not a measurement: the default frame size will do
        sweep = {"payload": sweep_payload, "frames": {}, "best_frame": 1 << 20}
    else:
        with ServerProcess(_server_cmd("ws_bare"), env=env, name="ws_bare") as server:
            port = int(server.ready_line.split()[1])
            cmd = [
                *python(),
                "-m",
                "benchmarks.bulk",
                "--sweep",
                "--port",
                str(port),
                "--sizes",
                str(sweep_payload),
            ]
            cmd += ["--repeats", "3", "--frames", *map(str, frames)]
            sweep = run_json(cmd, timeout=timeout, env=env, name="frame sweep")
    best_frame = int(sweep["best_frame"])
    result["frame_sweep"] = sweep
    log(f"  bare websockets frame sweep on {sweep_payload // MIB} MiB: best frame {best_frame >> 10} KiB")

    # Transports take turns, round after round, so that a noisy neighbour hurts them alike.
    rounds = 1 if quick else 2
    passes: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}

    def one_pass(transport: str, turn: int) -> dict[str, Any]:
        with ServerProcess(_server_cmd(transport), env=env, name=transport) as server:
            port = int(server.ready_line.split()[1])
            cmd = _client_cmd(transport, port, server.pid, sizes, quick, best_frame)
            cmd += ["--share", f"{turn + 1}/{rounds}"]
            return dict(run_json(cmd, timeout=timeout, env=env, name=f"{transport} client"))

    if quick:  # checks only: all transports at once, to keep the smoke test short
        with ThreadPoolExecutor(len(TRANSPORTS)) as pool:
            outcomes = pool.map(one_pass, TRANSPORTS, [0] * len(TRANSPORTS))
            for transport, measured in zip(TRANSPORTS, outcomes, strict=True):
                passes[transport].append(measured)
    else:
        for turn in range(rounds):
            for transport in TRANSPORTS:
                passes[transport].append(one_pass(transport, turn))
    transports = {t: _merge(p) for t, p in passes.items()}
    for transport, measured in transports.items():
        for key, row in measured["sizes"].items():
            rt = row["round_trip"]["median"]
            log(
                f"  {LABELS[transport]:<30} {int(key) / MIB:>7.2f} MiB "
                f"{_mbps(2 * row['bytes'], rt):7.0f} MB/s  "
                f"peak client {row['peak_client_bytes'] / row['bytes']:.2f}x worker "
                f"{row['peak_server_bytes'] / row['bytes']:.2f}x  "
                f"CPU {row['cpu_client_s'] + row['cpu_server_s']:.3f} s"
                f"  ok={row['correct']}"
            )
    result["transports"] = transports
    result["digests"] = {t: m["digest"] for t, m in transports.items() if "digest" in m}
    log(f"  negotiated digests: {result['digests']}")
    result["table"] = _table(transports, sizes)
    result["ratios"], result["targets"] = _verdicts(result["table"], sizes)
    return result


def _table(transports: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for transport, measured in transports.items():
        for size in sizes:
            row = measured["sizes"][str(size)]
            rt: dict[str, float] = row["round_trip"]
            rows.append(
                {
                    "transport": transport,
                    "label": LABELS[transport],
                    "bytes": size,
                    "mbps": _mbps(2 * size, rt["median"]),
                    "mbps_q1": _mbps(2 * size, rt["q3"]),
                    "mbps_q3": _mbps(2 * size, rt["q1"]),
                    "send_mbps": _mbps(size, row["send"]["median"]),
                    "get_mbps": _mbps(size, row["get"]["median"]),
                    "round_trip_s": rt["median"],
                    "repeats": rt["n"],
                    "cpu_s_per_gb": (row["cpu_client_s"] + row["cpu_server_s"]) / (2 * size / 1e9),
                    "peak_client_x": row["peak_client_bytes"] / size,
                    "peak_server_x": row["peak_server_bytes"] / size,
                    "correct": row["correct"],
                }
            )
    return rows


def _verdicts(table: list[dict[str, Any]], sizes: list[int]) -> tuple[list[Ratio], list[Target]]:
    by = {(row["transport"], row["bytes"]): row for row in table}
    ratios: list[Ratio] = []
    for size in sizes:
        ours = by[("fedproto", size)]["mbps"]
        for base in ("ws_bare", "ws_one_message", "pysyft", "grpc"):
            theirs = by[(base, size)]["mbps"]
            ratios.append(
                Ratio(
                    what=f"bulk {size / MIB:g} MiB throughput",
                    value=ours / theirs if theirs else None,
                    baseline=LABELS[base],
                    detail=f"{ours:.0f} vs {theirs:.0f} MB/s (round trip)",
                )
            )
    for size in sizes:  # the default offer against SHA-256 only, same client and worker (no target)
        sha, ours = by[("fedproto_sha256", size)]["mbps"], by[("fedproto", size)]["mbps"]
        ratios.append(
            Ratio(
                what=f"bulk {size / MIB:g} MiB throughput, default digest offer",
                value=ours / sha if sha else None,
                baseline="fedproto, SHA-256 only",
                detail=f"{ours:.0f} vs {sha:.0f} MB/s (round trip)",
            )
        )
    for size in sizes:  # the Node worker against the Python one, same client (a comparison, no target)
        node, ours = by[("fedproto_node", size)]["mbps"], by[("fedproto", size)]["mbps"]
        ratios.append(
            Ratio(
                what=f"bulk {size / MIB:g} MiB throughput, Node worker",
                value=node / ours if ours else None,
                baseline="fedproto (Python worker)",
                detail=f"{node:.0f} vs {ours:.0f} MB/s (round trip)",
            )
        )
    largest = max(sizes)

    def lowest(base: str, chosen: list[int]) -> float | None:
        ratios_of = [by[("fedproto", s)]["mbps"] / by[(base, s)]["mbps"] for s in chosen]
        return min(ratios_of) if ratios_of else None

    # The bulk targets: the bare transport's best frame is the ceiling for large payloads (16 MiB and
    # up), where per-message costs vanish; at smaller sizes the fixed costs of a request (header, reply,
    # digest) weigh more, hence the lower bar there.
    large = [s for s in sizes if s >= 16 * MIB]
    small = [s for s in sizes if s < 16 * MIB]
    targets = [
        Target(
            "bulk throughput >= 0.8x bare websockets (best frame), 16 MiB and above",
            lowest("ws_bare", large),
            ">=",
            0.8,
            detail="lowest ratio over those sizes",
        ),
        Target(
            "bulk throughput >= 0.65x bare websockets (best frame), below 16 MiB",
            lowest("ws_bare", small),
            ">=",
            0.65,
            detail="lowest ratio over those sizes",
        ),
        Target("bulk throughput >= 1.2x grpcio unary, every size", lowest("grpc", sizes), ">=", 1.2),
        Target(
            "bulk throughput >= 20x PySyft 0.2 wire, 16 MiB and above", lowest("pysyft", large), ">=", 20.0
        ),
        Target(
            f"peak client memory moving {largest / MIB:g} MiB <= 1.1x payload",
            by[("fedproto", largest)]["peak_client_x"],
            "<=",
            1.1,
        ),
        Target(
            f"peak worker memory moving {largest / MIB:g} MiB <= 1.1x payload",
            by[("fedproto", largest)]["peak_server_x"],
            "<=",
            1.1,
        ),
    ]
    return ratios, targets


def _main() -> None:
    parser = argparse.ArgumentParser(description="bulk transfer client (run by the benchmark)")
    parser.add_argument("--client", choices=TRANSPORTS)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--frame", type=int, default=1 << 20)
    parser.add_argument("--frames", type=int, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--share", default="1/1", help="this pass's share of the repeats: TURN/TURNS")
    args = parser.parse_args()
    out = asyncio.run(_sweep(args) if args.sweep else _client(args))
    print(json.dumps(out))


if __name__ == "__main__":
    _main()


__all__ = ["NAME", "Stats", "run"]
