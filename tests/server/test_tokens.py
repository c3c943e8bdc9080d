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
