"""SHA-256 digests of chunked transfers, taken on a thread beside the event loop.

A chunked transfer is verified as it arrives (docs/protocol.md section 7.3): each chunk is copied into
place and fed to a SHA-256. Hashing on the event loop's thread costs as much as the copy and the
framing together, and nothing else moves on the connection meanwhile. :class:`BackgroundSha256` hands
each update to one hashing thread instead; hashlib releases the GIL while it hashes, so the loop goes on
receiving the next chunk while the last one is hashed, and only :meth:`BackgroundSha256.digest` waits.

The sessions stay free of threads: they take a ``hasher`` factory (``hashlib.sha256`` by default) and
the worker and the client pass :class:`BackgroundSha256`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

__all__ = ["BackgroundSha256", "Hasher"]


class Hasher(Protocol):
    """What a session needs of a digest: ``hashlib.sha256()`` objects have it."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Feed the next bytes."""

    def digest(self) -> bytes:
        """The digest of everything fed so far."""
        ...


# One thread for the process: updates of one transfer must run in order, and a few transfers at once
# share it fairly in arrival order. At about 1 GB/s it outruns the sockets that feed it.
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _hashing_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedproto-sha256")
        return _executor


class BackgroundSha256:
    """A SHA-256 whose updates run on a background thread, in the order they were given.

    The caller must not change the bytes it passed to :meth:`update` until :meth:`digest` returns
    (chunk assembly writes each region once, so it never does).
    """

    __slots__ = ("_hasher", "_last", "_submit")

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
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
