"""Load: N clients x M mixed requests against one worker process on loopback.

Each client has its own token, hence its own identity, and runs its M requests a few at a time: calls,
pings, small sends and gets, listings, chunked transfers (a tensor larger than the worker's chunk size,
sent and fetched back) and a few calls cancelled while they run. Every reply is checked: an echo returns
the client's own marker, a get returns the values that client stored, a listing shows that client's
objects only (identities isolated), a cancelled call ends in cancellation. Anything else is a failure,
and so is a request that never ends (each has a deadline). The worker's resident memory is sampled from
/proc all along; at the end the clients delete their objects and leave, and the worker's memory must go
back near where it was before the load.

``python -m stress.load --clients 200 --requests 500`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import time
from collections import Counter
from typing import Any

import torch

import fedproto
from stress.worker_process import WorkerProcess, token_of

__all__ = ["LoadResult", "memory_returned", "run_load"]

#: The share of each kind of request in a client's mix (they add up to 1).
MIX = {
    "call": 0.30,
    "ping": 0.20,
    "send": 0.15,
    "get": 0.14,
    "list": 0.10,
    "chunked": 0.03,
    "cancel": 0.02,
    "count": 0.06,
}
#: Elements of a chunked tensor: 300 KiB of float32, above the conformance chunk size (256 KiB).
CHUNKED_ELEMENTS = 75 * 1024
#: Seconds any one request may take before it counts as hung.
REQUEST_DEADLINE = 60.0


@dataclasses.dataclass
class LoadResult:
    """What a load run measured."""

    clients: int
    requests_per_client: int
    requests: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    kinds: Counter[str] = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0
    latencies: list[float] = dataclasses.field(default_factory=list)
    rss_idle: int = 0
    rss_peak: int = 0
    rss_after: int = 0

    @property
    def rate(self) -> float:
        """Requests per second over the whole run."""
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0..100), in seconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def summary(self) -> dict[str, Any]:
        """The figures, for JSON and the report."""
        return {
            "clients": self.clients,
            "requests_per_client": self.requests_per_client,
            "requests": self.requests,
            "failures": len(self.failures),
            "first_failures": self.failures[:5],
            "kinds": dict(self.kinds),
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(self.rate, 1),
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "rss_idle_mib": round(self.rss_idle / 2**20, 1),
            "rss_peak_mib": round(self.rss_peak / 2**20, 1),
            "rss_after_mib": round(self.rss_after / 2**20, 1),
            "memory_returned": memory_returned(self),
        }


async def _one_client(index: int, requests: int, url: str, result: LoadResult, seed: int) -> None:
    rng = random.Random(seed * 100_003 + index)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=requests)
    prefix = f"c{index}-"
    stored: dict[str, float] = {}
    in_flight = asyncio.Semaphore(4)
    connecting = fedproto.AsyncClient.connect(url, token=token_of(index))
    client = await asyncio.wait_for(connecting, REQUEST_DEADLINE)
    loop = asyncio.get_running_loop()

    async def run(number: int, kind: str) -> None:
        async with in_flight:
            started = loop.time()
            try:
                await asyncio.wait_for(_request(kind, number), REQUEST_DEADLINE)
            except Exception as exc:  # every failure is recorded, none stops the run
                what = f"{type(exc).__name__}: {exc}"
                result.failures.append(f"client {index} request {number} ({kind}): {what}")
            result.latencies.append(loop.time() - started)
            result.kinds[kind] += 1
            result.requests += 1

    async def _request(kind: str, number: int) -> None:
        if kind == "call":
            marker = f"{prefix}{number}"
            reply = await client.call("echo", marker, n=number)
            _expect(reply == {"args": [marker], "kwargs": {"n": number}}, f"echo returned {reply!r}")
        elif kind == "ping":
            await client.ping()
        elif kind == "send":
            object_id = f"{prefix}{number}"
            value = float(index * 1000 + number)
            stored[object_id] = -1.0  # reserved: a get never picks an object whose send has not ended
            await client.send(torch.full((16,), value), id=object_id)
            stored[object_id] = value
        elif kind == "get":
            ready = [oid for oid, v in stored.items() if v >= 0]
            if not ready:
                await client.ping()
                return
            object_id = rng.choice(ready)
            tensor = await client.get(object_id)
            _expect(bool(torch.all(tensor == stored[object_id])), f"{object_id} came back as {tensor[:3]}")
        elif kind == "list":
            ids = [info.id for info in await client.list_objects()]
            foreign = [i for i in ids if not i.startswith(prefix)]
            _expect(not foreign, f"sees objects of other identities: {foreign[:3]}")
            missing = [oid for oid, v in stored.items() if v >= 0 and oid not in ids]
            _expect(not missing, f"does not see its own objects {missing[:3]}")
        elif kind == "count":
            await client.objects_count()
        elif kind == "chunked":
            object_id = f"{prefix}big-{number}"
            tensor = torch.arange(CHUNKED_ELEMENTS, dtype=torch.float32) + index
            await client.send(tensor, id=object_id)
            back = await client.get(object_id)
            _expect(torch.equal(back, tensor), "a chunked tensor came back different")
            await client.delete(object_id)
        elif kind == "cancel":
            call = asyncio.ensure_future(client.call("sleep", 5.0))
            await asyncio.sleep(0.05)
            call.cancel()
            try:
                await call
            except asyncio.CancelledError:
                return
            raise AssertionError("a cancelled call returned")

    try:
        await asyncio.gather(*(run(n, kind) for n, kind in enumerate(kinds)))
        await asyncio.wait_for(client.clear_objects(), REQUEST_DEADLINE)
    finally:
        await asyncio.wait_for(client.close(), REQUEST_DEADLINE)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def _sample_rss(worker: WorkerProcess, result: LoadResult, stop: asyncio.Event) -> None:
    while not stop.is_set():
        result.rss_peak = max(result.rss_peak, worker.rss())
        await asyncio.sleep(0.05)


async def _settled_rss(worker: WorkerProcess, idle: int, seconds: float = 10.0) -> int:
    """The worker's memory once it stops falling (or after ``seconds``)."""
    lowest = worker.rss()
    end = time.monotonic() + seconds
    while time.monotonic() < end and lowest > idle:
        await asyncio.sleep(0.25)
        lowest = min(lowest, worker.rss())
    return lowest


