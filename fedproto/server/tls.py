"""The worker's TLS: a server context from a certificate chain and its key (``wss://``, section 2)."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["server_ssl_context"]


def server_ssl_context(cert: str | Path | None, key: str | Path | None) -> ssl.SSLContext | None:
    """A TLS server context for ``cert`` and ``key``; None when neither is given (plain ``ws://``).

    Giving only one of the two is an error rather than a silent fallback to an unencrypted socket.
    """
    if not (cert or key):
        return None
    if not (cert and key):
        raise ValueError("TLS needs both a certificate and a key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context
