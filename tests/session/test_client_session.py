"""ClientSession without sockets, talking to a ServerSession in memory."""

from __future__ import annotations

import hashlib

import pytest

from fedproto import codec, hashing
from fedproto.errors import DigestConfigError, ErrorCode, ResourceExhaustedError
from fedproto.session import (
    ClientSession,
    Connected,
    ConnectionErrorReceived,
    ErrorReceived,
    NotificationReceived,
    ProgressReceived,
    ReplyReceived,
    SendFrame,
    SessionState,
    check_digest_offer,
)
from fedproto.session.transfers import chunk_frame_size
from fedproto_pb.v1 import calls_pb2, envelope_pb2, objects_pb2, session_pb2, tensor_pb2, training_pb2
from session.helpers import Pair, chunk, closes, frame, server


def test_pair_handshake_and_reply() -> None:
    pair = Pair()
    assert isinstance(pair.client_events[0], Connected)
    rid, data = pair.client.request(ping=session_pb2.Ping(payload=b"z"))
    (reply,) = pair.to_client(pair.to_server(data))
    assert isinstance(reply, ReplyReceived) and reply.request_id == rid and reply.message.payload == b"z"
    assert rid not in pair.client.pending


def test_pair_wrong_reply_kind_and_unknown_ids() -> None:
    pair = Pair()
    rid, data = pair.client.request(count_objects=objects_pb2.CountObjectsRequest())
    pair.server.receive_frame(data)
    wrong = pair.server.reply(rid, list_objects_reply=objects_pb2.ListObjectsReply())
    (event,) = pair.to_client([wrong])
    # a reply body of another request is the terminal reply, failed as INTERNAL (section 5.3.7)
    assert isinstance(event, ErrorReceived) and event.error.code is ErrorCode.INTERNAL
    assert rid not in pair.client.pending
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


# -- client rules (sections 3.6.5, 4.1.8, 5.1.7, 5.3.7, 6.3.8, 6.4.7, 7.3.30-7.3.34, 14.2.7) ----------


def _sent_cancel(events: list) -> int:
    (cancel,) = [codec.decode_envelope(e.data) for e in events if isinstance(e, SendFrame)]
    assert cancel.WhichOneof("body") == "cancel"
    return cancel.request_id


def test_ids_count_up_from_1_on_each_connection() -> None:
    for _ in range(2):
        pair = Pair()
        first, _ = pair.client.request(ping=session_pb2.Ping())
        second, _ = pair.client.request(ping=session_pb2.Ping())
        assert (first, second) == (2, 3)  # the Hello took 1


def test_a_body_newer_than_the_client_is_ignored_whatever_its_id() -> None:
    newer = envelope_pb2.Envelope()
    newer.ParseFromString(b"\xfa\x3e\x00")  # field 999, an empty message: no body this client knows
    client = ClientSession()
    client.hello()
    for rid in (0, 1):  # before the Welcome too
        assert client.receive_frame(codec.encode_envelope(envelope_pb2.Envelope(request_id=rid))) == []
    assert client.state is SessionState.AWAIT_WELCOME
    pair = Pair()
    rid, data = pair.client.request(ping=session_pb2.Ping(payload=b"z"))
    for any_id in (0, rid, 999):
        unknown = envelope_pb2.Envelope(request_id=any_id)
        unknown.MergeFrom(newer)
        assert pair.client.receive_frame(codec.encode_envelope(unknown)) == []
    assert rid in pair.client.pending and pair.client.state is SessionState.OPEN
    (reply,) = pair.to_client(pair.to_server(data))
    assert isinstance(reply, ReplyReceived)


def test_a_welcome_without_its_required_limits_fails_the_handshake() -> None:
    client = ClientSession()
    client.hello()
    welcome = session_pb2.Welcome(
        version=1, limits=session_pb2.Limits(max_frame_bytes=4096, chunk_bytes=1024)
    )
    events = client.receive_frame(frame(1, welcome=welcome))
    assert isinstance(events[0], ConnectionErrorReceived) and "max_in_flight" in events[0].error.message
    assert closes(events) == [1002]


