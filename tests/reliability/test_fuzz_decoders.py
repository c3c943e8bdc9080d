"""Coverage of hostile bytes without sockets: the envelope and chunk decoders and the server session.

Whatever bytes arrive, ``codec.decode_envelope`` returns an envelope or raises MALFORMED, the chunk fast
path returns a chunk or None (then the full decoder decides), and ``ServerSession.receive_frame`` returns
events and never raises, before and after a handshake, for arbitrary sequences of frames. Hypothesis
draws both raw bytes and mutations of valid frames (``stress/fuzz_targets.py`` runs the same targets
under atheris for hours, coverage-guided).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stress.fuzz_targets import check_chunk_decoder, check_envelope_decoder, check_session, seed_frames

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutated(seed: bytes, flips: list[int], cut: int) -> bytes:
    data = bytearray(seed)
    for position in flips:
        data[position % len(data)] ^= 1 << (position % 8)
    return bytes(data[: max(cut, 0) or len(data)])


frames = st.one_of(
    st.binary(max_size=200),
    st.builds(
        _mutated,
        st.sampled_from(seed_frames()),
        st.lists(st.integers(0, 10_000), max_size=6),
        st.integers(-5, 300),
    ),
)


@FUZZ
@given(frames)
def test_envelope_decoder(data: bytes) -> None:
    check_envelope_decoder(data)


@FUZZ
@given(frames)
def test_chunk_decoder(data: bytes) -> None:
    check_chunk_decoder(data)


@FUZZ
@given(st.booleans(), st.lists(frames, max_size=12))
def test_server_session(handshake: bool, sequence: list[bytes]) -> None:
    check_session(sequence, handshake=handshake)
