"""ClientSession without sockets, talking to a ServerSession in memory."""

from __future__ import annotations

from fedproto.errors import ErrorCode, ResourceExhaustedError
from fedproto.session import (
    ClientSession,
    Connected,
    ConnectionErrorReceived,
    ErrorReceived,
    NotificationReceived,
    ProgressReceived,
    ReplyReceived,
    SendFrame,
)
from fedproto_pb.v1 import objects_pb2, session_pb2, training_pb2
from session.helpers import Pair, closes, frame, server


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
