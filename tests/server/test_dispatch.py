"""The dispatch callable: a request kind to its handler, UNIMPLEMENTED for kinds without one."""

from __future__ import annotations

from typing import Any

import pytest

from fedproto.errors import UnimplementedError
from fedproto.server.dispatch import Connection, Reply, dispatcher
from fedproto.server.services import WorkerServices
from fedproto.session import RequestReceived
from fedproto_pb.v1 import objects_pb2

SERVICES: Any = object()  # the dispatcher only passes its services along
CONNECTION: Any = object()


async def test_a_request_goes_to_the_handler_of_its_kind_with_the_services() -> None:
    calls: list[tuple[Any, ...]] = []

    async def count(services: WorkerServices, conn: Connection, event: RequestReceived) -> Reply:
        calls.append((services, conn, event))
        return {"count_objects_reply": objects_pb2.CountObjectsReply(count=1)}

    async def other(services: WorkerServices, conn: Connection, event: RequestReceived) -> None:
        raise AssertionError("the wrong handler")

    dispatch = dispatcher(SERVICES, {"count_objects": count, "list_objects": other})
    event = RequestReceived(request_id=3, kind="count_objects", message=objects_pb2.CountObjectsRequest())
    reply = await dispatch(CONNECTION, event)
    assert reply == {"count_objects_reply": objects_pb2.CountObjectsReply(count=1)}
    assert calls == [(SERVICES, CONNECTION, event)]


async def test_a_kind_without_a_handler_is_unimplemented() -> None:
    event = RequestReceived(request_id=3, kind="fit", message=None)
    with pytest.raises(UnimplementedError, match="fit is not implemented"):
        await dispatcher(SERVICES, {})(CONNECTION, event)
