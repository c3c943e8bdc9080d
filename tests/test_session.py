"""The session rules, checked without sockets: frames in, events and frames out."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fedproto import codec
from fedproto.errors import ErrorCode, ResourceExhaustedError
from fedproto.session import (
    REPLY_KIND,
    ClientSession,
    CloseCode,
    CloseConnection,
    Connected,
    ConnectionErrorReceived,
    ErrorReceived,
    GoodbyeReceived,
    HandshakeCompleted,
    NotificationReceived,
    ProgressReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
    SendFrame,
    ServerSession,
    SessionError,
    SessionState,
    TransferProgress,
    UploadStarted,
)
from fedproto.types import Limits, ObjectInfo, TensorInfo
from fedproto_pb.v1 import envelope_pb2, objects_pb2, session_pb2, tensor_pb2, training_pb2


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


def open_server(**limits: int) -> ServerSession:
    s = server(**limits)
    events = s.receive_frame(frame(1, hello=session_pb2.Hello(versions=[1], token="good")))
    assert isinstance(events[-1], HandshakeCompleted) and events[-1].identity == "alice"
    return s


# -- handshake (section 4) --------------------------------------------------------------------------


def test_welcome_echoes_hello_id_and_describes_server() -> None:
    s = server()
    (welcome,) = sent(s.receive_frame(frame(9, hello=session_pb2.Hello(versions=[3, 1], token="good"))))
    assert welcome.request_id == 9 and welcome.welcome.version == 1
    assert welcome.welcome.identity == "alice" and welcome.welcome.limits.max_in_flight == 4
    assert s.state is SessionState.OPEN


@pytest.mark.parametrize(
    ("first", "code", "close"),
    [
        (frame(1, ping=session_pb2.Ping()), ErrorCode.FAILED_PRECONDITION, CloseCode.PROTOCOL_ERROR),
        (frame(1, hello=session_pb2.Hello(versions=[2], token="good")), ErrorCode.UNSUPPORTED_VERSION, 1002),
        (frame(1, hello=session_pb2.Hello(versions=[1], token="bad")), ErrorCode.UNAUTHENTICATED, 1008),
        (frame(0, hello=session_pb2.Hello(versions=[1], token="good")), ErrorCode.INVALID_ARGUMENT, 1002),
    ],
)
def test_failed_handshakes_answer_then_close(first: bytes, code: ErrorCode, close: int) -> None:
    events = server().receive_frame(first)
    (error,) = sent(events)
    assert error.error.code == code
    assert closes(events) == [close]


def test_second_hello_is_refused_but_connection_stays() -> None:
    s = open_server()
    events = s.receive_frame(frame(2, hello=session_pb2.Hello(versions=[1], token="good")))
    assert sent(events)[0].error.code == ErrorCode.FAILED_PRECONDITION and not closes(events)


# -- framing (section 3) ----------------------------------------------------------------------------


def test_text_frame_closes_1003() -> None:
    events = open_server().receive_frame("hi")
    assert sent(events)[0].error.code == ErrorCode.MALFORMED and closes(events) == [1003]


def test_garbage_is_reported_on_request_zero_and_connection_stays() -> None:
    s = open_server()
    (error,) = sent(s.receive_frame(b"\xff\xff"))
    assert error.request_id == 0 and error.error.code == ErrorCode.MALFORMED
    (pong,) = sent(s.receive_frame(frame(5, ping=session_pb2.Ping(payload=b"x"))))
    assert pong.pong.payload == b"x"


def test_empty_body_and_unknown_body() -> None:
    s = open_server()
    assert sent(s.receive_frame(frame(3)))[0].error.code == ErrorCode.MALFORMED
    (unknown,) = sent(s.receive_frame(b"\x08\x05\xfa\x07\x00"))
    assert unknown.request_id == 5 and unknown.error.code == ErrorCode.UNIMPLEMENTED


def test_server_only_body_from_client_is_invalid() -> None:
    (error,) = sent(open_server().receive_frame(frame(4, pong=session_pb2.Pong())))
    assert error.request_id == 4 and error.error.code == ErrorCode.INVALID_ARGUMENT


# -- requests (section 5) ---------------------------------------------------------------------------


def test_request_ids_zero_duplicate_and_in_flight_limit() -> None:
    s = open_server(max_in_flight=2)
    assert sent(s.receive_frame(frame(0, count_objects=objects_pb2.CountObjectsRequest())))[0].request_id == 0
    (event,) = s.receive_frame(frame(7, count_objects=objects_pb2.CountObjectsRequest()))
    assert isinstance(event, RequestReceived) and event.kind == "count_objects"
    (dup,) = sent(s.receive_frame(frame(7, list_objects=objects_pb2.ListObjectsRequest())))
    assert dup.request_id == 0 and dup.error.details["request_id"] == "7"
    s.receive_frame(frame(8, list_objects=objects_pb2.ListObjectsRequest()))
    (full,) = sent(s.receive_frame(frame(9, list_objects=objects_pb2.ListObjectsRequest())))
    assert full.request_id == 9 and full.error.code == ErrorCode.RESOURCE_EXHAUSTED
    assert s.in_flight == {7, 8}


def test_exactly_one_terminal_reply() -> None:
    s = open_server()
    s.receive_frame(frame(7, count_objects=objects_pb2.CountObjectsRequest()))
    s.reply(7, count_objects_reply=objects_pb2.CountObjectsReply(count=1))
    with pytest.raises(SessionError):
        s.reply(7, count_objects_reply=objects_pb2.CountObjectsReply(count=1))
    with pytest.raises(SessionError):
        s.fail(7, ResourceExhaustedError())
    with pytest.raises(SessionError):
        s.progress(7, fit_progress=training_pb2.FitProgress())
    # the id is free again after its terminal reply
    (event,) = s.receive_frame(frame(7, count_objects=objects_pb2.CountObjectsRequest()))
    assert isinstance(event, RequestReceived)


def test_deadline_is_reported_in_seconds() -> None:
    s = open_server()
    (event,) = s.receive_frame(
        codec.encode_envelope(
            envelope_pb2.Envelope(
                request_id=3, deadline_ms=1500, list_objects=objects_pb2.ListObjectsRequest()
            )
        )
    )
    assert isinstance(event, RequestReceived) and event.deadline == 1.5


def test_cancel_and_goodbye() -> None:
    s = open_server()
    s.receive_frame(frame(3, list_objects=objects_pb2.ListObjectsRequest()))
    assert s.receive_frame(frame(3, cancel=session_pb2.Cancel())) == [RequestCancelled(3)]
    assert s.receive_frame(frame(99, cancel=session_pb2.Cancel())) == []
    assert s.receive_frame(frame(0, goodbye=session_pb2.Goodbye(reason="bye"))) == [GoodbyeReceived("bye")]
    assert s.receive_frame(frame(4, ping=session_pb2.Ping())) == []


# -- chunked uploads (section 7.3) ------------------------------------------------------------------


def start_upload(s: ServerSession, payload: bytes, rid: int = 5, sha: bytes | None = None) -> list:
    info = tensor_pb2.TensorInfo(
        dtype=tensor_pb2.DTYPE_UINT8,
        shape=[len(payload)],
        nbytes=len(payload),
        sha256=hashlib.sha256(payload).digest() if sha is None else sha,
    )
    return s.receive_frame(frame(rid, send_object=objects_pb2.SendObjectRequest(id="x", chunked=info)))


def chunk(rid: int, offset: int, data: bytes, total: int, sha: bytes = b"") -> bytes:
    return frame(rid, chunk=tensor_pb2.Chunk(offset=offset, data=data, total_bytes=total, sha256=sha))


def test_upload_assembles_and_verifies() -> None:
    s = open_server()
    payload = bytes(range(20))
    assert start_upload(s, payload) == [UploadStarted(5, None)]
    events = s.receive_frame(chunk(5, 0, payload[:8], 20))
    assert events == [TransferProgress(5, 8, 20)]
    s.receive_frame(chunk(5, 8, payload[8:16], 20))
    events = s.receive_frame(chunk(5, 16, payload[16:], 20))
    done = events[-1]
    assert isinstance(done, RequestReceived) and bytes(done.payload or b"") == payload


@pytest.mark.parametrize(
    ("chunks", "code"),
    [
        ([(0, b"\x00" * 8), (9, b"\x00")], ErrorCode.INVALID_ARGUMENT),  # gap
        ([(0, b"\x00" * 9)], ErrorCode.INVALID_ARGUMENT),  # larger than chunk_bytes
        ([(0, b"\x00" * 4)], ErrorCode.INVALID_ARGUMENT),  # short chunk before the last (7.3.5)
        ([(0, b"\x00" * 8), (8, b"\x00" * 8), (16, b"\x00" * 4)], ErrorCode.DATA_LOSS),  # wrong bytes
    ],
)
def test_upload_violations(chunks, code) -> None:
    s = open_server()
    start_upload(s, bytes(range(20)))
    events = []
    for offset, data in chunks:
        events += s.receive_frame(chunk(5, offset, data, 20))
    (error,) = sent(events)
    assert error.request_id == 5 and error.error.code == code
    assert 5 not in s.in_flight
    assert s.receive_frame(chunk(5, 0, b"\x00", 20)) == []  # late chunks are ignored


def test_upload_with_trailing_digest() -> None:
    s = open_server()
    payload = bytes(range(20))
    assert start_upload(s, payload, sha=b"") == [UploadStarted(5, None)]
    s.receive_frame(chunk(5, 0, payload[:8], 20))
    s.receive_frame(chunk(5, 8, payload[8:16], 20))
    done = s.receive_frame(chunk(5, 16, payload[16:], 20, sha=hashlib.sha256(payload).digest()))[-1]
    assert isinstance(done, RequestReceived) and bytes(done.payload or b"") == payload
    # the handler gets the verified digest in the header it stores (section 7.3.26)
    assert done.message.chunked.sha256 == hashlib.sha256(payload).digest()


_GOOD = hashlib.sha256(bytes(range(20))).digest()


@pytest.mark.parametrize(
    ("header", "digests", "code"),
    [
        (b"", [b"", b"", b""], ErrorCode.INVALID_ARGUMENT),  # no digest anywhere
        (b"", [_GOOD, b"", _GOOD], ErrorCode.INVALID_ARGUMENT),  # a digest before the last chunk
        (_GOOD, [b"", b"", _GOOD], ErrorCode.INVALID_ARGUMENT),  # given twice
        (b"", [b"", b"", _GOOD[:31]], ErrorCode.INVALID_ARGUMENT),  # 31 bytes
        (b"", [b"", b"", bytes(32)], ErrorCode.DATA_LOSS),  # the wrong digest
    ],
)
def test_trailing_digest_violations(header: bytes, digests: list[bytes], code: ErrorCode) -> None:
    s = open_server()
    payload = bytes(range(20))
    start_upload(s, payload, sha=header)
    events = []
    for offset, digest in zip((0, 8, 16), digests, strict=True):
        events += s.receive_frame(chunk(5, offset, payload[offset : offset + 8], 20, sha=digest))
        if sent(events):
            break
    (error,) = sent(events)
    assert error.request_id == 5 and error.error.code == code
    assert 5 not in s.in_flight


def test_empty_upload_without_digest_completes() -> None:
    (done,) = start_upload(open_server(), b"", sha=b"")
    assert isinstance(done, RequestReceived)
    assert done.message.chunked.sha256 == hashlib.sha256(b"").digest()


def test_client_upload_puts_the_digest_in_the_last_chunk() -> None:
    pair = Pair(chunk_bytes=1000)
    payload = bytes(range(256)) * 9
    info = tensor_pb2.TensorInfo(dtype=tensor_pb2.DTYPE_UINT8, shape=[len(payload)], nbytes=len(payload))
    rid, data = pair.client.request(send_object=objects_pb2.SendObjectRequest(id="t", chunked=info))
    assert pair.to_server(data) == []
    frames = list(pair.client.upload(rid, memoryview(payload), 1000, trailing_digest=True))
    chunks = [envelope_pb2.Envelope.FromString(f).chunk for f in frames]
    assert [bool(c.sha256) for c in chunks] == [False, False, True]
    assert chunks[-1].sha256 == hashlib.sha256(payload).digest()
    events = []
    for f in frames:
        events += pair.server.receive_frame(f)
    assert isinstance(events[-1], RequestReceived) and bytes(events[-1].payload or b"") == payload


def test_upload_announcement_checks() -> None:
    s = open_server()
    (error,) = sent(start_upload(s, b"abc", sha=b"short"))
    assert error.error.code == ErrorCode.INVALID_ARGUMENT
    s2 = server()
    s2._check_upload = lambda identity, request, info: (_ for _ in ()).throw(ResourceExhaustedError("full"))
    s2.receive_frame(frame(1, hello=session_pb2.Hello(versions=[1], token="good")))
    (error,) = sent(start_upload(s2, b"abc"))
    assert error.error.code == ErrorCode.RESOURCE_EXHAUSTED


def test_empty_upload_completes_at_once_and_cancel_discards() -> None:
    s = open_server()
    (done,) = start_upload(s, b"")
    assert isinstance(done, RequestReceived)
    start_upload(s, b"abcdef", rid=6)
    (error,) = sent(s.receive_frame(frame(6, cancel=session_pb2.Cancel())))
    assert error.error.code == ErrorCode.CANCELLED


# -- a client and a server session talking in memory ------------------------------------------------


class Pair:
    """A client session and a server session wired together without sockets."""

    def __init__(self, **limits: int) -> None:
        self.server = server(**limits)
        self.client = ClientSession(token="good")
        self.client_events = self.to_client(self.to_server(self.client.hello()))

    def to_server(self, data: bytes) -> list[bytes]:
        return [e.data for e in self.server.receive_frame(data) if isinstance(e, SendFrame)]

    def to_client(self, frames: list[bytes]) -> list:
        events = []
        for data in frames:
            events += self.client.receive_frame(data)
        return events


def test_pair_handshake_and_reply() -> None:
    pair = Pair()
    assert isinstance(pair.client_events[0], Connected)
    rid, data = pair.client.request(ping=session_pb2.Ping(payload=b"z"))
    (reply,) = pair.to_client(pair.to_server(data))
    assert isinstance(reply, ReplyReceived) and reply.request_id == rid and reply.message.payload == b"z"
    assert rid not in pair.client.pending


def test_pair_chunked_download_with_progress() -> None:
    pair = Pair(chunk_bytes=8)
    payload = bytes(range(30))
    rid, data = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    (_event,) = pair.server.receive_frame(data)
    info = ObjectInfo(
        id="x", tensor=TensorInfo(dtype=torch.uint8, shape=(30,), nbytes=30, sha256=codec.sha256(payload))
    )
    events = pair.to_client(list(pair.server.download(rid, info, memoryview(payload))))
    progress = [e.done for e in events if isinstance(e, TransferProgress)]
    assert progress == [8, 16, 24, 30]
    reply = events[-1]
    assert isinstance(reply, ReplyReceived) and bytes(reply.payload or b"") == payload


def test_pair_download_corruption_is_data_loss() -> None:
    pair = Pair(chunk_bytes=8)
    payload = bytes(range(30))
    rid, data = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    pair.server.receive_frame(data)
    info = ObjectInfo(
        id="x", tensor=TensorInfo(dtype=torch.uint8, shape=(30,), nbytes=30, sha256=b"\x00" * 32)
    )
    events = pair.to_client(list(pair.server.download(rid, info, memoryview(payload))))
    assert isinstance(events[-1], ErrorReceived) and events[-1].error.code is ErrorCode.DATA_LOSS


def test_pair_small_download_is_inline() -> None:
    pair = Pair(chunk_bytes=64)
    rid, data = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    pair.server.receive_frame(data)
    payload = bytes(4)
    info = ObjectInfo(id="x", tensor=TensorInfo(dtype=torch.float32, shape=(1,), nbytes=4))
    frames = list(pair.server.download(rid, info, memoryview(payload)))
    assert len(frames) == 1
    (reply,) = pair.to_client(frames)
    assert reply.payload is None and reply.message.tensor.data == payload


def test_pair_wrong_reply_kind_and_unknown_ids() -> None:
    pair = Pair()
    rid, data = pair.client.request(count_objects=objects_pb2.CountObjectsRequest())
    pair.server.receive_frame(data)
    wrong = pair.server.reply(rid, list_objects_reply=objects_pb2.ListObjectsReply())
    (event,) = pair.to_client([wrong])
    assert isinstance(event, ErrorReceived) and event.error.code is ErrorCode.MALFORMED
    assert pair.to_client([frame(12345, pong=session_pb2.Pong())]) == []


def test_pair_progress_notifications_and_abandoned_requests() -> None:
    pair = Pair()
    rid, data = pair.client.request(fit=training_pb2.FitRequest(dataset_key="d"))
    pair.server.receive_frame(data)
    (progress,) = pair.to_client([pair.server.progress(rid, fit_progress=training_pb2.FitProgress(epoch=1))])
    assert isinstance(progress, ProgressReceived)
    (note,) = pair.to_client([pair.server.notification("colony", {"id": 7})])
    assert note == NotificationReceived("colony", {"id": 7})
    assert pair.client.cancel(rid) is not None
    assert pair.to_client([pair.server.fail(rid, ResourceExhaustedError())]) == []
    assert rid not in pair.client.pending


def test_client_refuses_text_and_garbage_from_server() -> None:
    pair = Pair()
    events = pair.client.receive_frame("text")
    assert isinstance(events[0], ConnectionErrorReceived) and closes(events) == [1003]
    pair = Pair()
    assert closes(pair.client.receive_frame(b"\xff\xff")) == [1002]


def test_client_handshake_error() -> None:
    client = ClientSession(token="bad")
    s = server()
    events = []
    for e in s.receive_frame(client.hello()):
        if isinstance(e, SendFrame):
            events += client.receive_frame(e.data)
    assert (
        isinstance(events[0], ConnectionErrorReceived) and events[0].error.code is ErrorCode.UNAUTHENTICATED
    )


def test_reply_table_covers_every_request_body() -> None:
    fields = {f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert set(REPLY_KIND) | set(REPLY_KIND.values()) <= fields
