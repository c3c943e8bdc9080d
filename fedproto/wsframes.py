"""WebSocket binary frames written and read by fedproto itself on the bulk path (RFC 6455 section 5).

websockets frames every message and parses every frame in Python, and on the way it copies the payload
several times: the client masks a copy of it and both sides serialize header and payload into another
buffer (:meth:`websockets.frames.Frame.serialize`); the reader appends what the socket gave to one buffer,
slices each frame out of it, unmasks that into a third (server side), and the message assembler copies
the client's frames once more into ``bytes``. For a chunked transfer that is about ten passes over every
payload byte in user space, a fifth of both processes' CPU in the profiles, and the generator-based
parser's per-frame work on top. The library offers no way around those copies (no buffer protocol
reader, no writer that takes the payload in pieces), so this module does what they do for one kind of
frame, and leaves everything else to websockets:

- :func:`send_binary` writes one unfragmented binary message given in pieces (the envelope's head, a
  view of the tensor's memory, the tail): unmasked (a server) with one join, masked (a client) in one
  pass from the pieces into the output buffer. It runs inside websockets' own ``send_context`` (state
  checks, write flow control with the connection's write limit, closing on errors) and never while a
  fragmented message is being sent, so its bytes land between websockets' own frames, never inside one.
- :class:`FastFrames` is mixed into websockets' connection classes (through the ``create_connection``
  hook of ``serve`` and ``connect``) and makes them buffered protocols: the event loop reads the socket
  straight into the buffer of the frame being received (``recv_into``). Only frames of an exact, common
  shape take this path: FIN set, no reserved bits, opcode binary, masked as the side requires, a payload
  of :data:`DIRECT_MIN_BYTES` to :data:`DIRECT_MAX_BYTES` within the connection's size limit, while the
  connection is open and websockets holds no partial frame and no fragmented message. Every other
  byte (the HTTP handshake, small frames, text, fragments, pings, pongs, closes, anything malformed or
  too big) is fed to websockets unchanged and in order, so it answers exactly as it would alone. A
  frame taken here is unmasked in place and handed to websockets' message queue as an ordinary frame
  whose data is a ``memoryview``; the queue returns it as it is instead of copying it into ``bytes``.

No extension is ever negotiated on these connections (``compression=None``, :mod:`fedproto.transport`);
:func:`send_binary` refuses to run if one were.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import Assembler
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConcurrencyError
from websockets.frames import Frame, Opcode, apply_mask
from websockets.protocol import CLIENT, OPEN, SERVER

__all__ = [
    "DIRECT_MAX_BYTES",
    "DIRECT_MIN_BYTES",
    "FastClientConnection",
    "FastFrames",
    "FastServerConnection",
    "FrameHeader",
    "Pieces",
    "build_frame",
    "frame_header",
    "mask_into",
    "parse_header",
    "send_binary",
    "send_binary_batch",
]

#: Frames with a smaller payload go through websockets: its per-frame cost is small next to a request's.
DIRECT_MIN_BYTES: Final = 16 * 1024
#: Frames with a larger payload go through websockets too: a direct frame's buffer is allocated whole
#: when its header arrives, while websockets' grows only with the bytes that actually arrive, which is
#: what a connection without a size limit wants against a peer announcing a huge frame.
DIRECT_MAX_BYTES: Final = 64 * 1024 * 1024
#: Bytes read from the socket at a time between frames (headers, small frames).
_STAGE_BYTES: Final = 64 * 1024

#: Below this many bytes, masking is left to websockets' apply_mask alone (numpy's call costs more).
_NUMPY_MIN_BYTES: Final = 256

_BINARY: Final = 0x2
_FIN: Final = 0x80
_MASK_BIT: Final = 0x80

Pieces = Sequence[bytes | bytearray | memoryview]


def frame_header(length: int, mask: bytes | None = None, *, opcode: int = _BINARY) -> bytes:
    """The header of a final frame with a ``length``-byte payload; ``mask`` (4 bytes) for a client's."""
    if length < 0 or length >= 1 << 63:
        raise ValueError(f"frame payload of {length} bytes")
    if mask is not None and len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    flag = _MASK_BIT if mask is not None else 0
    if length < 126:
        head = struct.pack("!BB", _FIN | opcode, flag | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", _FIN | opcode, flag | 126, length)
    else:
        head = struct.pack("!BBQ", _FIN | opcode, flag | 127, length)
    return head + mask if mask is not None else head


class FrameHeader:
    """A parsed frame header: flags, opcode, masking key (or None), payload length, header size."""

    __slots__ = ("fin", "length", "mask", "opcode", "rsv", "size")

    def __init__(self, fin: bool, rsv: int, opcode: int, mask: bytes | None, length: int, size: int) -> None:
        self.fin, self.rsv, self.opcode, self.mask, self.length, self.size = (
            fin,
            rsv,
            opcode,
            mask,
            length,
            size,
        )


def parse_header(
    buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
) -> FrameHeader | None:
    """The header of the frame at ``buf[start:]``, or None while fewer bytes than the header are there."""
    end = len(buf) if end is None else end
    if end - start < 2:
        return None
    first, second = buf[start], buf[start + 1]
    length = second & 0x7F
    size = 2
    if length == 126:
        size = 4
        if end - start < size:
            return None
        length = int.from_bytes(buf[start + 2 : start + 4], "big")
    elif length == 127:
        size = 10
        if end - start < size:
            return None
        length = int.from_bytes(buf[start + 2 : start + 10], "big")
    mask = None
    if second & _MASK_BIT:
        if end - start < size + 4:
            return None
        mask = bytes(buf[start + size : start + size + 4])
        size += 4
    return FrameHeader(bool(first & _FIN), first & 0x70, first & 0x0F, mask, length, size)


def _key64(mask: bytes, phase: int) -> np.uint64:
    """The masking key as a native 64-bit word for bytes whose first one has position ``phase`` mod 4."""
    rotated = mask[phase % 4 :] + mask[: phase % 4]
    return np.frombuffer(rotated * 2, dtype=np.uint64)[0]


def mask_into(
    out: np.ndarray[Any, Any], data: bytes | bytearray | memoryview, mask: bytes, phase: int
) -> None:
    """``out[i] = data[i] ^ mask[(phase + i) % 4]`` for every byte (``out`` may be ``data``'s own memory).

    Eight bytes at a time with numpy; short inputs and the last ``len % 8`` bytes with websockets'
    ``apply_mask`` (C), which is faster than numpy on a few bytes.
    """
    src = np.frombuffer(data, dtype=np.uint8)
    n = src.size
    words = n // 8 * 8 if n >= _NUMPY_MIN_BYTES else 0
    if words:
        np.bitwise_xor(src[:words].view(np.uint64), _key64(mask, phase), out=out[:words].view(np.uint64))
    if words < n:
        start = (phase + words) % 4
        rest = apply_mask(src[words:].tobytes(), mask[start:] + mask[:start])
        out[words:n] = np.frombuffer(rest, dtype=np.uint8)


def build_frame(pieces: Pieces, mask: bytes | None = None) -> bytes | memoryview:
    """One final binary frame whose payload is the concatenation of ``pieces``, in one buffer.

    Unmasked (``mask`` None): one join. Masked: the payload is masked straight from the pieces into the
    output, one pass over the bytes (RFC 6455 section 5.3).
    """
    length = sum(memoryview(p).nbytes for p in pieces)
    head = frame_header(length, mask)
    if mask is None:
        return b"".join((head, *pieces))
    # The payload starts at an 8-byte boundary of the buffer, so the 64-bit XOR runs aligned.
    start = -len(head) % 8 + len(head)
    buffer = np.empty(start + length, dtype=np.uint8)
    buffer[start - len(head) : start] = np.frombuffer(head, dtype=np.uint8)
    position = 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        mask_into(buffer[start + position : start + position + view.nbytes], view, mask, position)
        position += view.nbytes
    return buffer.data[start - len(head) :]


async def send_binary(ws: Connection, pieces: Pieces) -> None:
    """Send one binary message made of ``pieces`` on ``ws``, framed here (see the module's docstring).

    The same contract as ``ws.send(b"".join(pieces))``: it waits while a fragmented message is being
    sent, raises ``ConnectionClosed`` when the connection is not open, and waits while the write buffer is
    above the connection's write limit.
    """
    await send_binary_batch(ws, iter((pieces,)))


async def send_binary_batch(
    ws: Connection, messages: Iterator[Pieces], stop: Callable[[], bool] | None = None
) -> bool:
    """Send messages from ``messages`` (each as :func:`send_binary` would) until the write buffer is full.

    One send context for all of them, so a chunked transfer pays websockets' per-send work (state checks,
    flush, flow control) once per batch instead of once per chunk; nothing is awaited between two
    messages of a batch, so no other frame lands between them either. The batch ends when the write buffer
    goes above the connection's write limit (then this waits until it drained, as ``send`` does), when
    ``messages`` is exhausted, or before a message when ``stop()`` is true. Returns whether ``messages``
    may have more (call again, after letting other senders go).
    """
    while ws.send_in_progress is not None:
        await asyncio.shield(ws.send_in_progress)
    protocol = ws.protocol
    if protocol.extensions:  # pragma: no cover - fedproto never negotiates one (transport.py)
        raise RuntimeError("hand-built frames need a connection without extensions")
    async with ws.send_context():
        if protocol.expect_continuation_frame:  # pragma: no cover - excluded by send_in_progress
            raise ConcurrencyError("a fragmented message is being sent")
        # anything websockets queued goes out first (it flushes after each of its own writes: normally none)
        ws.send_data()
        transport = ws.transport
        high = transport.get_write_buffer_limits()[1]
        client = protocol.side is CLIENT
        while not (stop is not None and stop()):
            pieces = next(messages, None)
            if pieces is None:
                return False
            transport.write(build_frame(pieces, secrets.token_bytes(4) if client else None))
            if transport.get_write_buffer_size() > high:
                break
    return not (stop is not None and stop())


# --------------------------------------------------------------------------------------------------
# reading


class _DirectAssembler(Assembler):
    """websockets' message queue, returning a frame read by :class:`FastFrames` without a copy.

    ``Assembler.get`` joins a message's frame data into ``bytes``; for a one-frame message whose data is a
    ``memoryview`` (only :class:`FastFrames` makes those) it returns the view itself. The rest is
    websockets' code path, unchanged.
    """

    async def get(self, decode: bool | None = None) -> Any:
        queue = self.frames.queue
        if not self.get_in_progress and not queue and not self.closed:
            # wait for a frame without taking it, so that every frame then goes one of the two ways below
            self.get_in_progress = True
            try:
                waiter = self.frames.get_waiter = self.frames.loop.create_future()
                try:
                    await waiter
                finally:
                    waiter.cancel()
                    self.frames.get_waiter = None
            finally:
                self.get_in_progress = False
        if not self.get_in_progress and queue and not decode:
            frame = queue[0]
            if frame.fin and frame.opcode is Opcode.BINARY:
                # a one-frame binary message: what websockets' join would return, without the join
                # (a memoryview from FastFrames as it is, websockets' own data as bytes)
                queue.popleft()
                self.maybe_resume()
                data = frame.data
                return data if isinstance(data, (memoryview, bytes)) else bytes(data)
        return await super().get(decode)


class FastFrames:
    """Mixed into a websockets ``ClientConnection`` or ``ServerConnection`` (first base): see the module.

    The class it makes must also derive from :class:`asyncio.BufferedProtocol` (last, so that websockets'
    methods come first), which tells the event loop to call ``get_buffer``/``buffer_updated`` instead of
    ``data_received``; whatever is not read here as a direct frame goes to websockets' ``data_received``,
    in order.
    """

    _stage: bytearray
    _staged: int
    _payload: np.ndarray[Any, Any] | None
    _filled: int
    _header: FrameHeader | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """websockets' setup, then the message queue that returns direct frames as they are."""
        super().connection_made(transport)  # type: ignore[misc]
        conn: Any = self
        old = conn.recv_messages
        conn.recv_messages = _DirectAssembler(old.high, old.low, pause=old.pause, resume=old.resume)
        self._stage = bytearray(_STAGE_BYTES)
        self._staged = 0
        self._payload = None
        self._filled = 0
        self._header = None

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the event loop reads the socket into: the frame being received, or the staging buffer."""
        if self._payload is not None:  # the socket's bytes land in the frame's own buffer
            return self._payload.data[self._filled :]
        return memoryview(self._stage)[self._staged :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` arrived where :meth:`get_buffer` said: finish a frame, or sort out the staged bytes."""
        if self._payload is not None:
            self._filled += nbytes
            if self._filled == self._payload.size:
                self._deliver()
            return
        self._staged += nbytes
        self._drain_stage()

    def _direct(self, header: FrameHeader) -> bool:
        """Whether a frame with ``header`` is read here (the conditions in the module's docstring)."""
        conn: Any = self
        protocol = conn.protocol
        if not (header.fin and not header.rsv and header.opcode == _BINARY):
            return False
        if (header.mask is not None) != (protocol.side is SERVER):
            return False
        if not DIRECT_MIN_BYTES <= header.length <= DIRECT_MAX_BYTES:
            return False
        limit = protocol.max_message_size
        if limit is not None and header.length > limit:
            return False
        fragment = protocol.max_fragment_size
        if fragment is not None and header.length > fragment:
            return False
        return bool(protocol.state is OPEN and protocol.current_size is None and not protocol.reader.buffer)

    def _drain_stage(self) -> None:
        conn: Any = self
        protocol = conn.protocol
        stage = self._stage
        pos, end = 0, self._staged
        passed = 0  # stage[passed:pos] is to go to websockets
        view = memoryview(stage)
        try:
            while pos < end:
                if protocol.state is not OPEN or protocol.reader.buffer:
                    pos = end  # handshake, closing, or a frame websockets is in the middle of: all to it
                    break
                if end - pos < 2:
                    break
                second = stage[pos + 1]
                if second & 0x7F < 126:
                    # a short frame (a small request or reply, a control frame) is websockets', skipped
                    # without parsing: small requests pay next to nothing for the bulk path
                    pos += (second & 0x7F) + (6 if second & _MASK_BIT else 2)
                    continue
                header = parse_header(stage, pos, end)
                if header is None:
                    break
                if not self._direct(header):
                    pos += header.size + header.length
                    continue
                if passed < pos:  # frames before this one go to websockets first, in order
                    conn.data_received(view[passed:pos])
                    passed = pos
                    if not self._direct(header):  # what websockets did changed its state
                        continue
                pos += header.size
                have = min(end - pos, header.length)
                payload = np.empty(header.length, dtype=np.uint8)
                payload[:have] = np.frombuffer(stage, dtype=np.uint8, count=have, offset=pos)
                pos += have
                passed = pos
                self._payload, self._filled, self._header = payload, have, header
                if have < header.length:
                    break
                self._deliver()
            # a frame websockets takes may end beyond what arrived: it takes the part that did
            pos = min(pos, end)
            if passed < pos:
                conn.data_received(view[passed:pos])
                passed = pos
        finally:
            view.release()
        rest = end - passed
        if rest:
            stage[:rest] = stage[passed:end]
        self._staged = rest
        if self._payload is None and rest == len(stage):  # a header that does not fit: never (max 14 bytes)
            raise AssertionError("stage full without a frame boundary")  # pragma: no cover

    def _deliver(self) -> None:
        conn: Any = self
        payload, header = self._payload, self._header
        assert payload is not None and header is not None
        self._payload, self._header, self._filled = None, None, 0
        if header.mask is not None:
            mask_into(payload, payload.data, header.mask, 0)
        conn.process_event(Frame(Opcode.BINARY, payload.data, True))

    def eof_received(self) -> None:
        """Staged bytes go to websockets, then the end of the stream (a partial frame is its to report)."""
        self._flush_stage()
        super().eof_received()  # type: ignore[misc]

    def _flush_stage(self) -> None:
        """Bytes not yet given to websockets go to it (a partial frame at EOF is its to report)."""
        if self._staged:
            conn: Any = self
            data = bytes(self._stage[: self._staged])
            self._staged = 0
            conn.data_received(data)


class FastClientConnection(FastFrames, ClientConnection, asyncio.BufferedProtocol):
    """websockets' client connection reading bulk frames with :class:`FastFrames` (``connect``'s factory)."""


class FastServerConnection(FastFrames, ServerConnection, asyncio.BufferedProtocol):
    """websockets' server connection reading bulk frames with :class:`FastFrames` (``serve``'s factory)."""
