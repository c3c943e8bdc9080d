"""Building blocks of the session tests: sessions, frames, and a client and a server talking in memory."""

from __future__ import annotations

from collections.abc import Sequence

from fedproto import codec, hashing
from fedproto.session import ClientSession, CloseConnection, HandshakeCompleted, SendFrame, ServerSession
from fedproto.types import Limits
from fedproto_pb.v1 import envelope_pb2, objects_pb2, session_pb2, tensor_pb2


def server(**limits: int) -> ServerSession:
    return ServerSession(
        server_id="s",
        server_name="test",
        limits=Limits(**({"max_in_flight": 4, "chunk_bytes": 8} | limits)),
        capabilities=["objects"],
        authenticate=lambda token: {"good": "alice", "": None}.get(token),
    )


def frame(request_id: int, **body) -> bytes:
    return codec.encode_envelope(envelope_pb2.Envelope(request_id=request_id, **body))


def sent(events) -> list[envelope_pb2.Envelope]:
    return [codec.decode_envelope(e.data) for e in events if isinstance(e, SendFrame)]


def closes(events) -> list[int]:
    return [e.code for e in events if isinstance(e, CloseConnection)]


def open_server(offer: Sequence[str] = (), **limits: int) -> ServerSession:
    """A handshaken server session; its Hello offered ``offer`` (none: sha256, as before section 7.5)."""
    s = server(**limits)
    events = s.receive_frame(frame(1, hello=session_pb2.Hello(versions=[1], token="good", digests=offer)))
    assert isinstance(events[-1], HandshakeCompleted) and events[-1].identity == "alice"
    return s


def start_upload(
    s: ServerSession, payload: bytes, rid: int = 5, sha: bytes | None = None, *, digest: bytes | None = None
) -> list:
    """Announce a chunked upload of ``payload`` with ``sha`` and ``digest`` in the header's two fields.

    Given neither, the field of the session's algorithm holds the payload's digest (section 7.5.8).
    """
    if sha is None and digest is None:
        value = hashing.digest(s.digest, payload)
        sha, digest = (value, b"") if s.digest == hashing.SHA256 else (b"", value)
    info = tensor_pb2.TensorInfo(
        dtype=tensor_pb2.DTYPE_UINT8,
        shape=[len(payload)],
        nbytes=len(payload),
        sha256=sha or b"",
        digest=digest or b"",
    )
    return s.receive_frame(frame(rid, send_object=objects_pb2.SendObjectRequest(id="x", chunked=info)))


def chunk(rid: int, offset: int, data: bytes, total: int, sha: bytes = b"", digest: bytes = b"") -> bytes:
    message = tensor_pb2.Chunk(offset=offset, data=data, total_bytes=total, sha256=sha, digest=digest)
    return frame(rid, chunk=message)


class Pair:
    """A client session and a server session wired together without sockets.

    The client offers ``digests`` (the client's default offer unless given) and the server chooses.
    """

    def __init__(self, digests: Sequence[str] = hashing.PREFERRED_DIGESTS, **limits: int) -> None:
        self.server = server(**limits)
        self.client = ClientSession(token="good", digests=digests)
        self.client_events = self.to_client(self.to_server(self.client.hello()))

    def to_server(self, data: bytes) -> list[bytes]:
        return [e.data for e in self.server.receive_frame(data) if isinstance(e, SendFrame)]

    def to_client(self, frames: list[bytes]) -> list:
        events = []
        for data in frames:
            events += self.client.receive_frame(data)
        return events
