"""Handlers of the object requests (docs/protocol.md section 9), on the identity's own store."""

from __future__ import annotations

from fedproto import codec
from fedproto.errors import InvalidArgumentError
from fedproto.server.dispatch import Connection, Reply
from fedproto.server.services import WorkerServices
from fedproto.server.store import ObjectStore
from fedproto.session import RequestReceived
from fedproto_pb.v1 import objects_pb2

__all__ = [
    "clear_objects",
    "count_objects",
    "delete_object",
    "get_object",
    "list_objects",
    "search_objects",
    "send_object",
]


async def send_object(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Store the tensor, sent inline or (``ev.payload``) as a completed chunked upload."""
    request: objects_pb2.SendObjectRequest = ev.message
    if ev.payload is not None:
        info = codec.tensor_info_from_proto(request.chunked)
        payload: bytes | bytearray = ev.payload
    elif request.WhichOneof("payload") == "tensor":
        info = codec.check_tensor(request.tensor)
        payload = request.tensor.data
    else:
        raise InvalidArgumentError("SendObjectRequest carries no tensor")
    stored = services.objects.put(
        conn.identity,
        object_id=request.id,
        tags=request.tags,
        description=request.description,
        tensor=info,
        payload=payload,
        overwrite=request.overwrite,
    )
    return {"send_object_reply": objects_pb2.SendObjectReply(info=codec.object_info_to_proto(stored))}


async def get_object(services: WorkerServices, conn: Connection, ev: RequestReceived) -> None:
    """Send the object inline or in chunks, as the session decides; the reply goes out here."""
    ObjectStore.check_id(ev.message.id)
    stored = services.objects.get(conn.identity, ev.message.id)
    for frame in conn.session.download(ev.request_id, stored.info, memoryview(stored.payload)):
        await conn.send(frame)


async def delete_object(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Delete one object and say how many bytes that freed."""
    ObjectStore.check_id(ev.message.id)
    freed = services.objects.delete(conn.identity, ev.message.id)
    return {"delete_object_reply": objects_pb2.DeleteObjectReply(freed_bytes=freed)}


async def list_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Describe every object of the identity."""
    infos = [codec.object_info_to_proto(i) for i in services.objects.list(conn.identity)]
    return {"list_objects_reply": objects_pb2.ListObjectsReply(objects=infos)}


async def count_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Count the identity's objects."""
    count = services.objects.count(conn.identity)
    return {"count_objects_reply": objects_pb2.CountObjectsReply(count=count)}


async def clear_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Delete every object of the identity and say how many there were."""
    removed = services.objects.clear(conn.identity)
    return {"clear_objects_reply": objects_pb2.ClearObjectsReply(removed=removed)}


async def search_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Describe the identity's objects that carry all the given tags."""
    infos = [codec.object_info_to_proto(i) for i in services.objects.search(conn.identity, ev.message.tags)]
    return {"search_objects_reply": objects_pb2.SearchObjectsReply(objects=infos)}
