"""Digests of section 7.5: each algorithm's known answers, the background hasher's order, the choice."""

from __future__ import annotations

import hashlib
import os

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from fedproto.hashing import (
    BLAKE3,
    DIGEST_SIZES,
    IMPLEMENTED_DIGESTS,
    SHA256,
    XXH3_128,
    BackgroundHasher,
    BackgroundSha256,
    background_hasher,
    choose_digest,
    digest,
    new_hasher,
)


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


# Known answers of section 7.5.9 (the empty payload) and of b"abc" from each algorithm's reference.
_EMPTY = {
    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "blake3": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    "xxh3-128": "99aa06d3014798d86001c324468d497f",
}


def test_empty_payload_digests_are_the_specified_ones() -> None:
    for name, expected in _EMPTY.items():
        assert digest(name, b"").hex() == expected
        assert len(digest(name, b"x")) == DIGEST_SIZES[name]


def test_xxh3_128_is_the_canonical_big_endian_form() -> None:
    value = xxhash.xxh3_128_intdigest(b"abc")
    assert digest(XXH3_128, b"abc") == value.to_bytes(16, "big")


@given(st.sampled_from(sorted(IMPLEMENTED_DIGESTS)), st.lists(st.binary(max_size=3000), max_size=10))
def test_every_hasher_matches_the_one_pass_digest(name: str, pieces: list[bytes]) -> None:
    for hasher in (new_hasher(name), background_hasher(name), BackgroundHasher(name)):
        for piece in pieces:
            hasher.update(memoryview(piece))
        assert hasher.digest() == digest(name, b"".join(pieces))


def test_choice_takes_the_first_known_name_and_falls_back_to_sha256() -> None:
    assert choose_digest([]) == SHA256
    assert choose_digest(["md5", "crc32c"]) == SHA256
    assert choose_digest(["md5", BLAKE3, XXH3_128]) == BLAKE3
    assert choose_digest([XXH3_128, SHA256], implemented=[SHA256]) == SHA256


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="md5"):
        new_hasher("md5")
