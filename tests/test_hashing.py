"""The background SHA-256 gives the digest hashlib gives, in order, for interleaved transfers."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given
from hypothesis import strategies as st

from fedproto.hashing import BackgroundSha256


@given(st.lists(st.binary(max_size=5000), max_size=20))
def test_same_digest_as_hashlib(pieces: list[bytes]) -> None:
    hasher = BackgroundSha256()
    for piece in pieces:
        hasher.update(piece)
    assert hasher.digest() == hashlib.sha256(b"".join(pieces)).digest()


def test_interleaved_hashers_keep_their_own_order() -> None:
    payloads = [os.urandom(300_000) for _ in range(4)]
    hashers = [BackgroundSha256() for _ in payloads]
    step = 65_536
    for offset in range(0, 300_000, step):
        for hasher, payload in zip(hashers, payloads, strict=True):
            hasher.update(memoryview(payload)[offset : offset + step])
    for hasher, payload in zip(hashers, payloads, strict=True):
        assert hasher.digest() == hashlib.sha256(payload).digest()
        assert hasher.digest() == hashlib.sha256(payload).digest()  # digest() may be asked twice


def test_digest_of_nothing() -> None:
    assert BackgroundSha256().digest() == hashlib.sha256().digest()
