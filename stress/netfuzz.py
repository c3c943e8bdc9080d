"""Network fuzzer: random and mutated frames over many connections to a worker process on loopback.

Each connection says Hello (most do; some send garbage first), then sends batches of frames drawn from
these classes, and after each batch a Ping with a fresh id whose Pong proves the worker read everything
before it (docs/protocol.md section 5.4: a Ping is answered at once):

- ``random``: random bytes, 0 to 300 of them;
- ``bitflip``: a valid envelope (hello, ping, call, send, get, list, chunk, cancel, goodbye...) with 1 to 8
  bits flipped;
- ``truncate``: a valid envelope cut short;
- ``wiretype``: a valid envelope whose first tag has another wire type;
- ``huge_length``: a length-delimited field that declares up to 2^62 bytes;
- ``huge_chunked``: an upload header declaring a huge tensor, or a chunk with a huge offset or total;
- ``deep_value``: a call whose argument nests lists 10 to 200 deep (each level two protobuf messages);
- ``valid``: a well-formed request;
- ``text``: a text frame, sent last on its connection (the worker must close it with 1003, section 3.2).

Verdicts: the worker process never dies (a crash), every batch's Pong arrives within the hang timeout,
every connection the worker closes is closed with a code section 16 allows for what was sent (1011
counts as a failure), the worker still serves a well-behaved client at the end, and its memory stays
below a bound. The report counts the frames of each class and what they got: the Error codes of the
replies, and the close codes.

``python -m stress.netfuzz --frames 1000000`` (``--node`` for the Node worker) prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections import Counter, defaultdict
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import fedproto
from fedproto_pb.v1.calls_pb2 import CallRequest
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.errors_pb2 import ErrorCode
from fedproto_pb.v1.objects_pb2 import GetObjectRequest, ListObjectsRequest, SendObjectRequest
from fedproto_pb.v1.session_pb2 import Cancel, Goodbye, Hello, Ping
from fedproto_pb.v1.tensor_pb2 import Chunk, Tensor, TensorInfo
from fedproto_pb.v1.value_pb2 import Value
from stress.worker_process import WorkerProcess, token_of

__all__ = ["CLASSES", "FuzzResult", "run_fuzz"]

CLASSES = (
    "random",
    "bitflip",
    "truncate",
    "wiretype",
    "huge_length",
    "huge_chunked",
    "deep_value",
    "valid",
    "text",
)
#: Close codes a worker may use for what the fuzzer sends (section 16): normal (a fuzzed goodbye), going
#: away (idle), protocol error (garbage before the handshake), unsupported data (text), policy (handshake
#: timeout), too big. 1011 (internal error) is never acceptable.
ALLOWED_CLOSE = {1000, 1001, 1002, 1003, 1008, 1009}
#: Seconds a batch's Pong may take before the worker counts as hung.
HANG_SECONDS = 30.0
#: The id range of the fuzzer's own Pings, far from the small ids fuzzed frames mostly carry.
SYNC_ID_BASE = 1 << 60


@dataclasses.dataclass
class FuzzResult:
    """What a fuzz run sent and what came back."""

    frames: int = 0
    planned: int = 0
    connections: int = 0
    sent: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: dict[str, Counter[str]] = dataclasses.field(default_factory=lambda: defaultdict(Counter))
    closes: dict[str, Counter[int]] = dataclasses.field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = dataclasses.field(default_factory=list)
    hangs: int = 0
    crashed: bool = False
    healthy_at_end: bool = False
    rss_peak: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The figures, for JSON and the report."""
        return {
            "frames": self.frames,
            "frames_planned": self.planned,
            "connections": self.connections,
            "seconds": round(self.seconds, 1),
            "frames_per_second": round(self.frames / self.seconds) if self.seconds else 0,
            "sent": dict(self.sent),
            "errors": {k: dict(v) for k, v in self.errors.items()},
            "closes": {k: {str(c): n for c, n in v.items()} for k, v in self.closes.items()},
            "crashed": self.crashed,
            "hangs": self.hangs,
            "failures": len(self.failures),
            "first_failures": self.failures[:5],
            "healthy_at_end": self.healthy_at_end,
            "rss_peak_mib": round(self.rss_peak / 2**20, 1),
        }


