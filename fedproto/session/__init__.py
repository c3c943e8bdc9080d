"""The protocol's session rules, with no I/O: bytes in, events and bytes out.

:class:`ServerSession` and :class:`ClientSession` hold everything docs/protocol.md says about one
connection: the handshake (section 4), request ids and exactly one terminal reply per request (section
5), cancel and goodbye (section 6), chunked transfers checked under the digest the handshake negotiated
(sections 7.3 and 7.5), and the framing rules for bad input (section 3). They never touch a socket or
an event loop: the worker and the client are thin asyncio shells that feed received frames to
``receive_frame``, act on the events it returns, and send the bytes the sessions build. That keeps every
rule testable without sockets.

The modules, each with one concern:

- :mod:`~fedproto.session.states`: the states and the one table of legal transitions;
- :mod:`~fedproto.session.events`: the values the sessions hand to their I/O layer;
- :mod:`~fedproto.session.messages`: body kinds and envelope frames;
- :mod:`~fedproto.session.transfers`: chunk assembly, digests, chunk and inline frames;
- :mod:`~fedproto.session.weights`: chunked model weights, cut from tensors and streamed back;
- :mod:`~fedproto.session.server` and :mod:`~fedproto.session.client`: the two halves.
"""

from __future__ import annotations

from fedproto.session.client import ClientSession, check_digest_offer
from fedproto.session.events import (
    CloseCode,
    CloseConnection,
    Connected,
    ConnectionErrorReceived,
    ErrorReceived,
    Event,
    GoodbyeReceived,
    HandshakeCompleted,
    NotificationReceived,
    ProgressReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
    SendFrame,
    TransferProgress,
    UploadStarted,
    WeightsChunkReceived,
    WeightsManifestReceived,
)
from fedproto.session.messages import (
    CLIENT_CONTROL_KINDS,
    PROTOCOL_VERSIONS,
    REPLY_KIND,
    REQUEST_KINDS,
    SERVER_ONLY_KINDS,
)
from fedproto.session.server import CHUNKED_WEIGHTS, MODEL_OBJECT, ServerSession
from fedproto.session.states import TRANSITIONS, Role, SessionError, SessionState, Trigger
from fedproto.session.transfers import chunk_frames, with_digest
from fedproto.session.weights import RawSlice

__all__ = [
    "CHUNKED_WEIGHTS",
    "CLIENT_CONTROL_KINDS",
    "MODEL_OBJECT",
    "PROTOCOL_VERSIONS",
    "REPLY_KIND",
    "REQUEST_KINDS",
    "SERVER_ONLY_KINDS",
    "TRANSITIONS",
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
    "RawSlice",
    "ReplyReceived",
    "RequestCancelled",
    "RequestReceived",
    "Role",
    "SendFrame",
    "ServerSession",
    "SessionError",
    "SessionState",
    "TransferProgress",
    "Trigger",
    "UploadStarted",
    "WeightsChunkReceived",
    "WeightsManifestReceived",
    "check_digest_offer",
    "chunk_frames",
    "with_digest",
]