async def run_load(
    worker: WorkerProcess, clients: int, requests: int, *, seed: int = 0, primer: int = 100
) -> LoadResult:
    """Run ``clients`` x ``requests`` mixed requests against ``worker`` (which needs ``clients`` identities).

    ``primer`` requests per client run first, unmeasured (see below).
    """
    if worker.identities < clients:
        raise ValueError(f"the worker has {worker.identities} identities for {clients} clients")
    result = LoadResult(clients, requests)
    # Prime with every client and up to 100 requests each: code loaded on first use, and the heap the
    # allocator keeps for the next burst once it has grown to serve this many connections, are the idle
    # state of a worker that has served this load before (measured: 255 MiB fresh, then 310 MiB after
    # each of four rounds of 20 x 100 in a row). Growth beyond it over the real run would be a leak.
    primer = min(requests, primer)
    warmup = LoadResult(clients, primer)
    await asyncio.gather(*(_one_client(i, primer, worker.url, warmup, seed + 1) for i in range(clients)))
    if warmup.failures:
        result.failures.extend(warmup.failures)
    result.rss_idle = await _settled_rss(worker, 0, seconds=1.0)
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(worker, result, stop))
    started = time.perf_counter()
    try:
        outcomes = await asyncio.gather(
            *(_one_client(i, requests, worker.url, result, seed) for i in range(clients)),
            return_exceptions=True,
        )
    finally:
        result.seconds = time.perf_counter() - started
        stop.set()
        await sampler
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            result.failures.append(f"client {i}: {type(outcome).__name__}: {outcome}")
    result.rss_after = await _settled_rss(worker, result.rss_idle)
    return result


def memory_returned(result: LoadResult) -> bool:
    """Whether the worker's memory after the load is back near idle (at most 64 MiB above it).

    Not exact: glibc keeps part of a grown heap for the next burst. A leak shows as growth with every
    round; measured, four rounds of 20 x 100 in a row left the worker at 310 MiB after each.
    """
    return result.rss_after <= result.rss_idle + 64 * 2**20


def main() -> None:
    """Start a worker process, run the load, print the figures as JSON (exit 1 on any failure)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with WorkerProcess(identities=args.clients) as worker:
        result = asyncio.run(run_load(worker, args.clients, args.requests, seed=args.seed))
    print(json.dumps(result.summary(), indent=2))
    raise SystemExit(1 if result.failures or not memory_returned(result) else 0)


if __name__ == "__main__":
    main()
