"""Bearer tokens (docs/protocol.md section 15): the token file, and a Hello token mapped to an identity.

Tokens are compared in constant time, and every configured token is compared on every attempt, so the
time an answer takes reveals neither whether a token matched nor which one did.

A token file may hold a token's SHA-256 instead of the token (``alice sha256:<64 hex digits>``), so that
the file itself gives no client access: the given token is hashed and the digests compared, still in
constant time. ``python -m fedproto.server.tokens TOKEN`` prints the line's ``sha256:`` form.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["ANONYMOUS", "HASHED_PREFIX", "TokenTable", "hash_token", "identity_of_token", "load_token_file"]

#: The identity every client shares when the worker requires no token (section 15).
ANONYMOUS = "anonymous"
#: How a configured token says it is the SHA-256 of the token, in hex, rather than the token itself.
HASHED_PREFIX = "sha256:"


def hash_token(token: str) -> str:
    """The ``sha256:<hex>`` form of a token, to configure in its place."""
    return HASHED_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def identity_of_token(token: str) -> str:
    """The identity of a token configured without one: derived from its hash, so it never reveals it."""
    return "id-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def load_token_file(path: str | Path) -> dict[str, str]:
    """Read ``identity token`` (or ``identity:token``) lines into {identity: token}; # starts a comment.

    The token may be given hashed, ``identity sha256:<64 hex digits>`` (:func:`hash_token`); a token that
    itself starts with ``sha256:`` therefore cannot be configured in clear.

    A line holding only a token gets an identity derived from the token's hash (:func:`identity_of_token`),
    so that identities never reveal tokens.
    """
    tokens: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) == 1 and ":" in line and not line.startswith(HASHED_PREFIX):
            parts = line.replace(":", " ", 1).split()  # identity:token
        if len(parts) == 1:
            identity, token = identity_of_token(parts[0]), parts[0]
        elif len(parts) == 2:
            identity, token = parts
        else:
            raise ValueError(f"{path}:{number}: expected 'IDENTITY TOKEN' or 'TOKEN'")
        if identity in tokens:
            raise ValueError(f"{path}:{number}: identity {identity!r} appears twice")
        tokens[identity] = token
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


class TokenTable:
    """The tokens a worker accepts: {identity: token}, a list of tokens, or None (no token required)."""

    def __init__(self, tokens: Mapping[str, str] | Iterable[str] | None = None) -> None:
        if tokens is None:
            pairs: list[tuple[str, str]] = []
        elif isinstance(tokens, Mapping):
            pairs = list(tokens.items())
        else:
            pairs = [(identity_of_token(t), t) for t in tokens]
        for identity, token in pairs:
            if not token or not identity:
                raise ValueError("tokens and identities must be non-empty")
        # (digest, identity): plain tokens are hashed too, so every comparison is of 32 bytes with 32
        # bytes, whatever the lengths of the configured and given tokens
        self._secrets = [(_digest_of(token), identity) for identity, token in pairs]

    @property
    def required(self) -> bool:
        """Whether clients must present a token (False: every client is :data:`ANONYMOUS`)."""
        return bool(self._secrets)

    @property
    def identities(self) -> frozenset[str]:
        """The identities tokens map to (empty when no token is required)."""
        return frozenset(identity for _, identity in self._secrets)

    def authenticate(self, token: str) -> str | None:
        """The identity ``token`` belongs to, :data:`ANONYMOUS` when none is required, None if refused."""
        if not self._secrets:
            return ANONYMOUS
        given = hashlib.sha256(token.encode()).digest()
        found = None
        for secret, identity in self._secrets:
            # Every token is compared, so timing reveals neither which token matched nor where.
            if hmac.compare_digest(given, secret):
                found = identity
        return found


def _digest_of(configured: str) -> bytes:
    """The SHA-256 a configured token stands for: given as ``sha256:<hex>``, or of the token itself."""
    if configured.startswith(HASHED_PREFIX):
        hex_digest = configured[len(HASHED_PREFIX) :]
        try:
            digest = bytes.fromhex(hex_digest)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ValueError(f"a hashed token is {HASHED_PREFIX} and 64 hex digits")
        return digest
    return hashlib.sha256(configured.encode()).digest()


if __name__ == "__main__":
    import sys

    for argument in sys.argv[1:]:
        print(hash_token(argument))
