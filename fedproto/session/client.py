"""The client's half of one connection, with no I/O: request ids, correlation, chunk reassembly, checks.

:class:`ClientSession` builds the frames a client sends and turns the frames it receives into events: the
handshake (section 4), one terminal reply per request (section 5), cancel and goodbye (section 6) and
chunked transfers (section 7.3), checked under the payload digest negotiated in the handshake (section
7.5). Every state change goes through the table in :mod:`fedproto.session.states`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from fedproto import codec, hashing
from fedproto.errors import (
    DataLossError,
    DigestConfigError,
    InternalError,
    MalformedError,
    ProtocolError,
    ResourceExhaustedError,
    UnsupportedVersionError,
)
from fedproto.hashing import Hasher
from fedproto.session.events import (
    CloseCode,
    CloseConnection,
    Connected,
    ConnectionErrorReceived,
    ErrorReceived,
    Event,
    GoodbyeReceived,
    NotificationReceived,
    ProgressReceived,
    ReplyReceived,
    SendFrame,
    TransferProgress,
    WeightsChunkReceived,
    WeightsManifestReceived,
)
from fedproto.session.messages import (
    MIN_CLIENT_FRAME_BYTES,
    PROTOCOL_VERSIONS,
    REPLY_KIND,
    REQUEST_KINDS,
    frame,
)
from fedproto.session.states import Machine, Role, SessionError, SessionState, Trigger
from fedproto.session.transfers import (
    Assembly,
    ChunkPieces,
    chunk_frame_pieces,
    chunk_frame_size,
    chunk_frames,
    digest_field,
    download_error,
    inline_error,
)
from fedproto.session.weights import WeightsStream, parts_chunk_frame_pieces, parts_chunk_frames
from fedproto.types import ServerInfo
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectReply
from fedproto_pb.v1.session_pb2 import Cancel, Goodbye, Hello

__all__ = ["ClientSession", "check_digest_offer"]

_Frame = TypeVar("_Frame", bytes, ChunkPieces)

#: What a body with request_id 0 is to the client's state machine (anything else: an invalid body).
_TRIGGER_OF_UNSOLICITED = {
    "notification": Trigger.RECEIVE_NOTIFICATION,
    "goodbye": Trigger.RECEIVE_GOODBYE,
    "error": Trigger.RECEIVE_ERROR,
    "welcome": Trigger.RECEIVE_WELCOME,
}


def check_digest_offer(digests: Sequence[str]) -> tuple[str, ...]:
    """The digest algorithms a client offers (section 7.5.3), checked: names implemented here, none twice.

    An empty offer means ``sha256`` alone. Raises :class:`~fedproto.errors.DigestConfigError` otherwise.
    """
    if isinstance(digests, (str, bytes)):
        raise DigestConfigError(f"digests={digests!r}: give a sequence of names, e.g. ({digests!r},)")
    offer = tuple(digests)
    unknown = [name for name in offer if name not in hashing.IMPLEMENTED_DIGESTS]
    if unknown:
        raise DigestConfigError(
            f"digests={list(offer)}: {unknown} not implemented here "
            f"(known: {sorted(hashing.IMPLEMENTED_DIGESTS)})"
        )
    twice = sorted({name for name in offer if offer.count(name) > 1})
    if twice:  # section 7.5.3: a client MUST NOT list a name twice
        raise DigestConfigError(f"digests={list(offer)}: {twice} listed more than once")
    return offer


@dataclass(slots=True)
class _Pending:
    kind: str
    #: the caller has its outcome (or gave up): whatever still comes with this id is dropped
    abandoned: bool = False
    assembly: Assembly | None = None
    #: a chunked get_weights once its manifest arrived (section 12.8)
    weights: WeightsStream | None = None


class ClientSession:
    """The client's half of one connection: ids, correlation, chunk reassembly and checks.

    ``digests`` are the payload digest algorithms offered in the Hello, preferred first (section 7.5.3;
    checked by :func:`check_digest_offer`), and :attr:`digest` is the one the server chose. ``hasher``
    makes, by algorithm name, the hasher of each trailing upload digest and chunked download (in-line by
    default; the asyncio client passes :func:`fedproto.hashing.background_hasher`).

    ``max_frame_bytes`` is the largest frame the client accepts (0: no limit of its own); a non-zero
    value below 1024 is refused, as the protocol forbids announcing one (section 4.6.3).

    A request counts as pending from :meth:`request` until its terminal reply arrives, cancelled ones
    included (section 6.2.10): :attr:`pending` is what a client compares with the server's
    ``max_in_flight`` before it sends more (section 5.5.7).
    """

    def __init__(
        self,
        *,
        token: str = "",
        client_name: str = "fedproto-python",
        versions: Sequence[int] = PROTOCOL_VERSIONS,
        max_frame_bytes: int = 0,
        digests: Sequence[str] = hashing.PREFERRED_DIGESTS,
        hasher: Callable[[str], Hasher] = hashing.new_hasher,
    ) -> None:
        if 0 < max_frame_bytes < MIN_CLIENT_FRAME_BYTES:
            raise ValueError(
                f"max_frame_bytes={max_frame_bytes}: give 0 (no limit) or at least {MIN_CLIENT_FRAME_BYTES}, "
                "the smallest a client may announce (section 4.6.3)"
            )
        self.token = token
        self.digests = check_digest_offer(digests)
        self._hasher = hasher
        self.client_name = client_name
        self.versions = tuple(versions)
        self.max_frame_bytes = max_frame_bytes
        self._machine = Machine(Role.CLIENT)
        self.server: ServerInfo | None = None
        # Ids count up from 1 on each connection (section 5.1.7): small ids keep chunk envelopes within
        # the 64-byte margin (section 7.3.30), and a count never meets an id still in flight.
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._hello_id = 0
        self._said_goodbye = False

    @property
    def state(self) -> SessionState:
        """Where the session is in its life (see :data:`fedproto.session.states.TRANSITIONS`)."""
        return self._machine.state

    @property
    def digest(self) -> str:
        """The payload digest algorithm of the connection (section 7.5); ``sha256`` before the Welcome."""
        return self.server.digest if self.server is not None else hashing.SHA256

    @property
    def pending(self) -> frozenset[int]:
        """Ids of requests still waiting for their terminal reply (cancelled ones included)."""
        return frozenset(self._pending)

    @property
    def in_flight(self) -> int:
        """How many requests count toward the server's ``max_in_flight`` (section 5.5.7)."""
        return len(self._pending)

    @property
    def said_goodbye(self) -> bool:
        """Whether this client sent its Goodbye: nothing more may be sent (section 6.3.8)."""
        return self._said_goodbye

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    # -- output -----------------------------------------------------------------------------------

    def hello(self) -> bytes:
        """Build the Hello that opens the session (section 4.1)."""
        self._machine.move(Trigger.SEND_HELLO)
        self._hello_id = self._take_id()
        hello = Hello(
            versions=self.versions,
            client_name=self.client_name,
            token=self.token,
            max_frame_bytes=self.max_frame_bytes,
            digests=self.digests,
        )
        return frame(self._hello_id, hello=hello)

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

        Raises :class:`ResourceExhaustedError` when the frame would exceed the server's
        ``max_frame_bytes``: the server would close the connection and end every request in flight, so
        the request is not started (section 14.2.7).
        """
        ((kind, _),) = body.items()
        if kind not in REQUEST_KINDS:
            raise SessionError(f"{kind} is not a request")
        self._machine.check(Trigger.SEND_REQUEST)
        rid = self._take_id()
        deadline_ms = max(1, math.ceil(deadline * 1000)) if deadline is not None else 0
        envelope = Envelope(request_id=rid, deadline_ms=deadline_ms, **body)
        if payload is not None:
            data = codec.encode_with_payload(envelope, payload[0], payload[1])
        else:
            data = codec.encode_envelope(envelope)
        limit = self.server.limits.max_frame_bytes if self.server is not None else 0
        if limit and len(data) > limit:
            raise ResourceExhaustedError(
                f"the {kind} request takes {len(data)} bytes, more than the server's max_frame_bytes",
                details={"limit": str(limit)},
            )
        self._machine.move(Trigger.SEND_REQUEST)
        self._pending[rid] = _Pending(kind)
        return rid, data

    def trailing_digest_fits(self, nbytes: int, chunk_bytes: int) -> bool:
        """Whether an upload of ``nbytes`` started next can carry its digest in its last chunk.

        The last chunk envelope, digest included, must fit the server's ``max_frame_bytes``; beyond the
        sizes of section 7.3.30 it may not, and the digest then goes in the header.
        """
        limit = self.server.limits.max_frame_bytes if self.server is not None else 0
        if not limit or nbytes == 0:
            return True
        last = (nbytes - 1) // chunk_bytes * chunk_bytes
        size = hashing.DIGEST_SIZES[self.digest]
        return chunk_frame_size(self._next_id, last, nbytes - last, nbytes, size) <= limit

    @overload
    def upload(
        self,
        rid: int,
        view: memoryview | Sequence[memoryview],
        chunk_bytes: int,
        *,
        trailing_digest: bool = False,
        pieces: Literal[False] = False,
    ) -> Iterator[bytes]: ...

    @overload
    def upload(
        self,
        rid: int,
        view: memoryview | Sequence[memoryview],
        chunk_bytes: int,
        *,
        trailing_digest: bool = False,
        pieces: Literal[True],
    ) -> Iterator[ChunkPieces]: ...

    def upload(
        self,
        rid: int,
        view: memoryview | Sequence[memoryview],
        chunk_bytes: int,
        *,
        trailing_digest: bool = False,
        pieces: bool = False,
    ) -> Iterator[bytes] | Iterator[ChunkPieces]:
        """Yield the Chunk frames of a chunked upload already started with :meth:`request`.

        ``view`` is the payload, or its parts end to end (a chunked ``set_weights``' tensors, section
        12.8, cut into chunks straight from their own memory). With ``trailing_digest`` (the request's
        header left its digest empty) the payload is hashed under :attr:`digest` by the session's hasher
        while the frames are sent, and the last chunk carries the digest (sections 7.3.26, 7.5.8): no pass
        over the payload before its first byte goes out. With ``pieces``, each frame comes as its
        :data:`~fedproto.session.transfers.ChunkPieces` (no payload copy).
        """
        self._machine.move(Trigger.SEND_CHUNK)
        if rid not in self._pending:
            raise SessionError(f"request {rid} is not pending")
        algorithm = self.digest
        hasher = self._hasher(algorithm) if trailing_digest else None
        if isinstance(view, memoryview):
            digest: Callable[[], bytes] | None = None
            if hasher is not None:
                hasher.update(view)
                digest = hasher.digest
            if pieces:
                return self._until_goodbye(chunk_frame_pieces(rid, view, chunk_bytes, digest, algorithm))
            return self._until_goodbye(chunk_frames(rid, view, chunk_bytes, digest, algorithm))
        parts = list(view)
        total = sum(part.nbytes for part in parts)
        if hasher is not None:
            for part in parts:
                hasher.update(part)
        trail = hasher.digest if hasher is not None else None
        if pieces:
            return self._until_goodbye(
                parts_chunk_frame_pieces(rid, parts, total, chunk_bytes, trailing=trail, algorithm=algorithm)
            )
        frames = parts_chunk_frames(rid, parts, total, chunk_bytes, trailing=trail, algorithm=algorithm)
        return self._until_goodbye(frames)

    def _until_goodbye(self, frames: Iterator[_Frame]) -> Iterator[_Frame]:
        """``frames`` until this client says goodbye: its remaining chunks are not sent (section 6.3.8)."""
        for data in frames:
            if self._said_goodbye:
                return
            yield data

    def cancel(self, rid: int, reason: str = "") -> bytes | None:
        """Build the Cancel of a pending request; its late reply will be dropped (section 6.2).

        The id stays pending until that reply arrives (section 6.2.10). None when there is nothing to
        send: the request is not pending, or this client already said goodbye (section 6.3.8).
        """
        self._machine.move(Trigger.SEND_CANCEL)
        pending = self._pending.get(rid)
        if pending is None:
            return None
        pending.abandoned = True
        if self._said_goodbye:
            return None
        return frame(rid, cancel=Cancel(reason=reason))

    def abandon(self, rid: int) -> None:
        """Forget a request locally without telling the server (its reply will be dropped)."""
        pending = self._pending.get(rid)
        if pending is not None:
            pending.abandoned = True

    def goodbye(self, reason: str = "") -> bytes:
        """Build the client's Goodbye (section 6.3); nothing more is sent after it (section 6.3.8)."""
        self._machine.move(Trigger.SEND_GOODBYE)
        self._said_goodbye = True
        return frame(0, goodbye=Goodbye(reason=reason))

    # -- input ------------------------------------------------------------------------------------

    def receive_frame(self, data: bytes | bytearray | memoryview | str) -> list[Event]:
        """Apply one frame received from the server and return what happened."""
        state = self._machine.state
        if state is SessionState.OPEN and not isinstance(data, str):
            fast = codec.decode_chunk_frame(data)
            if fast is not None:
                self._machine.move(Trigger.RECEIVE_CHUNK)
                rid, offset, payload, total = fast
                pending = self._pending.get(rid)
                return [] if pending is None else self._receive_chunk(rid, pending, offset, payload, total)
        if isinstance(data, str):
            error = MalformedError("server sent a text frame", remote=False)
            return self._fail_connection(error, CloseCode.UNSUPPORTED_DATA, "text frame")
        try:
            envelope = codec.decode_envelope(data)
        except MalformedError as undecodable:
            return self._fail_connection(undecodable, CloseCode.PROTOCOL_ERROR, "bad frame")
        kind = envelope.WhichOneof("body")
        if kind is None:  # a body newer than this client: never a reply, never fatal (section 3.6.5)
            return []
        rid = envelope.request_id
        trigger = self._trigger(state, kind, rid)
        try:
            self._machine.check(trigger)
        except ProtocolError as refused:
            if state is SessionState.AWAIT_WELCOME:
                return self._fail_connection(refused, CloseCode.PROTOCOL_ERROR, "no welcome")
            return [ConnectionErrorReceived(refused)]  # a Welcome after the handshake
        if trigger is Trigger.RECEIVE_WELCOME:
            return self._receive_welcome(envelope)
        self._machine.move(trigger)
        if trigger is Trigger.RECEIVE_ERROR:
            return [ConnectionErrorReceived(codec.error_from_proto(envelope.error))]
        if trigger is Trigger.RECEIVE_NOTIFICATION:  # an unset or invalid payload: dropped (section 6.4.7)
            notification = envelope.notification
            if not notification.HasField("payload"):
                return []
            try:
                value = codec.value_from_proto(notification.payload)
            except ProtocolError:
                return []
            return [NotificationReceived(envelope.notification.topic, value)]
        if trigger is Trigger.RECEIVE_GOODBYE:
            return [GoodbyeReceived(envelope.goodbye.reason)]
        pending = self._pending.get(rid)
        if trigger is Trigger.RECEIVE_INVALID or pending is None:  # late replies to forgotten requests
            return []
        if trigger is Trigger.RECEIVE_CHUNK:
            chunk = envelope.chunk
            return self._receive_chunk(rid, pending, chunk.offset, chunk.data, chunk.total_bytes)
        return self._receive_reply(rid, pending, envelope, kind or "")

    @staticmethod
    def _trigger(state: SessionState, kind: str | None, rid: int) -> Trigger:
        """What a received body is to the state machine."""
        if state is SessionState.AWAIT_WELCOME and kind in ("welcome", "error"):
            # the answer to the Hello, with its id (or 0 when the Hello's id was 0)
            return Trigger.RECEIVE_WELCOME if kind == "welcome" else Trigger.RECEIVE_ERROR
        if rid == 0:
            return _TRIGGER_OF_UNSOLICITED.get(kind or "", Trigger.RECEIVE_INVALID)
        return Trigger.RECEIVE_CHUNK if kind == "chunk" else Trigger.RECEIVE_REPLY

    def _fail_connection(self, error: ProtocolError, code: int, reason: str) -> list[Event]:
        """The server broke the protocol: report it and close."""
        self._machine.move(Trigger.FAIL)
        return [ConnectionErrorReceived(error), CloseConnection(code, reason)]

    def _receive_welcome(self, envelope: Envelope) -> list[Event]:
        error: ProtocolError
        welcome = envelope.welcome
        if envelope.request_id != self._hello_id:
            error = MalformedError(f"expected Welcome for request {self._hello_id}, got welcome")
            return self._fail_connection(error, CloseCode.PROTOCOL_ERROR, "no welcome")
        if welcome.version not in self.versions:
            error = UnsupportedVersionError(f"server chose version {welcome.version}")
            return self._fail_connection(error, CloseCode.PROTOCOL_ERROR, "version")
        unset = [
            name
            for name in ("max_frame_bytes", "max_in_flight", "chunk_bytes")
            if not getattr(welcome.limits, name)
        ]
        if unset:  # section 4.1.8: without these limits a client cannot stay within them
            error = MalformedError(f"the Welcome's limits leave {', '.join(unset)} unset (section 14.1.1)")
            return self._fail_connection(error, CloseCode.PROTOCOL_ERROR, "limits")
        if welcome.digest not in ("", hashing.SHA256, *self.digests):  # section 7.5.5
            error = MalformedError(
                f"the server chose the digest {welcome.digest!r}, which this client did not offer "
                f"(offered: {list(self.digests)}; section 7.5.5)"
            )
            return self._fail_connection(error, CloseCode.PROTOCOL_ERROR, "digest")
        self.server = codec.server_info_from_welcome(envelope.welcome)
        self._machine.move(Trigger.RECEIVE_WELCOME)
        return [Connected(self.server)]

    def _receive_reply(self, rid: int, pending: _Pending, envelope: Envelope, kind: str) -> list[Event]:
        if kind == "weights_manifest":
            return self._receive_manifest(rid, pending, envelope)
        if kind == "fit_progress":
            if pending.abandoned:
                return []
            if pending.kind != "fit":
                return self._give_up(rid, pending, InternalError(f"server sent {kind} for a {pending.kind}"))
            return [ProgressReceived(rid, kind, envelope.fit_progress)]
        del self._pending[rid]  # the terminal reply (section 5.3.7): the id is free again
        if pending.abandoned:
            return []
        if kind == "error":
            return [ErrorReceived(rid, codec.error_from_proto(envelope.error))]
        expected = REPLY_KIND[pending.kind]
        if kind != expected:
            error = InternalError(f"server answered {pending.kind} with {kind}, expected {expected}")
            return [ErrorReceived(rid, error)]
        message = getattr(envelope, kind)
        if kind == "get_weights_reply" and pending.weights is not None:
            return [self._finish_weights(rid, pending.weights, message)]
        if kind == "get_object_reply":
            if pending.assembly is not None:
                return [self._finish_download(rid, pending.assembly, message)]
            inline = inline_error(message, self.digest)  # section 7.3.34
            if inline is not None:
                return [ErrorReceived(rid, inline)]
        return [ReplyReceived(rid, kind, message)]

    def _give_up(self, rid: int, pending: _Pending, error: ProtocolError) -> list[Event]:
        """Fail a request at once and cancel it; its id stays pending until its terminal reply.

        For what the server sent wrong before the terminal reply: a chunk or progress event the request
        cannot have (section 5.3.7), a broken download chunk (section 7.3.33).
        """
        pending.assembly = None  # what arrived is discarded (section 7.3.23)
        pending.weights = None
        cancel = self.cancel(rid, error.message)
        events: list[Event] = [ErrorReceived(rid, error)]
        if cancel is not None:
            events.append(SendFrame(cancel))
        return events

    def _receive_chunk(
        self, rid: int, pending: _Pending, offset: int, data: bytes | memoryview, total: int
    ) -> list[Event]:
        if pending.abandoned:
            return []
        if pending.kind == "get_weights":
            return self._receive_weights_chunk(rid, pending, offset, data, total)
        if pending.kind != "get_object":
            return self._give_up(rid, pending, InternalError(f"server sent a chunk for a {pending.kind}"))
        if pending.assembly is None:
            limit = self.server.limits.max_object_bytes if self.server else 0
            if limit and total > limit:
                error = DataLossError(f"a chunked download of {total} bytes, above the server's own quota")
                return self._give_up(rid, pending, error)
            # left uninitialized: every byte is written once as the chunks arrive, no zeroing pass first
            pending.assembly = Assembly(total, codec.payload_buffer(total), self._hasher(self.digest))
        chunk_limit = self.server.limits.chunk_bytes if self.server else 0
        try:
            pending.assembly.add(offset, data, total, chunk_limit)
        except ProtocolError as error:  # section 7.3.33
            return self._give_up(rid, pending, DataLossError(f"bad chunk from server: {error.message}"))
        return [TransferProgress(rid, pending.assembly.received, pending.assembly.total)]

    def _receive_manifest(self, rid: int, pending: _Pending, envelope: Envelope) -> list[Event]:
        """The start of a chunked get_weights (section 12.8.5): checked, then the chunks may come."""
        if pending.abandoned:
            return []
        if pending.kind != "get_weights" or pending.weights is not None:
            what = "a second weights manifest" if pending.weights is not None else "a weights manifest"
            return self._give_up(rid, pending, InternalError(f"server sent {what} for a {pending.kind}"))
        try:
            manifest = codec.weights_manifest_from_proto(envelope.weights_manifest)
        except ProtocolError as error:  # section 12.8.8
            return self._give_up(rid, pending, DataLossError(f"bad weights manifest: {error.message}"))
        chunk_limit = self.server.limits.chunk_bytes if self.server else 0
        pending.weights = WeightsStream(manifest, self._hasher(self.digest), chunk_limit)
        return [WeightsManifestReceived(rid, manifest)]

    def _receive_weights_chunk(
        self, rid: int, pending: _Pending, offset: int, data: bytes | memoryview, total: int
    ) -> list[Event]:
        stream = pending.weights
        if stream is None:
            return self._give_up(rid, pending, DataLossError("a chunk of weights before their manifest"))
        try:
            slices = stream.add(offset, data, total)
        except ProtocolError as error:  # section 12.8.8 (the rules of 7.3.33)
            return self._give_up(rid, pending, DataLossError(f"bad chunk from server: {error.message}"))
        return [WeightsChunkReceived(rid, tuple(slices)), TransferProgress(rid, stream.received, total)]

    def _finish_weights(self, rid: int, stream: WeightsStream, reply: Any) -> Event:
        if reply.weights:
            return ErrorReceived(rid, DataLossError("a chunked get_weights ended with inline weights"))
        error = stream.finish(bytes(getattr(reply, digest_field(self.digest))), self.digest)
        if error is not None:
            return ErrorReceived(rid, error)
        return ReplyReceived(rid, "get_weights_reply", reply)

    def _finish_download(self, rid: int, assembly: Assembly, reply: GetObjectReply) -> Event:
        error = download_error(assembly, reply, self.digest)
        if error is not None:
            return ErrorReceived(rid, error)
        return ReplyReceived(rid, "get_object_reply", reply, payload=assembly.buffer)