@pytest.mark.parametrize(
    ("request_body", "stray"),
    [
        ({"count_objects": objects_pb2.CountObjectsRequest()}, {"fit_progress": training_pb2.FitProgress()}),
        ({"call": calls_pb2.CallRequest(method="m")}, {"chunk": tensor_pb2.Chunk(data=b"x", total_bytes=1)}),
    ],
)
def test_a_stray_progress_or_chunk_fails_the_request_at_once_and_cancels_it(request_body, stray) -> None:
    pair = Pair()
    rid, data = pair.client.request(**request_body)
    pair.server.receive_frame(data)
    events = pair.client.receive_frame(frame(rid, **stray))
    assert isinstance(events[0], ErrorReceived) and events[0].error.code is ErrorCode.INTERNAL
    assert _sent_cancel(events) == rid
    assert rid in pair.client.pending  # the id stays reserved until the terminal reply (section 6.2.10)
    assert pair.client.receive_frame(frame(rid, error=codec.error_to_proto(ResourceExhaustedError()))) == []
    assert rid not in pair.client.pending


def test_a_broken_download_chunk_fails_with_data_loss_at_once_and_cancels() -> None:
    pair = Pair()
    rid, _ = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    assert len(pair.client.receive_frame(chunk(rid, 0, b"12345678", 20))) == 1  # progress
    events = pair.client.receive_frame(chunk(rid, 4, b"12345678", 20))  # a gap: offset 8 expected
    assert isinstance(events[0], ErrorReceived) and events[0].error.code is ErrorCode.DATA_LOSS
    assert _sent_cancel(events) == rid
    assert pair.client.receive_frame(chunk(rid, 8, b"12345678", 20)) == []  # discarded, not reported
    assert pair.client.receive_frame(frame(rid, get_object_reply=objects_pb2.GetObjectReply())) == []
    assert rid not in pair.client.pending


def _inline_reply(data: bytes, digest: bytes, shape: list[int]) -> objects_pb2.GetObjectReply:
    info = objects_pb2.ObjectInfo(
        id="x", tensor=tensor_pb2.TensorInfo(dtype=tensor_pb2.DTYPE_UINT8, sha256=digest)
    )
    return objects_pb2.GetObjectReply(
        info=info, tensor=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UINT8, shape=shape, data=data)
    )


@pytest.mark.parametrize(
    ("reply", "ok"),
    [
        (_inline_reply(b"abc", hashlib.sha256(b"abc").digest(), [3]), True),
        (_inline_reply(b"abc", b"", [3]), True),  # no digest to check
        (_inline_reply(b"abc", hashlib.sha256(b"abd").digest(), [3]), False),
        (_inline_reply(b"abc", b"", [4]), False),  # shape and data disagree (section 7.2)
    ],
)
def test_an_inline_download_is_checked(reply: objects_pb2.GetObjectReply, ok: bool) -> None:
    pair = Pair(digests=("sha256",))
    rid, _ = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    (event,) = pair.client.receive_frame(frame(rid, get_object_reply=reply))
    if ok:
        assert isinstance(event, ReplyReceived)
    else:
        assert isinstance(event, ErrorReceived) and event.error.code is ErrorCode.DATA_LOSS


def test_a_notification_without_a_valid_payload_is_dropped() -> None:
    pair = Pair()
    assert pair.client.receive_frame(frame(0, notification=session_pb2.Notification(topic="t"))) == []
    deep = session_pb2.Notification(topic="t")
    deep.payload.list_value.items.add()  # an item with no kind: invalid (section 8.2)
    assert pair.client.receive_frame(frame(0, notification=deep)) == []
    assert pair.client.state is SessionState.OPEN


def test_after_its_goodbye_the_client_sends_no_cancel_and_no_chunk() -> None:
    pair = Pair()
    rid, _ = pair.client.request(send_object=objects_pb2.SendObjectRequest(id="x"))
    chunks = pair.client.upload(rid, memoryview(bytes(40)), 8)
    assert next(chunks)
    pair.client.goodbye()
    assert list(chunks) == []
    assert pair.client.cancel(rid) is None and pair.client.said_goodbye


def test_a_request_larger_than_the_server_frame_limit_is_not_started() -> None:
    pair = Pair(max_frame_bytes=2048)
    with pytest.raises(ResourceExhaustedError) as info:
        pair.client.request(ping=session_pb2.Ping(payload=bytes(3000)))
    assert info.value.details == {"limit": "2048"}
    assert not pair.client.pending
    rid, data = pair.client.request(ping=session_pb2.Ping(payload=bytes(1900)))
    assert len(data) <= 2048 and rid in pair.client.pending


