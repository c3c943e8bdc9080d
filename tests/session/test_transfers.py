"""Chunked transfers through the sessions (section 7.3): assembly, trailing digests, download frames."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fedproto import hashing
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

#: The digest algorithms of section 7.5.1, all implemented here.
ALGORITHMS = sorted(hashing.IMPLEMENTED_DIGESTS)


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


@pytest.mark.parametrize("name", ALGORITHMS)
def test_client_upload_puts_the_digest_in_the_last_chunk(name: str) -> None:
    pair = Pair(digests=(name,), chunk_bytes=1000)
    assert pair.client.digest == pair.server.digest == name
    payload = bytes(range(256)) * 9
    info = tensor_pb2.TensorInfo(dtype=tensor_pb2.DTYPE_UINT8, shape=[len(payload)], nbytes=len(payload))
    rid, data = pair.client.request(send_object=objects_pb2.SendObjectRequest(id="t", chunked=info))
    assert pair.to_server(data) == []
    frames = list(pair.client.upload(rid, memoryview(payload), 1000, trailing_digest=True))
    chunks = [envelope_pb2.Envelope.FromString(f).chunk for f in frames]
    field, other = ("sha256", "digest") if name == "sha256" else ("digest", "sha256")
    assert [bool(getattr(c, field)) for c in chunks] == [False, False, True]
    assert getattr(chunks[-1], field) == hashing.digest(name, payload)
    assert not any(getattr(c, other) for c in chunks)  # section 7.5.8: the other field stays empty
    events = []
    for f in frames:
        events += pair.server.receive_frame(f)
    done = events[-1]
    assert isinstance(done, RequestReceived) and bytes(done.payload or b"") == payload
    assert getattr(done.message.chunked, field) == hashing.digest(name, payload)


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


def _described(payload: bytes, name: str, value: bytes | None = None) -> ObjectInfo:
    """An object of ``payload`` whose description carries ``value`` (its digest) under ``name``."""
    info = TensorInfo(dtype=torch.uint8, shape=(len(payload),), nbytes=len(payload))
    digest = hashing.digest(name, payload) if value is None else value
    return ObjectInfo(id="x", tensor=transfers.with_digest(info, name, digest))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_pair_chunked_download_with_progress(name: str) -> None:
    pair = Pair(digests=(name,), chunk_bytes=8)
    payload = bytes(range(30))
    rid, data = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    (_event,) = pair.server.receive_frame(data)
    frames = list(pair.server.download(rid, _described(payload, name), memoryview(payload)))
    final = envelope_pb2.Envelope.FromString(frames[-1]).get_object_reply.info.tensor
    assert transfers.carried_digest(final, name) == hashing.digest(name, payload)
    assert name == "sha256" or not final.sha256  # section 7.5.8
    events = pair.to_client(frames)
    progress = [e.done for e in events if isinstance(e, TransferProgress)]
    assert progress == [8, 16, 24, 30]
    reply = events[-1]
    assert isinstance(reply, ReplyReceived) and bytes(reply.payload or b"") == payload


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize("how", ["flipped", "missing", "in the other field", "short"])
def test_pair_download_corruption_is_data_loss(name: str, how: str) -> None:
    pair = Pair(digests=(name,), chunk_bytes=8)
    payload = bytes(range(30))
    rid, data = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    pair.server.receive_frame(data)
    good = hashing.digest(name, payload)
    info = _described(
        payload, name, {"flipped": bytes([good[0] ^ 1]) + good[1:], "short": good[:-1]}.get(how, b"")
    )
    if how == "in the other field":  # a SHA-256 where the negotiated digest belongs, or the reverse
        other = "xxh3-128" if name == "sha256" else "sha256"
        info = _described(payload, other)
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


def test_chunk_frames_put_another_algorithms_trailer_in_the_digest_field() -> None:
    frames = list(transfers.chunk_frames(3, memoryview(bytes(20)), 8, lambda: b"x" * 16, "xxh3-128"))
    chunks = [envelope_pb2.Envelope.FromString(f).chunk for f in frames]
    assert [c.digest for c in chunks] == [b"", b"", b"x" * 16]
    assert not any(c.sha256 for c in chunks)


def test_chunk_frames_carry_a_trailing_digest_only_in_the_last() -> None:
    payload = bytes(range(20))
    frames = list(transfers.chunk_frames(3, memoryview(payload), 8, lambda: b"d" * 32))
    chunks = [envelope_pb2.Envelope.FromString(f).chunk for f in frames]
    assert [c.offset for c in chunks] == [0, 8, 16] and b"".join(c.data for c in chunks) == payload
    assert [c.sha256 for c in chunks] == [b"", b"", b"d" * 32]


# -- uploads under a negotiated digest (section 7.5) ------------------------------------------------

#: The digests of the empty payload, as section 7.5.9 gives them.
EMPTY_DIGESTS = {
    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "blake3": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    "xxh3-128": "99aa06d3014798d86001c324468d497f",
}


def _field(name: str) -> str:
    return "sha256" if name == "sha256" else "digest"


def _upload(name: str, header: dict[str, bytes], trailer: dict[str, bytes]) -> tuple[list, bytes]:
    """A 20-byte upload under ``name`` in 8-byte chunks: header and last chunk digest fields as given."""
    s = open_server(offer=(name,))
    assert s.digest == name
    payload = bytes(range(20))
    events = start_upload(s, payload, sha=header.get("sha256", b""), digest=header.get("digest", b""))
    for offset in (0, 8, 16):
        last = trailer if offset == 16 else {}
        events += s.receive_frame(chunk(5, offset, payload[offset : offset + 8], 20, **last))
        if sent(events):
            break
    return events, payload


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize("where", ["header", "last chunk"])
def test_an_upload_is_checked_under_the_negotiated_digest(name: str, where: str) -> None:
    good = hashing.digest(name, bytes(range(20)))
    given = {"sha" if name == "sha256" else "digest": good}
    header = {_field(name): good} if where == "header" else {}
    trailer = given if where == "last chunk" else {}
    events, payload = _upload(name, header, trailer)
    done = events[-1]
    assert isinstance(done, RequestReceived) and bytes(done.payload or b"") == payload
    # the verified digest, in the algorithm's field, is what the handler stores (section 7.5.11)
    assert getattr(done.message.chunked, _field(name)) == good
    assert name == "sha256" or not done.message.chunked.sha256


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize("where", ["header", "last chunk"])
def test_a_digest_that_does_not_match_is_data_loss(name: str, where: str) -> None:
    good = hashing.digest(name, bytes(range(20)))
    wrong = bytes([good[0] ^ 0x80]) + good[1:]
    header = {_field(name): wrong} if where == "header" else {}
    trailer = {"sha" if name == "sha256" else "digest": wrong} if where == "last chunk" else {}
    events, _ = _upload(name, header, trailer)
    (error,) = sent(events)
    assert error.request_id == 5 and error.error.code == ErrorCode.DATA_LOSS


def _misplaced(name: str, how: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The header's and the last chunk's digest fields of one misplaced or missized digest under ``name``."""
    payload = bytes(range(20))
    good, sha = hashing.digest(name, payload), hashing.digest("sha256", payload)
    return {
        "sha256 in the header": ({"sha256": sha}, {}),
        "sha256 in the last chunk": ({}, {"sha": sha}),
        "sha256 beside the digest in the header": ({"sha256": sha, "digest": good}, {}),
        "sha256 beside the digest in the last chunk": ({}, {"sha": sha, "digest": good}),
        "a short header digest": ({"digest": good[:-1]}, {}),
        "a long header digest": ({"digest": good + b"\x00"}, {}),
        "a short trailing digest": ({}, {"digest": good[:-1]}),
        "a trailing digest of 32 bytes for 16": (
            {},
            {"digest": sha if len(good) == 16 else good + good[:16]},
        ),
        "digests in both places": ({"digest": good}, {"digest": good}),
    }[how]


