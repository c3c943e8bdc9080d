"""The worker at the protocol level, over raw WebSocket connections: framing, handshake, request ids,
unknown and server-only bodies, frame limits, timeouts; and per-identity scoping of objects and
training state. After every misbehaving connection a separate client must still be served."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import pickle
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    TOKENS,
    WAIT,
    assert_healthy,
    client_of,
    close_code,
    conformance_limits,
    raw_connection,
    raw_handshake,
    recv_envelope,
    send_envelope,
)
from torch import nn
from websockets.asyncio.client import ClientConnection

import fedproto
from fedproto.errors import ErrorCode
from fedproto.server.profile import CONFORMANCE_LIMITS
from fedproto_pb.v1.calls_pb2 import CallRequest
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.errors_pb2 import Error
from fedproto_pb.v1.objects_pb2 import CountObjectsRequest, SendObjectRequest
from fedproto_pb.v1.session_pb2 import Cancel, Goodbye, Hello, Ping
from fedproto_pb.v1.tensor_pb2 import DTYPE_BOOL, DTYPE_FLOAT32, DTYPE_UNSPECIFIED, Chunk, Tensor, TensorInfo
from fedproto_pb.v1.training_pb2 import SetTrainConfigRequest, TrainConfig
from fedproto_pb.v1.value_pb2 import ListValue, MapEntry, Value

TOKEN = TOKENS["alice"]


def sleep_call(rid: int, seconds: float, deadline_ms: int = 0) -> Envelope:
    return Envelope(
        request_id=rid,
        deadline_ms=deadline_ms,
        call=CallRequest(method="sleep", args=[Value(double_value=seconds)]),
    )


def ping(rid: int, payload: bytes = b"") -> Envelope:
    return Envelope(request_id=rid, ping=Ping(payload=payload))


def body(envelope: Envelope) -> str | None:
    return envelope.WhichOneof("body")


async def expect_error(ws: ClientConnection, code: ErrorCode, request_id: int) -> Error:
    reply = await recv_envelope(ws)
    assert body(reply) == "error", reply
    assert reply.error.code == code, reply.error
    assert reply.request_id == request_id
    return reply.error


async def expect_pong(ws: ClientConnection, rid: int, payload: bytes = b"") -> None:
    await send_envelope(ws, ping(rid, payload))
    reply = await recv_envelope(ws)
    assert body(reply) == "pong", reply
    assert reply.request_id == rid
    assert reply.pong.payload == payload


# -- handshake ------------------------------------------------------------------------------------------


async def test_welcome(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url, subprotocols=["fedproto.v1"]) as ws:
        assert ws.subprotocol == "fedproto.v1"
        welcome = (await raw_handshake(ws, TOKEN, request_id=42)).welcome
        assert welcome.version == 1
        assert welcome.server_id == worker.id
        assert welcome.identity == "alice"
        assert "conformance" in welcome.capabilities
        assert len(set(welcome.capabilities)) == len(welcome.capabilities)
        assert welcome.limits.max_frame_bytes == worker.limits.max_frame_bytes
        assert welcome.limits.max_in_flight == worker.limits.max_in_flight
        assert welcome.limits.chunk_bytes + 64 <= welcome.limits.max_frame_bytes
        await expect_pong(ws, 1, b"payload \x00\xff")


async def test_no_subprotocol_offered_is_still_served(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        assert ws.subprotocol is None
        await raw_handshake(ws, TOKEN)
        await expect_pong(ws, 2)


async def test_highest_common_version_is_chosen(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await send_envelope(ws, Envelope(request_id=3, hello=Hello(versions=[7, 1, 2], token=TOKEN)))
        reply = await recv_envelope(ws)
        assert body(reply) == "welcome" and reply.welcome.version == 1


@pytest.mark.parametrize("versions", [[99], [], [0, 2]], ids=["99", "none", "0-and-2"])
async def test_unsupported_version(worker: fedproto.Worker, versions: list[int]) -> None:
    async with raw_connection(worker.url) as ws:
        await send_envelope(ws, Envelope(request_id=4, hello=Hello(versions=versions, token=TOKEN)))
        error = await expect_error(ws, ErrorCode.UNSUPPORTED_VERSION, 4)
        assert error.details["supported"] == "1"
        assert await close_code(ws) == 1002
    await assert_healthy(worker)


async def test_request_before_hello(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await send_envelope(ws, ping(3))
        await expect_error(ws, ErrorCode.FAILED_PRECONDITION, 3)
        assert await close_code(ws) == 1002
    await assert_healthy(worker)


@pytest.mark.parametrize(
    "frame", [b"", b"\x08\x05", b"\x08\x05\xfa\x07\x00"], ids=["empty", "no-body", "unknown-body"]
)
async def test_bodyless_envelope_before_hello_is_a_precondition_failure(
    worker: fedproto.Worker, frame: bytes
) -> None:
    async with raw_connection(worker.url) as ws:
        await ws.send(frame)
        await expect_error(ws, ErrorCode.FAILED_PRECONDITION, Envelope.FromString(frame).request_id)
        assert await close_code(ws) == 1002
    await assert_healthy(worker)


async def test_hello_with_request_id_zero(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await send_envelope(ws, Envelope(request_id=0, hello=Hello(versions=[1], token=TOKEN)))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 0)
        assert await close_code(ws) == 1002
    await assert_healthy(worker)


@pytest.mark.parametrize("token", ["", "wrong", "tok-a\x00", "TOK-A"])
async def test_unknown_token_is_refused_with_1008(worker: fedproto.Worker, token: str) -> None:
    async with raw_connection(worker.url) as ws:
        await send_envelope(ws, Envelope(request_id=5, hello=Hello(versions=[1], token=token)))
        error = await expect_error(ws, ErrorCode.UNAUTHENTICATED, 5)
        assert "tok-a" not in error.message and "tok-b" not in error.message
        assert await close_code(ws) == 1008
    await assert_healthy(worker)


async def test_second_hello_is_refused_and_the_first_stands(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=9, hello=Hello(versions=[1], token=TOKENS["bob"])))
        await expect_error(ws, ErrorCode.FAILED_PRECONDITION, 9)
        await send_envelope(ws, Envelope(request_id=10, call=CallRequest(method="whoami")))
        reply = await recv_envelope(ws)
        assert reply.request_id == 10 and reply.call_reply.result.string_value == "alice"


async def test_garbage_before_hello_keeps_the_connection(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await ws.send(b"\xff\xff\xff\xff")
        await expect_error(ws, ErrorCode.MALFORMED, 0)
        await raw_handshake(ws, TOKEN)
        await expect_pong(ws, 2)


async def test_handshake_timeout_closes_with_1008(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(handshake_timeout_seconds=0.2))
    async with raw_connection(w.url) as ws:
        assert await close_code(ws) == 1008
    async with client_of(w) as c:
        await c.ping()


async def test_idle_timeout_closes_with_1001_but_not_while_busy(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(idle_timeout_seconds=0.3))
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        await send_envelope(ws, sleep_call(7, 0.8))  # in flight longer than the idle timeout
        reply = await recv_envelope(ws)
        assert reply.request_id == 7 and reply.call_reply.result.double_value == 0.8
        assert await close_code(ws) == 1001


# -- framing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("after_hello", [False, True], ids=["before-hello", "after-hello"])
async def test_text_frame_is_malformed_then_closed_1003(worker: fedproto.Worker, after_hello: bool) -> None:
    async with raw_connection(worker.url) as ws:
        if after_hello:
            await raw_handshake(ws, TOKEN)
        await ws.send("hello?")
        await expect_error(ws, ErrorCode.MALFORMED, 0)
        assert await close_code(ws) == 1003
    await assert_healthy(worker)


def nested_list_value(depth: int) -> bytes:
    """A Value nested ``depth`` lists deep, built as raw bytes (no encoder limit applies)."""
    data = Value(int_value=1).SerializeToString()
    for _ in range(depth):
        item = b"\x0a" + _varint(len(data)) + data  # ListValue.items = 1
        data = b"\x42" + _varint(len(item)) + item  # Value.list_value = 8
    return data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def call_with_raw_arg(rid: int, method: str, arg: bytes) -> bytes:
    request = CallRequest(method=method).SerializeToString() + b"\x12" + _varint(len(arg)) + arg
    return Envelope(request_id=rid).SerializeToString() + b"\x92\x03" + _varint(len(request)) + request


GARBAGE = {
    "invalid-wire-type": b"\xff\xff\xff\xff",
    "truncated": b"\x08",
    "truncated-length": b"\x62\x10\x0a",
    "bad-utf8": Envelope(request_id=5).SerializeToString()
    + b"\x92\x03\x05\x0a\x03\xff\xfe\xfd",  # call.method = invalid UTF-8
    "too-deep": call_with_raw_arg(5, "echo", nested_list_value(200)),
}


@pytest.mark.parametrize("frame", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_undecodable_frame_is_malformed_and_harmless(worker: fedproto.Worker, frame: bytes) -> None:
    async with client_of(worker, TOKEN) as alice:
        await alice.send(torch.arange(5), "before")
        async with raw_connection(worker.url) as ws:
            await raw_handshake(ws, TOKEN)
            await send_envelope(ws, sleep_call(7, 0.3))  # in flight while the garbage arrives
            await ws.send(frame)
            await expect_error(ws, ErrorCode.MALFORMED, 0)
            await expect_pong(ws, 8)  # the connection stays usable
            reply = await recv_envelope(ws)
            assert reply.request_id == 7 and reply.call_reply.result.double_value == 0.3
            await send_envelope(ws, Envelope(request_id=9, count_objects=CountObjectsRequest()))
            assert (await recv_envelope(ws)).count_objects_reply.count == 1
        assert torch.equal(await alice.get("before"), torch.arange(5))
    await assert_healthy(worker)


async def test_value_nested_32_deep_is_accepted(make_worker) -> None:
    w = await make_worker(conformance=False)

    @w.method
    def depth(value: Any) -> int:
        levels = 1
        while isinstance(value, list):
            value, levels = value[0], levels + 1
        return levels

    value: object = 1
    for _ in range(31):
        value = [value]
    async with client_of(w) as c:
        assert await c.call("depth", value) == 32


async def test_value_deeper_than_64_is_rejected(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await ws.send(call_with_raw_arg(5, "echo", nested_list_value(70)))
        reply = await recv_envelope(ws)
        assert body(reply) == "error"
        # Section 8.3: INVALID_ARGUMENT with the request's id, or MALFORMED (id 0) from a decoder limit.
        assert (reply.error.code, reply.request_id) in {
            (ErrorCode.INVALID_ARGUMENT, 5),
            (ErrorCode.MALFORMED, 0),
        }
        await expect_pong(ws, 6)


async def test_envelope_without_body_is_malformed(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=9))
        await expect_error(ws, ErrorCode.MALFORMED, 9)
        await expect_pong(ws, 10)
    await assert_healthy(worker)


async def test_unknown_body_kind_is_unimplemented(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await ws.send(b"\x08\x05\xfa\x07\x00")  # request_id 5 and field 127, unknown to version 1
        await expect_error(ws, ErrorCode.UNIMPLEMENTED, 5)
        await expect_pong(ws, 6)
    await assert_healthy(worker)


SERVER_ONLY = [
    field.name
    for field in Envelope.DESCRIPTOR.oneofs_by_name["body"].fields
    if field.name in {"welcome", "pong", "error", "notification", "fit_progress"}
    or field.name.endswith("_reply")
]


@pytest.mark.parametrize("kind", SERVER_ONLY)
async def test_server_only_body_from_a_client_is_invalid(worker: fedproto.Worker, kind: str) -> None:
    async with client_of(worker, TOKEN) as alice:
        await alice.send(torch.ones(1), "kept")
        async with raw_connection(worker.url) as ws:
            await raw_handshake(ws, TOKEN)
            envelope = Envelope(request_id=11)
            getattr(envelope, kind).SetInParent()
            await send_envelope(ws, envelope)
            await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 11)
            await expect_pong(ws, 12)
        assert [o.id for o in await alice.list_objects()] == ["kept"]


REJECTED_BODIES = {
    "no-body": Envelope(request_id=7).SerializeToString(),
    "unknown-body": b"\x08\x07\xfa\x07\x00",
    "server-only": Envelope(request_id=7, pong={}).SerializeToString(),
}


@pytest.mark.parametrize("frame", list(REJECTED_BODIES.values()), ids=list(REJECTED_BODIES))
async def test_rejected_body_with_an_in_flight_id_is_answered_on_id_zero(
    worker: fedproto.Worker, frame: bytes
) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, sleep_call(7, 0.3))
        await ws.send(frame)
        reply = await recv_envelope(ws)
        assert body(reply) == "error"
        assert reply.request_id == 0
        assert reply.error.details["request_id"] == "7"
        reply = await recv_envelope(ws)
        assert reply.request_id == 7 and reply.call_reply.result.double_value == 0.3


# -- request ids ----------------------------------------------------------------------------------------


async def test_duplicate_in_flight_request_id(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, sleep_call(7, 0.3))
        await send_envelope(ws, sleep_call(7, 0.01))
        error = await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 0)
        assert error.details["request_id"] == "7"
        reply = await recv_envelope(ws)
        assert reply.request_id == 7
        assert reply.call_reply.result.double_value == 0.3  # the original, not the duplicate
        await expect_pong(ws, 8)  # and nothing else arrived for id 7
        await send_envelope(ws, sleep_call(7, 0.01))  # an id may be reused after its reply
        reply = await recv_envelope(ws)
        assert reply.request_id == 7 and reply.call_reply.result.double_value == 0.01
    await assert_healthy(worker)


async def test_request_id_zero_is_invalid(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=0, call=CallRequest(method="whoami")))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 0)
        await send_envelope(ws, ping(0))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 0)
        await expect_pong(ws, 1)
    await assert_healthy(worker)


async def test_request_ids_are_per_connection(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as one, raw_connection(worker.url) as two:
        await raw_handshake(one, TOKEN)
        await raw_handshake(two, TOKEN)
        await send_envelope(one, sleep_call(7, 0.2))
        await send_envelope(two, sleep_call(7, 0.01))
        assert (await recv_envelope(two)).call_reply.result.double_value == 0.01
        assert (await recv_envelope(one)).call_reply.result.double_value == 0.2


async def test_in_flight_limit_answers_with_the_request_id(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_in_flight=2))
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        await send_envelope(ws, sleep_call(1, 0.3))
        await send_envelope(ws, sleep_call(2, 0.3))
        await send_envelope(ws, sleep_call(3, 0.01))
        error = await expect_error(ws, ErrorCode.RESOURCE_EXHAUSTED, 3)
        assert error.details.get("limit") == "2"
        replies = {(await recv_envelope(ws)).request_id for _ in range(2)}
        assert replies == {1, 2}


# -- cancel, goodbye, deadlines -------------------------------------------------------------------------


async def test_cancel_ends_the_request_with_cancelled(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, sleep_call(7, 30))
        await send_envelope(ws, Envelope(request_id=12345, cancel=Cancel(reason="unknown id: ignored")))
        await send_envelope(ws, Envelope(request_id=0, cancel=Cancel()))
        await expect_pong(ws, 8)  # the ignored cancels got no reply
        await send_envelope(ws, Envelope(request_id=7, cancel=Cancel(reason="test")))
        await expect_error(ws, ErrorCode.CANCELLED, 7)
        await send_envelope(ws, Envelope(request_id=7, cancel=Cancel()))  # already finished: ignored
        await expect_pong(ws, 9)


async def test_deadline_ms_ends_a_sleep(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, sleep_call(7, 30, deadline_ms=100))
        await expect_error(ws, ErrorCode.DEADLINE_EXCEEDED, 7)
        await send_envelope(ws, sleep_call(8, 0.01, deadline_ms=5000))
        assert (await recv_envelope(ws)).call_reply.result.double_value == 0.01


async def test_goodbye_cancels_in_flight_and_closes_1000(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, sleep_call(7, 30))
        await send_envelope(ws, ping(8))
        assert (await recv_envelope(ws)).request_id == 8  # the sleep is in flight now
        await send_envelope(ws, Envelope(request_id=0, goodbye=Goodbye(reason="bye")))
        await expect_error(ws, ErrorCode.CANCELLED, 7)
        assert await close_code(ws) == 1000
    await assert_healthy(worker)


async def test_closing_the_connection_stops_its_requests(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, sleep_call(7, 30))
        await expect_pong(ws, 8)
    for _ in range(int(WAIT / 0.01)):
        if not worker._connections:
            break
        await asyncio.sleep(0.01)
    assert not worker._connections
    await assert_healthy(worker)


# -- frame limit ----------------------------------------------------------------------------------------

FRAME_LIMIT = 64 * 1024


def ping_of_size(rid: int, size: int) -> bytes:
    """A Ping envelope whose encoding is exactly ``size`` bytes."""
    payload = b"p" * (size - 16)
    for _ in range(64):
        frame = ping(rid, payload).SerializeToString()
        if len(frame) == size:
            return frame
        payload = payload[: len(payload) - (len(frame) - size)] if len(frame) > size else payload + b"p"
    raise AssertionError(f"no ping envelope of exactly {size} bytes")


async def test_frame_of_exactly_the_limit_is_accepted(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_frame_bytes=FRAME_LIMIT, chunk_bytes=32 * 1024))
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        frame = ping_of_size(3, FRAME_LIMIT)
        assert len(frame) == FRAME_LIMIT
        await ws.send(frame)
        reply = await recv_envelope(ws)
        assert body(reply) == "pong" and reply.request_id == 3


@pytest.mark.parametrize("after_hello", [False, True], ids=["before-hello", "after-hello"])
async def test_frame_over_the_limit_closes_1009(make_worker, after_hello: bool) -> None:
    w = await make_worker(limits=conformance_limits(max_frame_bytes=FRAME_LIMIT, chunk_bytes=32 * 1024))
    async with raw_connection(w.url) as ws:
        if after_hello:
            await raw_handshake(ws)
        await ws.send(ping_of_size(3, FRAME_LIMIT + 1))
        assert await close_code(ws) == 1009
    await assert_healthy(w)


async def test_reply_larger_than_the_client_frame_limit_is_resource_exhausted(
    worker: fedproto.Worker,
) -> None:
    async with raw_connection(worker.url) as ws:
        hello = Hello(versions=[1], token=TOKEN, max_frame_bytes=20_000)
        await send_envelope(ws, Envelope(request_id=1, hello=hello))
        assert body(await recv_envelope(ws)) == "welcome"
        big = CallRequest(method="echo", args=[Value(bytes_value=b"x" * 50_000)])
        await send_envelope(ws, Envelope(request_id=2, call=big))
        data = await asyncio.wait_for(ws.recv(), WAIT)
        assert len(data) <= 20_000
        reply = Envelope.FromString(data)
        assert reply.request_id == 2 and reply.error.code == ErrorCode.RESOURCE_EXHAUSTED


# -- invalid payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensor",
    [
        Tensor(dtype=DTYPE_FLOAT32, shape=[2], data=b"\x00" * 7),  # data length does not match
        Tensor(dtype=DTYPE_FLOAT32, shape=[-1], data=b""),  # negative dimension
        Tensor(dtype=DTYPE_UNSPECIFIED, shape=[1], data=b"\x00"),
        Tensor(dtype=99, shape=[1], data=b"\x00"),  # a dtype version 1 does not know
        Tensor(dtype=DTYPE_BOOL, shape=[2], data=b"\x01\x02"),  # a bool byte other than 0 or 1
        Tensor(dtype=DTYPE_FLOAT32, shape=[], data=b""),  # 0-d needs one element
    ],
    ids=["length", "negative", "unspecified", "unknown-dtype", "bool-byte", "0d-empty"],
)
async def test_invalid_tensors(worker: fedproto.Worker, tensor: Tensor) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=2, send_object=SendObjectRequest(id="t", tensor=tensor)))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 2)
        call = CallRequest(method="echo", args=[Value(tensor_value=tensor)])
        await send_envelope(ws, Envelope(request_id=3, call=call))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 3)
        await send_envelope(ws, Envelope(request_id=4, count_objects=CountObjectsRequest()))
        assert (await recv_envelope(ws)).count_objects_reply.count == 0


@pytest.mark.parametrize(
    "request_",
    [
        SendObjectRequest(id="no-payload"),
        SendObjectRequest(id="x" * 257, tensor=Tensor(dtype=DTYPE_FLOAT32, shape=[0])),
    ],
    ids=["no-payload", "long-id"],
)
async def test_invalid_send_object(worker: fedproto.Worker, request_: SendObjectRequest) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=2, send_object=request_))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 2)


@pytest.mark.parametrize("object_id", ["", "x" * 257], ids=["empty", "257-bytes"])
@pytest.mark.parametrize("kind", ["get_object", "delete_object"])
async def test_invalid_object_id_on_get_and_delete(
    worker: fedproto.Worker, kind: str, object_id: str
) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        envelope = Envelope(request_id=2)
        getattr(envelope, kind).id = object_id
        await send_envelope(ws, envelope)
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 2)


async def test_an_id_of_256_bytes_is_fine(alice: fedproto.AsyncClient) -> None:
    object_id = "é" * 128  # 256 bytes of UTF-8
    await alice.send(torch.ones(1), object_id)
    assert torch.equal(await alice.get(object_id), torch.ones(1))


@pytest.mark.parametrize(
    "call",
    [
        CallRequest(method="echo", args=[Value()]),  # a Value with no kind
        CallRequest(method="echo", args=[Value(list_value=ListValue(items=[Value()]))]),  # nested
        CallRequest(method="echo", kwargs=[MapEntry(key="a", value=Value(int_value=1))] * 2),  # twice
        CallRequest(method="echo", kwargs=[MapEntry(key="a")]),  # an entry without a value
    ],
    ids=["no-kind", "nested-no-kind", "duplicate-keyword", "entry-without-value"],
)
async def test_invalid_values(worker: fedproto.Worker, call: CallRequest) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=2, call=call))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 2)


# -- chunked uploads at the protocol level --------------------------------------------------------------


@pytest.fixture
async def hundred_byte_chunks(make_worker) -> fedproto.Worker:
    """A conformance worker taking 100-byte chunks: uploads of a few hundred bytes stay in progress."""
    return await make_worker(tokens=TOKENS, limits=dataclasses.replace(CONFORMANCE_LIMITS, chunk_bytes=100))


def chunked_request(
    rid: int, object_id: str, data: bytes, sha: bytes | None = None, deadline_ms: int = 0
) -> Envelope:
    info = TensorInfo(
        dtype=DTYPE_FLOAT32,
        shape=[len(data) // 4],
        nbytes=len(data),
        sha256=sha or hashlib.sha256(data).digest(),
    )
    return Envelope(
        request_id=rid, deadline_ms=deadline_ms, send_object=SendObjectRequest(id=object_id, chunked=info)
    )


def chunk(rid: int, offset: int, data: bytes, total: int) -> Envelope:
    return Envelope(request_id=rid, chunk=Chunk(offset=offset, data=data, total_bytes=total))


async def test_raw_chunked_upload(hundred_byte_chunks: fedproto.Worker) -> None:
    worker = hundred_byte_chunks
    data = torch.arange(1000, dtype=torch.float32).numpy().tobytes()
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, Envelope(request_id=99, chunk=Chunk(offset=0, data=b"x", total_bytes=1)))
        await send_envelope(ws, chunked_request(2, "up", data))
        for offset in range(0, len(data), 100):
            await send_envelope(ws, chunk(2, offset, data[offset : offset + 100], len(data)))
        reply = await recv_envelope(ws)
        assert body(reply) == "send_object_reply" and reply.request_id == 2
        assert reply.send_object_reply.info.tensor.sha256 == hashlib.sha256(data).digest()
        assert reply.send_object_reply.info.tensor.nbytes == len(data)
    async with client_of(worker, TOKEN) as alice:
        assert torch.equal(await alice.get("up"), torch.arange(1000, dtype=torch.float32))


@pytest.mark.parametrize(
    "chunks",
    [
        [(4, 100)],  # does not start at 0
        [(0, 100), (200, 100)],  # a gap
        [(0, 100), (50, 100)],  # an overlap
        [(0, 0)],  # an empty chunk
        [(0, 300), (300, 200)],  # past the end
    ],
    ids=["offset", "gap", "overlap", "empty", "past-end"],
)
async def test_bad_chunks_end_the_upload(worker: fedproto.Worker, chunks: list[tuple[int, int]]) -> None:
    data = bytes(400)
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "bad", data))
        for offset, size in chunks:
            await send_envelope(ws, chunk(2, offset, b"\x00" * size, len(data)))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 2)
        await send_envelope(ws, chunk(2, 0, data, len(data)))  # chunks after the error are ignored
        await send_envelope(ws, Envelope(request_id=3, count_objects=CountObjectsRequest()))
        reply = await recv_envelope(ws)
        assert reply.request_id == 3 and reply.count_objects_reply.count == 0


async def test_chunk_with_wrong_total_ends_the_upload(worker: fedproto.Worker) -> None:
    data = bytes(400)
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "bad", data))
        await send_envelope(ws, chunk(2, 0, data[:100], 401))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 2)


async def test_sha256_mismatch_is_data_loss(worker: fedproto.Worker) -> None:
    data = bytes(range(200)) * 2
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "bad", data, sha=hashlib.sha256(b"other").digest()))
        await send_envelope(ws, chunk(2, 0, data, len(data)))
        await expect_error(ws, ErrorCode.DATA_LOSS, 2)
        await send_envelope(ws, chunked_request(3, "short-sha", data, sha=b"\x00" * 31))
        await expect_error(ws, ErrorCode.INVALID_ARGUMENT, 3)
        await send_envelope(ws, Envelope(request_id=4, count_objects=CountObjectsRequest()))
        assert (await recv_envelope(ws)).count_objects_reply.count == 0


async def test_cancelled_upload_stores_nothing(hundred_byte_chunks: fedproto.Worker) -> None:
    worker = hundred_byte_chunks
    data = bytes(400)
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "partial", data))
        await send_envelope(ws, chunk(2, 0, data[:100], len(data)))
        await send_envelope(ws, Envelope(request_id=2, cancel=Cancel()))
        await expect_error(ws, ErrorCode.CANCELLED, 2)
        await send_envelope(ws, chunk(2, 100, data[100:], len(data)))  # ignored
        await send_envelope(ws, Envelope(request_id=3, count_objects=CountObjectsRequest()))
        reply = await recv_envelope(ws)
        assert reply.request_id == 3 and reply.count_objects_reply.count == 0


async def test_empty_chunked_upload_needs_no_chunks(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "empty", b""))
        reply = await recv_envelope(ws)
        assert body(reply) == "send_object_reply"
        assert reply.send_object_reply.info.tensor.sha256.hex() == (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )


# -- identities -----------------------------------------------------------------------------------------


async def test_identities_never_see_each_other(
    alice: fedproto.AsyncClient, bob: fedproto.AsyncClient
) -> None:
    assert await alice.call("whoami") == "alice"
    assert await bob.call("whoami") == "bob"
    await alice.send(torch.ones(3), "x", tags=["shared-tag"])
    await alice.send(torch.ones(2), "only-alice", tags=["shared-tag"])
    with pytest.raises(fedproto.NotFoundError):
        await bob.get("x")
    with pytest.raises(fedproto.NotFoundError):
        await bob.delete("x")
    assert await bob.list_objects() == []
    assert await bob.objects_count() == 0
    assert await bob.search("shared-tag") == []
    assert await bob.search() == []
    # the same id, separately for each identity
    await bob.send(torch.zeros(4, dtype=torch.int64), "x")
    assert torch.equal(await alice.get("x"), torch.ones(3))
    assert torch.equal(await bob.get("x"), torch.zeros(4, dtype=torch.int64))
    assert await bob.clear_objects() == 1
    assert [o.id for o in await alice.list_objects()] == ["x", "only-alice"]
    assert await alice.objects_count() == 2
    assert [o.id for o in await alice.search("shared-tag")] == ["x", "only-alice"]


async def test_objects_belong_to_the_identity_not_the_connection(
    worker: fedproto.Worker, alice: fedproto.AsyncClient
) -> None:
    await alice.send(torch.ones(3), "x")
    async with client_of(worker, TOKEN) as second_alice:
        assert torch.equal(await second_alice.get("x"), torch.ones(3))
        assert await second_alice.delete("x") == 12
    assert await alice.objects_count() == 0


async def test_quota_is_per_identity(make_worker) -> None:
    w = await make_worker(tokens=TOKENS, limits=conformance_limits(max_object_bytes=100))
    async with client_of(w, TOKENS["alice"]) as alice, client_of(w, TOKENS["bob"]) as bob:
        await alice.send(torch.zeros(100, dtype=torch.uint8), "a")
        await bob.send(torch.zeros(100, dtype=torch.uint8), "b")
        with pytest.raises(fedproto.ResourceExhaustedError):
            await alice.send(torch.zeros(1, dtype=torch.uint8), "more")


async def test_training_state_is_per_identity(alice: fedproto.AsyncClient, bob: fedproto.AsyncClient) -> None:
    config = fedproto.TrainConfig(model=nn.Linear(4, 3), loss_fn="cross_entropy", optimizer_args={"lr": 0.1})
    await alice.set_train_config(config)
    with pytest.raises(fedproto.FailedPreconditionError):
        await bob.get_model_weights()
    with pytest.raises(fedproto.FailedPreconditionError):
        await bob.fit("conformance")
    assert list(await alice.get_model_weights()) == ["weight", "bias"]


async def test_without_tokens_everyone_is_anonymous(make_worker) -> None:
    w = await make_worker()
    async with client_of(w) as one, client_of(w, "any-token-is-ignored") as two:
        assert one.server.identity == two.server.identity == "anonymous"
        assert await one.call("whoami") == await two.call("whoami") == "anonymous"
        await one.send(torch.ones(2), "shared")
        assert torch.equal(await two.get("shared"), torch.ones(2))
        assert await two.objects_count() == 1


async def test_token_list_maps_to_hidden_identities(make_worker) -> None:
    w = await make_worker(tokens=["secret-one", "secret-two"])
    async with client_of(w, "secret-one") as one, client_of(w, "secret-two") as two:
        assert one.server.identity != two.server.identity
        assert "secret" not in one.server.identity
        assert await one.call("whoami") == one.server.identity
    with pytest.raises(fedproto.UnauthenticatedError):
        await fedproto.AsyncClient.connect(w.url, token="secret-three")


# -- a worker's own methods -----------------------------------------------------------------------------


class ColonyWorker(fedproto.Worker):
    def __init__(self) -> None:
        super().__init__("colony")
        self.calls = 0

    @fedproto.rpc
    def get_colony_id(self) -> int:
        """The colony this worker belongs to."""
        self.calls += 1
        return 7

    @fedproto.rpc(name="add", description="Add two numbers.")
    async def add_numbers(self, a: int, b: int = 1) -> int:
        return a + b

    def not_exposed(self) -> str:
        return "secret"


async def test_rpc_methods_of_a_worker_subclass() -> None:
    w = ColonyWorker()
    await w.start("127.0.0.1", 0)
    try:
        async with client_of(w) as c:
            assert await c.remote.get_colony_id() == 7
            assert w.calls == 1
            assert await c.call("add", 2) == 3
            assert await c.call("add", 2, b=5) == 7
            methods = {m.name: m for m in await c.methods()}
            assert list(methods) == ["add", "get_colony_id"]
            assert methods["get_colony_id"].description == "The colony this worker belongs to."
            assert methods["add"].description == "Add two numbers."
            assert [p.name for p in methods["add"].parameters] == ["a", "b"]  # no self
            for name in ("not_exposed", "add_numbers", "run", "__init__", "stop", "calls"):
                with pytest.raises(fedproto.MethodNotFoundError):
                    await c.call(name)
    finally:
        await w.stop(grace=0)


async def test_a_failing_method_is_internal_without_internals(make_worker) -> None:
    w = await make_worker(conformance=False)

    @w.method
    def broken() -> None:
        raise RuntimeError("the disk is full at /srv/data/secret.py")

    @w.method
    def unrepresentable() -> object:
        return object()

    @w.method
    def deliberate() -> None:
        raise fedproto.ResourceExhaustedError("the colony is full", details={"limit": "3"})

    async with client_of(w) as c:
        with pytest.raises(fedproto.InternalError) as info:
            await c.call("broken")
        assert "disk" not in info.value.message and ".py" not in info.value.message
        assert info.value.details["error_id"] in info.value.message  # §13.1.7
        with pytest.raises(fedproto.InternalError):
            await c.call("unrepresentable")
        # a ProtocolError raised on purpose reaches the client as it was raised (§11.4.1)
        with pytest.raises(fedproto.ResourceExhaustedError) as deliberate_info:
            await c.call("deliberate")
        assert deliberate_info.value.message == "the colony is full"
        assert deliberate_info.value.details == {"limit": "3"}
        await c.ping()


async def test_expose_errors_sends_a_failing_methods_own_message(make_worker) -> None:
    w = await make_worker(conformance=False, expose_errors=True)

    @w.method
    def broken() -> None:
        raise RuntimeError("the disk is full")

    async with client_of(w) as c:
        with pytest.raises(fedproto.InternalError) as info:
            await c.call("broken")
        assert info.value.message.startswith("RuntimeError: the disk is full (error id ")
        assert "Traceback" not in info.value.message


async def test_chunked_upload_counts_once_toward_the_in_flight_limit(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_in_flight=2))
    data = bytes(400)
    async with raw_connection(w.url) as ws:
        await raw_handshake(ws)
        await send_envelope(ws, chunked_request(1, "up", data))
        await send_envelope(ws, sleep_call(2, 0.3))
        await send_envelope(ws, ping(3))
        await expect_error(ws, ErrorCode.RESOURCE_EXHAUSTED, 3)  # the upload is in flight
        await send_envelope(ws, chunk(1, 0, data[:200], len(data)))  # chunks are no requests
        await send_envelope(ws, chunk(1, 200, data[200:], len(data)))
        replies = {(await recv_envelope(ws)).request_id for _ in range(2)}
        assert replies == {1, 2}


async def test_chunked_upload_of_an_existing_id_is_refused_at_once(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "dup", bytes(8)))
        await send_envelope(ws, chunk(2, 0, bytes(8), 8))
        assert body(await recv_envelope(ws)) == "send_object_reply"
        await send_envelope(ws, chunked_request(3, "dup", bytes(400)))
        await expect_error(ws, ErrorCode.ALREADY_EXISTS, 3)  # before any chunk


async def test_chunked_upload_deadline_covers_the_whole_upload(hundred_byte_chunks: fedproto.Worker) -> None:
    worker = hundred_byte_chunks
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "slow", bytes(400), deadline_ms=200))
        await send_envelope(ws, chunk(2, 0, bytes(100), 400))
        reply = await recv_envelope(ws, timeout=3)  # the deadline is 0.2 s
        assert reply.request_id == 2 and reply.error.code == ErrorCode.DEADLINE_EXCEEDED
        await send_envelope(ws, Envelope(request_id=3, count_objects=CountObjectsRequest()))
        assert (await recv_envelope(ws)).count_objects_reply.count == 0


async def test_goodbye_cancels_an_upload_in_progress(hundred_byte_chunks: fedproto.Worker) -> None:
    worker = hundred_byte_chunks
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        await send_envelope(ws, chunked_request(2, "partial", bytes(400)))
        await send_envelope(ws, chunk(2, 0, bytes(100), 400))
        await send_envelope(ws, Envelope(request_id=0, goodbye=Goodbye()))
        await expect_error(ws, ErrorCode.CANCELLED, 2)
        assert await close_code(ws) == 1000


# -- handshake ordering and notifications ---------------------------------------------------------------


async def test_requests_pipelined_behind_the_hello_run_after_the_welcome(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        await ws.send(Envelope(request_id=1, hello=Hello(versions=[1], token=TOKEN)).SerializeToString())
        await send_envelope(ws, ping(2))
        await send_envelope(ws, Envelope(request_id=3, call=CallRequest(method="whoami")))
        assert body(await recv_envelope(ws)) == "welcome"
        assert body(await recv_envelope(ws)) == "pong"
        assert (await recv_envelope(ws)).call_reply.result.string_value == "alice"


async def test_no_notification_before_the_welcome(worker: fedproto.Worker) -> None:
    async with raw_connection(worker.url) as ws:
        for _ in range(int(WAIT / 0.01)):
            if worker._connections:
                break
            await asyncio.sleep(0.01)
        await worker.notify("early", 1)
        welcome = await raw_handshake(ws, TOKEN)
        assert body(welcome) == "welcome"
        await worker.notify("late", 2)
        note = await recv_envelope(ws)
        assert body(note) == "notification" and note.request_id == 0
        assert note.notification.topic == "late" and note.notification.payload.int_value == 2


# -- datasets, models and what a worker runs ------------------------------------------------------------


async def test_datasets_and_models_are_sorted(make_worker) -> None:
    w = await make_worker(conformance=False)
    w.add_dataset((torch.zeros(3, 2), torch.zeros(3)), key="zeta")
    w.add_dataset(
        (torch.zeros(5, 2, 2), torch.zeros(5, 3, dtype=torch.int64)), key="Alpha", description="first"
    )
    w.add_dataset((torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.int8)), key="alpha")
    w.register_model("b", lambda: nn.Linear(2, 2))
    w.register_model("a", lambda: nn.Linear(2, 2))
    async with client_of(w) as c:
        datasets = await c.datasets()
        assert [d.key for d in datasets] == ["Alpha", "alpha", "zeta"]  # byte-wise order
        first = datasets[0]
        assert (first.sample_count, first.feature_shape, first.target_shape) == (5, (2, 2), (3,))
        assert first.description == "first"
        assert (datasets[1].feature_dtype, datasets[1].target_dtype) == (torch.float64, torch.int8)
        assert (await c.list_models()).names == ("a", "b")


def _pickle_bomb(marker: Path) -> bytes:
    class Touch:
        def __reduce__(self) -> tuple[object, ...]:
            return (Path.touch, (marker,))

    return pickle.dumps(Touch())


async def test_model_bytes_that_are_not_torchscript_are_never_unpickled(
    worker: fedproto.Worker, tmp_path: Path
) -> None:
    marker = tmp_path / "executed"
    bomb = _pickle_bomb(marker)
    saved = io.BytesIO()
    torch.save({"payload": 1}, saved)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:  # shaped like a TorchScript archive, pickles inside
        zf.writestr("archive/data.pkl", bomb)
        zf.writestr("archive/constants.pkl", bomb)
        zf.writestr("archive/version", "3\n")
    payloads = [b"not an archive", bomb, saved.getvalue(), archive.getvalue()]
    async with raw_connection(worker.url) as ws:
        await raw_handshake(ws, TOKEN)
        for rid, payload in enumerate(payloads, start=10):
            for config in (
                TrainConfig(
                    model_torchscript=payload, loss_name="mse", optimizer="SGD", batch_size=1, epochs=1
                ),
                TrainConfig(
                    registered_model="conformance-linear",
                    loss_torchscript=payload,
                    optimizer="SGD",
                    batch_size=1,
                    epochs=1,
                ),
            ):
                await send_envelope(
                    ws, Envelope(request_id=rid, set_train_config=SetTrainConfigRequest(config=config))
                )
                await expect_error(ws, ErrorCode.INVALID_ARGUMENT, rid)
    assert not marker.exists()


# -- run(): the blocking entry point -------------------------------------------------------------------


async def test_run_inside_a_running_loop_says_to_await_serve() -> None:
    w = fedproto.Worker("looped")
    with pytest.raises(fedproto.EventLoopRunningError, match=r"await worker\.serve\(host, port\)"):
        w.run("127.0.0.1", 0)
    assert w._server is None  # nothing was started


def test_run_in_a_plain_script_says_where_it_listens_on_stderr(tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(
        "import fedproto\n"
        "fedproto.Worker('scripted', tokens={'a': 'tok-a', 'b': 'tok-b'}).run('127.0.0.1', 0)\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        line = ""
        for _ in range(50):  # bounded: a few lines of output before the one we want
            line = process.stderr.readline()
            if "listening on" in line or not line:
                break
        expected = r"worker scripted listening on ws://127\.0\.0\.1:\d+ \(2 identities, no TLS\)"
        assert re.search(expected, line), line
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