def test_a_trailing_digest_is_used_only_when_the_last_chunk_fits() -> None:
    pair = Pair(digests=("sha256",), max_frame_bytes=1024 + 64, chunk_bytes=1024)
    huge = 1 << 44  # 16 TiB: its offsets take 7 bytes, beyond the margin of section 7.3.30
    assert pair.client.trailing_digest_fits(10 * 1024, 1024)
    pair.client._next_id = (1 << 64) - 1
    assert chunk_frame_size((1 << 64) - 1, huge - 1024, 1024, huge, 32) > 1024 + 64
    assert not pair.client.trailing_digest_fits(huge, 1024)
    assert pair.client.trailing_digest_fits(huge - 100, 1024)  # a short last chunk leaves room


def test_a_frame_limit_below_1024_is_refused() -> None:
    with pytest.raises(ValueError, match="1024"):
        ClientSession(max_frame_bytes=100)
    assert ClientSession(max_frame_bytes=1024).max_frame_bytes == 1024


# -- digest negotiation (section 7.5) ---------------------------------------------------------------


def test_the_hello_offers_the_clients_digests() -> None:
    hello = codec.decode_envelope(ClientSession().hello()).hello
    assert list(hello.digests) == list(hashing.PREFERRED_DIGESTS) == ["xxh3-128", "blake3", "sha256"]
    hello = codec.decode_envelope(ClientSession(digests=()).hello()).hello
    assert list(hello.digests) == []  # an empty offer: sha256 alone (section 7.5.3)


@pytest.mark.parametrize(
    ("digests", "match"),
    [
        (["md5", "sha256"], "md5"),
        (["sha256", "xxh3-128", "sha256"], "more than once"),
        ("sha256", "sequence"),
        (["SHA256"], "SHA256"),  # names are exact (section 7.5.1)
    ],
)
def test_a_bad_digest_offer_is_refused_before_any_hello(digests, match: str) -> None:
    with pytest.raises(DigestConfigError, match=match):
        ClientSession(digests=digests)
    with pytest.raises(ValueError):  # what it also is, for callers that catch argument errors
        check_digest_offer(digests)


@pytest.mark.parametrize(
    ("offer", "answer", "negotiated"),
    [
        (["xxh3-128", "sha256"], "xxh3-128", "xxh3-128"),
        (["blake3"], "blake3", "blake3"),
        (["xxh3-128"], "", "sha256"),  # a server older than section 7.5 (7.5.4)
        (["xxh3-128"], "sha256", "sha256"),  # sha256 is always acceptable, offered or not
        ([], "", "sha256"),
    ],
)
def test_the_welcomes_digest_is_accepted(offer: list[str], answer: str, negotiated: str) -> None:
    client = ClientSession(digests=offer)
    assert client.digest == "sha256"  # before the Welcome
    client.hello()
    (connected,) = client.receive_frame(frame(1, welcome=_welcome(answer)))
    assert isinstance(connected, Connected) and connected.info.digest == negotiated
    assert client.digest == negotiated


@pytest.mark.parametrize(
    ("offer", "answer"),
    [(["sha256"], "xxh3-128"), (["xxh3-128", "sha256"], "blake3"), (["xxh3-128"], "md5"), ([], "blake3")],
)
def test_a_digest_the_client_did_not_offer_fails_the_handshake(offer: list[str], answer: str) -> None:
    """Section 7.5.5: anything but empty, sha256 or an offered name fails as section 4.1.8 says."""
    client = ClientSession(digests=offer)
    client.hello()
    events = client.receive_frame(frame(1, welcome=_welcome(answer)))
    assert isinstance(events[0], ConnectionErrorReceived) and answer in events[0].error.message
    assert closes(events) == [1002] and client.state is SessionState.CLOSED


def test_a_16_byte_trailing_digest_fits_where_a_sha256_may_not() -> None:
    limit = 1024 + 64
    pairs = {
        name: Pair(digests=(name,), max_frame_bytes=limit, chunk_bytes=1024)
        for name in ("sha256", "xxh3-128")
    }
    huge = 1 << 44
    for pair in pairs.values():
        pair.client._next_id = (1 << 64) - 1
    # a full last chunk: 7-byte offsets and a 10-byte id leave room for 16 bytes of digest, not 32
    assert chunk_frame_size((1 << 64) - 1, huge - 1024, 1024, huge, 16) <= limit
    assert not pairs["sha256"].client.trailing_digest_fits(huge, 1024)
    assert pairs["xxh3-128"].client.trailing_digest_fits(huge, 1024)


def _welcome(digest: str) -> session_pb2.Welcome:
    limits = session_pb2.Limits(max_frame_bytes=4096, max_in_flight=4, chunk_bytes=1024)
    return session_pb2.Welcome(version=1, limits=limits, digest=digest)
