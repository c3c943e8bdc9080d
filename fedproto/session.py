"""The protocol's session rules, with no I/O: bytes in, events and bytes out.

:class:`ServerSession` and :class:`ClientSession` hold everything docs/protocol.md says about one
connection: the handshake (section 4), request ids and exactly one terminal reply per request (section
5), cancel and goodbye (section 6), chunked transfers with their SHA-256 check (section 7.3), and the
framing rules for bad input (section 3). They never touch a socket or an event loop: the worker and the
client are thin asyncio shells that feed received frames to :meth:`receive_frame`, act on the events it
returns, and send the bytes the sessions build. That keeps every rule testable without sockets.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fedproto import codec
from fedproto.errors import (
    DataLossError,
    FailedPreconditionError,
    FedprotoError,
    InvalidArgumentError,
    MalformedError,
    ProtocolError,
    RequestCancelledError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnimplementedError,
    UnsupportedVersionError,
)
from fedproto.hashing import Hasher
from fedproto.types import Limits, ObjectInfo, ServerInfo, TensorInfo
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectReply, SendObjectRequest
from fedproto_pb.v1.session_pb2 import Cancel, Goodbye, Hello, Notification, Pong, Welcome

__all__ = [
    "CLIENT_CONTROL_KINDS",
    "PROTOCOL_VERSIONS",
    "REPLY_KIND",
    "REQUEST_KINDS",
    "SERVER_ONLY_KINDS",
    "ClientSession",
    "CloseCode",
    "CloseConnection",
    "Connected",
    "ConnectionErrorReceived",
    "ErrorReceived",
    "Event",
    "GoodbyeReceived",
    "HandshakeCompleted",
    "NotificationReceived",
    "ProgressReceived",
    "ReplyReceived",
    "RequestCancelled",
    "RequestReceived",
    "SendFrame",
    "ServerSession",
    "SessionError",
    "SessionState",
    "TransferProgress",
    "UploadStarted",
]

#: Protocol versions this implementation speaks (section 4.2).
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)

#: Every request body kind and the body kind of its successful terminal reply (section 19).
REPLY_KIND: dict[str, str] = {
    "ping": "pong",
    "send_object": "send_object_reply",
    "get_object": "get_object_reply",
    "delete_object": "delete_object_reply",
    "list_objects": "list_objects_reply",
    "count_objects": "count_objects_reply",
    "clear_objects": "clear_objects_reply",
    "search_objects": "search_objects_reply",
    "list_datasets": "list_datasets_reply",
    "call": "call_reply",
    "list_methods": "list_methods_reply",
    "set_train_config": "set_train_config_reply",
    "fit": "fit_reply",
    "evaluate": "evaluate_reply",
    "get_weights": "get_weights_reply",
    "set_weights": "set_weights_reply",
    "list_models": "list_models_reply",
}
REQUEST_KINDS = frozenset(REPLY_KIND)
#: Bodies a client sends that are not requests: they get no reply of their own.
CLIENT_CONTROL_KINDS = frozenset({"hello", "cancel", "goodbye", "chunk"})
#: Bodies only a server sends (section 3.7).
SERVER_ONLY_KINDS = frozenset({"welcome", "notification", "error", "fit_progress", *REPLY_KIND.values()})
#: Bytes a chunk envelope adds around its data (tags, varints of a 64-bit id, offset and total).
_CHUNK_FRAME_OVERHEAD = 64
#: Room left for a GetObjectReply's metadata (id, tags, description) around an inline tensor.
_INLINE_REPLY_OVERHEAD = 4096
#: Non-terminal bodies a server may send with a request's id before its terminal reply.
_PROGRESS_KINDS = frozenset({"fit_progress", "chunk"})


class CloseCode:
    """WebSocket close codes the protocol uses (section 16)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


class SessionState(Enum):
    """Where a session is in its life (section 4)."""

    AWAIT_HELLO = "await-hello"
    AWAIT_WELCOME = "await-welcome"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionError(FedprotoError):
    """This side tried something the protocol forbids (a programming error, never the peer's fault)."""


