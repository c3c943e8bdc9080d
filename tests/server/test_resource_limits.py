"""Resource abuse is bounded: each limit of docs/protocol.md §14.2.8 to §14.2.13 holds under abuse.

Each test plays one abuse (thousands of objects, fat metadata, uploads never finished, more connections
than allowed, a handshake that never comes, a reader that never reads) and checks the limit that bounds
it, and that the worker keeps serving well-behaved clients meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from websockets.exceptions import InvalidStatus

import fedproto
from fedproto import codec, transport
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectRequest, SendObjectRequest
from fedproto_pb.v1.tensor_pb2 import TensorInfo
from tests.conftest import (
    TOKENS,
    WAIT,
    WorkerFactory,
    assert_healthy,
    client_of,
    close_code,
    conformance_limits,
    raw_connection,
    raw_handshake,
    recv_envelope,
    send_envelope,
    wait_until,
)


async def test_object_count_quota(make_worker: WorkerFactory) -> None:
    """§14.2.8: one object more than max_objects is RESOURCE_EXHAUSTED; overwriting one is not."""
    worker = await make_worker(limits=conformance_limits(max_objects=3), tokens=TOKENS)
    async with client_of(worker, TOKENS["alice"]) as alice, client_of(worker, TOKENS["bob"]) as bob:
        assert alice.server.limits.max_objects == 3
        for i in range(3):
            await alice.send(torch.zeros(1), id=f"o{i}")
        with pytest.raises(fedproto.ResourceExhaustedError) as caught:
            await alice.send(torch.zeros(1), id="o3")
        assert caught.value.details["limit"] == "3"
        await alice.send(torch.ones(1), id="o1", overwrite=True)  # a replacement is no new object
        assert await alice.objects_count() == 3
        await bob.send(torch.zeros(1), id="o0")  # the quota is the identity's own
        await alice.delete("o0")
        await alice.send(torch.zeros(1), id="o3")
        assert await alice.objects_count() == 3


async def test_metadata_limit(make_worker: WorkerFactory) -> None:
    """§14.2.10: id, tags and description over max_object_metadata_bytes: RESOURCE_EXHAUSTED, none stored."""
    worker = await make_worker(limits=conformance_limits(max_object_metadata_bytes=100))
    async with client_of(worker) as client:
        with pytest.raises(fedproto.ResourceExhaustedError):
            await client.send(torch.zeros(1), id="a", description="x" * 100)
        with pytest.raises(fedproto.ResourceExhaustedError):
            await client.send(torch.zeros(1), id="b", tags=["t" * 60, "u" * 60])
        await client.send(torch.zeros(1), id="c", description="x" * 99)  # 1 + 99 bytes: at the limit
        assert [o.id for o in await client.list_objects()] == ["c"]


def _upload_header(rid: int, object_id: str, nbytes: int) -> Envelope:
    info = TensorInfo(dtype=codec.dtype_to_proto(torch.uint8), shape=[nbytes], nbytes=nbytes)
    return Envelope(request_id=rid, send_object=SendObjectRequest(id=object_id, chunked=info))


async def test_unfinished_uploads_count_against_the_quota(make_worker: WorkerFactory) -> None:
    """§14.2.9: uploads in progress hold their buffers, so they count against max_object_bytes.

    Before the fix, each upload header allocated its whole buffer and only stored bytes were counted:
    one client could hold any number of quotas' worth of memory with uploads it never finished.
    """
    quota = 1024 * 1024
    worker = await make_worker(limits=conformance_limits(max_object_bytes=quota), tokens=TOKENS)
    size = 600 * 1024
    async with raw_connection(worker.url) as first, raw_connection(worker.url) as second:
        await raw_handshake(first, TOKENS["alice"])
        await raw_handshake(second, TOKENS["alice"])
        await send_envelope(first, _upload_header(2, "big-1", size))
        await wait_until(lambda: sum(c.session.upload_bytes for c in worker._connections) == size)
        await send_envelope(second, _upload_header(2, "big-2", size))
        reply = await recv_envelope(second)
        assert reply.WhichOneof("body") == "error"
        assert reply.error.code == fedproto.ResourceExhaustedError.code
        assert reply.error.details["used"] == str(size)
        # another identity's quota is its own
        async with client_of(worker, TOKENS["bob"]) as bob:
            await bob.send(torch.zeros(size, dtype=torch.uint8), id="bob-big")
        # the first upload's connection goes: its buffer is freed, and the room with it
        await first.close()
        await wait_until(lambda: sum(c.session.upload_bytes for c in worker._connections) == 0)
        await send_envelope(second, _upload_header(3, "big-2", size))
        await wait_until(lambda: sum(c.session.upload_bytes for c in worker._connections) == size)


async def test_connection_limit(make_worker: WorkerFactory) -> None:
    """§14.2.11: beyond max_connections the opening handshake gets HTTP 503; a freed slot is reused."""
    worker = await make_worker(conformance=False, limits=conformance_limits(), max_connections=3)
    clients = [await fedproto.AsyncClient.connect(worker.url, reconnect=False) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with raw_connection(worker.url):
                pass
        assert refused.value.response.status_code == 503
        with pytest.raises(fedproto.UnavailableError):  # what a client makes of it
            await fedproto.AsyncClient.connect(worker.url, reconnect=False)
        await clients.pop().close()
        await wait_until(lambda: len(worker._connections) == 2)
        async with client_of(worker) as client:
            assert await client.ping() >= 0
    finally:
        for client in clients:
            await client.close()


async def test_many_idle_connections_are_served(make_worker: WorkerFactory) -> None:
    """§14.2.11: 200 idle connections (handshake done, then silence) do not stop the worker serving."""
    worker = await make_worker(tokens=TOKENS)
    async with asyncio.TaskGroup() as group:
        opened = [
            group.create_task(fedproto.AsyncClient(worker.url, token=TOKENS["bob"]).open())
            for _ in range(200)
        ]
    try:
        assert len(worker._connections) == 200
        await assert_healthy(worker)
    finally:
        await asyncio.gather(*(task.result().close() for task in opened))


async def test_handshake_that_never_comes(make_worker: WorkerFactory) -> None:
    """§4.5.1, §14.2.12: a connection that sends no Hello is closed with 1008 after the handshake timeout."""
    worker = await make_worker(limits=conformance_limits(handshake_timeout_seconds=0.3))
    async with raw_connection(worker.url) as ws:
        assert await close_code(ws, timeout=5) == 1008
    await wait_until(lambda: not worker._connections)


async def test_reader_that_never_reads(make_worker: WorkerFactory) -> None:
    """§14.2.13: replies a client never reads stop at the send buffer; other clients are served at once."""
    worker = await make_worker(tokens=TOKENS)
    async with client_of(worker, TOKENS["alice"]) as alice:
        await alice.send(torch.zeros(2 * 1024 * 1024, dtype=torch.uint8), id="blob")
    # max_queue=1: the client's library stops reading the socket after one message, as a stuck peer would
    async with raw_connection(worker.url, max_queue=1) as stuck:
        await raw_handshake(stuck, TOKENS["alice"])
        for rid in range(2, 2 + 32):  # 64 MiB of downloads: more than every buffer on the way holds
            await send_envelope(stuck, Envelope(request_id=rid, get_object=GetObjectRequest(id="blob")))
        await wait_until(lambda: any(c.session.in_flight for c in worker._connections))
        await asyncio.sleep(0.5)
        (handler,) = [c for c in worker._connections if c.session.in_flight]
        buffered = handler.ws.transport.get_write_buffer_size()
        assert buffered <= transport.WRITE_LIMIT_BYTES + 2 * 1024 * 1024 + 1024
        assert handler.session.in_flight  # the rest wait for the reader, holding no more memory
        loop = asyncio.get_running_loop()
        started = loop.time()
        await assert_healthy(worker)
        assert loop.time() - started < WAIT / 2
        stuck.transport.abort()  # a reader that never reads would not answer a close either
