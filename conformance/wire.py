"""The suite's only way to talk to a server: a small async test connection over WebSocket.

A :class:`Connection` opens a WebSocket (no compression, no size limit, no keepalive pings), reads every
frame the server sends into an ordered log in the background, and lets a case wait for what it expects
there: the terminal reply of a request (with the chunks or progress events before it), an error with
request_id 0, or the close of the connection. Everything a case did not expect is kept, so a failure
can say what the server did instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from fedproto_pb.v1 import errors_pb2, session_pb2
from fedproto_pb.v1.envelope_pb2 import Envelope

from .checks import codes_text, describe_envelope, fail
from .spec import PROTOCOL_VERSION, REQUESTS, SUBPROTOCOL

__all__ = [
    "EVENT_BODIES",
    "CloseInfo",
    "Connection",
    "Frame",
    "Reply",
    "make_envelope",
    "open_connection",
]

T = TypeVar("T")

#: Bodies a server sends with a request's id before its terminal reply (section 5.3.2).
EVENT_BODIES = frozenset({"chunk", "fit_progress", "weights_manifest"})

#: The client name the suite sends in its Hello.
CLIENT_NAME = "fedproto-conformance"


@dataclass(frozen=True, slots=True)
class Frame:
    """One message the server sent, in arrival order; ``envelope`` is None when it did not parse."""

    index: int
    data: bytes | str
    envelope: Envelope | None

    @classmethod
    def parse(cls, index: int, data: bytes | str) -> Frame:
        """Decode ``data`` as an Envelope when it is a binary frame that parses."""
        if isinstance(data, str):
            return cls(index, data, None)
        envelope = Envelope()
        try:
            envelope.ParseFromString(data)
        except DecodeError:
            return cls(index, data, None)
        return cls(index, data, envelope)

    @property
    def kind(self) -> str | None:
        """The body's field name, or None."""
        return self.envelope.WhichOneof("body") if self.envelope is not None else None

    @property
    def request_id(self) -> int:
        """The envelope's request_id (0 for frames that did not parse)."""
        return self.envelope.request_id if self.envelope is not None else 0

    def describe(self) -> str:
        """How this frame reads in a failure message."""
        if isinstance(self.data, str):
            return f"a text frame {self.data[:40]!r}"
        if self.envelope is None:
            return f"a binary frame of {len(self.data)} bytes that is not an Envelope"
        return describe_envelope(self.envelope)


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How the connection ended: the close code received (1006 when no close frame came)."""

    code: int
    reason: str

    def describe(self) -> str:
        """``connection closed with 1011 ('internal error')``."""
        text = f"connection closed with {self.code}"
        return text + (f" ({self.reason!r})" if self.reason else "")


@dataclass(slots=True)
class Reply:
    """The terminal reply of a request and the events (chunks, progress) that came before it."""

    request_id: int
    envelope: Envelope
    events: list[Envelope] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        """The terminal body's field name."""
        return self.envelope.WhichOneof("body")

    @property
    def error(self) -> errors_pb2.Error | None:
        """The Error, when the request failed."""
        return self.envelope.error if self.kind == "error" else None

    def describe(self) -> str:
        """How this reply reads in a failure message."""
        return describe_envelope(self.envelope)

    def expect(self, kind: str) -> Any:
        """The reply body, which must be ``kind``."""
        if self.kind != kind:
            fail(f"expected {kind} for request {self.request_id}, got {self.describe()}")
        return getattr(self.envelope, kind)

    def expect_error(self, *codes: int) -> errors_pb2.Error:
        """The Error, whose code must be one of ``codes``."""
        error = self.error
        if error is None or error.code not in codes:
            fail(
                f"expected Error{{{codes_text(codes)}}} for request {self.request_id}, got {self.describe()}"
            )
        return error


def make_envelope(
    request_id: int, kind: str | None, message: Message | None = None, *, deadline_ms: int = 0
) -> Envelope:
    """An Envelope with body ``kind`` set to ``message`` (an empty one when None)."""
    envelope = Envelope(request_id=request_id, deadline_ms=deadline_ms)
    if kind is not None:
        body = getattr(envelope, kind)
        body.SetInParent()
        if message is not None:
            body.CopyFrom(message)
    return envelope