# --------------------------------------------------------------------------------------------------
# events


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send these bytes as one binary frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with this code and reason (after sending any frames before this event)."""

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """Server side: the client said Hello and was welcomed as ``identity``."""

    identity: str
    version: int
    client_name: str


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server side: a request to run. ``payload`` holds a completed chunked upload's bytes."""

    request_id: int
    kind: str
    message: Any
    deadline: float | None = None
    payload: bytearray | None = None


@dataclass(frozen=True, slots=True)
class UploadStarted:
    """Server side: a chunked upload was announced; its chunks follow (the request is in flight)."""

    request_id: int
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """Server side: the client cancelled an in-flight request; stop it and answer CANCELLED."""

    request_id: int


@dataclass(frozen=True, slots=True)
class GoodbyeReceived:
    """The peer announced an orderly close."""

    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    """Client side: the server welcomed us."""

    info: ServerInfo


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """Client side: the terminal reply of a request. ``payload`` holds a chunked download's bytes."""

    request_id: int
    kind: str
    message: Any
    payload: bytearray | None = None


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """Client side: a request ended with an error (from the server, or detected here)."""

    request_id: int
    error: ProtocolError


@dataclass(frozen=True, slots=True)
class ConnectionErrorReceived:
    """Client side: an error tied to no request (request_id 0), such as a malformed-frame report."""

    error: ProtocolError


@dataclass(frozen=True, slots=True)
class ProgressReceived:
    """Client side: a non-terminal event of a request (a fit's progress)."""

    request_id: int
    kind: str
    message: Any


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """Either side: ``done`` of ``total`` payload bytes of a chunked transfer have arrived."""

    request_id: int
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    """Client side: the server pushed a notification."""

    topic: str
    value: Any


Event = (
    SendFrame
    | CloseConnection
    | HandshakeCompleted
    | RequestReceived
    | UploadStarted
    | RequestCancelled
    | GoodbyeReceived
    | Connected
    | ReplyReceived
    | ErrorReceived
    | ConnectionErrorReceived
    | ProgressReceived
    | TransferProgress
    | NotificationReceived
)


def _frame(request_id: int, **body: Any) -> bytes:
    return codec.encode_envelope(Envelope(request_id=request_id, **body))


def _error_frame(request_id: int, error: ProtocolError) -> bytes:
    return _frame(request_id, error=codec.error_to_proto(error))


@dataclass(slots=True)
class _Assembly:
    """A chunked payload being received: bytes land in place, the digest is updated as they arrive."""

    total: int
    buffer: bytearray
    hasher: Hasher
    #: every chunk but the last must be exactly the chunk size (uploads, section 7.3.5); downloads may
    #: use smaller chunks when the client's frame limit asks for it
    full_chunks: bool = False
    received: int = 0

    def add(self, offset: int, data: bytes | memoryview, total: int, max_chunk: int) -> None:
        size = len(data)
        if total != self.total:
            raise InvalidArgumentError(f"chunk says total_bytes={total}, expected {self.total}")
        if offset != self.received:
            raise InvalidArgumentError(f"chunk at offset {offset}, expected {self.received}")
        if size == 0 or (max_chunk and size > max_chunk):
            raise InvalidArgumentError(f"chunk of {size} bytes (allowed: 1 to {max_chunk})")
        if self.full_chunks and max_chunk and size < max_chunk and offset + size != self.total:
            raise InvalidArgumentError(f"a chunk of {size} bytes before the last one (section 7.3.5)")
        if self.received + size > self.total:
            raise InvalidArgumentError("chunks run past the announced total_bytes")
        end = self.received + size
        self.buffer[self.received : end] = data
        # hash the bytes in place, not the frame: a background hasher then holds no frame alive
        self.hasher.update(memoryview(self.buffer)[self.received : end])
        self.received = end

    @property
    def complete(self) -> bool:
        return self.received == self.total


@dataclass(slots=True)
class _Upload:
    request: SendObjectRequest
    info: TensorInfo
    assembly: _Assembly
    deadline: float | None


def chunk_frames(
    request_id: int, view: memoryview, chunk_bytes: int, digest: Callable[[], bytes] | None = None
) -> Iterator[bytes]:
    """Yield the Chunk frames that carry ``view`` for one transfer (section 7.3).

    With ``digest``, the last chunk carries ``digest()`` as its trailing SHA-256 (section 7.3.26); it is
    asked for only once every earlier chunk has been yielded.
    """
    total = view.nbytes
    for offset in range(0, total, chunk_bytes):
        end = offset + chunk_bytes
        trailer = digest() if digest is not None and end >= total else b""
        yield codec.encode_chunk_frame(request_id, offset, view[offset:end], total, trailer)


