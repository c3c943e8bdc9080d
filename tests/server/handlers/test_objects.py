"""The object handlers (section 9), on the identity's own store."""

from __future__ import annotations

import struct

import pytest

from fedproto import hashing
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


# -- digests under the connection's algorithm (sections 7.5.8, 7.5.11) ------------------------------


def _carried(info, name: str) -> bytes:
    """The digest a TensorInfo message carries under ``name``; the other field must be empty."""
    field, other = ("sha256", "digest") if name == "sha256" else ("digest", "sha256")
    assert not getattr(info, other)
    return getattr(info, field)


@pytest.mark.parametrize("name", sorted(hashing.IMPLEMENTED_DIGESTS))
async def test_descriptions_carry_the_connections_digest(services: WorkerServices, name: str) -> None:
    conn = FakeConnection(digests=(name,))
    assert conn.session.digest == name
    values = [float(i) for i in range(64)]
    data = struct.pack("<64f", *values)
    stored = one(await handle(services, conn, send_object=send_request("w", values, ["t"])))
    assert _carried(stored.info.tensor, name) == hashing.digest(name, data)
    listed = one(await handle(services, conn, list_objects=objects_pb2.ListObjectsRequest()))
    found = one(await handle(services, conn, search_objects=objects_pb2.SearchObjectsRequest(tags=["t"])))
    for reply in (listed, found):
        assert [_carried(o.tensor, name) for o in reply.objects] == [hashing.digest(name, data)]
    await handle(services, conn, get_object=objects_pb2.GetObjectRequest(id="w"))  # chunked: 256 bytes
    [reply] = [e for e in conn.client_events() if isinstance(e, ReplyReceived)]
    assert _carried(reply.message.info.tensor, name) == hashing.digest(name, data)
    assert bytes(reply.payload or b"") == data


async def test_another_algorithms_digest_is_computed_once_and_kept(services: WorkerServices) -> None:
    old, new = FakeConnection(digests=()), FakeConnection(digests=("blake3",))
    values = [1.0, 2.0, 3.0]
    data = struct.pack("<3f", *values)
    one(await handle(services, old, send_object=send_request("w", values)))
    kept = services.objects.get("alice", "w")
    assert set(kept.digests) == {"sha256"}
    listed = one(await handle(services, new, list_objects=objects_pb2.ListObjectsRequest()))
    assert not listed.objects[0].tensor.digest  # a listing hashes nothing (section 9.5.3)
    await handle(services, new, get_object=objects_pb2.GetObjectRequest(id="w"))  # inline: 12 bytes
    [reply] = [e for e in new.client_events() if isinstance(e, ReplyReceived)]
    assert _carried(reply.message.info.tensor, "blake3") == hashing.digest("blake3", data)
    assert kept.digests["blake3"] == hashing.digest("blake3", data)
    listed = one(await handle(services, new, list_objects=objects_pb2.ListObjectsRequest()))
    assert listed.objects[0].tensor.digest == hashing.digest("blake3", data)
