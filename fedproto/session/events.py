"""What the sessions hand to their I/O layer: small frozen values, one per thing that happened.

Frames to send and closes to make (:class:`SendFrame`, :class:`CloseConnection`), and what the peer did
(a request arrived, a reply came back, progress, a notification). The I/O layer acts on each in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedproto.errors import ProtocolError
from fedproto.session.weights import RawSlice
from fedproto.types import ServerInfo, WeightsManifest

__all__ = [
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
    "TransferProgress",
    "UploadStarted",
    "WeightsChunkReceived",
    "WeightsManifestReceived",
]


class CloseCode:
    """WebSocket close codes the protocol uses (section 16)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


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
    """Server side: the client said Hello and was welcomed as ``identity``, under payload ``digest``."""

    identity: str
    version: int
    client_name: str
    #: the payload digest algorithm chosen for the connection (section 7.5.4)
    digest: str = "sha256"


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server side: a request to run. ``payload`` holds a completed chunked upload's bytes."""

    request_id: int
    kind: str
    message: Any
    deadline: float | None = None
    payload: bytearray | memoryview | None = None


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
    payload: bytearray | memoryview | None = None


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


@dataclass(frozen=True, slots=True)
class WeightsManifestReceived:
    """Client side: a chunked get_weights began; its tensors' layout (section 12.8)."""

    request_id: int
    manifest: WeightsManifest


@dataclass(frozen=True, slots=True)
class WeightsChunkReceived:
    """Client side: a checked chunk of a chunked get_weights, as whole elements of named tensors.

    The slices alias the received frame: the I/O layer hands them on before it reads the next frame.
    """

    request_id: int
    slices: tuple[RawSlice, ...]


#: Everything :meth:`ServerSession.receive_frame` and :meth:`ClientSession.receive_frame` may return.
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
    | WeightsManifestReceived
    | WeightsChunkReceived
)
