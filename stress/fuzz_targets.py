"""Fuzz targets for the decoders and the server session, each with its oracle.

The same functions run under hypothesis in the test suite (tests/reliability/test_fuzz_decoders.py) and,
coverage-guided, under atheris: ``python -m stress.fuzz_targets envelope|chunk|session [-atheris_runs=N]``
(atheris is in the ``stress`` extra).

- envelope: ``codec.decode_envelope`` returns an Envelope or raises MALFORMED, nothing else.
- chunk: ``codec.decode_chunk_frame`` (the zero-copy fast path) either declines (None) or agrees with the
  full protobuf decoder on request id, offset, data and total.
- session: ``ServerSession.receive_frame`` never raises for any sequence of frames, every event it
  returns is an Event, and every frame it asks to send decodes as an Envelope.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fedproto import codec
from fedproto.errors import MalformedError
from fedproto.session import Event, SendFrame, ServerSession
from fedproto.types import Limits
from fedproto_pb.v1.calls_pb2 import CallRequest
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectRequest, SendObjectRequest
from fedproto_pb.v1.session_pb2 import Cancel, Goodbye, Hello, Ping
from fedproto_pb.v1.tensor_pb2 import Chunk, Tensor, TensorInfo
from fedproto_pb.v1.value_pb2 import Value

__all__ = ["check_chunk_decoder", "check_envelope_decoder", "check_session", "seed_frames"]

HELLO = Envelope(request_id=1, hello=Hello(versions=[1], token="good")).SerializeToString()


def seed_frames() -> list[bytes]:
    """Valid frames the mutations start from."""
    info = TensorInfo(dtype=1, shape=[4], nbytes=16)
    small = Tensor(dtype=1, shape=[1], data=bytes(4))
    envelopes = [
        Envelope(request_id=1, hello=Hello(versions=[1], token="good")),
        Envelope(request_id=2, ping=Ping(payload=b"p")),
        Envelope(request_id=3, call=CallRequest(method="m", args=[Value(string_value="x")])),
        Envelope(request_id=4, send_object=SendObjectRequest(id="a", tensor=small)),
        Envelope(request_id=5, send_object=SendObjectRequest(id="b", chunked=info)),
        Envelope(request_id=5, chunk=Chunk(offset=0, data=bytes(8), total_bytes=16)),
        Envelope(request_id=5, chunk=Chunk(offset=8, data=bytes(8), total_bytes=16, sha256=bytes(32))),
        Envelope(request_id=6, get_object=GetObjectRequest(id="a")),
        Envelope(request_id=3, cancel=Cancel()),
        Envelope(request_id=7, goodbye=Goodbye()),
    ]
    return [e.SerializeToString() for e in envelopes]


def check_envelope_decoder(data: bytes) -> None:
    """Decode ``data``: an Envelope or MALFORMED."""
    try:
        envelope = codec.decode_envelope(data)
    except MalformedError:
        return
    assert isinstance(envelope, Envelope)


def check_chunk_decoder(data: bytes) -> None:
    """The chunk fast path declines or agrees with the full decoder."""
    fast = codec.decode_chunk_frame(data)
    if fast is None:
        return
    request_id, offset, payload, total = fast
    envelope = codec.decode_envelope(data)  # a frame the fast path accepts must be a valid envelope
    assert envelope.WhichOneof("body") == "chunk", envelope
    chunk = envelope.chunk
    assert (envelope.request_id, chunk.offset, chunk.total_bytes) == (request_id, offset, total)
    assert bytes(payload) == envelope.chunk.data


def _session() -> ServerSession:
    return ServerSession(
        server_id="fuzz",
        server_name="fuzz",
        limits=Limits(max_in_flight=4, chunk_bytes=8, max_object_bytes=1 << 20),
        capabilities=["objects", "chunked", "calls"],
        authenticate=lambda token: "alice" if token == "good" else None,
    )


def check_session(frames: Sequence[bytes], *, handshake: bool) -> None:
    """Feed ``frames`` (after a good Hello when ``handshake``) to a server session: it never raises."""
    session = _session()
    for data in ([HELLO] if handshake else []) + list(frames):
        events = session.receive_frame(data)
        for event in events:
            assert isinstance(event, Event), event
            if isinstance(event, SendFrame):
                codec.decode_envelope(event.data)


def _split(data: bytes) -> list[bytes]:
    """Cut one fuzzer input into frames at 0xFF 0xFE markers (so atheris can grow sequences)."""
    return data.split(b"\xff\xfe")[:16]


def main(argv: list[str]) -> None:
    """Run one target under atheris."""
    import atheris  # the stress extra; imported here so the tests need only hypothesis

    target = argv[1] if len(argv) > 1 else "session"
    checks = {
        "envelope": check_envelope_decoder,
        "chunk": check_chunk_decoder,
        "session": lambda data: check_session(_split(data), handshake=bool(data[:1]) and data[0] & 1 == 1),
    }
    atheris.instrument_all()  # coverage of everything already imported: fedproto's codec and session
    atheris.Setup([argv[0], *argv[2:]], checks[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
