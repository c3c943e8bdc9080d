"""ServerSession without sockets: the handshake, framing, requests, cancel and goodbye."""

from __future__ import annotations

import pytest

from fedproto import codec
from fedproto.errors import ErrorCode, ResourceExhaustedError
from fedproto.session import (
    CloseCode,
    GoodbyeReceived,
    HandshakeCompleted,
    RequestCancelled,
    RequestReceived,
    ServerSession,
    SessionError,
    SessionState,
)
from fedproto.types import Limits
from fedproto_pb.v1 import envelope_pb2, objects_pb2, session_pb2, training_pb2
from session.helpers import closes, frame, open_server, sent, server

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


def test_second_hello_checks_its_request_id_first() -> None:
    s = open_server()
    (reserved,) = sent(s.receive_frame(frame(0, hello=session_pb2.Hello(versions=[1], token="good"))))
    assert reserved.request_id == 0 and reserved.error.code == ErrorCode.INVALID_ARGUMENT
    s.receive_frame(frame(5, list_objects=objects_pb2.ListObjectsRequest()))
    events = s.receive_frame(frame(5, hello=session_pb2.Hello(versions=[1], token="good")))
    (duplicate,) = sent(events)
    assert duplicate.request_id == 0 and duplicate.error.code == ErrorCode.INVALID_ARGUMENT
    assert duplicate.error.details["request_id"] == "5"
    assert not closes(events) and s.state is SessionState.OPEN and s.identity == "alice"


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
    assert dict(full.error.details) == {"limit": "2", "used": "2"}  # what is used now and the limit
    assert full.error.message.startswith("2 requests are in flight, the limit of this connection")
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


# -- the client's frame limit (sections 4.6.3, 6.4.8, 13.1.6) ----------------------------------------


def _open_with_frame_limit(limit: int):
    s = server()
    hello = session_pb2.Hello(versions=[1], token="good", max_frame_bytes=limit)
    (welcome,) = sent(s.receive_frame(frame(1, hello=hello)))
    assert welcome.WhichOneof("body") == "welcome"
    return s


@pytest.mark.parametrize(
    ("announced", "in_force"), [(0, 0), (1, 1024), (100, 1024), (1024, 1024), (5000, 5000)]
)
def test_a_frame_limit_below_1024_counts_as_1024(announced: int, in_force: int) -> None:
    s = _open_with_frame_limit(announced)
    assert s.client_max_frame == in_force
    # 500 bytes of payload fit 1024 (section 4.6.3): a Pong, not RESOURCE_EXHAUSTED as for a limit of 100
    (pong,) = sent(s.receive_frame(frame(2, ping=session_pb2.Ping(payload=b"p" * 500))))
    assert pong.WhichOneof("body") == "pong"


def test_a_notification_above_the_client_limit_is_refused_not_built() -> None:
    s = _open_with_frame_limit(1024)
    assert len(s.notification("small", "x" * 100)) <= 1024
    with pytest.raises(ResourceExhaustedError) as info:
        s.notification("big", "x" * 2000)
    assert info.value.details == {"limit": "1024"}
    assert s.state is SessionState.OPEN  # nothing was sent, nothing changed


def test_a_notification_too_deep_to_send_is_refused_not_built() -> None:
    """Section 8.3.7: a payload deeper than 32 levels is never sent; the caller gets INVALID_ARGUMENT."""
    s = _open_with_frame_limit(0)
    deep: object = 1
    for _ in range(codec.MAX_SEND_DEPTH - 1):
        deep = {"k": deep}
    assert s.notification("deepest", deep)
    with pytest.raises(codec.ValueTooDeepError) as info:
        s.notification("too-deep", [deep])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT and info.value.details == {"limit": "32"}
    assert s.state is SessionState.OPEN


