"""A loopback TCP proxy that can cut the network: stop forwarding (a black hole) or drop every connection.

Used by the fault tests: a client talks to the worker through it, and the test cuts the path mid-request.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["CutProxy"]


class CutProxy:
    """``async with CutProxy(port) as proxy``: forwards ``127.0.0.1:proxy.port`` to ``127.0.0.1:port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarding = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        """The ws:// URL that reaches the worker through the proxy."""
        return f"ws://127.0.0.1:{self.port}"

    def black_hole(self) -> None:
        """Stop forwarding in both directions; the connections stay open (a cable pulled, no RST)."""
        self.forwarding = False

    def drop(self) -> None:
        """Close every proxied connection at once (both sides see the TCP connection end)."""
        self.forwarding = False
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_writer, writer}
        for source, sink in ((client_reader, writer), (reader, client_writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await source.read(65536):
                if self.forwarding:
                    sink.write(data)
                    await sink.drain()
            sink.close()
