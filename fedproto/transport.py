"""How fedproto uses WebSocket: the settings the worker and the client share (docs/protocol.md section 2).

Both sides open their connections with the options built here, so a change of subprotocol name, of
keep-alive or of buffering happens in one place for both. The module holds settings only; the sockets
live in :mod:`fedproto.server.worker` and :mod:`fedproto.client.async_client`. One setting is the
process's: how glibc's malloc keeps payload-sized buffers (:func:`keep_payload_buffers`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypedDict

from websockets.typing import Subprotocol

__all__ = [
    "IMPLEMENTATION_NAME",
    "MAX_QUEUE",
    "MMAP_THRESHOLD_BYTES",
    "PING_INTERVAL_SECONDS",
    "PING_TIMEOUT_SECONDS",
    "SUBPROTOCOL",
    "TRIM_THRESHOLD_BYTES",
    "WRITE_LIMIT_BYTES",
    "ClientOptions",
    "ConnectionOptions",
    "SelectSubprotocol",
    "ServerOptions",
    "client_options",
    "connection_options",
    "keep_payload_buffers",
    "max_message_size",
    "select_subprotocol",
    "server_options",
]

#: The WebSocket subprotocol name of protocol v1 (section 2).
SUBPROTOCOL: Final = Subprotocol("fedproto.v1")
#: How this implementation names itself in Hello.client_name and Welcome.server_name (section 4).
IMPLEMENTATION_NAME: Final = "fedproto-python/0.1"
#: Seconds between keep-alive pings, and how long a pong may take before the connection is dropped.
PING_INTERVAL_SECONDS: Final = 20.0
PING_TIMEOUT_SECONDS: Final = 60.0
#: Received frames buffered before websockets stops reading the socket (back-pressure on the peer).
MAX_QUEUE: Final = 64
#: Bytes buffered for sending before a send waits: a chunk of a big transfer fits without waiting.
WRITE_LIMIT_BYTES: Final = 4 * 1024 * 1024

#: What websockets' ``serve`` calls to pick a subprotocol: (connection, offered) -> chosen or None.
SelectSubprotocol = Callable[[Any, Sequence[Subprotocol]], "Subprotocol | None"]


class ConnectionOptions(TypedDict):
    """The keyword arguments of websockets' ``serve`` and ``connect`` that both sides set alike."""

    compression: str | None
    max_size: int | None
    ping_interval: float | None
    ping_timeout: float | None
    max_queue: int | None
    write_limit: int


class ServerOptions(ConnectionOptions):
    """The worker's keyword arguments for websockets' ``serve``."""

    subprotocols: list[Subprotocol]
    select_subprotocol: SelectSubprotocol
    server_header: str | None


class ClientOptions(ConnectionOptions):
    """The client's keyword arguments for websockets' ``connect``."""

    subprotocols: list[Subprotocol]
    user_agent_header: str | None
    proxy: str | None


def max_message_size(max_frame_bytes: int) -> int | None:
    """The websockets ``max_size`` for a frame limit: 0 means no limit, which websockets spells None."""
    if max_frame_bytes < 0:
        raise ValueError(f"max_frame_bytes must be >= 0, not {max_frame_bytes}")
    return max_frame_bytes or None


def connection_options(max_frame_bytes: int) -> ConnectionOptions:
    """Options for either side of a connection that accepts frames of up to ``max_frame_bytes``."""
    return ConnectionOptions(
        # Tensors do not compress; permessage-deflate would only cost CPU (section 2).
        compression=None,
        max_size=max_message_size(max_frame_bytes),
        ping_interval=PING_INTERVAL_SECONDS,
        ping_timeout=PING_TIMEOUT_SECONDS,
        max_queue=MAX_QUEUE,
        write_limit=WRITE_LIMIT_BYTES,
    )


def select_subprotocol(connection: object, offered: Sequence[str]) -> Subprotocol | None:
    """The worker's choice among the client's subprotocols.

    Offered: use it. Not offered: still serve, without one (section 2 forbids refusing such clients).
    """
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def server_options(max_frame_bytes: int) -> ServerOptions:
    """The worker's options: the shared ones, the subprotocol, and no ``Server`` header."""
    return ServerOptions(
        **connection_options(max_frame_bytes),
        subprotocols=[SUBPROTOCOL],
        select_subprotocol=select_subprotocol,
        server_header=None,
    )


def client_options(max_frame_bytes: int) -> ClientOptions:
    """The client's options: the shared ones, the subprotocol, no ``User-Agent`` header, no proxy."""
    return ClientOptions(
        **connection_options(max_frame_bytes),
        subprotocols=[SUBPROTOCOL],
        user_agent_header=None,
        proxy=None,
    )


# --------------------------------------------------------------------------------------------------
# the process's allocator
#
# Keeping payload-sized buffers in the heap between transfers (glibc's malloc), set once per process.
#
# A transfer allocates and frees buffers of a chunk's size many times a second: frames built and parsed
# by websockets, chunks, payloads. glibc serves a buffer from its heap only while it is below the *mmap
# threshold*, and hands the heap's free top back to the kernel once that top exceeds the *trim threshold*;
# both start at 128 KiB and rise with the largest buffer the process has freed so far ("dynamic
# thresholds"). So whether a 1 MiB round trip reuses the memory of the previous one or has the kernel
# fault in and zero every page again (about 650 page faults per round trip, twice the client's CPU time,
# measured) depended on what the process happened to free before it.
#
# :func:`keep_payload_buffers` fixes both at the highest values glibc's own dynamic rule reaches on 64-bit
# systems (an mmap threshold of 32 MiB, a trim threshold of twice that): the state a process is in anyway
# once it has freed one 32 MiB buffer, reached from the start. Buffers above 32 MiB (the payload of a big
# transfer) are still mapped and unmapped on their own, so nothing large stays in the heap.
#
# It does nothing where malloc is not glibc's, and nothing when the environment sets glibc's malloc
# parameters itself (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
# ``MALLOC_MMAP_MAX_`` or ``glibc.malloc`` tunables): whoever set them chose, for example to measure live
# memory with a low mmap threshold.

#: glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems: the ceiling of its dynamic mmap threshold.
MMAP_THRESHOLD_BYTES: Final = 32 << 20
#: What glibc sets the trim threshold to when it raises the mmap threshold: twice that.
TRIM_THRESHOLD_BYTES: Final = 2 * MMAP_THRESHOLD_BYTES

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

_ENVIRONMENT: Final = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)

_lock = threading.Lock()
_outcome: bool | None = None


def _environment_chooses() -> bool:
    return any(name in os.environ for name in _ENVIRONMENT) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    )


def keep_payload_buffers() -> bool:
    """Set glibc's mmap and trim thresholds as the comment above says, once; True when they are set.

    False (and nothing changed) where malloc is not glibc's or the environment sets its parameters.
    The worker calls it when it starts and the client when it connects; calling it again is free.
    """
    global _outcome
    with _lock:
        if _outcome is None:
            _outcome = _apply()
        return _outcome


def _apply() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or _environment_chooses():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: setting either one stops glibc's dynamic adjustment of both
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
