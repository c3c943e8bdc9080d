"""Chunked model weights in the sessions (docs/protocol.md section 12.8), without sockets."""

from __future__ import annotations

import pytest
import torch

from fedproto import codec, hashing
from fedproto.errors import DataLossError, ErrorCode, InvalidArgumentError
from fedproto.session import (
    CHUNKED_WEIGHTS,
    ClientSession,
    ErrorReceived,
    HandshakeCompleted,
    ReplyReceived,
    RequestReceived,
    SendFrame,
    ServerSession,
    WeightsChunkReceived,
    WeightsManifestReceived,
)
from fedproto.session.weights import WeightsStream, parts_chunk_frames, payload_parts
from fedproto.types import Limits, WeightsManifest
from fedproto_pb.v1 import session_pb2, training_pb2

from .helpers import chunk, frame, sent

#: Mixed dtypes and sizes: a float32 matrix, BatchNorm's int64 counter, an empty tensor, bfloat16, float64.
WEIGHTS = {
    "fc.weight": torch.arange(15, dtype=torch.float32).reshape(5, 3) / 7,
    "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
    "empty": torch.zeros(0),
    "half": (torch.arange(11) / 3).to(torch.bfloat16),
    "fc.bias": torch.linspace(-1, 1, 13, dtype=torch.float64),
}


def server(checks: list | None = None, *, chunked: bool = True, chunk_bytes: int = 8) -> ServerSession:
    def check(identity: str, manifest: WeightsManifest, strict: bool) -> None:
        if checks is not None:
            checks.append((identity, manifest.names, strict))
        if "refused" in manifest.names:
            raise InvalidArgumentError("'refused' is not in the model")

    s = ServerSession(
        server_id="s",
        server_name="test",
        limits=Limits(max_in_flight=4, chunk_bytes=chunk_bytes),
        capabilities=["training", *([CHUNKED_WEIGHTS] if chunked else [])],
        authenticate=lambda token: "alice",
        check_weights=check,
    )
    events = s.receive_frame(frame(1, hello=session_pb2.Hello(versions=[1], token="t")))  # sha256
    assert isinstance(events[-1], HandshakeCompleted)
    return s


def restored(manifest: WeightsManifest, slices_events: list) -> dict[str, torch.Tensor]:
    out = {e.name: torch.empty(e.shape, dtype=e.dtype) for e in manifest.entries}
    for event in slices_events:
        for raw in event.slices:
            values = raw.values()
            out[raw.entry.name].view(-1)[raw.start : raw.start + values.numel()] = values
    return out


# -- cutting and streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 3, 5, 7, 8, 64, 1000])
def test_a_stream_gives_every_element_once_whatever_the_chunk_boundaries(chunk_bytes: int) -> None:
    manifest, parts = codec.weights_manifest_of(WEIGHTS)
    payload = b"".join(bytes(part) for part in parts)
    stream = WeightsStream(manifest, hashing.new_hasher(hashing.SHA256), chunk_bytes)
    seen = []
    for offset, data in payload_parts(parts, chunk_bytes):
        assert data.nbytes == min(chunk_bytes, len(payload) - offset)
        assert bytes(data) == payload[offset : offset + data.nbytes]

        class Event:
            slices = stream.add(offset, data, manifest.total_bytes)

        seen.append(Event)
    assert stream.finish(hashing.digest(hashing.SHA256, payload), hashing.SHA256) is None
    out = restored(manifest, seen)
    for name, tensor in WEIGHTS.items():
        assert torch.equal(out[name], tensor), name
    # elements split by a chunk boundary came whole, once: the slices cover each tensor exactly
    covered = {name: 0 for name in WEIGHTS}
    for event in seen:
        for raw in event.slices:
            assert raw.start == covered[raw.entry.name]
            covered[raw.entry.name] += raw.values().numel()
    assert covered == {name: tensor.numel() for name, tensor in WEIGHTS.items()}


def test_a_stream_refuses_chunks_out_of_order_too_big_or_past_the_end() -> None:
    manifest, _ = codec.weights_manifest_of(WEIGHTS)
    total = manifest.total_bytes
    stream = WeightsStream(manifest, hashing.new_hasher(hashing.SHA256), 8)
    with pytest.raises(DataLossError, match="offset 8, expected 0"):
        stream.add(8, b"x" * 8, total)
    with pytest.raises(DataLossError, match="total_bytes"):
        stream.add(0, b"x" * 8, total + 1)
    with pytest.raises(DataLossError, match="chunk of 9 bytes"):
        stream.add(0, b"x" * 9, total)
    assert isinstance(stream.finish(b"", hashing.SHA256), DataLossError)  # ended short


def test_parts_are_cut_with_a_trailing_digest_in_the_last_chunk() -> None:
    _, parts = codec.weights_manifest_of(WEIGHTS)
    total = sum(part.nbytes for part in parts)
    frames = list(parts_chunk_frames(3, parts, total, 16, trailing=lambda: b"d" * 32))
    chunks = [codec.decode_envelope(f).chunk for f in frames]
    assert [c.offset for c in chunks] == list(range(0, total, 16))
    assert all(not c.sha256 for c in chunks[:-1]) and chunks[-1].sha256 == b"d" * 32