def _check_trailing_digest(upload: _Upload, digest: bytes) -> None:
    """Section 7.3.27: only the last chunk carries a digest, and only when the header left it out."""
    last = upload.assembly.complete
    if digest:
        if upload.info.sha256:
            raise InvalidArgumentError("the upload's header already gave its SHA-256; a chunk may not")
        if not last:
            raise InvalidArgumentError("only the last chunk of an upload may carry its SHA-256")
        if len(digest) != 32:
            raise InvalidArgumentError(f"the last chunk's sha256 has {len(digest)} bytes, not 32")
    elif last and not upload.info.sha256:
        raise InvalidArgumentError("the upload's header left sha256 empty, so its last chunk must carry it")


# --------------------------------------------------------------------------------------------------
# server


class ServerSession:
    """The server's half of one connection.

    ``authenticate`` maps a Hello token to an identity, or returns None to refuse it; ``check_upload`` is
    called with the identity and the request before a chunked upload's buffer is allocated, and raises a
    :class:`ProtocolError` (usually RESOURCE_EXHAUSTED) to refuse it. ``hasher`` makes the SHA-256 that
    checks each chunked upload (the worker passes :class:`fedproto.hashing.BackgroundSha256`).
    """

    def __init__(
        self,
        *,
        server_id: str,
        server_name: str,
        limits: Limits,
        capabilities: Sequence[str],
        authenticate: Callable[[str], str | None],
        check_upload: Callable[[str, SendObjectRequest, TensorInfo], None] | None = None,
        versions: Sequence[int] = PROTOCOL_VERSIONS,
        hasher: Callable[[], Hasher] = hashlib.sha256,
    ) -> None:
        self.server_id = server_id
        self._hasher = hasher
        self.server_name = server_name
        self.limits = limits
        self.capabilities = tuple(capabilities)
        self.versions = tuple(versions)
        self._authenticate = authenticate
        self._check_upload = check_upload
        self.state = SessionState.AWAIT_HELLO
        self.identity: str | None = None
        self.client_name = ""
        self.client_max_frame = 0
        self._in_flight: set[int] = set()
        self._uploads: dict[int, _Upload] = {}

    # -- state ------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> frozenset[int]:
        """Ids of the requests that have not had their terminal reply yet."""
        return frozenset(self._in_flight)

    def is_in_flight(self, request_id: int) -> bool:
        """Whether ``request_id`` still awaits its terminal reply."""
        return request_id in self._in_flight

    # -- input ------------------------------------------------------------------------------------

    def receive_frame(self, data: bytes | bytearray | memoryview | str) -> list[Event]:
        """Apply one received WebSocket message and return what to do about it."""
        error: ProtocolError
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return []
        if self.state is SessionState.OPEN and not isinstance(data, str):
            fast = codec.decode_chunk_frame(data)  # big transfers: no payload copies (section 7.3)
            if fast is not None:
                return self._receive_chunk(*fast)
        if isinstance(data, str):  # section 3.2
            self.state = SessionState.CLOSING
            error = MalformedError("text frames are not part of the protocol; send binary frames")
            return [
                SendFrame(_error_frame(0, error)),
                CloseConnection(CloseCode.UNSUPPORTED_DATA, "text frame"),
            ]
        try:
            envelope = codec.decode_envelope(data)
        except MalformedError as undecodable:  # section 3.3: report, keep the connection
            return [SendFrame(_error_frame(0, undecodable))]
        kind = envelope.WhichOneof("body")
        rid = envelope.request_id
        if self.state is SessionState.AWAIT_HELLO:
            return self._receive_before_handshake(envelope, kind)
        # Errors about an envelope whose id is already in flight use request_id 0 so they are never
        # taken for that request's terminal reply (section 3.7.3).
        stray = 0 if rid in self._in_flight else rid
        about = {"request_id": str(rid)} if stray != rid else None
        if kind is None:  # sections 3.5 and 3.6
            if codec.has_unknown_body(envelope):
                error = UnimplementedError("unknown message kind", details=about)
            else:
                error = MalformedError("envelope has no body", details=about)
            return [SendFrame(_error_frame(stray, error))]
        if kind in REQUEST_KINDS:
            return self._receive_request(envelope, kind)
        if kind == "chunk":
            chunk = envelope.chunk
            return self._receive_chunk(rid, chunk.offset, chunk.data, chunk.total_bytes, chunk.sha256)
        if kind == "cancel":
            return self._receive_cancel(rid)
        if kind == "goodbye":
            self.state = SessionState.CLOSING
            return [GoodbyeReceived(envelope.goodbye.reason)]
        if kind == "hello":
            error = FailedPreconditionError("the handshake is already done", details=about)
            return [SendFrame(_error_frame(stray, error))]
        # section 3.7: a body only servers send
        error = InvalidArgumentError(f"{kind} is sent by servers only", details=about)
        return [SendFrame(_error_frame(stray, error))]

    def _receive_before_handshake(self, envelope: Envelope, kind: str | None) -> list[Event]:
        error: ProtocolError
        rid = envelope.request_id
        if kind != "hello":
            self.state = SessionState.CLOSING
            error = FailedPreconditionError("the first message must be Hello")
            return [
                SendFrame(_error_frame(rid, error)),
                CloseConnection(CloseCode.PROTOCOL_ERROR, "no hello"),
            ]
        if rid == 0:
            self.state = SessionState.CLOSING
            error = InvalidArgumentError("request_id 0 is reserved")
            return [
                SendFrame(_error_frame(0, error)),
                CloseConnection(CloseCode.PROTOCOL_ERROR, "request_id 0"),
            ]
        hello: Hello = envelope.hello
        common = set(hello.versions) & set(self.versions)
        if not common:
            self.state = SessionState.CLOSING
            supported = ",".join(str(v) for v in self.versions)
            error = UnsupportedVersionError(
                f"no common protocol version (offered {list(hello.versions)}, supported {supported})",
                details={"supported": supported},
            )
            return [
                SendFrame(_error_frame(rid, error)),
                CloseConnection(CloseCode.PROTOCOL_ERROR, "unsupported version"),
            ]
        identity = self._authenticate(hello.token)
        if identity is None:
            self.state = SessionState.CLOSING
            error = UnauthenticatedError("missing or unknown token")
            return [SendFrame(_error_frame(rid, error)), CloseConnection(CloseCode.POLICY_VIOLATION, "auth")]
        version = max(common)
        self.identity = identity
        self.client_name = hello.client_name
        self.client_max_frame = hello.max_frame_bytes
        self.state = SessionState.OPEN
        welcome = Welcome(
            version=version,
            server_id=self.server_id,
            server_name=self.server_name,
            capabilities=self.capabilities,
            limits=codec.limits_to_proto(self.limits),
            identity=identity,
        )
        return [
            SendFrame(_frame(rid, welcome=welcome)),
            HandshakeCompleted(identity=identity, version=version, client_name=hello.client_name),
        ]

    def _receive_request(self, envelope: Envelope, kind: str) -> list[Event]:
        error: ProtocolError
        rid = envelope.request_id
        if rid == 0:  # section 5.1
            error = InvalidArgumentError("request_id 0 is reserved for messages tied to no request")
            return [SendFrame(_error_frame(0, error))]
        if rid in self._in_flight:  # section 5.2
            error = InvalidArgumentError(
                f"request_id {rid} is already in flight", details={"request_id": str(rid)}
            )
            return [SendFrame(_error_frame(0, error))]
        if len(self._in_flight) >= self.limits.max_in_flight:  # section 5.5
            error = ResourceExhaustedError(
                f"more than {self.limits.max_in_flight} requests in flight",
                details={"limit": str(self.limits.max_in_flight)},
            )
            return [SendFrame(_error_frame(rid, error))]
        if kind == "ping":  # answered here: nothing can delay it (section 5.4)
            self._in_flight.add(rid)
            return [SendFrame(self.reply(rid, pong=Pong(payload=envelope.ping.payload)))]
        deadline = envelope.deadline_ms / 1000.0 if envelope.deadline_ms else None
        message = getattr(envelope, kind)
        self._in_flight.add(rid)
        if kind == "send_object" and message.WhichOneof("payload") == "chunked":
            return self._start_upload(rid, message, deadline)
        return [RequestReceived(request_id=rid, kind=kind, message=message, deadline=deadline)]

    def _start_upload(self, rid: int, request: SendObjectRequest, deadline: float | None) -> list[Event]:
        try:
            info = codec.tensor_info_from_proto(request.chunked)
            if len(info.sha256) not in (0, 32):  # empty: the last chunk brings it (section 7.3.26)
                raise InvalidArgumentError(
                    f"chunked.sha256 has {len(info.sha256)} bytes; give the 32-byte SHA-256 of the payload "
                    "here or in the last chunk"
                )
            if self._check_upload is not None:
                self._check_upload(self.identity or "", request, info)
        except ProtocolError as error:
            return [SendFrame(self.fail(rid, error))]
        assembly = _Assembly(info.nbytes, bytearray(info.nbytes), self._hasher(), full_chunks=True)
        upload = _Upload(request, info, assembly, deadline)
        if info.nbytes == 0:
            return self._finish_upload(rid, upload)
        self._uploads[rid] = upload
        return [UploadStarted(rid, deadline)]

    def _receive_chunk(
        self, rid: int, offset: int, data: bytes | memoryview, total: int, digest: bytes = b""
    ) -> list[Event]:
        upload = self._uploads.get(rid)
        if upload is None:  # section 7.3: chunks of no upload in progress are ignored
            return []
        try:
            upload.assembly.add(offset, data, total, self.limits.chunk_bytes)
            _check_trailing_digest(upload, digest)
        except ProtocolError as error:
            del self._uploads[rid]
            return [SendFrame(self.fail(rid, error))]
        events: list[Event] = [TransferProgress(rid, upload.assembly.received, upload.assembly.total)]
        if upload.assembly.complete:
            del self._uploads[rid]
            events.extend(self._finish_upload(rid, upload, digest))
        return events

    def _finish_upload(self, rid: int, upload: _Upload, trailing_digest: bytes = b"") -> list[Event]:
        expected = upload.info.sha256 or trailing_digest
        if expected and upload.assembly.hasher.digest() != expected:
            return [SendFrame(self.fail(rid, DataLossError("payload does not match its SHA-256")))]
        if not upload.info.sha256:
            # the handler stores the header's TensorInfo: give it the verified digest so nobody hashes
            # the payload again (an empty upload has none to give: section 7.3.28)
            upload.request.chunked.sha256 = expected or upload.assembly.hasher.digest()
        return [
            RequestReceived(
                request_id=rid,
                kind="send_object",
                message=upload.request,
                deadline=upload.deadline,
                payload=upload.assembly.buffer,
            )
        ]

    def _receive_cancel(self, rid: int) -> list[Event]:
        if rid not in self._in_flight:  # section 6.2: unknown ids are ignored
            return []
        if rid in self._uploads:  # the upload never reached a handler: end it here
            del self._uploads[rid]
            return [SendFrame(self.fail(rid, RequestCancelledError("upload cancelled")))]
        return [RequestCancelled(rid)]

    # -- output -----------------------------------------------------------------------------------

    def _finish(self, request_id: int) -> None:
        if request_id not in self._in_flight:
            raise SessionError(f"request {request_id} is not in flight (already answered?)")
        self._in_flight.discard(request_id)
        self._uploads.pop(request_id, None)

    def reply(self, request_id: int, **body: Any) -> bytes:
        """Build the terminal reply of a request, e.g. ``reply(7, count_objects_reply=...)``."""
        ((kind, _),) = body.items()
        if kind not in SERVER_ONLY_KINDS or kind in _PROGRESS_KINDS:
            raise SessionError(f"{kind} is not a terminal reply")
        self._finish(request_id)
        data = _frame(request_id, **body)
        if self.client_max_frame and len(data) > self.client_max_frame:  # section 14.2.4
            error = ResourceExhaustedError(
                f"the reply takes {len(data)} bytes, more than the client's frame limit",
                details={"limit": str(self.client_max_frame)},
            )
            return _error_frame(request_id, error)
        return data

    def fail(self, request_id: int, error: ProtocolError) -> bytes:
        """Build the terminal Error of a request."""
        self._finish(request_id)
        return _error_frame(request_id, error)

    def progress(self, request_id: int, **body: Any) -> bytes:
        """Build a non-terminal event of a request in flight (``fit_progress=...``)."""
        if request_id not in self._in_flight:
            raise SessionError(f"request {request_id} is not in flight")
        return _frame(request_id, **body)

    def download(self, request_id: int, info: ObjectInfo, view: memoryview) -> Iterator[bytes]:
        """Yield the frames answering a GetObjectRequest: chunks then the reply, or one inline reply.

        Chunked when the payload exceeds the chunk size or would not fit the client's frame limit
        (section 7.3). The digest is taken once, here, over the stored bytes.
        """
        if request_id not in self._in_flight:
            raise SessionError(f"request {request_id} is not in flight")
        inline_limit = self.limits.chunk_bytes
        if self.client_max_frame:
            inline_limit = min(inline_limit, max(self.client_max_frame - _INLINE_REPLY_OVERHEAD, 0))
        if view.nbytes <= inline_limit:
            self._finish(request_id)
            envelope = Envelope(request_id=request_id)
            envelope.get_object_reply.info.CopyFrom(codec.object_info_to_proto(info))
            envelope.get_object_reply.tensor.CopyFrom(codec.inline_tensor_header(info.tensor))
            yield codec.encode_with_payload(envelope, ("get_object_reply", "tensor", "data"), view)
            return
        chunk_bytes = self.limits.chunk_bytes
        if self.client_max_frame:  # every chunk frame must fit the client's own limit (section 3.4)
            chunk_bytes = max(1, min(chunk_bytes, self.client_max_frame - _CHUNK_FRAME_OVERHEAD))
        yield from chunk_frames(request_id, view, chunk_bytes)
        if request_id in self._in_flight:
            yield self.reply(
                request_id, get_object_reply=GetObjectReply(info=codec.object_info_to_proto(info))
            )

    @property
    def uploads(self) -> frozenset[int]:
        """Ids of chunked uploads still waiting for chunks."""
        return frozenset(self._uploads)

    def abort_upload(self, request_id: int, error: ProtocolError) -> bytes | None:
        """End an upload still waiting for chunks with ``error`` (deadline, goodbye, shutdown)."""
        if request_id not in self._uploads:
            return None
        del self._uploads[request_id]
        return self.fail(request_id, error)

    def notification(self, topic: str, value: Any) -> bytes:
        """Build a Notification pushed to the client (request_id 0, section 6.4)."""
        return _frame(0, notification=Notification(topic=topic, payload=codec.value_to_proto(value)))

    def goodbye(self, reason: str = "") -> bytes:
        """Build the server's Goodbye before a shutdown close (section 6.3).

        The session keeps reading: uploads in progress may complete during the grace period, and new
        requests reach the I/O layer, which answers them UNAVAILABLE.
        """
        return _frame(0, goodbye=Goodbye(reason=reason))

    def connection_error(self, error: ProtocolError) -> bytes:
        """Build an Error tied to no request (request_id 0)."""
        return _error_frame(0, error)


