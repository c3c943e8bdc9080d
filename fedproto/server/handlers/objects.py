"""Handlers of the object requests (docs/protocol.md section 9), on the identity's own store.

Every description they send carries the payload digest of the connection's algorithm (section 7.5.8):
the one verified on upload, or one computed once and kept by the store (section 7.5.11).
"""

from __future__ import annotations

from fedproto import codec
from fedproto.server.dispatch import Connection, Reply
from fedproto.server.services import WorkerServices
from fedproto.server.store import ObjectStore
from fedproto.session import RequestReceived

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
    head, overwrite = codec.send_object_request_from_proto(ev.message)
    # An inline tensor's elements stay in the request (no copy); chunked ones were assembled in ev.payload.
    payload: bytes | bytearray | memoryview = ev.payload if ev.payload is not None else ev.message.tensor.data
    stored = services.objects.put(
        conn.identity,
        object_id=head.id,
        tags=head.tags,
        description=head.description,
        tensor=head.tensor,
        payload=payload,
        overwrite=overwrite,
        algorithm=conn.session.digest,
    )
    return {"send_object_reply": codec.send_object_reply_to_proto(stored)}


async def get_object(services: WorkerServices, conn: Connection, ev: RequestReceived) -> None:
    """Send the object inline or in chunks, as the session decides; the reply goes out here.

    An object not read under this connection's digest algorithm yet is hashed under it first, on the
    worker's threads (a big payload would hold the event loop), and the store keeps that digest.
    """
    object_id = codec.object_id_request_from_proto(ev.message)
    ObjectStore.check_id(object_id)
    stored = services.objects.get(conn.identity, object_id)
    algorithm = conn.session.digest
    if algorithm not in stored.digests:
        await services.threads.run_sync(stored.digest, algorithm)
    info = stored.described(algorithm)
    await conn.send_all(conn.session.download(ev.request_id, info, memoryview(stored.payload), pieces=True))


async def delete_object(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Delete one object and say how many bytes that freed."""
    object_id = codec.object_id_request_from_proto(ev.message)
    ObjectStore.check_id(object_id)
    freed = services.objects.delete(conn.identity, object_id)
    return {"delete_object_reply": codec.count_reply_to_proto("delete_object", freed)}


async def list_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Describe every object of the identity."""
    infos = services.objects.list(conn.identity, conn.session.digest)
    return {"list_objects_reply": codec.object_list_reply_to_proto("list_objects", infos)}


async def count_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Count the identity's objects."""
    count = services.objects.count(conn.identity)
    return {"count_objects_reply": codec.count_reply_to_proto("count_objects", count)}


async def clear_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Delete every object of the identity and say how many there were."""
    removed = services.objects.clear(conn.identity)
    return {"clear_objects_reply": codec.count_reply_to_proto("clear_objects", removed)}


async def search_objects(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Describe the identity's objects that carry all the given tags."""
    tags = codec.search_request_from_proto(ev.message)
    infos = services.objects.search(conn.identity, tags, conn.session.digest)
    return {"search_objects_reply": codec.object_list_reply_to_proto("search_objects", infos)}