# -- downloads ------------------------------------------------------------------------------------------


def download_pair(chunk_bytes: int = 8) -> tuple[ServerSession, ClientSession]:
    s = ServerSession(
        server_id="s",
        server_name="test",
        limits=Limits(max_in_flight=4, chunk_bytes=chunk_bytes),
        capabilities=["training", CHUNKED_WEIGHTS],
        authenticate=lambda token: "alice",
    )
    c = ClientSession(token="t", digests=())
    for data in [e.data for e in s.receive_frame(c.hello()) if isinstance(e, SendFrame)]:
        c.receive_frame(data)
    return s, c


def test_a_chunked_download_is_manifest_chunks_then_a_reply_with_the_digest() -> None:
    s, c = download_pair(chunk_bytes=8)
    rid, data = c.request(get_weights=codec.get_weights_request_to_proto(chunked=True))
    (event,) = s.receive_frame(data)
    assert isinstance(event, RequestReceived) and codec.get_weights_request_from_proto(event.message)
    manifest, parts = codec.weights_manifest_of(WEIGHTS)
    frames = list(s.download_weights(rid, manifest, parts))
    kinds = [codec.decode_envelope(f).WhichOneof("body") for f in frames]
    assert kinds[0] == "weights_manifest" and kinds[-1] == "get_weights_reply"
    assert set(kinds[1:-1]) == {"chunk"} and len(kinds) - 2 == -(-manifest.total_bytes // 8)
    events = [e for f in frames for e in c.receive_frame(f)]
    assert isinstance(events[0], WeightsManifestReceived) and events[0].manifest == manifest
    assert isinstance(events[-1], ReplyReceived)
    out = restored(manifest, [e for e in events if isinstance(e, WeightsChunkReceived)])
    assert all(torch.equal(out[name], tensor) for name, tensor in WEIGHTS.items())
    assert not s.in_flight and not c.pending


def test_a_digest_that_does_not_match_fails_the_download_with_data_loss() -> None:
    s, c = download_pair()
    rid, data = c.request(get_weights=codec.get_weights_request_to_proto(chunked=True))
    s.receive_frame(data)
    manifest, parts = codec.weights_manifest_of(WEIGHTS)
    frames = list(s.download_weights(rid, manifest, parts))
    reply = codec.decode_envelope(frames[-1])
    reply.get_weights_reply.sha256 = bytes(32)
    frames[-1] = codec.encode_envelope(reply)
    events = [e for f in frames for e in c.receive_frame(f)]
    assert isinstance(events[-1], ErrorReceived) and isinstance(events[-1].error, DataLossError)


@pytest.mark.parametrize(
    "manifest",
    [
        training_pb2.WeightsManifest(
            entries=[training_pb2.WeightsEntry(name="w", dtype=2, shape=[2], offset=0, nbytes=8)],
            total_bytes=9,
        ),
        training_pb2.WeightsManifest(
            entries=[training_pb2.WeightsEntry(name="w", dtype=2, shape=[2], offset=4, nbytes=8)],
            total_bytes=8,
        ),
        training_pb2.WeightsManifest(
            entries=[training_pb2.WeightsEntry(name="w", dtype=2, shape=[2], offset=0, nbytes=7)],
            total_bytes=7,
        ),
        training_pb2.WeightsManifest(
            entries=[
                training_pb2.WeightsEntry(name="w", dtype=2, shape=[1], offset=0, nbytes=4),
                training_pb2.WeightsEntry(name="w", dtype=2, shape=[1], offset=4, nbytes=4),
            ],
            total_bytes=8,
        ),
    ],
    ids=["total-not-the-sum", "gap", "nbytes-not-the-shape", "name-twice"],
)
def test_a_bad_manifest_fails_the_download_with_data_loss_and_a_cancel(manifest) -> None:
    _, c = download_pair()
    rid, _ = c.request(get_weights=codec.get_weights_request_to_proto(chunked=True))
    events = c.receive_frame(frame(rid, weights_manifest=manifest))
    assert isinstance(events[0], ErrorReceived) and isinstance(events[0].error, DataLossError)
    assert "bad weights manifest" in events[0].error.message
    (cancel,) = sent(events)
    assert cancel.WhichOneof("body") == "cancel" and cancel.request_id == rid
    # what still comes for it is dropped
    assert c.receive_frame(chunk(rid, 0, b"x" * 8, 8)) == []


def test_a_chunk_before_the_manifest_fails_the_download() -> None:
    _, c = download_pair()
    rid, _ = c.request(get_weights=codec.get_weights_request_to_proto(chunked=True))
    events = c.receive_frame(chunk(rid, 0, b"x" * 8, 16))
    assert isinstance(events[0], ErrorReceived) and isinstance(events[0].error, DataLossError)


def test_an_inline_reply_to_a_chunked_request_is_still_a_reply() -> None:
    # a worker written before section 12.8 ignores the field and answers inline (section 12.8.10)
    _, c = download_pair()
    rid, _ = c.request(get_weights=codec.get_weights_request_to_proto(chunked=True))
    (event,) = c.receive_frame(frame(rid, get_weights_reply=codec.weights_reply_to_proto(WEIGHTS)))
    assert isinstance(event, ReplyReceived)
    decoded = codec.weights_reply_from_proto(event.message)
    assert all(torch.equal(decoded[name], tensor) for name, tensor in WEIGHTS.items())


# -- uploads --------------------------------------------------------------------------------------------


def upload(s: ServerSession, rid: int, weights: dict, *, strict: bool = True, trailing: bool = True) -> list:
    manifest, parts = codec.weights_manifest_of(weights)
    payload = b"".join(bytes(p) for p in parts)
    if not trailing:
        manifest = WeightsManifest(
            entries=manifest.entries,
            total_bytes=manifest.total_bytes,
            sha256=hashing.digest("sha256", payload),
        )
    request = codec.set_weights_chunked_request_to_proto(manifest, strict=strict)
    events = s.receive_frame(frame(rid, set_weights=request))
    digest = (lambda: hashing.digest("sha256", payload)) if trailing else None
    for data in parts_chunk_frames(rid, parts, manifest.total_bytes, 8, trailing=digest):
        events += s.receive_frame(data)
    return events


@pytest.mark.parametrize("trailing", [True, False])
def test_a_chunked_upload_reaches_the_handler_as_one_payload(trailing: bool) -> None:
    checks: list = []
    s = server(checks)
    events = upload(s, 5, WEIGHTS, trailing=trailing)
    (request,) = [e for e in events if isinstance(e, RequestReceived)]
    assert request.kind == "set_weights" and request.message.strict
    assert checks == [("alice", tuple(WEIGHTS), True)]
    manifest = codec.weights_manifest_from_proto(request.message.chunked)
    assert request.payload is not None
    loaded = codec.weights_from_payload(manifest, request.payload)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in WEIGHTS.items())


