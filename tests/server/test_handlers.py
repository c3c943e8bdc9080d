"""The handler table and the handlers, driven without a worker or a socket.

Each handler gets a :class:`WorkerServices` built here and a connection whose session is a real
:class:`ServerSession` after a real handshake, so a request's event is exactly what the shell would pass.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from fedproto import codec
from fedproto.datasets import as_dataset
from fedproto.errors import (
    FailedPreconditionError,
    InternalError,
    MethodNotFoundError,
    NotFoundError,
    ResourceExhaustedError,
    UnimplementedError,
)
from fedproto.server.dispatch import Reply, dispatcher
from fedproto.server.handlers import ANSWERED_BY_SESSION, HANDLERS
from fedproto.server.methods import CallContext, MethodRegistry
from fedproto.server.services import WorkerServices
from fedproto.server.store import ObjectStore
from fedproto.server.threads import WorkerThreads
from fedproto.session import (
    REPLY_KIND,
    REQUEST_KINDS,
    ClientSession,
    ReplyReceived,
    RequestReceived,
    SendFrame,
    ServerSession,
)
from fedproto.training import ModelRegistry
from fedproto.types import Limits
from fedproto_pb.v1 import calls_pb2, datasets_pb2, envelope_pb2, objects_pb2, training_pb2

# -- the table -------------------------------------------------------------------------------------


def test_every_request_kind_has_exactly_one_answer() -> None:
    assert not set(HANDLERS) & ANSWERED_BY_SESSION
    assert set(HANDLERS) | ANSWERED_BY_SESSION == REQUEST_KINDS
    for kind, handler in HANDLERS.items():
        assert inspect.iscoroutinefunction(handler), kind
        assert handler.__module__.startswith("fedproto.server.handlers."), kind


def test_the_table_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        HANDLERS["ping"] = HANDLERS["call"]  # type: ignore[index]


def test_what_the_session_answers_never_becomes_a_request_event() -> None:
    for kind in ANSWERED_BY_SESSION:
        conn = FakeConnection()
        empty = type(getattr(envelope_pb2.Envelope(), kind))()
        events = conn.session.receive_frame(conn.client.request(**{kind: empty})[1])
        assert not [e for e in events if isinstance(e, RequestReceived)], kind
        [frame] = [e.data for e in events if isinstance(e, SendFrame)]
        [reply] = conn.client.receive_frame(frame)
        assert isinstance(reply, ReplyReceived) and reply.kind == REPLY_KIND[kind]


# -- helpers ---------------------------------------------------------------------------------------


class FakeConnection:
    """A handler's connection: a handshaken session, and lists of what was sent and notified."""

    def __init__(self, identity: str = "alice") -> None:
        self.session = ServerSession(
            server_id="test",
            server_name="test",
            limits=Limits(chunk_bytes=64, max_frame_bytes=4096),
            capabilities=[],
            authenticate=lambda token: identity,
        )
        self.client = ClientSession()
        for event in self.session.receive_frame(self.client.hello()):
            if isinstance(event, SendFrame):
                self.client.receive_frame(event.data)
        self.sent: list[bytes] = []
        self.notes: list[tuple[str, Any]] = []

    @property
    def identity(self) -> str:
        return self.session.identity or ""

    async def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def notify(self, topic: str, payload: Any) -> None:
        self.notes.append((topic, payload))

    def receive(self, **body: Any) -> RequestReceived:
        """The event the session makes of a request from the client."""
        _, frame = self.client.request(**body)
        [event] = [e for e in self.session.receive_frame(frame) if isinstance(e, RequestReceived)]
        return event


@pytest.fixture(scope="module")
def threads() -> WorkerThreads:
    return WorkerThreads("handlers-test", max_threads=2)


@pytest.fixture
def services(threads: WorkerThreads) -> WorkerServices:
    return WorkerServices(
        limits=Limits(max_call_args_bytes=1024),
        objects=ObjectStore(),
        methods=MethodRegistry(),
        models=ModelRegistry(),
        threads=threads,
    )


async def handle(services: WorkerServices, conn: FakeConnection, **body: Any) -> Reply | None:
    """Run ``body``'s request through the table, as the worker's dispatch does."""
    return await dispatcher(services, HANDLERS)(conn, conn.receive(**body))


def one(reply: Reply | None) -> Any:
    assert reply is not None
    [(_, message)] = reply.items()
    return message


def send_request(object_id: str, values: list[float], tags: Iterator[str] | list[str] = ()) -> Any:
    return objects_pb2.SendObjectRequest(
        id=object_id, tags=list(tags), tensor=codec.tensor_to_proto(torch.tensor(values))
    )


# -- dispatch --------------------------------------------------------------------------------------


async def test_a_kind_without_a_handler_is_unimplemented(services: WorkerServices) -> None:
    conn = FakeConnection()
    event = conn.receive(list_objects=objects_pb2.ListObjectsRequest())
    with pytest.raises(UnimplementedError, match="list_objects"):
        await dispatcher(services, {})(conn, event)