@pytest.mark.parametrize("name", ["blake3", "xxh3-128"])
@pytest.mark.parametrize(
    "how",
    [
        "sha256 in the header",
        "sha256 in the last chunk",
        "sha256 beside the digest in the header",
        "sha256 beside the digest in the last chunk",
        "a short header digest",
        "a long header digest",
        "a short trailing digest",
        "a trailing digest of 32 bytes for 16",
        "digests in both places",
    ],
)
def test_a_misplaced_or_missized_digest_is_invalid(name: str, how: str) -> None:
    """Section 7.5.8: under another algorithm the sha256 fields must be empty, the digest of its size."""
    header, trailer = _misplaced(name, how)
    events, _ = _upload(name, header, trailer)
    (error,) = sent(events)
    assert error.request_id == 5 and error.error.code == ErrorCode.INVALID_ARGUMENT, how


def test_under_sha256_the_digest_fields_are_ignored() -> None:
    """Section 7.5.7: a receiver ignores the digest fields under sha256, whatever they hold."""
    payload = bytes(range(20))
    sha = hashing.digest("sha256", payload)
    events, _ = _upload("sha256", {"sha256": sha, "digest": b"junk"}, {"digest": b"more junk"})
    done = events[-1]
    assert isinstance(done, RequestReceived) and done.message.chunked.sha256 == sha