def test_an_upload_is_refused_before_any_chunk_when_it_does_not_fit_the_model() -> None:
    s = server()
    events = upload(s, 5, {"refused": torch.ones(3)})
    errors = [e for e in sent(events) if e.WhichOneof("body") == "error"]
    assert [e.error.code for e in errors] == [ErrorCode.INVALID_ARGUMENT]
    assert not s.uploads  # the chunks that followed were ignored (section 7.3.12)


def test_a_corrupted_upload_is_data_loss() -> None:
    s = server()
    manifest, parts = codec.weights_manifest_of({"w": torch.ones(4)})
    wrong = WeightsManifest(entries=manifest.entries, total_bytes=16, sha256=bytes(32))
    s.receive_frame(frame(5, set_weights=codec.set_weights_chunked_request_to_proto(wrong, strict=False)))
    events = [e for f in parts_chunk_frames(5, parts, 16, 8) for e in s.receive_frame(f)]
    (error,) = sent(events)
    assert error.error.code == ErrorCode.DATA_LOSS


def test_inline_and_chunked_weights_together_are_invalid() -> None:
    s = server()
    manifest, _ = codec.weights_manifest_of({"w": torch.ones(1)})
    request = codec.set_weights_chunked_request_to_proto(manifest, strict=False)
    request.weights.extend(codec.named_tensors_to_proto({"w": torch.ones(1)}))
    (error,) = sent(s.receive_frame(frame(5, set_weights=request)))
    assert error.error.code == ErrorCode.INVALID_ARGUMENT


def test_a_server_without_the_capability_refuses_a_chunked_upload() -> None:
    s = server(chunked=False)
    (error,) = sent(upload(s, 5, {"w": torch.ones(1)})[:1])
    assert error.error.code == ErrorCode.UNIMPLEMENTED


def test_a_bool_byte_other_than_0_or_1_is_data_loss() -> None:
    manifest, _ = codec.weights_manifest_of({"mask": torch.ones(4, dtype=torch.bool)})
    stream = WeightsStream(manifest, hashing.new_hasher(hashing.SHA256), 8)
    with pytest.raises(DataLossError, match="bool tensor 'mask'"):
        stream.add(0, b"\x01\x00\x02\x01", 4)


def test_download_weights_as_pieces_are_the_same_frames() -> None:
    """Pieces of a chunked weights download join into exactly the frames of the bytes form."""
    manifest, parts = codec.weights_manifest_of(WEIGHTS)
    frames = []
    for pieces in (False, True):
        s, c = download_pair(chunk_bytes=8)
        rid, data = c.request(get_weights=codec.get_weights_request_to_proto(chunked=True))
        s.receive_frame(data)
        out = s.download_weights(rid, manifest, parts, pieces=pieces)
        frames.append([f if isinstance(f, bytes) else b"".join(f) for f in out])
    assert frames[0] == frames[1]
    assert len(frames[0]) > 3  # manifest, several chunks, reply