async def test_every_reply_has_the_kind_of_its_request(services: WorkerServices) -> None:
    conn = FakeConnection()
    services.datasets["d"] = as_dataset((torch.zeros(2, 1), torch.zeros(2)))
    services.methods.register(lambda: 1, name="one", inline=True)
    requests = {
        "send_object": send_request("x", [1.0]),
        "count_objects": objects_pb2.CountObjectsRequest(),
        "list_objects": objects_pb2.ListObjectsRequest(),
        "search_objects": objects_pb2.SearchObjectsRequest(),
        "delete_object": objects_pb2.DeleteObjectRequest(id="x"),
        "clear_objects": objects_pb2.ClearObjectsRequest(),
        "list_datasets": datasets_pb2.ListDatasetsRequest(),
        "list_methods": calls_pb2.ListMethodsRequest(),
        "call": calls_pb2.CallRequest(method="one"),
        "list_models": training_pb2.ListModelsRequest(),
    }
    for kind, request in requests.items():
        reply = await handle(services, conn, **{kind: request})
        assert reply is not None and list(reply) == [REPLY_KIND[kind]], kind


# -- objects ---------------------------------------------------------------------------------------


async def test_objects_are_kept_per_identity(services: WorkerServices) -> None:
    alice, bob = FakeConnection("alice"), FakeConnection("bob")
    stored = one(await handle(services, alice, send_object=send_request("w", [1.0, 2.0], ["a", "b"])))
    assert stored.info.id == "w" and list(stored.info.tensor.shape) == [2]
    await handle(services, alice, send_object=send_request("v", [3.0], ["a"]))
    assert one(await handle(services, alice, count_objects=objects_pb2.CountObjectsRequest())).count == 2
    assert one(await handle(services, bob, count_objects=objects_pb2.CountObjectsRequest())).count == 0
    found = one(await handle(services, alice, search_objects=objects_pb2.SearchObjectsRequest(tags=["b"])))
    assert [o.id for o in found.objects] == ["w"]
    listed = one(await handle(services, alice, list_objects=objects_pb2.ListObjectsRequest()))
    assert sorted(o.id for o in listed.objects) == ["v", "w"]
    freed = one(await handle(services, alice, delete_object=objects_pb2.DeleteObjectRequest(id="w")))
    assert freed.freed_bytes == 8
    with pytest.raises(NotFoundError):
        await handle(services, bob, delete_object=objects_pb2.DeleteObjectRequest(id="v"))
    assert one(await handle(services, alice, clear_objects=objects_pb2.ClearObjectsRequest())).removed == 1


async def test_get_object_sends_its_own_reply(services: WorkerServices) -> None:
    conn = FakeConnection()
    await handle(services, conn, send_object=send_request("w", [float(i) for i in range(64)]))
    assert await handle(services, conn, get_object=objects_pb2.GetObjectRequest(id="w")) is None
    assert len(conn.sent) > 1, "a 256-byte tensor goes out in 64-byte chunks"
    events = [e for frame in conn.sent for e in conn.client.receive_frame(frame)]
    [reply] = [e for e in events if isinstance(e, ReplyReceived)]
    assert reply.kind == "get_object_reply"


# -- datasets and calls ----------------------------------------------------------------------------


async def test_datasets_are_listed_by_key(services: WorkerServices) -> None:
    services.datasets["b"] = as_dataset((torch.zeros(3, 2), torch.zeros(3)), "second")
    services.datasets["a"] = as_dataset((torch.zeros(5, 2), torch.zeros(5)), "first")
    listed = one(await handle(services, FakeConnection(), list_datasets=datasets_pb2.ListDatasetsRequest()))
    assert [(d.key, d.description) for d in listed.datasets] == [("a", "first"), ("b", "second")]


async def test_a_call_runs_the_method_with_its_context(services: WorkerServices) -> None:
    def add(ctx: CallContext, a: int, b: int = 0) -> list[Any]:
        return [ctx.identity, a + b]

    services.methods.register(add)
    conn = FakeConnection("carol")
    request = calls_pb2.CallRequest(
        method="add", args=[codec.value_to_proto(2)], kwargs=codec.values_to_entries({"b": 3})
    )
    reply = one(await handle(services, conn, call=request))
    assert codec.value_from_proto(reply.result) == ["carol", 5]
    assert [
        m.name for m in one(await handle(services, conn, list_methods=calls_pb2.ListMethodsRequest())).methods
    ] == ["add"]


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
    assert info.value.details == {"limit": "1024"}


async def test_a_cancelled_call_sets_its_context_cancelled(services: WorkerServices) -> None:
    contexts: list[CallContext] = []

    async def wait(ctx: CallContext) -> None:
        contexts.append(ctx)
        await asyncio.sleep(60)

    services.methods.register(wait)
    task = asyncio.create_task(handle(services, FakeConnection(), call=calls_pb2.CallRequest(method="wait")))
    while not contexts:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert contexts[0].cancelled.is_set()


# -- training --------------------------------------------------------------------------------------


async def test_training_needs_a_config_and_a_dataset(services: WorkerServices) -> None:
    conn = FakeConnection()
    with pytest.raises(FailedPreconditionError, match="set_train_config"):
        await handle(services, conn, get_weights=training_pb2.GetWeightsRequest())
    with pytest.raises(NotFoundError) as info:
        await handle(services, conn, fit=training_pb2.FitRequest(dataset_key="nope"))
    assert info.value.details == {"dataset_key": "nope"}


async def test_models_are_listed_with_the_weights_only_mode(services: WorkerServices) -> None:
    services.models.register("b", lambda: torch.nn.Linear(1, 1))
    services.models.register("a", lambda: torch.nn.Linear(1, 1))
    services.weights_only = True
    listed = one(await handle(services, FakeConnection(), list_models=training_pb2.ListModelsRequest()))
    assert list(listed.names) == ["a", "b"] and listed.weights_only
