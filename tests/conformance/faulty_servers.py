"""Deliberately faulty servers: the reference worker behind a proxy that breaks exactly one rule.

Each fault is a :class:`Proxy` subclass that sits between the suite and a correct server and changes
the traffic the way a realistic bug would (a reply with the wrong id, a lost reply, a delete that does
not delete, a welcome that lies about its limits, ...). ``catches`` names the case that must fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any, ClassVar

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from conformance.spec import REQUESTS
from fedproto_pb.v1 import errors_pb2, objects_pb2, tensor_pb2, value_pb2
from fedproto_pb.v1.envelope_pb2 import Envelope

SUBPROTOCOL = Subprotocol("fedproto.v1")
TERMINAL_REPLIES = {spec.reply for spec in REQUESTS.values()} | {"error"}


def parse(data: bytes | str) -> Envelope | None:
    """The envelope in a binary frame, or None."""
    if isinstance(data, str):
        return None
    envelope = Envelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError:
        return None
    return envelope


def encode(envelope: Envelope) -> bytes:
    """Serialize an envelope."""
    return envelope.SerializeToString()


class Link:
    """One client connection and the proxy's own connection to the real server."""

    def __init__(self, proxy: Proxy, client: ServerConnection, server: ClientConnection) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.in_flight: set[int] = set()
        self.state: dict[str, Any] = {}

    async def to_server(self, data: bytes | str) -> None:
        """Forward to the real server."""
        with contextlib.suppress(ConnectionClosed):
            await self.server.send(data)

    async def to_client(self, data: bytes | str) -> None:
        """Forward to the suite."""
        with contextlib.suppress(ConnectionClosed):
            await self.client.send(data)

    async def close_client(self, code: int, reason: str = "") -> None:
        """Close both sides, the suite's with ``code``."""
        with contextlib.suppress(Exception):
            await self.client.close(code, reason)
        with contextlib.suppress(Exception):
            await self.server.close()

    async def run(self) -> None:
        """Pump frames both ways until one side closes, then close the other with the same code."""
        up = asyncio.create_task(self._from_client())
        down = asyncio.create_task(self._from_server())
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(up, down, return_exceptions=True)

    async def _from_client(self) -> None:
        try:
            async for message in self.client:
                envelope = parse(message)
                if envelope is not None and envelope.WhichOneof("body") in REQUESTS and envelope.request_id:
                    self.in_flight.add(envelope.request_id)
                await self.proxy.from_client(self, message, envelope)
        except ConnectionClosed:
            pass
        with contextlib.suppress(Exception):
            await self.server.close()

    async def _from_server(self) -> None:
        try:
            async for message in self.server:
                envelope = parse(message)
                await self.proxy.from_server(self, message, envelope)
                if envelope is not None and envelope.WhichOneof("body") in TERMINAL_REPLIES:
                    self.in_flight.discard(envelope.request_id)
        except ConnectionClosed:
            pass
        received = self.server.protocol.close_rcvd
        code = received.code if received is not None else 1011
        code = self.proxy.close_code(code)
        with contextlib.suppress(Exception):
            await self.client.close(code, received.reason if received is not None else "")


class Proxy:
    """A WebSocket proxy in front of a real server; subclasses override the hooks to inject a fault."""

    name: ClassVar[str] = "correct"
    catches: ClassVar[str] = ""
    tokens: ClassVar[bool] = False

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._server: Server | None = None

    async def start(self) -> str:
        """Listen on a loopback port; return the proxy's URL."""
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            max_size=None,
            compression=None,
            ping_interval=None,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=lambda _conn, offered: SUBPROTOCOL if SUBPROTOCOL in offered else None,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client: ServerConnection) -> None:
        subprotocols = [SUBPROTOCOL] if client.subprotocol else None
        async with connect(
            self.upstream, max_size=None, compression=None, ping_interval=None, subprotocols=subprotocols
        ) as server:
            await Link(self, client, server).run()

    # -- hooks ----------------------------------------------------------------------------------

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        """A frame from the suite; forwarded unchanged by default."""
        await link.to_server(data)

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        """A frame from the real server; forwarded unchanged by default."""
        await link.to_client(data)

    def close_code(self, code: int) -> int:
        """The close code passed on to the suite when the real server closes."""
        return code


