"""The server's half of one connection, with no I/O: frames in, events and frames out.

:class:`ServerSession` holds what docs/protocol.md says a server does on one connection: the handshake
(section 4), request ids and exactly one terminal reply per request (section 5), cancel and goodbye
(section 6), chunked uploads and downloads (section 7.3) and the framing rules for bad input (section 3).
Every state change goes through the table in :mod:`fedproto.session.states`. The handshake also picks
the connection's payload digest (section 7.5), which every chunked upload is checked with.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Literal, overload

import torch

from fedproto import codec, hashing
from fedproto.errors import (
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
from fedproto.session.events import (
    CloseCode,
    CloseConnection,
    Event,
    GoodbyeReceived,
    HandshakeCompleted,
    RequestCancelled,
    RequestReceived,
    SendFrame,
    TransferProgress,
    UploadStarted,
)
from fedproto.session.messages import (
    MIN_CLIENT_FRAME_BYTES,
    PROGRESS_KINDS,
    PROTOCOL_VERSIONS,
    REQUEST_KINDS,
    SERVER_ONLY_KINDS,
    error_frame,
    frame,
)
from fedproto.session.states import Machine, Role, SessionError, SessionState, Trigger
from fedproto.session.transfers import (
    Assembly,
    ChunkPieces,
    Upload,
    check_trailing_digest,
    check_upload_digest,
    chunk_frame_pieces,
    chunk_frames,
    digest_field,
    download_chunk_bytes,
    inline_limit,
    inline_reply_frame,
)
from fedproto.session.weights import parts_chunk_frame_pieces, parts_chunk_frames
from fedproto.types import Limits, ObjectInfo, TensorInfo, WeightsManifest
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectReply, SendObjectRequest
from fedproto_pb.v1.session_pb2 import Goodbye, Hello, Notification, Pong, Welcome
from fedproto_pb.v1.training_pb2 import GetWeightsReply, SetWeightsRequest

__all__ = ["CHUNKED_WEIGHTS", "MODEL_OBJECT", "ServerSession"]

#: The capability of chunked model weights (section 12.8).
CHUNKED_WEIGHTS = "chunked-weights"
#: The capability of model archives read from the object store (``TrainConfig.model_object``, section 12.9).
MODEL_OBJECT = "model-object"

#: What a received body is to the server's state machine (anything else: an invalid body).
_TRIGGER_OF_KIND = {
    "hello": Trigger.RECEIVE_HELLO,
    "chunk": Trigger.RECEIVE_CHUNK,
    "cancel": Trigger.RECEIVE_CANCEL,
    "goodbye": Trigger.RECEIVE_GOODBYE,
    **dict.fromkeys(REQUEST_KINDS, Trigger.RECEIVE_REQUEST),
}


class ServerSession:
    """The server's half of one connection.

    ``authenticate`` maps a Hello token to an identity, or returns None to refuse it; ``check_upload`` is
    called with the identity, the object id, the upload's TensorInfo and its overwrite flag before a
    chunked upload's buffer is allocated (plain values, so the server needs no protobuf), and raises a
    :class:`ProtocolError` (usually RESOURCE_EXHAUSTED) to refuse it.

    ``digests`` are the payload digest algorithms this server may choose from a Hello's offer (section
    7.5.4; ``sha256`` must be among them), and :attr:`digest` is the one chosen. ``hasher`` makes, by
    algorithm name, the hasher that checks each chunked upload: in-line by default, and the worker passes
    :func:`fedproto.hashing.background_hasher` to hash on a thread beside its event loop.

    ``check_weights`` is called with the identity, the manifest of a chunked ``set_weights`` and its
    ``strict`` flag before the upload's buffer is allocated (section 12.8.13), and raises a
    :class:`ProtocolError` to refuse it (FAILED_PRECONDITION without a model, INVALID_ARGUMENT when the
    tensors do not fit the model): the buffer is then never larger than the model.
    """

    def __init__(
        self,
        *,
        server_id: str,
        server_name: str,
        limits: Limits,
        capabilities: Sequence[str],
        authenticate: Callable[[str], str | None],
        check_upload: Callable[[str, str, TensorInfo, bool], None] | None = None,
        check_weights: Callable[[str, WeightsManifest, bool], None] | None = None,
        versions: Sequence[int] = PROTOCOL_VERSIONS,
        digests: Collection[str] = hashing.IMPLEMENTED_DIGESTS,
        hasher: Callable[[str], Hasher] = hashing.new_hasher,
    ) -> None:
        unknown = sorted(set(digests) - hashing.IMPLEMENTED_DIGESTS)
        if unknown or hashing.SHA256 not in digests:
            raise ValueError(
                f"digests={sorted(digests)}: give algorithms of {sorted(hashing.IMPLEMENTED_DIGESTS)}, "
                "sha256 among them (section 7.5.2)"
            )
        self.server_id = server_id
        self.digests = frozenset(digests)
        self._hasher = hasher
        #: The payload digest algorithm of this connection, chosen from the Hello (section 7.5.4).
        self.digest: str = hashing.SHA256
        self.server_name = server_name
        self.limits = limits
        self.capabilities = tuple(capabilities)
        self.versions = tuple(versions)
        self._authenticate = authenticate
        self._check_upload = check_upload
        self._check_weights = check_weights
        self._machine = Machine(Role.SERVER)
        self.identity: str | None = None
        self.client_name = ""
        self.client_max_frame = 0
        self._in_flight: set[int] = set()
        self._uploads: dict[int, Upload] = {}

    # -- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """Where the session is in its life (see :data:`fedproto.session.states.TRANSITIONS`)."""
        return self._machine.state

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
        state = self._machine.state
        if state is SessionState.CLOSING:  # sections 4.1.7 and 6.3.2: nothing more is read
            return []
        if state is SessionState.OPEN and not isinstance(data, str):
            fast = codec.decode_chunk_frame(data)  # big transfers: no payload copies (section 7.3)
            if fast is not None:
                self._machine.move(Trigger.RECEIVE_CHUNK)
                return self._receive_chunk(*fast)
        if isinstance(data, str):  # section 3.2
            error = MalformedError("text frames are not part of the protocol; send binary frames")
            return self._fail_connection(0, error, CloseCode.UNSUPPORTED_DATA, "text frame")
        try:
            envelope = codec.decode_envelope(data)
        except MalformedError as undecodable:  # section 3.3: report, keep the connection
            self._machine.move(Trigger.RECEIVE_UNDECODABLE)
            return [SendFrame(self._error_frame(0, undecodable))]
        kind = envelope.WhichOneof("body")
        rid = envelope.request_id
        trigger = _TRIGGER_OF_KIND.get(kind or "", Trigger.RECEIVE_INVALID)
        # Errors about an envelope whose id is already in flight use request_id 0 so they are never
        # taken for that request's terminal reply (section 3.7.3).
        stray = 0 if rid in self._in_flight else rid
        about = {"request_id": str(rid)} if stray != rid else None
        try:
            self._machine.check(trigger)
        except ProtocolError as refused:
            if state is SessionState.AWAIT_HELLO:  # section 4.4.2: refused, then closed
                return self._fail_connection(rid, refused, CloseCode.PROTOCOL_ERROR, "no hello")
            if trigger is Trigger.RECEIVE_HELLO:  # a second Hello: request checks first (section 4.4.5)
                refused = self._request_id_error(rid) or refused
            refused.details.update(about or {})
            return [SendFrame(self._error_frame(stray, refused))]  # a second Hello (section 4.4.4)
        if trigger is Trigger.RECEIVE_HELLO:
            return self._receive_hello(envelope)
        self._machine.move(trigger)
        if trigger is Trigger.RECEIVE_REQUEST:
            return self._receive_request(envelope, kind or "")
        if trigger is Trigger.RECEIVE_CHUNK:
            chunk = envelope.chunk
            return self._receive_chunk(
                rid, chunk.offset, chunk.data, chunk.total_bytes, chunk.sha256, chunk.digest
            )
        if trigger is Trigger.RECEIVE_CANCEL:
            return self._receive_cancel(rid)
        if trigger is Trigger.RECEIVE_GOODBYE:
            return [GoodbyeReceived(envelope.goodbye.reason)]
        return [SendFrame(self._error_frame(stray, self._invalid_body(envelope, kind, about)))]

    @staticmethod
    def _invalid_body(envelope: Envelope, kind: str | None, about: dict[str, str] | None) -> ProtocolError:
        if kind is None:  # sections 3.5 and 3.6
            if codec.has_unknown_body(envelope):
                return UnimplementedError("unknown message kind", details=about)
            return MalformedError("envelope has no body", details=about)
        # section 3.7: a body only servers send
        return InvalidArgumentError(f"{kind} is sent by servers only", details=about)

    def _error_frame(self, request_id: int, error: ProtocolError) -> bytes:
        """An Error frame within the client's frame limit, shortened when needed (section 13.1.6)."""
        return error_frame(request_id, error, self.client_max_frame)

    def _fail_connection(self, rid: int, error: ProtocolError, code: int, reason: str) -> list[Event]:
        """Answer a violation that ends the connection: the Error, then the close."""
        self._machine.move(Trigger.FAIL)
        return [SendFrame(self._error_frame(rid, error)), CloseConnection(code, reason)]

    def _receive_hello(self, envelope: Envelope) -> list[Event]:
        error: ProtocolError
        rid = envelope.request_id
        if rid == 0:
            error = InvalidArgumentError("request_id 0 is reserved")
            return self._fail_connection(0, error, CloseCode.PROTOCOL_ERROR, "request_id 0")
        hello: Hello = envelope.hello
        # In force from the answer to this Hello on, a refusal included; a non-zero value below the
        # smallest a client may announce counts as that smallest (section 4.6.3).
        announced = hello.max_frame_bytes
        self.client_max_frame = max(announced, MIN_CLIENT_FRAME_BYTES) if announced else 0
        common = set(hello.versions) & set(self.versions)
        if not common:
            supported = ",".join(str(v) for v in self.versions)
            error = UnsupportedVersionError(
                f"no common protocol version (offered {list(hello.versions)}, supported {supported})",
                details={"supported": supported},
            )
            return self._fail_connection(rid, error, CloseCode.PROTOCOL_ERROR, "unsupported version")
        identity = self._authenticate(hello.token)
        if identity is None:
            error = UnauthenticatedError("missing or unknown token")
            return self._fail_connection(rid, error, CloseCode.POLICY_VIOLATION, "auth")
        version = max(common)
        self.identity = identity
        self.client_name = hello.client_name
        self.digest = hashing.choose_digest(hello.digests, self.digests)
        self._machine.move(Trigger.RECEIVE_HELLO)
        welcome = Welcome(
            version=version,
            server_id=self.server_id,
            server_name=self.server_name,
            capabilities=self.capabilities,
            limits=codec.limits_to_proto(self.limits),
            identity=identity,
            # A client that offered nothing may predate section 7.5: it gets the Welcome it always got
            # (empty means sha256, section 7.5.4); one that offered is told the choice by name.
            digest=self.digest if hello.digests else "",
        )
        return [
            SendFrame(frame(rid, welcome=welcome)),
            HandshakeCompleted(
                identity=identity, version=version, client_name=hello.client_name, digest=self.digest
            ),
        ]

    def _request_id_error(self, rid: int) -> ProtocolError | None:
        """The error a request with this id gets before anything else is read (sections 5.1, 5.2).

        Such errors are always sent with request_id 0: the id is either reserved or names another
        request, whose terminal reply they must not be taken for.
        """
        if rid == 0:  # section 5.1
            return InvalidArgumentError("request_id 0 is reserved for messages tied to no request")
        if rid in self._in_flight:  # section 5.2
            return InvalidArgumentError(
                f"request_id {rid} is already in flight", details={"request_id": str(rid)}
            )
        return None

    def _receive_request(self, envelope: Envelope, kind: str) -> list[Event]:
        error: ProtocolError
        rid = envelope.request_id
        id_error = self._request_id_error(rid)
        if id_error is not None:
            return [SendFrame(self._error_frame(0, id_error))]
        if len(self._in_flight) >= self.limits.max_in_flight:  # section 5.5
            error = ResourceExhaustedError(
                f"{len(self._in_flight)} requests are in flight, the limit of this connection: "
                "wait for one to finish",
                details={"limit": str(self.limits.max_in_flight), "used": str(len(self._in_flight))},
            )
            return [SendFrame(self._error_frame(rid, error))]
        if kind == "ping":  # answered here: nothing can delay it (section 5.4)
            self._in_flight.add(rid)
            return [SendFrame(self.reply(rid, pong=Pong(payload=envelope.ping.payload)))]
        deadline = envelope.deadline_ms / 1000.0 if envelope.deadline_ms else None
        message = getattr(envelope, kind)
        self._in_flight.add(rid)
        if kind == "send_object" and message.WhichOneof("payload") == "chunked":
            return self._start_upload(rid, message, deadline)
        if kind == "set_weights" and message.HasField("chunked"):
            return self._start_weights_upload(rid, message, deadline)
        return [RequestReceived(request_id=rid, kind=kind, message=message, deadline=deadline)]

    def _start_upload(self, rid: int, request: SendObjectRequest, deadline: float | None) -> list[Event]:
        try:
            info = codec.tensor_info_from_proto(request.chunked)
            check_upload_digest(info, self.digest)  # empty: the last chunk brings it (section 7.3.26)
            if self._check_upload is not None:
                self._check_upload(self.identity or "", request.id, info, request.overwrite)
        except ProtocolError as error:
            return [SendFrame(self.fail(rid, error))]
        # left uninitialized, as for downloads: every byte is written once as the chunks arrive
        buffer = codec.payload_buffer(info.nbytes)
        assembly = Assembly(info.nbytes, buffer, self._hasher(self.digest), full_chunks=True)
        upload = Upload(request, info, assembly, deadline, self.digest)
        if info.nbytes == 0:
            return self._finish_upload(rid, upload)
        self._uploads[rid] = upload
        return [UploadStarted(rid, deadline)]

    def _start_weights_upload(
        self, rid: int, request: SetWeightsRequest, deadline: float | None
    ) -> list[Event]:
        """A chunked set_weights (section 12.8): checked whole before its buffer exists, then an upload."""
        try:
            if CHUNKED_WEIGHTS not in self.capabilities:  # section 12.8.15
                raise UnimplementedError("this server does not take chunked weights (no 'chunked-weights')")
            if request.weights:
                raise InvalidArgumentError("a chunked set_weights carries no inline weights (12.8.12)")
            manifest = codec.weights_manifest_from_proto(request.chunked)
            # the payload is one flat run of bytes: the upload machinery of section 7.3 checks it as such
            info = TensorInfo(
                dtype=torch.uint8,
                shape=(manifest.total_bytes,),
                nbytes=manifest.total_bytes,
                sha256=manifest.sha256,
                digest=manifest.digest,
            )
            check_upload_digest(info, self.digest)
            if self._check_weights is not None:
                self._check_weights(self.identity or "", manifest, request.strict)
        except ProtocolError as error:
            return [SendFrame(self.fail(rid, error))]
        buffer = codec.payload_buffer(info.nbytes)
        assembly = Assembly(info.nbytes, buffer, self._hasher(self.digest), full_chunks=True)
        upload = Upload(request, info, assembly, deadline, self.digest, kind="set_weights")
        if info.nbytes == 0:
            return self._finish_upload(rid, upload)
        self._uploads[rid] = upload
        return [UploadStarted(rid, deadline)]

    def _receive_chunk(
        self,
        rid: int,
        offset: int,
        data: bytes | memoryview,
        total: int,
        sha256: bytes = b"",
        digest: bytes = b"",
    ) -> list[Event]:
        upload = self._uploads.get(rid)
        if upload is None:  # section 7.3: chunks of no upload in progress are ignored
            return []
        try:
            upload.assembly.add(offset, data, total, self.limits.chunk_bytes)
            check_trailing_digest(upload, sha256, digest)
        except ProtocolError as error:
            del self._uploads[rid]
            return [SendFrame(self.fail(rid, error))]
        events: list[Event] = [TransferProgress(rid, upload.assembly.received, upload.assembly.total)]
        if upload.assembly.complete:
            del self._uploads[rid]
            trailer = sha256 if self.digest == hashing.SHA256 else digest
            events.extend(self._finish_upload(rid, upload, trailer))
        return events

    def _finish_upload(self, rid: int, upload: Upload, trailing_digest: bytes = b"") -> list[Event]:
        try:
            upload.verify(trailing_digest)
        except ProtocolError as error:
            return [SendFrame(self.fail(rid, error))]
        return [
            RequestReceived(
                request_id=rid,
                kind=upload.kind,
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
        self._machine.move(Trigger.SEND_REPLY)
        if request_id not in self._in_flight:
            raise SessionError(f"request {request_id} is not in flight (already answered?)")
        self._in_flight.discard(request_id)
        self._uploads.pop(request_id, None)

    def _check_in_flight(self, request_id: int, trigger: Trigger) -> None:
        self._machine.move(trigger)
        if request_id not in self._in_flight:
            raise SessionError(f"request {request_id} is not in flight")

    def reply(self, request_id: int, **body: Any) -> bytes:
        """Build the terminal reply of a request, e.g. ``reply(7, count_objects_reply=...)``."""
        ((kind, _),) = body.items()
        if kind not in SERVER_ONLY_KINDS or kind in PROGRESS_KINDS:
            raise SessionError(f"{kind} is not a terminal reply")
        self._finish(request_id)
        data = frame(request_id, **body)
        if self.client_max_frame and len(data) > self.client_max_frame:  # section 14.2.4
            error = ResourceExhaustedError(
                f"the reply takes {len(data)} bytes, more than the client's frame limit of "
                f"{self.client_max_frame} bytes (Hello.max_frame_bytes)",
                details={"limit": str(self.client_max_frame), "requested": str(len(data))},
            )
            return self._error_frame(request_id, error)
        return data

    def fail(self, request_id: int, error: ProtocolError) -> bytes:
        """Build the terminal Error of a request."""
        self._finish(request_id)
        return self._error_frame(request_id, error)

    def progress(self, request_id: int, **body: Any) -> bytes:
        """Build a non-terminal event of a request in flight (``fit_progress=...``)."""
        self._check_in_flight(request_id, Trigger.SEND_REPLY)
        return frame(request_id, **body)

    @overload
    def download(
        self, request_id: int, info: ObjectInfo, view: memoryview, *, pieces: Literal[False] = False
    ) -> Iterator[bytes]: ...

    @overload
    def download(
        self, request_id: int, info: ObjectInfo, view: memoryview, *, pieces: Literal[True]
    ) -> Iterator[bytes | ChunkPieces]: ...

    def download(
        self, request_id: int, info: ObjectInfo, view: memoryview, *, pieces: bool = False
    ) -> Iterator[bytes | ChunkPieces]:
        """Yield the frames answering a GetObjectRequest: chunks then the reply, or one inline reply.

        Chunked when the payload exceeds the chunk size or would not fit the client's frame limit
        (section 7.3). ``info`` must carry the payload's digest under :attr:`digest` (section 7.5.8): the
        store keeps it, so the payload is not hashed again here (section 7.5.11). With ``pieces``, each
        chunk frame comes as its :data:`~fedproto.session.transfers.ChunkPieces` (no payload copy).
        """
        inline = view.nbytes <= inline_limit(self.limits.chunk_bytes, self.client_max_frame)
        self._check_in_flight(request_id, Trigger.SEND_REPLY if inline else Trigger.SEND_CHUNK)
        if inline:
            self._finish(request_id)
            yield inline_reply_frame(request_id, info, view)
            return
        size = download_chunk_bytes(self.limits.chunk_bytes, self.client_max_frame)
        if pieces:
            yield from chunk_frame_pieces(request_id, view, size)
        else:
            yield from chunk_frames(request_id, view, size)
        if request_id in self._in_flight:
            yield self.reply(
                request_id, get_object_reply=GetObjectReply(info=codec.object_info_to_proto(info))
            )

    @overload
    def download_weights(
        self,
        request_id: int,
        manifest: WeightsManifest,
        parts: Sequence[memoryview],
        *,
        pieces: Literal[False] = False,
    ) -> Iterator[bytes]: ...

    @overload
    def download_weights(
        self,
        request_id: int,
        manifest: WeightsManifest,
        parts: Sequence[memoryview],
        *,
        pieces: Literal[True],
    ) -> Iterator[bytes | ChunkPieces]: ...

    def download_weights(
        self, request_id: int, manifest: WeightsManifest, parts: Sequence[memoryview], *, pieces: bool = False
    ) -> Iterator[bytes | ChunkPieces]:
        """Yield the frames answering a chunked get_weights (section 12.8): manifest, chunks, reply.

        ``parts`` are the entries' bytes in manifest order (views of the tensors: nothing is copied
        but one chunk at a time). The payload is hashed as it is cut; the digest goes in the reply. With
        ``pieces``, each chunk frame comes as its :data:`~fedproto.session.transfers.ChunkPieces`.
        """
        self._check_in_flight(request_id, Trigger.SEND_REPLY)  # the manifest: non-terminal, as progress
        data = frame(request_id, weights_manifest=codec.weights_manifest_to_proto(manifest))
        if self.client_max_frame and len(data) > self.client_max_frame:  # section 14.2.4
            yield self.fail(
                request_id,
                ResourceExhaustedError(
                    f"the weights manifest takes {len(data)} bytes, more than the client's frame limit",
                    details={"limit": str(self.client_max_frame), "requested": str(len(data))},
                ),
            )
            return
        yield data
        hasher = self._hasher(self.digest)
        if manifest.total_bytes:
            self._check_in_flight(request_id, Trigger.SEND_CHUNK)
            chunk_bytes = download_chunk_bytes(self.limits.chunk_bytes, self.client_max_frame)
            cut = parts_chunk_frame_pieces if pieces else parts_chunk_frames
            yield from cut(
                request_id, parts, manifest.total_bytes, chunk_bytes, hasher=hasher, algorithm=self.digest
            )
        if request_id in self._in_flight:
            reply = GetWeightsReply()
            setattr(reply, digest_field(self.digest), hasher.digest())
            yield self.reply(request_id, get_weights_reply=reply)

    @property
    def uploads(self) -> frozenset[int]:
        """Ids of chunked uploads still waiting for chunks."""
        return frozenset(self._uploads)

    @property
    def upload_bytes(self) -> int:
        """Bytes the buffers of the uploads still waiting for chunks take (each is allocated whole)."""
        return sum(upload.info.nbytes for upload in self._uploads.values() if upload.kind == "send_object")

    def abort_upload(self, request_id: int, error: ProtocolError) -> bytes | None:
        """End an upload still waiting for chunks with ``error`` (deadline, goodbye, shutdown)."""
        if request_id not in self._uploads:
            return None
        del self._uploads[request_id]
        return self.fail(request_id, error)

    def notification(self, topic: str, value: Any) -> bytes:
        """Build a Notification pushed to the client (request_id 0, section 6.4).

        Raises :class:`ResourceExhaustedError` instead when the frame would not fit the client's frame
        limit: such a notification is dropped (section 6.4.8), and a request that asked for it ends with
        that error (the conformance ``notify`` hook, section 18.2.12).
        """
        self._machine.check(Trigger.SEND_NOTIFICATION)
        data = frame(0, notification=Notification(topic=topic, payload=codec.value_to_proto(value)))
        if self.client_max_frame and len(data) > self.client_max_frame:
            raise ResourceExhaustedError(
                f"the notification takes {len(data)} bytes, more than the client's frame limit",
                details={"limit": str(self.client_max_frame)},
            )
        self._machine.move(Trigger.SEND_NOTIFICATION)
        return data

    def goodbye(self, reason: str = "") -> bytes:
        """Build the server's Goodbye before a shutdown close (section 6.3).

        The session keeps reading: uploads in progress may complete during the grace period, and new
        requests reach the I/O layer, which answers them UNAVAILABLE.
        """
        self._machine.move(Trigger.SEND_GOODBYE)
        return frame(0, goodbye=Goodbye(reason=reason))

    def connection_error(self, error: ProtocolError) -> bytes:
        """Build an Error tied to no request (request_id 0); sending one changes no state (section 3)."""
        return self._error_frame(0, error)
