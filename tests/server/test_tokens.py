"""Token files and the token table (section 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

import fedproto.server
from fedproto.server.tokens import ANONYMOUS, TokenTable, identity_of_token, load_token_file


def test_a_token_file_names_identities_or_derives_them(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# workers\nalice tok-a\nbob:tok-b   # inline comment\n\n  tok-c\n")
    assert load_token_file(path) == {"alice": "tok-a", "bob": "tok-b", identity_of_token("tok-c"): "tok-c"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice tok extra\n", r"tokens:1: expected 'IDENTITY TOKEN' or 'TOKEN'"),
        ("alice t1\nalice t2\n", r"tokens:2: identity 'alice' appears twice"),
        ("# nothing\n\n", r"tokens: no tokens"),
    ],
)
def test_bad_token_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_token_file(path)


def test_derived_identities_do_not_reveal_the_token() -> None:
    identity = identity_of_token("secret-token")
    assert identity.startswith("id-") and "secret" not in identity
    assert identity == identity_of_token("secret-token") != identity_of_token("other-token")


def test_without_tokens_everyone_is_anonymous() -> None:
    table = TokenTable()
    assert not table.required
    assert table.authenticate("") == table.authenticate("anything") == ANONYMOUS


def test_a_token_maps_to_its_identity_and_nothing_else_does() -> None:
    table = TokenTable({"alice": "tok-a", "bob": "tok-b"})
    assert table.required
    assert table.authenticate("tok-a") == "alice" and table.authenticate("tok-b") == "bob"
    assert table.authenticate("tok-") is None and table.authenticate("") is None
    assert TokenTable(["tok-c"]).authenticate("tok-c") == identity_of_token("tok-c")


@pytest.mark.parametrize("tokens", [{"alice": ""}, {"": "tok"}, [""]])
def test_empty_tokens_and_identities_are_refused(tokens: object) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        TokenTable(tokens)  # type: ignore[arg-type]


def test_the_package_still_exports_the_token_helpers() -> None:
    assert fedproto.server.load_token_file is load_token_file and fedproto.server.ANONYMOUS == ANONYMOUS


def test_hashed_tokens_authenticate_like_plain_ones(tmp_path: Path) -> None:
    """A token file may hold sha256:<hex> instead of the token; the token itself is then accepted."""
    from fedproto.server.tokens import hash_token

    path = tmp_path / "tokens"
    path.write_text(f"alice {hash_token('tok-a')}\nbob tok-b\n")
    table = TokenTable(load_token_file(path))
    assert table.authenticate("tok-a") == "alice"
    assert table.authenticate("tok-b") == "bob"
    assert table.authenticate(hash_token("tok-a")) is None  # the file's line is no token
    assert table.authenticate("tok-") is None
    assert table.authenticate("") is None


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "g" * 64, "sha256:" + "ab" * 33])
def test_malformed_hashed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        TokenTable({"alice": bad})


def test_tokens_are_compared_as_fixed_size_digests() -> None:
    """Section 15.1.2: every comparison is of two 32-byte digests, whatever the given token's length."""
    import hmac
    from unittest import mock

    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    table = TokenTable({"alice": "tok-a", "bob": "a-much-longer-token-for-bob"})
    with mock.patch("fedproto.server.tokens.hmac.compare_digest", spy):
        for given in ["", "t", "tok-a", "x" * 1000]:
            table.authenticate(given)
    assert seen and set(seen) == {(32, 32)}
    assert len(seen) == 4 * 2  # every configured token compared on every attempt
