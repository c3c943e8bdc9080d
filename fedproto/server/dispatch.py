"""Requests to handlers: what a handler sees of its connection, and the dispatch the connection calls.

The connection shell (:mod:`fedproto.server._connection`) knows nothing of objects, datasets or
training: it hands each request to a :data:`Dispatch` callable and sends the reply body it returns.
:func:`dispatcher` builds that callable from a table of handlers (:data:`fedproto.server.handlers.HANDLERS`)
and the :class:`~fedproto.server.services.WorkerServices` they share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from fedproto.errors import UnimplementedError
from fedproto.server.services import WorkerServices
from fedproto.session import RequestReceived, ServerSession
from fedproto.session.transfers import ChunkPieces

__all__ = ["Connection", "Dispatch", "Handler", "Reply", "dispatcher"]

#: A terminal reply's body, as keyword arguments of :meth:`ServerSession.reply`: ``{kind: message}``.
Reply = dict[str, Any]


class Connection(Protocol):
    """What a request handler may use of the connection its request came on."""

    @property
    def identity(self) -> str:
        """The client's identity (the handshake is done before any request reaches a handler)."""

    @property
    def session(self) -> ServerSession:
        """The connection's protocol state: frames for downloads and progress, in-flight checks."""

    async def send(self, frame: bytes | ChunkPieces) -> None:
        """Send one frame (a chunk, a progress event) before the request's terminal reply.

        A chunk may come as its pieces (:meth:`~fedproto.session.ServerSession.download` with ``pieces``).
        """

    async def send_all(self, frames: Iterable[bytes | ChunkPieces]) -> None:
        """Send ``frames`` in order (a download), letting other frames go out only between batches."""

    async def notify(self, topic: str, payload: Any) -> None:
        """Push a notification to this client."""


#: Handles one request kind: returns the reply body, or None when it has sent the reply itself.
Handler = Callable[[WorkerServices, Connection, RequestReceived], Awaitable[Reply | None]]
#: Handles any request of a connection: what the connection shell calls for each request.
Dispatch = Callable[[Connection, RequestReceived], Awaitable[Reply | None]]


def dispatcher(services: WorkerServices, handlers: Mapping[str, Handler]) -> Dispatch:
    """A :data:`Dispatch` that runs ``handlers[kind]`` with ``services``; UNIMPLEMENTED for other kinds."""

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply | None:
        handler = handlers.get(event.kind)
        if handler is None:
            raise UnimplementedError(f"{event.kind} is not implemented by this worker")
        return await handler(services, conn, event)

    return dispatch