def _error(rid: int, code: int, message: str) -> bytes:
    return encode(Envelope(request_id=rid, error=errors_pb2.Error(code=code, message=message)))


# -- the faults ------------------------------------------------------------------------------------


class WrongReplyId(Proxy):
    """With several requests in flight, replies carry the id of the latest request (a shared variable)."""

    name = "wrong-reply-id"
    catches = "concurrency/5.3.1/pipelined-one-reply-each"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") in REQUESTS:
            link.state["latest"] = envelope.request_id
        await link.to_server(data)

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        kind = envelope.WhichOneof("body") if envelope is not None else None
        if (
            envelope is not None
            and kind in TERMINAL_REPLIES
            and envelope.request_id
            and len(link.in_flight) > 2
        ):
            envelope.request_id = link.state.get("latest", envelope.request_id)
            data = encode(envelope)
        await link.to_client(data)


class LostReply(Proxy):
    """Under pipelining (four or more requests in flight) a terminal reply is lost."""

    name = "lost-reply"
    catches = "concurrency/5.3.1/pipelined-one-reply-each"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        kind = envelope.WhichOneof("body") if envelope is not None else None
        if (
            envelope is not None
            and kind in TERMINAL_REPLIES
            and envelope.request_id
            and len(link.in_flight) >= 4
        ):
            link.in_flight.discard(envelope.request_id)
            return
        await link.to_client(data)


class WrongErrorCode(Proxy):
    """get_object of a missing id answers INVALID_ARGUMENT instead of NOT_FOUND."""

    name = "wrong-error-code"
    catches = "objects/9.3.2/get-missing-not-found"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "get_object":
            link.state.setdefault("gets", set()).add(envelope.request_id)
        await link.to_server(data)

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if (
            envelope is not None
            and envelope.WhichOneof("body") == "error"
            and envelope.request_id in link.state.get("gets", ())
            and envelope.error.code == errors_pb2.ERROR_CODE_NOT_FOUND
        ):
            envelope.error.code = errors_pb2.ERROR_CODE_INVALID_ARGUMENT
            data = encode(envelope)
        await link.to_client(data)


class DeleteDoesNotDelete(Proxy):
    """delete_object answers with the object's size but leaves the object in place."""

    name = "delete-does-not-delete"
    catches = "objects/9.4.3/get-after-delete"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "delete_object":
            link.state.setdefault("deletes", set()).add(envelope.request_id)
            get = Envelope(
                request_id=envelope.request_id,
                get_object=objects_pb2.GetObjectRequest(id=envelope.delete_object.id),
            )
            data = encode(get)
        await link.to_server(data)

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        deletes = link.state.get("deletes", set())
        if envelope is not None and envelope.request_id in deletes:
            kind = envelope.WhichOneof("body")
            if kind == "chunk":
                return
            if kind == "get_object_reply":
                deletes.discard(envelope.request_id)
                freed = envelope.get_object_reply.info.tensor.nbytes
                reply = Envelope(
                    request_id=envelope.request_id,
                    delete_object_reply=objects_pb2.DeleteObjectReply(freed_bytes=freed),
                )
                data = encode(reply)
            elif kind == "error":
                deletes.discard(envelope.request_id)
        await link.to_client(data)


class SearchIgnoresOneTag(Proxy):
    """search_objects with several tags ignores the last one."""

    name = "search-ignores-one-tag"
    catches = "objects/9.8.1/search-all-tags"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        is_search = envelope is not None and envelope.WhichOneof("body") == "search_objects"
        if envelope is not None and is_search and len(envelope.search_objects.tags) >= 2:
            del envelope.search_objects.tags[-1]
            data = encode(envelope)
        await link.to_server(data)


class ModelObjectIgnored(Proxy):
    """set_train_config with a model_object builds the registered model instead of reading the object."""

    name = "model-object-ignored"
    catches = "training/12.9.4/model-object-errors"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        is_config = envelope is not None and envelope.WhichOneof("body") == "set_train_config"
        if envelope is not None and is_config and envelope.set_train_config.config.HasField("model_object"):
            envelope.set_train_config.config.registered_model = "conformance-linear"
            data = encode(envelope)
        await link.to_server(data)