class Connection:
    """One WebSocket connection to the server under test, with every received frame kept in order."""

    def __init__(self, ws: ClientConnection, url: str, timeout: float) -> None:
        self.ws = ws
        self.url = url
        self.timeout = timeout
        self.frames: list[Frame] = []
        self.close_info: CloseInfo | None = None
        self.welcome: session_pb2.Welcome | None = None
        self._consumed: set[int] = set()
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- reading ----------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                data = await self.ws.recv()
                self.frames.append(Frame.parse(len(self.frames), data))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            received = self.ws.protocol.close_rcvd
            if received is not None:
                self.close_info = CloseInfo(int(received.code), received.reason)
            else:
                self.close_info = CloseInfo(1006, "")
            self._changed.set()

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self.close_info is not None

    def pending_frames(self) -> list[Frame]:
        """Frames no wait has consumed yet, in arrival order."""
        return [f for f in self.frames if f.index not in self._consumed]

    def consume(self, frame: Frame) -> None:
        """Mark ``frame`` as accounted for."""
        self._consumed.add(frame.index)

    def frames_with_id(self, request_id: int) -> list[Frame]:
        """Every frame received so far that carries ``request_id``."""
        return [f for f in self.frames if f.envelope is not None and f.request_id == request_id]

    def _bad_frame(self) -> Frame | None:
        return next((f for f in self.frames if f.envelope is None), None)

    async def wait_for(self, find: Callable[[], T | None], what: str, timeout: float | None = None) -> T:
        """Wait until ``find()`` returns something; fail naming ``what`` on close or timeout."""
        loop = asyncio.get_running_loop()
        limit = self.timeout if timeout is None else timeout
        deadline = loop.time() + limit
        while True:
            found = find()
            if found is not None:
                return found
            bad = self._bad_frame()
            if bad is not None:
                fail(f"expected {what}, but the server sent {bad.describe()} (section 3.1.1)")
            if self.close_info is not None:
                fail(f"expected {what}, but the {self.close_info.describe()}{self._instead()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                fail(f"expected {what}, but nothing matching arrived within {limit:g} s{self._instead()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _instead(self) -> str:
        pending = self.pending_frames()
        if not pending:
            return ""
        shown = ", ".join(f.describe() for f in pending[:3])
        more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
        return f" (received instead: {shown}{more})"

    def find_terminal(self, request_id: int) -> Reply | None:
        """The terminal reply of ``request_id`` if it has arrived (it and its events are then consumed)."""
        events: list[Frame] = []
        for frame in self.frames:
            if frame.index in self._consumed or frame.envelope is None or frame.request_id != request_id:
                continue
            if frame.kind in EVENT_BODIES:
                events.append(frame)
                continue
            for f in [*events, frame]:
                self._consumed.add(f.index)
            return Reply(request_id, frame.envelope, [e.envelope for e in events if e.envelope is not None])
        return None

    async def reply(self, request_id: int, timeout: float | None = None, what: str | None = None) -> Reply:
        """The terminal reply of ``request_id`` and the events that came before it."""
        return await self.wait_for(
            lambda: self.find_terminal(request_id),
            what or f"a terminal reply for request {request_id}",
            timeout,
        )

    async def connection_error(
        self,
        codes: Iterable[int] | None = None,
        timeout: float | None = None,
        match: Callable[[errors_pb2.Error], bool] | None = None,
    ) -> errors_pb2.Error:
        """The next unconsumed Error with request_id 0 whose code is one of ``codes`` (any when None)."""
        wanted = None if codes is None else set(codes)

        def find() -> errors_pb2.Error | None:
            for frame in self.pending_frames():
                env = frame.envelope
                if env is None or env.request_id != 0 or frame.kind != "error":
                    continue
                if (wanted is None or env.error.code in wanted) and (match is None or match(env.error)):
                    self._consumed.add(frame.index)
                    return env.error
            return None

        what = "an Error" if wanted is None else f"Error{{{codes_text(wanted)}}}"
        return await self.wait_for(find, f"{what} with request_id 0", timeout)

    async def next_frame(self, timeout: float | None = None) -> Frame:
        """The oldest unconsumed frame."""

        def find() -> Frame | None:
            pending = self.pending_frames()
            if pending:
                self._consumed.add(pending[0].index)
                return pending[0]
            return None

        return await self.wait_for(find, "a message from the server", timeout)

    async def expect_close(self, codes: Iterable[int], timeout: float | None = None) -> CloseInfo:
        """Wait for the connection to close; its code must be one of ``codes``."""
        wanted = sorted(set(codes))
        text = " or ".join(str(c) for c in wanted)
        loop = asyncio.get_running_loop()
        limit = self.timeout if timeout is None else timeout
        deadline = loop.time() + limit
        while self.close_info is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                fail(f"expected the connection to close with {text}, but it stayed open{self._instead()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        if self.close_info.code not in wanted:
            fail(f"expected the connection to close with {text}, but the {self.close_info.describe()}")
        return self.close_info

    async def settle(self, seconds: float) -> None:
        """Let ``seconds`` pass (to see whether the server sends anything more)."""
        await asyncio.sleep(seconds)

    # -- sending ----------------------------------------------------------------------------------

    def next_id(self) -> int:
        """A request id not used before on this connection."""
        return next(self._ids)

    async def send(self, envelope: Envelope) -> None:
        """Send one envelope as a binary frame."""
        await self.send_raw(envelope.SerializeToString())

    async def send_raw(self, data: bytes) -> None:
        """Send raw bytes as one binary frame; a close meanwhile is observed by the reader, not here."""
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(data)

    async def send_text(self, text: str) -> None:
        """Send a text frame (which the protocol forbids, section 3.2)."""
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(text)

    async def request(
        self,
        kind: str | None,
        message: Message | None = None,
        *,
        request_id: int | None = None,
        deadline_ms: int = 0,
    ) -> int:
        """Send a request (or any body) and return its request id."""
        rid = self.next_id() if request_id is None else request_id
        await self.send(make_envelope(rid, kind, message, deadline_ms=deadline_ms))
        return rid

    async def call(
        self,
        kind: str | None,
        message: Message | None = None,
        *,
        request_id: int | None = None,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> Reply:
        """Send a request and wait for its terminal reply."""
        rid = await self.request(kind, message, request_id=request_id, deadline_ms=deadline_ms)
        return await self.reply(rid, timeout)

    async def expect(self, kind: str, message: Message | None = None, **options: Any) -> Any:
        """Send a request and return its reply body, which must be the one section 19.1 lists."""
        reply = await self.call(kind, message, **options)
        return reply.expect(REQUESTS[kind].reply)

    async def expect_error(
        self, kind: str, message: Message | None, codes: Sequence[int] | int, **options: Any
    ) -> errors_pb2.Error:
        """Send a request that must end with an Error whose code is one of ``codes``."""
        wanted = (codes,) if isinstance(codes, int) else tuple(codes)
        reply = await self.call(kind, message, **options)
        return reply.expect_error(*wanted)

    async def ping(self, payload: bytes = b"", timeout: float | None = None) -> None:
        """A Ping answered by its Pong: proof that the connection still works."""
        reply = await self.call("ping", session_pb2.Ping(payload=payload), timeout=timeout)
        pong = reply.expect("pong")
        if pong.payload != payload:
            fail(f"Pong for request {reply.request_id} does not echo the Ping's payload (section 6.1.2)")

    # -- the handshake ----------------------------------------------------------------------------

    async def hello(
        self,
        *,
        token: str = "",
        versions: Sequence[int] = (PROTOCOL_VERSION,),
        max_frame_bytes: int = 0,
        client_name: str = CLIENT_NAME,
        request_id: int | None = None,
        digests: Sequence[str] = (),
    ) -> Reply:
        """Send a Hello (offering ``digests``, section 7.5.3) and return its reply (a Welcome or an Error)."""
        hello = session_pb2.Hello(
            versions=list(versions),
            client_name=client_name,
            token=token,
            max_frame_bytes=max_frame_bytes,
            digests=list(digests),
        )
        rid = await self.request("hello", hello, request_id=request_id)
        return await self.reply(rid)

    async def handshake(
        self, *, token: str = "", max_frame_bytes: int = 0, digests: Sequence[str] = ()
    ) -> session_pb2.Welcome:
        """Say Hello and require a Welcome."""
        reply = await self.hello(token=token, max_frame_bytes=max_frame_bytes, digests=digests)
        welcome: session_pb2.Welcome = reply.expect("welcome")
        self.welcome = welcome
        return welcome

    # -- closing ----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the WebSocket (if still open) and stop reading."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


async def open_connection(
    url: str,
    *,
    timeout: float = 5.0,
    subprotocols: Sequence[str] | None = (SUBPROTOCOL,),
    compression: str | None = None,
) -> Connection:
    """Open a WebSocket to ``url`` (no handshake yet)."""
    try:
        ws = await connect(
            url,
            subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
            compression=compression,
            max_size=None,
            max_queue=None,
            ping_interval=None,
            open_timeout=timeout,
            close_timeout=1.0,
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        fail(f"could not open a WebSocket connection to {url}: {exc}")
    return Connection(ws, url, timeout)