def _deep_call(request_id: int, depth: int) -> bytes:
    """A call envelope whose one argument nests ``depth`` lists, encoded by hand (protobuf refuses to)."""
    value = Value(int_value=1).SerializeToString()
    for _ in range(depth):
        items = b"\x0a" + _varint(len(value)) + value  # ListValue.items = 1
        value = b"\x42" + _varint(len(items)) + items  # Value.list_value = 8
    call = CallRequest(method="echo").SerializeToString() + b"\x12" + _varint(len(value)) + value  # args = 2
    head = Envelope(request_id=request_id).SerializeToString()
    return head + _varint(50 << 3 | 2) + _varint(len(call)) + call  # Envelope.call = 50


def _corpus() -> list[bytes]:
    """Valid envelopes the mutators start from."""
    info = TensorInfo(dtype=1, shape=[4], nbytes=16)
    tensor = Tensor(dtype=1, shape=[4], data=bytes(16))
    sleep = CallRequest(method="sleep", args=[Value(double_value=0.1)])
    envelopes = [
        Envelope(request_id=1, hello=Hello(versions=[1], client_name="fuzz", token=token_of(0))),
        Envelope(request_id=2, ping=Ping(payload=b"abc")),
        Envelope(request_id=3, call=CallRequest(method="echo", args=[Value(string_value="x")])),
        Envelope(request_id=4, send_object=SendObjectRequest(id="f", tensor=tensor, overwrite=True)),
        Envelope(request_id=5, send_object=SendObjectRequest(id="g", chunked=info, overwrite=True)),
        Envelope(request_id=5, chunk=Chunk(offset=0, data=bytes(16), total_bytes=16)),
        Envelope(request_id=6, get_object=GetObjectRequest(id="f")),
        Envelope(request_id=7, list_objects=ListObjectsRequest()),
        Envelope(request_id=3, cancel=Cancel(reason="fuzz")),
        Envelope(request_id=9, goodbye=Goodbye(reason="fuzz")),
        Envelope(request_id=10, deadline_ms=5, call=sleep),
    ]
    return [e.SerializeToString() for e in envelopes]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class FrameMaker:
    """Draws frames of each class from a seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.corpus = _corpus()
        # the goodbye ends a connection: rarely chosen, so connections live long enough to matter
        self.weights = [1.0] * len(self.corpus)
        self.weights[9] = 0.02

    def base(self) -> bytes:
        return self.rng.choices(self.corpus, weights=self.weights)[0]

    def make(self, kind: str) -> bytes | str:
        rng = self.rng
        if kind == "random":
            return rng.randbytes(rng.randrange(0, 300))
        if kind == "bitflip":
            data = bytearray(self.base())
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if kind == "truncate":
            data = self.base()
            return data[: rng.randrange(len(data))]
        if kind == "wiretype":
            data = bytearray(self.base())
            data[0] = (data[0] & ~0x07) | rng.choice([0, 1, 2, 3, 4, 5, 6, 7])
            return bytes(data)
        if kind == "huge_length":
            field = rng.choice([3, 4, 5, 11, 12, 13, 20, 21, 30])  # a body member or an unknown field
            declared = rng.choice([2**31, 2**32 + 5, 2**62, rng.randrange(300, 2**40)])
            return _varint(8) + _varint(rng.randrange(1, 100)) + _varint(field << 3 | 2) + _varint(declared)
        if kind == "huge_chunked":
            rid = rng.randrange(1, 50)
            if rng.random() < 0.5:
                nbytes = rng.choice([2**40, 2**63 - 1, 2**31, 64 * 2**20 + 1, 4 * 2**20])
                shape = [nbytes] if rng.random() < 0.7 else [2**40, 2**40]
                info = TensorInfo(dtype=rng.choice([1, 2, 3, 99]), shape=shape, nbytes=nbytes)
                request = SendObjectRequest(id=f"h{rid}", chunked=info, overwrite=True)
                return Envelope(request_id=rid, send_object=request).SerializeToString()
            total = rng.choice([64, 2**63])
            chunk = Chunk(offset=rng.choice([0, 2**62]), data=rng.randbytes(64), total_bytes=total)
            return Envelope(request_id=rid, chunk=chunk).SerializeToString()
        if kind == "deep_value":
            depth = rng.choice([10, 30, 48, 49, 50, 200])  # each level is two messages: 49 fits in 100
            return _deep_call(rng.randrange(1, 50), depth)
        if kind == "valid":  # a fresh id each, so none is a duplicate of a request in flight
            envelope = Envelope.FromString(self.corpus[rng.choice([1, 2, 3, 6, 7])])
            envelope.request_id = rng.randrange(100, 1 << 40)
            return envelope.SerializeToString()
        if kind == "text":
            return "not an envelope"
        raise ValueError(kind)


@dataclasses.dataclass
class _Sent:
    """The frames one connection has sent so far (its lane gives back what it could not send)."""

    frames: int = 0


async def _connection(
    url: str, rng: random.Random, frames: int, batch: int, result: FuzzResult, number: int, sent: _Sent
) -> None:
    maker = FrameMaker(rng)
    handshake = rng.random() < 0.9
    end_with_text = rng.random() < 0.1 and frames > 1
    if end_with_text:
        frames -= 1  # the text frame is one of the connection's frames
    kinds = [k for k in CLASSES if k != "text"]
    sent_kinds: list[str] = []
    sync_id = SYNC_ID_BASE + number * 1_000_000
    async with contextlib.AsyncExitStack() as stack:
        ws: ClientConnection = await stack.enter_async_context(
            connect(url, compression=None, max_size=None, open_timeout=HANG_SECONDS, close_timeout=2)
        )
        result.connections += 1
        if handshake:
            await ws.send(_corpus()[0])
        done = 0
        closed_by_worker: int | None = None
        try:
            while done < frames:
                count = min(batch, frames - done)
                kind = rng.choice(kinds)  # one class per batch: the replies before its Pong are that class's
                for _ in range(count):
                    await ws.send(maker.make(kind))
                    result.sent[kind] += 1
                    sent_kinds.append(kind)
                done += count
                result.frames += count
                sent.frames += count
                sync_id += 1
                await ws.send(Envelope(request_id=sync_id, ping=Ping()).SerializeToString())
                await _drain_until_pong(ws, sync_id, result, kind)
            if end_with_text:
                await ws.send(maker.make("text"))
                result.sent["text"] += 1
                result.frames += 1
                sent.frames += 1
                sent_kinds.append("text")
                with contextlib.suppress(ConnectionClosed):
                    async with asyncio.timeout(HANG_SECONDS):
                        while True:
                            await ws.recv()
        except ConnectionClosed as exc:
            closed_by_worker = exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            result.hangs += 1
            result.failures.append(f"connection {number}: no Pong within {HANG_SECONDS} s")
            return
        if closed_by_worker is None and end_with_text:
            closed_by_worker = ws.close_code
        if closed_by_worker is not None:
            last = sent_kinds[-1] if sent_kinds else "none"
            result.closes[last][closed_by_worker] += 1
            if closed_by_worker not in ALLOWED_CLOSE:
                result.failures.append(f"connection {number} closed with {closed_by_worker} after {last}")
            if last == "text" and closed_by_worker != 1003:
                result.failures.append(f"connection {number}: a text frame got close {closed_by_worker}")


async def _drain_until_pong(ws: ClientConnection, sync_id: int, result: FuzzResult, kind: str) -> None:
    async with asyncio.timeout(HANG_SECONDS):
        while True:
            data = await ws.recv()
            if isinstance(data, str):
                result.failures.append("the worker sent a text frame")
                continue
            envelope = Envelope.FromString(data)
            body = envelope.WhichOneof("body")
            if body == "error":
                result.errors[kind][ErrorCode.Name(envelope.error.code).removeprefix("ERROR_CODE_")] += 1
            elif envelope.request_id != sync_id:
                result.errors[kind][body or "no body"] += 1
            # the Ping's answer: a Pong, or an Error when fuzzed requests (uploads never finished, say)
            # fill the connection's in-flight limit (RESOURCE_EXHAUSTED, section 5.5); either proves the
            # worker read the batch
            if envelope.request_id == sync_id:
                return


async def run_fuzz(
    worker: WorkerProcess,
    frames: int,
    *,
    connections: int = 8,
    per_connection: int = 2000,
    batch: int = 100,
    seed: int = 0,
    token: str = "",
    max_seconds: float | None = None,
) -> FuzzResult:
    """Send ``frames`` fuzzed frames, ``connections`` connections at a time, then check the worker.

    With ``max_seconds``, no connection opens after that many seconds: a run that has not sent its
    frames by then stops (the connections open finish their frames) and counts as a failure.
    """
    result = FuzzResult(planned=frames)
    rng = random.Random(seed)
    started = time.perf_counter()
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            if not worker.alive():
                return
            result.rss_peak = max(result.rss_peak, worker.rss())
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    numbers = iter(range(1 << 30))
    # Frames not yet given to a connection. A connection that ends early (a fuzzed goodbye, a Hello the
    # worker refused, garbage before the handshake) gives back the frames it did not send, so the run
    # sends ``frames`` frames in all, not ``frames`` less what early ends cost. The number of
    # connections is bounded all the same, in case the worker ended every connection at once.
    unassigned = frames
    most_connections = 4 * -(-frames // per_connection) + 4 * connections
    out_of_time: list[bool] = []

    async def lane() -> None:
        nonlocal unassigned
        while unassigned > 0 and worker.alive():
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                if not out_of_time:
                    out_of_time.append(True)
                    result.failures.append(
                        f"out of time: {result.frames} of {frames} frames sent in {max_seconds:g} s"
                    )
                return
            number = next(numbers)
            if number >= most_connections:
                if number == most_connections:
                    result.failures.append(
                        f"{most_connections} connections sent only {result.frames} of {frames} frames"
                    )
                return
            count = min(per_connection, unassigned)
            unassigned -= count
            lane_rng = random.Random(rng.random() + number)
            sent = _Sent()
            try:
                await _connection(worker.url, lane_rng, count, batch, result, number, sent)
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                if worker.alive():
                    result.failures.append(f"connection {number}: {type(exc).__name__}: {exc}")
            finally:
                unassigned += count - sent.frames

    try:
        await asyncio.gather(*(lane() for _ in range(connections)))
    finally:
        result.seconds = time.perf_counter() - started
        stop.set()
        await sampler
    result.crashed = not worker.alive()
    if not result.crashed:
        result.healthy_at_end = await _healthy(worker.url, token)
    return result


async def _healthy(url: str, token: str) -> bool:
    try:
        async with asyncio.timeout(HANG_SECONDS):
            async with fedproto.AsyncClient.connect(url, token=token, reconnect=False) as client:
                await client.ping()
                return bool(await client.call("echo", 1) == {"args": [1], "kwargs": {}})
    except Exception:
        return False


def main() -> None:
    """Fuzz a worker process; print the figures as JSON (exit 1 on a crash, hang or failure)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-seconds", type=float, default=1200.0, help="open no connection after this (default 1200)"
    )
    parser.add_argument("--node", action="store_true", help="fuzz the Node worker (node/dist/cli.js)")
    args = parser.parse_args()
    with WorkerProcess(identities=1, node=args.node) as worker:
        token = "" if args.node else token_of(0)
        fuzzing = run_fuzz(
            worker,
            args.frames,
            connections=args.connections,
            seed=args.seed,
            token=token,
            max_seconds=args.max_seconds,
        )
        result = asyncio.run(fuzzing)
    print(json.dumps(result.summary(), indent=2))
    bad = result.crashed or result.hangs or result.failures or not result.healthy_at_end
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
