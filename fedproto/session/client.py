"""The client's half of one connection, with no I/O: request ids, correlation, chunk reassembly, checks.

:class:`ClientSession` builds the frames a client sends and turns the frames it receives into events: the
handshake (section 4), one terminal reply per request (section 5), cancel and goodbye (section 6) and
chunked transfers (section 7.3). Every state change goes through the table in
:mod:`fedproto.session.states`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fedproto import codec
from fedproto.errors import DataLossError, MalformedError, ProtocolError, UnsupportedVersionError
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
    TransferProgress,
)
from fedproto.session.messages import PROTOCOL_VERSIONS, REPLY_KIND, REQUEST_KINDS, frame
from fedproto.session.states import Machine, Role, SessionError, SessionState, Trigger
from fedproto.session.transfers import Assembly, chunk_frames, download_error
from fedproto.types import ServerInfo
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectReply
from fedproto_pb.v1.session_pb2 import Cancel, Goodbye, Hello

__all__ = ["ClientSession"]

#: What a body with request_id 0 is to the client's state machine (anything else: an invalid body).
_TRIGGER_OF_UNSOLICITED = {
    "notification": Trigger.RECEIVE_NOTIFICATION,
    "goodbye": Trigger.RECEIVE_GOODBYE,
    "error": Trigger.RECEIVE_ERROR,
    "welcome": Trigger.RECEIVE_WELCOME,
}


@dataclass(slots=True)
class _Pending:
    kind: str
    abandoned: bool = False
    assembly: Assembly | None = None
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
        self._machine = Machine(Role.CLIENT)
        self.server: ServerInfo | None = None
        # Ids start at a random point so that a reconnecting client never looks like a replay.
        self._ids = itertools.count(secrets.randbelow(1 << 20) + 1)
        self._pending: dict[int, _Pending] = {}
        self._hello_id = 0

    @property
    def state(self) -> SessionState:
        """Where the session is in its life (see :data:`fedproto.session.states.TRANSITIONS`)."""
        return self._machine.state

    @property
    def pending(self) -> frozenset[int]:
        """Ids of requests still waiting for their terminal reply."""
        return frozenset(self._pending)

    # -- output -----------------------------------------------------------------------------------

    def hello(self) -> bytes:
        """Build the Hello that opens the session (section 4.1)."""
        self._machine.move(Trigger.SEND_HELLO)
        self._hello_id = next(self._ids)
        hello = Hello(
            versions=self.versions,
            client_name=self.client_name,
            token=self.token,
            max_frame_bytes=self.max_frame_bytes,
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
        """
        ((kind, _),) = body.items()
        if kind not in REQUEST_KINDS:
            raise SessionError(f"{kind} is not a request")
        self._machine.move(Trigger.SEND_REQUEST)
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
        self._machine.move(Trigger.SEND_CHUNK)
        if rid not in self._pending:
            raise SessionError(f"request {rid} is not pending")
        if not trailing_digest:
            return chunk_frames(rid, view, chunk_bytes)
        hasher = self._hasher()
        hasher.update(view)
        return chunk_frames(rid, view, chunk_bytes, hasher.digest)

    def cancel(self, rid: int, reason: str = "") -> bytes | None:
        """Build the Cancel of a pending request; its late reply will be dropped (section 6.2)."""
        self._machine.move(Trigger.SEND_CANCEL)
        pending = self._pending.get(rid)
        if pending is None:
            return None
        pending.abandoned = True
        return frame(rid, cancel=Cancel(reason=reason))

    def abandon(self, rid: int) -> None:
        """Forget a request locally without telling the server (its reply will be dropped)."""
        pending = self._pending.get(rid)
        if pending is not None:
            pending.abandoned = True

    def goodbye(self, reason: str = "") -> bytes:
        """Build the client's Goodbye (section 6.3)."""
        self._machine.move(Trigger.SEND_GOODBYE)
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
        if trigger is Trigger.RECEIVE_NOTIFICATION:
            try:
                value = codec.value_from_proto(envelope.notification.payload)
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
        if envelope.request_id != self._hello_id:
            error = MalformedError(f"expected Welcome for request {self._hello_id}, got welcome")
            return self._fail_connection(error, CloseCode.PROTOCOL_ERROR, "no welcome")
        if envelope.welcome.version not in self.versions:
            error = UnsupportedVersionError(f"server chose version {envelope.welcome.version}")
            return self._fail_connection(error, CloseCode.PROTOCOL_ERROR, "version")
        self.server = codec.server_info_from_welcome(envelope.welcome)
        self._machine.move(Trigger.RECEIVE_WELCOME)
        return [Connected(self.server)]

    def _receive_reply(self, rid: int, pending: _Pending, envelope: Envelope, kind: str) -> list[Event]:
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
            pending.assembly = Assembly(total, bytearray(total), self._hasher())
        chunk_limit = self.server.limits.chunk_bytes if self.server else 0
        try:
            pending.assembly.add(offset, data, total, chunk_limit)
        except ProtocolError as error:
            pending.failed = DataLossError(f"bad chunk from server: {error.message}")
            return []
        if pending.abandoned:
            return []
        return [TransferProgress(rid, pending.assembly.received, pending.assembly.total)]

    @staticmethod
    def _finish_download(rid: int, assembly: Assembly, reply: GetObjectReply) -> Event:
        error = download_error(assembly, reply)
        if error is not None:
            return ErrorReceived(rid, error)
        return ReplyReceived(rid, "get_object_reply", reply, payload=assembly.buffer)