# --------------------------------------------------------------------------------------------------
# client


@dataclass(slots=True)
class _Pending:
    kind: str
    abandoned: bool = False
    assembly: _Assembly | None = None
    failed: ProtocolError | None = None


class ClientSession:
    """The client's half of one connection: ids, correlation, chunk reassembly and checks.

    ``hasher`` makes the SHA-256 that checks each chunked download (see :mod:`fedproto.hashing`).
    """

    def __init__(
        self,
        *,
        token: str = "",
        client_name: str = "fedproto-python",
        versions: Sequence[int] = PROTOCOL_VERSIONS,
        max_frame_bytes: int = 0,
        hasher: Callable[[], Hasher] = hashlib.sha256,
    ) -> None:
        self.token = token
        self._hasher = hasher
        self.client_name = client_name
        self.versions = tuple(versions)
        self.max_frame_bytes = max_frame_bytes
        self.state = SessionState.AWAIT_WELCOME
        self.server: ServerInfo | None = None
        # Ids start at a random point so that a reconnecting client never looks like a replay.
        self._ids = itertools.count(secrets.randbelow(1 << 20) + 1)
        self._pending: dict[int, _Pending] = {}
        self._hello_id = 0

    @property
    def pending(self) -> frozenset[int]:
        """Ids of requests still waiting for their terminal reply."""
        return frozenset(self._pending)

    def hello(self) -> bytes:
        """Build the Hello that opens the session (section 4.1)."""
        self._hello_id = next(self._ids)
        hello = Hello(
            versions=self.versions,
            client_name=self.client_name,
            token=self.token,
            max_frame_bytes=self.max_frame_bytes,
        )
        return _frame(self._hello_id, hello=hello)

    def request(
        self,
        *,
        deadline: float | None = None,
        payload: tuple[Sequence[str], memoryview] | None = None,
        **body: Any,
    ) -> tuple[int, bytes]:
        """Start a request, e.g. ``request(count_objects=CountObjectsRequest())``: its id and frame.

        ``payload=(path, view)`` puts a big bytes field (such as an inline tensor's data) into the frame
        with a single copy; ``path`` runs from the envelope, e.g. ``("send_object", "tensor", "data")``.
        """
        ((kind, _),) = body.items()
        if kind not in REQUEST_KINDS:
            raise SessionError(f"{kind} is not a request")
        if self.state is not SessionState.OPEN:
            raise SessionError(f"cannot send requests in state {self.state.value}")
        rid = next(self._ids)
        self._pending[rid] = _Pending(kind)
        deadline_ms = max(1, math.ceil(deadline * 1000)) if deadline is not None else 0
        envelope = Envelope(request_id=rid, deadline_ms=deadline_ms, **body)
        if payload is not None:
            return rid, codec.encode_with_payload(envelope, payload[0], payload[1])
        return rid, codec.encode_envelope(envelope)

    def upload(
        self, rid: int, view: memoryview, chunk_bytes: int, *, trailing_digest: bool = False
    ) -> Iterator[bytes]:
        """Yield the Chunk frames of a chunked SendObjectRequest already started with :meth:`request`.

        With ``trailing_digest`` (the request's ``chunked.sha256`` was left empty) the payload is hashed
        by the session's hasher while the frames are sent, and the last chunk carries the digest
        (section 7.3.26): no pass over the payload before its first byte goes out.
        """
        if rid not in self._pending:
            raise SessionError(f"request {rid} is not pending")
        if not trailing_digest:
            return chunk_frames(rid, view, chunk_bytes)
        hasher = self._hasher()
        hasher.update(view)
        return chunk_frames(rid, view, chunk_bytes, hasher.digest)

    def cancel(self, rid: int, reason: str = "") -> bytes | None:
        """Build the Cancel of a pending request; its late reply will be dropped (section 6.2)."""
        pending = self._pending.get(rid)
        if pending is None:
            return None
        pending.abandoned = True
        return _frame(rid, cancel=Cancel(reason=reason))

    def abandon(self, rid: int) -> None:
        """Forget a request locally without telling the server (its reply will be dropped)."""
        pending = self._pending.get(rid)
        if pending is not None:
            pending.abandoned = True

    def goodbye(self, reason: str = "") -> bytes:
        """Build the client's Goodbye (section 6.3)."""
        self.state = SessionState.CLOSING
        return _frame(0, goodbye=Goodbye(reason=reason))

    def receive_frame(self, data: bytes | bytearray | memoryview | str) -> list[Event]:
        """Apply one frame received from the server and return what happened."""
        error: ProtocolError
        if self.state is SessionState.OPEN and not isinstance(data, str):
            fast = codec.decode_chunk_frame(data)
            if fast is not None:
                rid, offset, payload, total = fast
                pending = self._pending.get(rid)
                return [] if pending is None else self._receive_chunk(rid, pending, offset, payload, total)
        if isinstance(data, str):
            self.state = SessionState.CLOSED
            return [
                ConnectionErrorReceived(MalformedError("server sent a text frame", remote=False)),
                CloseConnection(CloseCode.UNSUPPORTED_DATA, "text frame"),
            ]
        try:
            envelope = codec.decode_envelope(data)
        except MalformedError as undecodable:
            self.state = SessionState.CLOSED
            return [
                ConnectionErrorReceived(undecodable),
                CloseConnection(CloseCode.PROTOCOL_ERROR, "bad frame"),
            ]
        kind = envelope.WhichOneof("body")
        rid = envelope.request_id
        if self.state is SessionState.AWAIT_WELCOME:
            return self._receive_welcome(envelope, kind)
        if rid == 0:
            return self._receive_unsolicited(envelope, kind)
        pending = self._pending.get(rid)
        if pending is None:  # a late reply to something already forgotten
            return []
        if kind == "chunk":
            chunk = envelope.chunk
            return self._receive_chunk(rid, pending, chunk.offset, chunk.data, chunk.total_bytes)
        if kind == "fit_progress":
            return [] if pending.abandoned else [ProgressReceived(rid, kind, envelope.fit_progress)]
        del self._pending[rid]
        if pending.abandoned:
            return []
        if kind == "error":
            return [ErrorReceived(rid, codec.error_from_proto(envelope.error))]
        if pending.failed is not None:
            return [ErrorReceived(rid, pending.failed)]
        expected = REPLY_KIND[pending.kind]
        if kind != expected:
            error = MalformedError(f"server answered {pending.kind} with {kind}, expected {expected}")
            return [ErrorReceived(rid, error)]
        message = getattr(envelope, kind)
        if kind == "get_object_reply" and pending.assembly is not None:
            return [self._finish_download(rid, pending.assembly, message)]
        return [ReplyReceived(rid, kind, message)]

    def _receive_welcome(self, envelope: Envelope, kind: str | None) -> list[Event]:
        error: ProtocolError
        if kind == "error":
            self.state = SessionState.CLOSED
            return [ConnectionErrorReceived(codec.error_from_proto(envelope.error))]
        if kind != "welcome" or envelope.request_id != self._hello_id:
            self.state = SessionState.CLOSED
            error = MalformedError(f"expected Welcome for request {self._hello_id}, got {kind}")
            return [ConnectionErrorReceived(error), CloseConnection(CloseCode.PROTOCOL_ERROR, "no welcome")]
        if envelope.welcome.version not in self.versions:
            self.state = SessionState.CLOSED
            error = UnsupportedVersionError(f"server chose version {envelope.welcome.version}")
            return [ConnectionErrorReceived(error), CloseConnection(CloseCode.PROTOCOL_ERROR, "version")]
        self.server = codec.server_info_from_welcome(envelope.welcome)
        self.state = SessionState.OPEN
        return [Connected(self.server)]

    def _receive_unsolicited(self, envelope: Envelope, kind: str | None) -> list[Event]:
        if kind == "notification":
            try:
                value = codec.value_from_proto(envelope.notification.payload)
            except ProtocolError:
                return []
            return [NotificationReceived(envelope.notification.topic, value)]
        if kind == "goodbye":
            self.state = SessionState.CLOSING
            return [GoodbyeReceived(envelope.goodbye.reason)]
        if kind == "error":
            return [ConnectionErrorReceived(codec.error_from_proto(envelope.error))]
        return []

    def _receive_chunk(
        self, rid: int, pending: _Pending, offset: int, data: bytes | memoryview, total: int
    ) -> list[Event]:
        if pending.kind != "get_object" or pending.failed is not None:
            if pending.failed is None:
                pending.failed = MalformedError("server sent a chunk for a request that has none")
            return []
        if pending.assembly is None:
            limit = self.server.limits.max_object_bytes if self.server else 0
            if limit and total > limit:
                pending.failed = MalformedError("chunked download larger than the server's own limit")
                return []
            pending.assembly = _Assembly(total, bytearray(total), self._hasher())
        chunk_limit = self.server.limits.chunk_bytes if self.server else 0
        try:
            pending.assembly.add(offset, data, total, chunk_limit)
        except ProtocolError as error:
            pending.failed = DataLossError(f"bad chunk from server: {error.message}")
            return []
        if pending.abandoned:
            return []
        return [TransferProgress(rid, pending.assembly.received, pending.assembly.total)]

    def _finish_download(self, rid: int, assembly: _Assembly, reply: GetObjectReply) -> Event:
        if reply.HasField("tensor"):
            return ErrorReceived(rid, MalformedError("chunked download ended with an inline tensor"))
        if not assembly.complete:
            return ErrorReceived(rid, DataLossError("chunked download ended before all bytes arrived"))
        if assembly.hasher.digest() != reply.info.tensor.sha256:
            return ErrorReceived(rid, DataLossError("downloaded payload does not match its SHA-256"))
        return ReplyReceived(rid, "get_object_reply", reply, payload=assembly.buffer)
