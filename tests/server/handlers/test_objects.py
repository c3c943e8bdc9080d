"""The object handlers (section 9), on the identity's own store."""

from __future__ import annotations

import pytest

from fedproto.errors import InvalidArgumentError, NotFoundError
from fedproto.server.services import WorkerServices
from fedproto.session import ReplyReceived
from fedproto_pb.v1 import objects_pb2

from .support import CHUNK_BYTES, FakeConnection, handle, one, send_request


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


async def test_a_send_without_a_tensor_is_refused(services: WorkerServices) -> None:
    with pytest.raises(InvalidArgumentError, match="no tensor"):
        await handle(services, FakeConnection(), send_object=objects_pb2.SendObjectRequest(id="empty"))


async def test_get_object_sends_its_own_reply(services: WorkerServices) -> None:
    conn = FakeConnection()
    values = [float(i) for i in range(64)]
    await handle(services, conn, send_object=send_request("w", values))
    assert await handle(services, conn, get_object=objects_pb2.GetObjectRequest(id="w")) is None
    assert len(conn.sent) > 1, f"a {4 * len(values)}-byte tensor goes out in {CHUNK_BYTES}-byte chunks"
    [reply] = [e for e in conn.client_events() if isinstance(e, ReplyReceived)]
    assert reply.kind == "get_object_reply"


async def test_object_ids_are_checked(services: WorkerServices) -> None:
    with pytest.raises(InvalidArgumentError):
        await handle(services, FakeConnection(), get_object=objects_pb2.GetObjectRequest(id=""))
