"""Shared fixtures: loopback workers (on the test's loop or on a thread of their own) and raw sockets.

Every worker a fixture starts listens on 127.0.0.1 with a port the OS picks, and is stopped when the
test ends, whether it passed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

import fedproto
from fedproto.server.profile import CONFORMANCE_LIMITS, conformance_worker
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.session_pb2 import Hello

TOKENS = {"alice": "tok-a", "bob": "tok-b"}
#: Generous bound on any single wait, so that a broken worker fails a test instead of hanging it.
WAIT = 10.0

WorkerFactory = Callable[..., Awaitable[fedproto.Worker]]


async def stop_quietly(worker: fedproto.Worker) -> None:
    """Stop a worker without waiting for in-flight work (used in teardown)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(worker.stop(grace=0), WAIT)


@pytest.fixture
async def worker() -> AsyncIterator[fedproto.Worker]:
    """A started conformance worker that accepts the tokens of alice and bob."""
    w = conformance_worker(tokens=TOKENS)
    await w.start("127.0.0.1", 0)
    try:
        yield w
    finally:
        await stop_quietly(w)


@pytest.fixture
async def make_worker() -> AsyncIterator[WorkerFactory]:
    """Start workers on demand: ``await make_worker(limits=..., tokens=..., conformance=True)``.

    ``conformance=True`` (the default) builds a conformance worker (echo, fail, sleep, notify, whoami,
    the "conformance" dataset); ``conformance=False`` a plain :class:`fedproto.Worker` taking the other
    keyword arguments. ``limits`` not given: the conformance limits. ``port``: listen on that port.
    """
    started: list[fedproto.Worker] = []

    async def factory(
        *,
        conformance: bool = True,
        limits: fedproto.Limits | None = None,
        tokens: Any = None,
        port: int = 0,
        **kwargs: Any,
    ) -> fedproto.Worker:
        limits = limits or CONFORMANCE_LIMITS
        if conformance:
            w = conformance_worker(tokens=tokens, limits=limits)
        else:
            w = fedproto.Worker(kwargs.pop("id", "plain"), tokens=tokens, limits=limits, **kwargs)
        started.append(w)
        await w.start("127.0.0.1", port)
        return w

    try:
        yield factory
    finally:
        for w in started:
            await stop_quietly(w)


def conformance_limits(**changes: Any) -> fedproto.Limits:
    """The conformance limits with some fields changed."""
    return dataclasses.replace(CONFORMANCE_LIMITS, **changes)


class ThreadedWorker:
    """A worker served by its own event loop on a daemon thread (for blocking clients and the CLI)."""

    def __init__(self, worker: fedproto.Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-worker", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = WAIT) -> Any:
        async def wrapper() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.worker.url

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.worker.stop(grace=0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        if not self._thread.is_alive():
            self.loop.close()


@pytest.fixture
def threaded_worker() -> Iterator[ThreadedWorker]:
    """A conformance worker without tokens, served from a thread of its own."""
    threaded = ThreadedWorker(conformance_worker())
    try:
        threaded.run(threaded.worker.start("127.0.0.1", 0))
        yield threaded
    finally:
        threaded.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- raw protocol helpers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_connection(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A plain WebSocket connection with no fedproto client logic (no handshake is sent)."""
    ws = await asyncio.wait_for(ws_connect(url, compression=None, max_size=None, **kwargs), WAIT)
    try:
        yield ws
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), WAIT)


async def send_envelope(ws: ClientConnection, envelope: Envelope) -> None:
    """Send one envelope as one binary frame."""
    await ws.send(envelope.SerializeToString())


async def recv_envelope(ws: ClientConnection, timeout: float = WAIT) -> Envelope:
    """Receive and decode the next frame as an envelope."""
    data = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(data, bytes), f"expected a binary frame, got {data!r}"
    return Envelope.FromString(data)


async def raw_handshake(ws: ClientConnection, token: str = "", request_id: int = 1) -> Envelope:
    """Say Hello and return the Welcome envelope (fails the test on anything else)."""
    await send_envelope(
        ws, Envelope(request_id=request_id, hello=Hello(versions=[1], client_name="raw", token=token))
    )
    reply = await recv_envelope(ws)
    assert reply.WhichOneof("body") == "welcome", reply
    assert reply.request_id == request_id
    return reply


async def close_code(ws: ClientConnection, timeout: float = WAIT) -> int | None:
    """Drain frames until the server closes the connection; the close code it sent."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def in_flight(worker: fedproto.Worker) -> int:
    """How many requests are in flight on the worker, over all its connections."""
    return sum(len(c.session.in_flight) for c in list(worker._connections))


@contextlib.asynccontextmanager
async def client_of(
    worker: fedproto.Worker | Any, token: str = "", **kwargs: Any
) -> AsyncIterator[fedproto.AsyncClient]:
    """A connected AsyncClient of ``worker``, closed at the end."""
    client = await asyncio.wait_for(fedproto.AsyncClient.connect(worker.url, token=token, **kwargs), WAIT)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), WAIT)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[fedproto.AsyncClient]]]:
    """Connect AsyncClients to workers (anything with a ``url``), all closed at the end:
    ``await connect(worker, reconnect_attempts=2)``."""
    async with contextlib.AsyncExitStack() as stack:

        async def factory(worker: Any, **kwargs: Any) -> fedproto.AsyncClient:
            return await stack.enter_async_context(client_of(worker, **kwargs))

        yield factory


@pytest.fixture
async def alice(worker: fedproto.Worker) -> AsyncIterator[fedproto.AsyncClient]:
    """A client of the ``worker`` fixture with alice's token."""
    async with client_of(worker, TOKENS["alice"]) as client:
        yield client


@pytest.fixture
async def bob(worker: fedproto.Worker) -> AsyncIterator[fedproto.AsyncClient]:
    """A client of the ``worker`` fixture with bob's token."""
    async with client_of(worker, TOKENS["bob"]) as client:
        yield client


async def assert_healthy(worker: fedproto.Worker, token: str = TOKENS["alice"]) -> None:
    """A fresh connection to ``worker`` completes a handshake, a ping and a call."""
    async with client_of(worker, token) as client:
        await asyncio.wait_for(client.ping(), WAIT)
        assert await asyncio.wait_for(client.call("echo", 1), WAIT) == {"args": [1], "kwargs": {}}
