"""Graceful shutdown: in-flight work within the grace period finishes, the rest ends UNAVAILABLE, clients
get a Goodbye and close code 1001, and nothing new is accepted. Also a real ``fedproto serve`` process
stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    WAIT,
    client_of,
    close_code,
    free_port,
    in_flight,
    raw_connection,
    raw_handshake,
    recv_envelope,
    send_envelope,
    wait_until,
)

import fedproto
from fedproto.errors import ErrorCode
from fedproto.server.profile import CONFORMANCE_LIMITS
from fedproto_pb.v1.calls_pb2 import CallRequest
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import SendObjectRequest
from fedproto_pb.v1.tensor_pb2 import DTYPE_FLOAT32, Chunk, TensorInfo
from fedproto_pb.v1.value_pb2 import Value

REPO = Path(__file__).resolve().parents[2]


def sleep_call(rid: int, seconds: float) -> Envelope:
    return Envelope(request_id=rid, call=CallRequest(method="sleep", args=[Value(double_value=seconds)]))


async def test_short_call_finishes_within_the_grace(make_worker) -> None:
    w = await make_worker()
    async with client_of(w, reconnect=False) as c:
        task = asyncio.create_task(c.call("sleep", 0.3))
        await wait_until(lambda: in_flight(w) == 1, what="the call to reach the worker")
        await asyncio.wait_for(w.stop(grace=WAIT), 2 * WAIT)
        assert task.done()
        assert await task == 0.3


async def test_long_call_past_the_grace_ends_unavailable(make_worker) -> None:
    w = await make_worker()
    async with client_of(w, reconnect=False) as c:
        short = asyncio.create_task(c.call("sleep", 0.1))
        long = asyncio.create_task(c.call("sleep", 30))
        await wait_until(lambda: in_flight(w) == 2, what="the calls to reach the worker")
        await asyncio.wait_for(w.stop(grace=0.5), WAIT)
        assert await short == 0.1
        with pytest.raises(fedproto.UnavailableError):
            await asyncio.wait_for(long, WAIT)
        await wait_until(lambda: not c.connected, what="the client to see the close")
        with pytest.raises(fedproto.ConnectionClosedError):
            await c.ping()


async def test_clients_get_goodbye_and_1001(make_worker) -> None:
    w = await make_worker()
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        await send_envelope(ws, sleep_call(7, 30))
        await wait_until(lambda: in_flight(w) == 1, what="the call to reach the worker")
        stopping = asyncio.create_task(w.stop(grace=0.3))
        goodbye = await recv_envelope(ws)
        assert goodbye.WhichOneof("body") == "goodbye"
        assert goodbye.request_id == 0
        error = await recv_envelope(ws)
        assert error.request_id == 7
        assert error.error.code == ErrorCode.UNAVAILABLE
        assert await close_code(ws) == 1001
        await asyncio.wait_for(stopping, WAIT)


async def test_idle_connections_are_closed_1001(make_worker) -> None:
    w = await make_worker()
    async with raw_connection(w.url) as idle, raw_connection(w.url) as before_hello:
        await raw_handshake(idle)
        await asyncio.wait_for(w.stop(grace=1), WAIT)
        assert (await recv_envelope(idle)).WhichOneof("body") == "goodbye"
        assert await close_code(idle) == 1001
        assert await close_code(before_hello) == 1001


async def test_requests_during_shutdown_are_unavailable(make_worker) -> None:
    w = await make_worker()
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        await send_envelope(ws, sleep_call(7, 1.0))
        await wait_until(lambda: in_flight(w) == 1, what="the call to reach the worker")
        stopping = asyncio.create_task(w.stop(grace=WAIT))
        try:
            assert (await recv_envelope(ws)).WhichOneof("body") == "goodbye"
            await send_envelope(ws, Envelope(request_id=8, call=CallRequest(method="whoami")))
            reply = await recv_envelope(ws, timeout=0.5)  # well before the sleep ends
            assert reply.request_id == 8
            assert reply.error.code == ErrorCode.UNAVAILABLE
        finally:
            await asyncio.wait_for(stopping, 2 * WAIT)


async def test_new_connections_are_refused_after_stop(make_worker) -> None:
    w = await make_worker()
    url = w.url
    await w.stop(grace=0)
    await w.stop(grace=0)  # stopping twice is harmless
    with pytest.raises(fedproto.ConnectionClosedError):
        await asyncio.wait_for(fedproto.AsyncClient.connect(url, connect_timeout=2), WAIT)
    with pytest.raises(OSError):
        async with raw_connection(url):
            pass


async def test_wait_closed_returns_after_stop(make_worker) -> None:
    w = await make_worker()
    waiter = asyncio.create_task(w.wait_closed())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await w.stop(grace=0)
    await asyncio.wait_for(waiter, WAIT)


async def test_serve_task_cancelled_stops_gracefully() -> None:
    w = fedproto.Worker("served")
    port = free_port()
    serving = asyncio.create_task(w.serve("127.0.0.1", port))
    try:
        for _ in range(int(WAIT / 0.01)):
            if w._server is not None:
                break
            await asyncio.sleep(0.01)
        async with client_of(w) as c:
            await c.ping()
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(serving, WAIT)
            await wait_until(lambda: not c.connected, what="the client to see the close")
    finally:
        serving.cancel()
        await w.stop(grace=0)


def test_serve_process_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedproto", "serve", "--port", str(port), "--conformance"],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = f"ws://127.0.0.1:{port}"

        async def talk_then_terminate() -> int | None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60  # importing torch in a fresh process can be slow
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    async with raw_connection(url) as ws:
                        await raw_handshake(ws)
                        await send_envelope(ws, Envelope(request_id=2, call=CallRequest(method="whoami")))
                        assert (await recv_envelope(ws)).call_reply.result.string_value == "anonymous"
                        process.send_signal(signal.SIGTERM)
                        assert (await recv_envelope(ws)).WhichOneof("body") == "goodbye"
                        return await close_code(ws)
                except OSError:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.1)

        assert asyncio.run(talk_then_terminate()) == 1001
        assert process.wait(timeout=WAIT) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)


async def test_upload_in_progress_at_shutdown_ends_unavailable(make_worker) -> None:
    # chunks of 100 bytes: every chunk but the last must be exactly chunk_bytes long (section 7.3.5)
    w = await make_worker(limits=dataclasses.replace(CONFORMANCE_LIMITS, chunk_bytes=100))
    data = bytes(400)
    info = TensorInfo(dtype=DTYPE_FLOAT32, shape=[100], nbytes=400, sha256=hashlib.sha256(data).digest())
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        await send_envelope(ws, Envelope(request_id=2, send_object=SendObjectRequest(id="u", chunked=info)))
        await send_envelope(
            ws, Envelope(request_id=2, chunk=Chunk(offset=0, data=data[:100], total_bytes=400))
        )
        await send_envelope(ws, Envelope(request_id=3, call=CallRequest(method="whoami")))
        assert (await recv_envelope(ws)).request_id == 3  # everything before has been read
        stopping = asyncio.create_task(w.stop(grace=0.2))
        try:
            assert (await recv_envelope(ws)).WhichOneof("body") == "goodbye"
            reply = await recv_envelope(ws)
            assert reply.request_id == 2
            assert reply.error.code == ErrorCode.UNAVAILABLE
        finally:
            await asyncio.wait_for(stopping, WAIT)