class FlippedByte(Proxy):
    """An inline tensor comes back with one bit flipped in its middle byte."""

    name = "flipped-byte"
    catches = "objects/9.3.3/get-returns-stored-bytes"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "get_object_reply":
            tensor = envelope.get_object_reply.tensor
            if tensor.data:
                raw = bytearray(tensor.data)
                raw[len(raw) // 2] ^= 0x10
                tensor.data = bytes(raw)
                data = encode(envelope)
        await link.to_client(data)


class WrongDtype(Proxy):
    """An int32 tensor comes back labelled float32 (same bytes, wrong element type)."""

    name = "wrong-dtype"
    catches = "objects/9.3.3/get-returns-stored-bytes"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "get_object_reply":
            reply = envelope.get_object_reply
            if reply.tensor.dtype == tensor_pb2.DTYPE_INT32:
                reply.tensor.dtype = tensor_pb2.DTYPE_FLOAT32
                reply.info.tensor.dtype = tensor_pb2.DTYPE_FLOAT32
                data = encode(envelope)
        await link.to_client(data)


class TextFrameAccepted(Proxy):
    """Text frames are read as if they were binary ones (answered MALFORMED, connection kept)."""

    name = "text-frame-accepted"
    catches = "framing/3.2.1/text-frame-closes-1003"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        await link.to_server(data.encode() if isinstance(data, str) else data)


def _has_unknown(message: Message) -> bool:
    if len(unknown_fields.UnknownFieldSet(message)):
        return True
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            if any(_has_unknown(item) for item in value):
                return True
        elif _has_unknown(value):
            return True
    return False


class UnknownFieldRejected(Proxy):
    """A strict decoder: an envelope carrying fields it does not know is refused with INVALID_ARGUMENT."""

    name = "unknown-field-rejected"
    catches = "compatibility/17.1.1/unknown-fields-ignored"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") is not None and _has_unknown(envelope):
            await link.to_client(
                _error(envelope.request_id, errors_pb2.ERROR_CODE_INVALID_ARGUMENT, "unknown field")
            )
            return
        await link.to_server(data)


class AuthSkipped(Proxy):
    """Any non-empty token is accepted (it is swapped for a valid one before the real check)."""

    name = "auth-skipped"
    catches = "auth/15.1.3/unknown-token"
    tokens = True
    valid = ("tok-alice", "tok-bob")

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "hello":
            token = envelope.hello.token
            if token and token not in self.valid:
                envelope.hello.token = self.valid[0]
                data = encode(envelope)
        await link.to_server(data)


class CrashOnMalformed(Proxy):
    """An undecodable frame crashes the connection handler (closed with 1011)."""

    name = "crash-on-malformed"
    catches = "framing/3.3.2/undecodable-keeps-connection"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is None and isinstance(data, bytes):
            await link.close_client(1011, "internal error")
            return
        await link.to_server(data)


class ChunksWrongOrder(Proxy):
    """A chunked download's first two chunks are sent in the wrong order."""

    name = "chunks-wrong-order"
    catches = "objects/7.3.16/chunked-download"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "chunk":
            held = link.state.setdefault("held", {})
            rid = envelope.request_id
            if envelope.chunk.offset == 0:
                held[rid] = data
                return
            await link.to_client(data)
            if rid in held:
                await link.to_client(held.pop(rid))
            return
        await link.to_client(data)


class UploadInArrivalOrder(Proxy):
    """An upload's chunks are assembled in the order they arrive, whatever their offsets say."""

    name = "upload-in-arrival-order"
    catches = "objects/7.3.4/out-of-order-chunks-rejected"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        uploads = link.state.setdefault("uploads", {})
        kind = envelope.WhichOneof("body") if envelope is not None else None
        if envelope is not None and kind == "send_object" and envelope.send_object.HasField("chunked"):
            uploads[envelope.request_id] = 0
        elif envelope is not None and kind == "chunk" and envelope.request_id in uploads:
            envelope.chunk.offset = uploads[envelope.request_id]
            uploads[envelope.request_id] += len(envelope.chunk.data)
            data = encode(envelope)
        await link.to_server(data)


class TrailingDigestUnchecked(Proxy):
    """A digest that comes in the last chunk is never compared: the server checks its own hash."""

    name = "trailing-digest-unchecked"
    catches = "objects/7.3.26/trailing-digest"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        hashes = link.state.setdefault("hashes", {})
        kind = envelope.WhichOneof("body") if envelope is not None else None
        if envelope is not None and kind == "send_object" and envelope.send_object.HasField("chunked"):
            hashes[envelope.request_id] = hashlib.sha256()
        elif envelope is not None and kind == "chunk" and envelope.request_id in hashes:
            hashes[envelope.request_id].update(envelope.chunk.data)
            if envelope.chunk.sha256:  # what the server "checks" is the hash it computed itself
                envelope.chunk.sha256 = hashes.pop(envelope.request_id).digest()
                data = encode(envelope)
        await link.to_server(data)


class WelcomeLiesAboutFrames(Proxy):
    """The Welcome advertises twice the max_frame_bytes the server really accepts."""

    name = "welcome-lies-about-frames"
    catches = "framing/3.4.2/frame-at-limit-accepted"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "welcome":
            envelope.welcome.limits.max_frame_bytes *= 2
            data = encode(envelope)
        await link.to_client(data)


class InFlightOffByOne(Proxy):
    """The in-flight limit is enforced one request too early."""

    name = "in-flight-off-by-one"
    catches = "limits/5.5.1/in-flight-limit"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        limit = link.state.get("limit", 0)
        is_request = envelope is not None and envelope.WhichOneof("body") in REQUESTS
        if envelope is not None and is_request and limit and len(link.in_flight) >= limit:
            # link.in_flight already holds this request: refusing at the limit is one too early
            link.in_flight.discard(envelope.request_id)
            await link.to_client(
                _error(envelope.request_id, errors_pb2.ERROR_CODE_RESOURCE_EXHAUSTED, "busy")
            )
            return
        await link.to_server(data)

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "welcome":
            link.state["limit"] = envelope.welcome.limits.max_in_flight
        await link.to_client(data)


class DuplicateIdErrorOnOriginal(Proxy):
    """The duplicate-id error is sent with the duplicated id, so it ends the original request."""

    name = "duplicate-id-error-on-original"
    catches = "concurrency/5.2.1/duplicate-in-flight-id"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "error" and envelope.request_id == 0:
            rid = envelope.error.details.get("request_id")
            if rid:
                envelope.request_id = int(rid)
                data = encode(envelope)
        await link.to_client(data)


class PongTruncated(Proxy):
    """Pong echoes at most 1024 bytes of the Ping's payload."""

    name = "pong-truncated"
    catches = "concurrency/6.1.2/pong-payload"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if (
            envelope is not None
            and envelope.WhichOneof("body") == "pong"
            and len(envelope.pong.payload) > 1024
        ):
            envelope.pong.payload = envelope.pong.payload[:1024]
            data = encode(envelope)
        await link.to_client(data)


class CancelIgnored(Proxy):
    """Cancel messages are dropped: cancelled requests run to their end."""

    name = "cancel-ignored"
    catches = "concurrency/6.2.3/cancel-stops-request"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "cancel":
            return
        await link.to_server(data)


class NotifyAfterReply(Proxy):
    """Notifications are queued and flushed after the next reply, so notify's arrives after its CallReply."""

    name = "notify-after-reply"
    catches = "calls/18.2.8/notify-before-reply"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        held = link.state.setdefault("held", [])
        if envelope is not None and envelope.WhichOneof("body") == "notification":
            held.append(data)
            return
        await link.to_client(data)
        while held:
            await link.to_client(held.pop(0))


def _sort_maps(value: value_pb2.Value) -> None:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        for item in value.list_value.items:
            _sort_maps(item)
    elif kind == "map_value":
        entries = sorted(value.map_value.entries, key=lambda e: e.key)
        copies = [value_pb2.MapEntry(key=e.key, value=e.value) for e in entries]
        del value.map_value.entries[:]
        value.map_value.entries.extend(copies)
        for entry in value.map_value.entries:
            _sort_maps(entry.value)


class MapsSorted(Proxy):
    """Maps in call results come back with their keys sorted (a round trip through a sorted dict)."""

    name = "maps-sorted"
    catches = "calls/8.1.3/map-order-kept"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "call_reply":
            _sort_maps(envelope.call_reply.result)
            data = encode(envelope)
        await link.to_client(data)


def _ints_to_doubles(value: value_pb2.Value) -> None:
    kind = value.WhichOneof("kind")
    if kind == "int_value":
        value.double_value = float(value.int_value)
    elif kind == "list_value":
        for item in value.list_value.items:
            _ints_to_doubles(item)
    elif kind == "map_value":
        for entry in value.map_value.entries:
            _ints_to_doubles(entry.value)


class IntsBecomeDoubles(Proxy):
    """Integers in call results come back as doubles (a round trip through JSON numbers)."""

    name = "ints-become-doubles"
    catches = "calls/8.4.3/kinds-not-converted"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "call_reply":
            _ints_to_doubles(envelope.call_reply.result)
            data = encode(envelope)
        await link.to_client(data)


class UnknownBodyMalformed(Proxy):
    """An envelope with an unknown body is answered MALFORMED instead of UNIMPLEMENTED."""

    name = "unknown-body-malformed"
    catches = "framing/3.6.1/unknown-body-unimplemented"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if (
            envelope is not None
            and envelope.WhichOneof("body") == "error"
            and envelope.error.code == errors_pb2.ERROR_CODE_UNIMPLEMENTED
        ):
            envelope.error.code = errors_pb2.ERROR_CODE_MALFORMED
            data = encode(envelope)
        await link.to_client(data)


class ListNewestFirst(Proxy):
    """list_objects lists the newest object first."""

    name = "list-newest-first"
    catches = "objects/9.5.2/list-insertion-order"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "list_objects_reply":
            objects = list(envelope.list_objects_reply.objects)
            del envelope.list_objects_reply.objects[:]
            envelope.list_objects_reply.objects.extend(reversed(objects))
            data = encode(envelope)
        await link.to_client(data)


class ProgressSkipsEpochEnd(Proxy):
    """The FitProgress of the last batch of each epoch is never sent."""

    name = "progress-skips-epoch-end"
    catches = "training/12.4/progress-events"

    async def from_server(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "fit_progress":
            progress = envelope.fit_progress
            if progress.batch == progress.batches_per_epoch:
                return
        await link.to_client(data)


class OversizeWrongCloseCode(Proxy):
    """An oversized message closes the connection with 1002 instead of 1009."""

    name = "oversize-wrong-close-code"
    catches = "framing/3.4.1/oversized-closes-1009"

    def close_code(self, code: int) -> int:
        return 1002 if code == 1009 else code


#: The digest algorithms of docs/protocol.md section 7.5.1.
_KNOWN_DIGESTS = {"sha256", "blake3", "xxh3-128"}


class UnknownDigestRefused(Proxy):
    """A Hello that offers a digest algorithm the server does not know is refused with INVALID_ARGUMENT."""

    name = "unknown-digest-refused"
    catches = "handshake/7.5.4/unknown-digest-offered"

    async def from_client(self, link: Link, data: bytes | str, envelope: Envelope | None) -> None:
        if envelope is not None and envelope.WhichOneof("body") == "hello":
            unknown = [name for name in envelope.hello.digests if name not in _KNOWN_DIGESTS]
            if unknown:
                message = f"unknown digest algorithm {unknown[0]!r}"
                await link.to_client(
                    _error(envelope.request_id, errors_pb2.ERROR_CODE_INVALID_ARGUMENT, message)
                )
                return
        await link.to_server(data)


FAULTS: list[type[Proxy]] = [
    WrongReplyId,
    LostReply,
    WrongErrorCode,
    DeleteDoesNotDelete,
    SearchIgnoresOneTag,
    ModelObjectIgnored,
    FlippedByte,
    WrongDtype,
    TextFrameAccepted,
    UnknownFieldRejected,
    AuthSkipped,
    CrashOnMalformed,
    ChunksWrongOrder,
    UploadInArrivalOrder,
    TrailingDigestUnchecked,
    WelcomeLiesAboutFrames,
    InFlightOffByOne,
    DuplicateIdErrorOnOriginal,
    PongTruncated,
    CancelIgnored,
    NotifyAfterReply,
    MapsSorted,
    IntsBecomeDoubles,
    UnknownBodyMalformed,
    ListNewestFirst,
    ProgressSkipsEpochEnd,
    OversizeWrongCloseCode,
    UnknownDigestRefused,
]
