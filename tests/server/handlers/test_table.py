"""The handler table: every request kind has exactly one answer."""

from __future__ import annotations

import inspect

import pytest
import torch

from fedproto.datasets import as_dataset
from fedproto.server.handlers import ANSWERED_BY_SESSION, HANDLERS
from fedproto.server.services import WorkerServices
from fedproto.session import REPLY_KIND, REQUEST_KINDS, ReplyReceived, RequestReceived, SendFrame
from fedproto_pb.v1 import calls_pb2, datasets_pb2, envelope_pb2, objects_pb2, training_pb2

from .support import FakeConnection, handle, send_request


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
