"""Bare ``websockets``: the same bytes as fedproto moves, with no protocol on top.

Two servers, each run in its own process (``python -m benchmarks.baselines.ws_bare --mode bulk|echo``):

- ``bulk``: the least a store needs. ``P`` + total size (8 bytes) opens an upload; the binary frames that
  follow land in one preallocated buffer, then the server answers ``K``. ``G`` + frame size sends the
  stored bytes back in frames of that size. ``D`` drops them. No checksum, no envelope, no copies but
  the one into the buffer.
- ``echo``: sends every message back as it came.

The clients here are what a careful user of bare websockets would write: memoryview slices out, one
preallocated buffer in, and for pipelining a reader task that resolves one future per request id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

#: Connection settings both sides use: no compression (tensors do not compress), no size limit.
WS_OPTIONS: dict[str, Any] = {"compression": None, "max_size": None, "ping_interval": None}


# --------------------------------------------------------------------------------------------------
# servers


async def _bulk_handler(ws: ServerConnection) -> None:
    stored: bytearray | None = None
    async for message in ws:
        op = bytes(message[:1])
        if op == b"P":
            (total,) = struct.unpack("<Q", message[1:9])
            stored = None
            buffer = bytearray(total)
            got = 0
            while got < total:
                part = await ws.recv()
                buffer[got : got + len(part)] = part
                got += len(part)
            stored = buffer
            await ws.send(b"K")
        elif op == b"G":
            (frame,) = struct.unpack("<Q", message[1:9])
            data = memoryview(stored if stored is not None else b"")
            for offset in range(0, len(data), frame):
                await ws.send(data[offset : offset + frame])
        elif op == b"D":
            stored = None
            await ws.send(b"K")


async def _echo_handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _serve(mode: str, host: str, port: int) -> None:
    handler = _bulk_handler if mode == "bulk" else _echo_handler
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, host, port, **WS_OPTIONS) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"READY {bound}", flush=True)
        await stop.wait()


# --------------------------------------------------------------------------------------------------
# clients


async def open_client(port: int) -> ClientConnection:
    """A connection to a bare server on 127.0.0.1."""
    return await connect(f"ws://127.0.0.1:{port}", **WS_OPTIONS)


async def put(ws: ClientConnection, view: memoryview, frame: int) -> None:
    """Upload ``view`` in frames of ``frame`` bytes and wait for the server's acknowledgement."""
    total = view.nbytes
    await ws.send(b"P" + struct.pack("<Q", total))
    for offset in range(0, total, frame):
        await ws.send(view[offset : offset + frame])
    await ws.recv()


async def get(ws: ClientConnection, total: int, frame: int) -> bytearray:
    """Download the stored bytes (``total`` of them) sent in frames of ``frame`` bytes."""
    await ws.send(b"G" + struct.pack("<Q", frame))
    buffer = bytearray(total)
    got = 0
    while got < total:
        part = await ws.recv()
        buffer[got : got + len(part)] = part
        got += len(part)
    return buffer


async def drop(ws: ClientConnection) -> None:
    """Free the stored bytes on the server."""
    await ws.send(b"D")
    await ws.recv()


class PipelinedEcho:
    """Many requests in flight on one connection: an 8-byte id prefix matches replies to futures."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next = 1
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                assert isinstance(message, bytes)
                future = self._waiting.pop(int.from_bytes(message[:8], "little"), None)
                if future is not None and not future.done():
                    future.set_result(message)

    async def request(self, body: bytes) -> bytes:
        rid = self._next
        self._next += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        await self.ws.send(rid.to_bytes(8, "little") + body)
        return await future

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("bulk", "echo"), default="bulk")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve(args.mode, args.host, args.port))


if __name__ == "__main__":
    main()
