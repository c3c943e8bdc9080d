"""Integrity digests of tensor payloads (docs/protocol.md section 7.5), and where they are computed.

A connection uses one digest algorithm, chosen in the handshake: ``sha256`` (mandatory, the default),
``blake3`` or ``xxh3-128``. This module names them, computes them, and picks one from a client's offer.

Where the work runs matters as much as the algorithm. SHA-256 and BLAKE3 cost about as much as moving the
bytes, so :class:`BackgroundHasher` feeds them on one thread beside the event loop (hashlib and blake3
release the GIL while they hash): the loop goes on receiving the next chunk while the last one is hashed,
and only :meth:`BackgroundHasher.digest` waits. XXH3 hashes tens of GB/s, far less than handing a chunk
to a thread costs, so :func:`background_hasher` gives it the plain in-line hasher.

The sessions stay free of threads: they take a ``hasher`` factory (name -> :class:`Hasher`), and the
worker and the client pass :func:`background_hasher`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, Protocol, cast

import blake3
import xxhash

__all__ = [
    "BLAKE3",
    "DIGEST_SIZES",
    "IMPLEMENTED_DIGESTS",
    "PREFERRED_DIGESTS",
    "SHA256",
    "XXH3_128",
    "BackgroundHasher",
    "BackgroundSha256",
    "Hasher",
    "background_hasher",
    "choose_digest",
    "digest",
    "new_hasher",
]

#: The algorithm names of section 7.5.1.
SHA256: Final = "sha256"
BLAKE3: Final = "blake3"
XXH3_128: Final = "xxh3-128"

#: Digest length in bytes of each algorithm this implementation computes (section 7.5.1).
DIGEST_SIZES: Final = {SHA256: 32, BLAKE3: 32, XXH3_128: 16}
#: Every algorithm implemented here; ``sha256`` is mandatory (section 7.5.2).
IMPLEMENTED_DIGESTS: Final = frozenset(DIGEST_SIZES)
#: What the Python client offers by default, fastest first. XXH3-128 catches accidental corruption only
#: (section 7.5.10): a client that needs a digest to identify content offers ``("blake3", "sha256")``.
PREFERRED_DIGESTS: Final = (XXH3_128, BLAKE3, SHA256)


class Hasher(Protocol):
    """What a session needs of a digest: ``hashlib.sha256()`` objects have it."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Feed the next bytes."""

    def digest(self) -> bytes:
        """The digest of everything fed so far."""
        ...


class _Xxh3Hasher:
    """XXH3-128 in its canonical big-endian form (xxhash's ``digest()``), fed without copies."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = xxhash.xxh3_128()

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._state.update(data)

    def digest(self) -> bytes:
        return self._state.digest()


_FACTORIES: Final[dict[str, Callable[[], Hasher]]] = {
    SHA256: hashlib.sha256,
    # one thread (blake3's default): the CPUs are shared with the transfer itself; SIMD still applies
    BLAKE3: cast("Callable[[], Hasher]", blake3.blake3),
    XXH3_128: _Xxh3Hasher,
}


def new_hasher(name: str) -> Hasher:
    """A fresh in-line hasher of algorithm ``name``; ``ValueError`` for a name not implemented here."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(
            f"digest algorithm {name!r} is not implemented (known: {sorted(_FACTORIES)})"
        ) from None


def digest(name: str, data: bytes | bytearray | memoryview) -> bytes:
    """The digest of ``data`` under algorithm ``name``, in one pass."""
    hasher = new_hasher(name)
    hasher.update(data)
    return hasher.digest()


def choose_digest(
    offered: Sequence[str], implemented: Sequence[str] | frozenset[str] = IMPLEMENTED_DIGESTS
) -> str:
    """The server's choice (section 7.5.4): the first offered name implemented here, else ``sha256``."""
    for name in offered:
        if name in implemented:
            return name
    return SHA256


# One thread for the process: updates of one transfer must run in order, and a few transfers at once
# share it fairly in arrival order. At about 1 GB/s (SHA-256) it outruns the sockets that feed it.
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _hashing_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedproto-digest")
        return _executor


class BackgroundHasher:
    """A hasher whose updates run on a background thread, in the order they were given.

    The caller must not change the bytes it passed to :meth:`update` until :meth:`digest` returns
    (chunk assembly writes each region once, so it never does).
    """

    __slots__ = ("_hasher", "_last", "_submit")

    def __init__(self, name: str = SHA256) -> None:
        self._hasher = new_hasher(name)
        self._last: Future[None] | None = None
        self._submit: Callable[..., Future[None]] = _hashing_executor().submit

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Queue ``data`` to be hashed after everything queued before it."""
        self._last = self._submit(self._hasher.update, data)

    def digest(self) -> bytes:
        """Wait for the queued updates, then return the digest."""
        if self._last is not None:
            self._last.result()
        return self._hasher.digest()


class BackgroundSha256(BackgroundHasher):
    """A :class:`BackgroundHasher` of SHA-256 (the algorithm when none was negotiated)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(SHA256)


def background_hasher(name: str) -> Hasher:
    """The hasher a worker or client uses for a transfer: on the hashing thread unless in-line is cheaper.

    XXH3 runs at tens of GB/s: a thread hand-off per chunk would cost more than the hashing it moves.
    """
    if name == XXH3_128:
        return new_hasher(name)
    return BackgroundHasher(name)