def test_an_error_above_the_client_limit_is_shortened_keeping_code_and_id() -> None:
    s = _open_with_frame_limit(1024)
    s.receive_frame(frame(7, count_objects=objects_pb2.CountObjectsRequest()))
    details = {"error_id": "abcd1234", "limit": "9" * 2000}
    data = s.fail(7, ResourceExhaustedError("é" * 3000, details=details))
    assert len(data) <= 1024
    error = codec.decode_envelope(data)
    assert error.request_id == 7 and error.error.code == ErrorCode.RESOURCE_EXHAUSTED
    assert error.error.message and "é" * 100 in error.error.message  # cut at a character boundary
    assert dict(error.error.details) == {}  # with the long detail nothing fits; neither is required


def test_a_shortened_error_keeps_the_required_details() -> None:
    s = _open_with_frame_limit(1024)
    error = codec.decode_envelope(
        s.connection_error(
            ResourceExhaustedError("m" * 5000, details={"request_id": "7", "supported": "1", "x": "y" * 2000})
        )
    )
    assert dict(error.error.details) == {"request_id": "7", "supported": "1"}
    assert error.error.message.startswith("mmm") and len(error.error.SerializeToString()) < 1024


def test_an_error_that_fits_is_sent_whole() -> None:
    s = _open_with_frame_limit(1024)
    error = ResourceExhaustedError("m" * 900, details={"limit": "5"})
    data = s.connection_error(error)
    assert codec.decode_envelope(data).error.message == "m" * 900
    assert dict(codec.decode_envelope(data).error.details) == {"limit": "5"}


def test_a_refused_hello_error_fits_the_limit_it_announced() -> None:
    s = server()
    hello = session_pb2.Hello(versions=list(range(2, 600)), token="good", max_frame_bytes=1024)
    events = s.receive_frame(frame(1, hello=hello))
    (error,) = sent(events)
    assert error.error.code == ErrorCode.UNSUPPORTED_VERSION and error.error.details["supported"] == "1"
    assert len(error.SerializeToString()) <= 1024 and closes(events) == [CloseCode.PROTOCOL_ERROR]


# -- digest negotiation (section 7.5) ---------------------------------------------------------------


def _welcome(s, offer: list[str]) -> session_pb2.Welcome:
    events = s.receive_frame(frame(1, hello=session_pb2.Hello(versions=[1], token="good", digests=offer)))
    (welcome,) = sent(events)
    handshake = events[-1]
    assert isinstance(handshake, HandshakeCompleted) and handshake.digest == s.digest
    return welcome.welcome


@pytest.mark.parametrize(
    ("offer", "chosen"),
    [
        (["xxh3-128", "blake3", "sha256"], "xxh3-128"),
        (["blake3", "xxh3-128"], "blake3"),
        (["md5", "x-unknown", "sha256", "xxh3-128"], "sha256"),  # the first known name, sha256 included
        (["md5", "x-unknown"], "sha256"),  # nothing known: sha256, never a failed handshake (7.5.4)
    ],
)
def test_the_server_chooses_the_first_digest_it_implements(offer: list[str], chosen: str) -> None:
    s = server()
    assert _welcome(s, offer).digest == chosen and s.digest == chosen


def test_a_hello_without_digests_gets_the_welcome_of_before_section_7_5() -> None:
    s = server()
    assert _welcome(s, []).digest == "" and s.digest == "sha256"  # empty means sha256 (section 7.5.4)


def test_a_server_chooses_only_among_its_own_digests() -> None:
    s = ServerSession(
        server_id="s",
        server_name="test",
        limits=Limits(),
        capabilities=[],
        authenticate=lambda token: "alice",
        digests={"sha256", "blake3"},
    )
    assert _welcome(s, ["xxh3-128", "blake3"]).digest == "blake3"


@pytest.mark.parametrize("digests", [{"xxh3-128"}, {"sha256", "md5"}])
def test_a_server_must_implement_sha256_and_known_names_only(digests: set[str]) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ServerSession(
            server_id="s",
            server_name="t",
            limits=Limits(),
            capabilities=[],
            authenticate=lambda token: "a",
            digests=digests,
        )
