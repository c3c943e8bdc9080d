"""Chunked transfers through the sessions (section 7.3): assembly, trailing digests, download frames."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fedproto import codec
from fedproto.errors import ErrorCode, ResourceExhaustedError
from fedproto.session import (
    ErrorReceived,
    ReplyReceived,
    RequestReceived,
    TransferProgress,
    UploadStarted,
    transfers,
)
from fedproto.types import ObjectInfo, TensorInfo
from fedproto_pb.v1 import envelope_pb2, objects_pb2, session_pb2, tensor_pb2
from session.helpers import Pair, chunk, frame, open_server, sent, server, start_upload


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

    def refuse(identity: object, object_id: object, info: object, overwrite: object) -> None:
        raise ResourceExhaustedError("full")

    s2._check_upload = refuse  # type: ignore[method-assign]
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


def test_download_sizes_follow_the_clients_frame_limit() -> None:
    assert transfers.inline_limit(1000, 0) == 1000
    assert transfers.inline_limit(1 << 20, 10_000) == 10_000 - 4096
    assert transfers.inline_limit(1000, 100) == 0
    assert transfers.download_chunk_bytes(1000, 0) == 1000
    assert transfers.download_chunk_bytes(1000, 500) == 500 - 64
    assert transfers.download_chunk_bytes(1000, 10) == 1


def test_chunk_frames_carry_a_trailing_digest_only_in_the_last() -> None:
    payload = bytes(range(20))
    frames = list(transfers.chunk_frames(3, memoryview(payload), 8, lambda: b"d" * 32))
    chunks = [envelope_pb2.Envelope.FromString(f).chunk for f in frames]
    assert [c.offset for c in chunks] == [0, 8, 16] and b"".join(c.data for c in chunks) == payload
    assert [c.sha256 for c in chunks] == [b"", b"", b"d" * 32]