@pytest.mark.parametrize("name", ALGORITHMS)
def test_empty_uploads_under_each_digest(name: str) -> None:
    """Sections 7.3.28, 7.3.35 and 7.5.9: completed at once, a header digest checked against nothing's."""
    empty = bytes.fromhex(EMPTY_DIGESTS[name])
    assert hashing.digest(name, b"") == empty
    field = _field(name)
    (done,) = start_upload(open_server(offer=(name,)), b"", **{"sha" if name == "sha256" else "digest": b""})
    assert isinstance(done, RequestReceived) and getattr(done.message.chunked, field) == empty
    (done,) = start_upload(open_server(offer=(name,)), b"")  # the right digest in the header
    assert isinstance(done, RequestReceived) and getattr(done.message.chunked, field) == empty
    wrong = bytes([empty[0] ^ 1]) + empty[1:]
    (error,) = sent(
        start_upload(open_server(offer=(name,)), b"", **{"sha" if name == "sha256" else "digest": wrong})
    )
    assert error.error.code == ErrorCode.DATA_LOSS


@pytest.mark.parametrize("name", ALGORITHMS)
def test_an_inline_download_is_checked_under_the_negotiated_digest(name: str) -> None:
    pair = Pair(digests=(name,))
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UINT8, shape=[3], data=b"abc")
    for value, ok in (
        (hashing.digest(name, b"abc"), True),
        (hashing.digest(name, b"abd"), False),
        (b"", True),
    ):
        info = tensor_pb2.TensorInfo(
            dtype=tensor_pb2.DTYPE_UINT8, shape=[3], nbytes=3, **{_field(name): value}
        )
        reply = objects_pb2.GetObjectReply(info=objects_pb2.ObjectInfo(id="x", tensor=info), tensor=tensor)
        rid, _ = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
        (event,) = pair.client.receive_frame(frame(rid, get_object_reply=reply))
        if ok:
            assert isinstance(event, ReplyReceived)
        else:
            assert isinstance(event, ErrorReceived) and event.error.code is ErrorCode.DATA_LOSS


@pytest.mark.parametrize("name", ALGORITHMS)
def test_frames_as_pieces_are_the_same_frames_with_the_payload_in_place(name: str) -> None:
    """``pieces=True`` (what the I/O layers write without copying) gives the frames ``pieces=False`` does."""
    payload = bytearray(bytes(range(256)) * 9)
    frames = {}
    for as_pieces in (False, True):
        pair = Pair(digests=(name,), chunk_bytes=1000)
        info = tensor_pb2.TensorInfo(dtype=tensor_pb2.DTYPE_UINT8, shape=[len(payload)], nbytes=len(payload))
        rid, data = pair.client.request(send_object=objects_pb2.SendObjectRequest(id="t", chunked=info))
        pair.to_server(data)
        up = list(pair.client.upload(rid, memoryview(payload), 1000, trailing_digest=True, pieces=as_pieces))
        rid, data = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
        (_event,) = pair.server.receive_frame(data)
        described = _described(bytes(payload), name)
        down = list(pair.server.download(rid, described, memoryview(payload), pieces=as_pieces))
        if as_pieces:
            assert all(isinstance(p, tuple) and p[1].obj is payload for p in up)  # views, no copies
            assert all(isinstance(p, tuple) for p in down[:-1]) and isinstance(down[-1], bytes)
        frames[as_pieces] = [f if isinstance(f, bytes) else b"".join(f) for f in up + down]
    assert frames[True] == frames[False]
