"""Custom calls (section 11): listing the exposed methods and calling one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from fedproto import codec
from fedproto.errors import (
    ErrorCode,
    InternalError,
    InvalidArgumentError,
    MethodNotFoundError,
    ResourceExhaustedError,
)
from fedproto.server.methods import CallContext
from fedproto.server.services import WorkerServices
from fedproto_pb.v1 import calls_pb2

from .support import FakeConnection, handle, one


async def test_a_call_runs_the_method_with_its_context(services: WorkerServices) -> None:
    def add(ctx: CallContext, a: int, b: int = 0) -> list[Any]:
        return [ctx.identity, a + b, threading.current_thread() is threading.main_thread()]

    services.methods.register(add)
    conn = FakeConnection("carol")
    request = calls_pb2.CallRequest(
        method="add", args=[codec.value_to_proto(2)], kwargs=codec.values_to_entries({"b": 3})
    )
    reply = one(await handle(services, conn, call=request))
    assert codec.value_from_proto(reply.result) == ["carol", 5, False], "a plain function runs on a thread"
    methods = one(await handle(services, conn, list_methods=calls_pb2.ListMethodsRequest())).methods
    assert [m.name for m in methods] == ["add"]


async def test_a_method_can_notify_its_caller(services: WorkerServices) -> None:
    async def ping_me(ctx: CallContext) -> None:
        await ctx.notify("hello", [1, 2])

    services.methods.register(ping_me)
    conn = FakeConnection()
    await handle(services, conn, call=calls_pb2.CallRequest(method="ping_me"))
    assert conn.notes == [("hello", [1, 2])]


async def test_call_errors(services: WorkerServices) -> None:
    services.methods.register(lambda: object(), name="opaque", inline=True)
    conn = FakeConnection()
    with pytest.raises(MethodNotFoundError):
        await handle(services, conn, call=calls_pb2.CallRequest(method="missing"))
    with pytest.raises(InternalError, match="opaque returned a value"):
        await handle(services, conn, call=calls_pb2.CallRequest(method="opaque"))
    big = calls_pb2.CallRequest(method="opaque", args=[codec.value_to_proto("x" * 2000)])
    with pytest.raises(ResourceExhaustedError) as info:
        await handle(services, conn, call=big)
    assert info.value.details == {"limit": "1024", "requested": "2006"}
    assert "2006 bytes, more than the limit of 1024 bytes" in info.value.message


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return value


async def test_a_result_too_deep_to_send_is_invalid_argument(services: WorkerServices) -> None:
    """Section 8.3.7: a result deeper than 32 levels gets INVALID_ARGUMENT (limit 32), not INTERNAL."""
    services.methods.register(lambda levels: _nested(levels), name="nest", inline=True)
    conn = FakeConnection()
    reply = one(await handle(services, conn, call=_call_of("nest", codec.MAX_SEND_DEPTH)))
    assert codec.value_from_proto(reply.result) == _nested(codec.MAX_SEND_DEPTH)
    with pytest.raises(InvalidArgumentError) as caught:
        await handle(services, conn, call=_call_of("nest", codec.MAX_SEND_DEPTH + 1))
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT and not isinstance(caught.value, InternalError)
    assert caught.value.details == {"limit": "32"}
    assert "section 8.3.7" in caught.value.message


def _call_of(method: str, *args: Any) -> calls_pb2.CallRequest:
    return calls_pb2.CallRequest(method=method, args=[codec.value_to_proto(a) for a in args])


async def test_a_cancelled_call_sets_its_context_cancelled(services: WorkerServices) -> None:
    started = asyncio.Event()
    contexts: list[CallContext] = []

    async def wait(ctx: CallContext) -> None:
        contexts.append(ctx)
        started.set()
        await asyncio.sleep(60)

    services.methods.register(wait)
    task = asyncio.create_task(handle(services, FakeConnection(), call=calls_pb2.CallRequest(method="wait")))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert contexts[0].cancelled.is_set()
