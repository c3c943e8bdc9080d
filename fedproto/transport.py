"""How fedproto uses WebSocket: the settings the worker and the client share (docs/protocol.md section 2).

Both sides open their connections with the options built here, so a change of subprotocol name, of
keep-alive or of buffering happens in one place for both. The module holds settings only; the sockets
live in :mod:`fedproto.server.worker` and :mod:`fedproto.client.async_client`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypedDict

from websockets.typing import Subprotocol

__all__ = [
    "IMPLEMENTATION_NAME",
    "MAX_QUEUE",
    "PING_INTERVAL_SECONDS",
    "PING_TIMEOUT_SECONDS",
    "SUBPROTOCOL",
    "WRITE_LIMIT_BYTES",
    "ClientOptions",
    "ConnectionOptions",
    "SelectSubprotocol",
    "ServerOptions",
    "client_options",
    "connection_options",
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
