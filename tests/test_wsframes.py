"""The hand-built frames of the bulk path (fedproto.wsframes) against websockets' own framing.

Frames are cross-checked with websockets' serializer and parser (both directions, masked and not, at the
length encodings' boundaries), and the fast reader and writer are run against plain websockets peers on
loopback: big and small messages interleaved, text, fragments, pings, oversized frames and closes must
come out exactly as websockets alone gives them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.speedups import apply_mask
from websockets.streams import StreamReader

from fedproto import codec, wsframes

BOUNDARIES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 300_001]


def _parse(data: bytes, *, mask: bool) -> Frame:
    """websockets' own parser over ``data`` (one whole frame)."""
    reader = StreamReader()
    reader.feed_data(data)
    parser: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        assert not reader.buffer, "bytes left after the frame"
        return done.value
    raise AssertionError("websockets wanted more bytes than the frame has")


@pytest.mark.parametrize("length", BOUNDARIES)
def test_unmasked_header_is_websockets_header(length: int) -> None:
    payload = os.urandom(length)
    ours = wsframes.frame_header(length) + payload
    assert ours == Frame(Opcode.BINARY, payload).serialize(mask=False)
    assert bytes(wsframes.build_frame([payload])) == ours


@pytest.mark.parametrize("length", BOUNDARIES)
def test_masked_frame_parses_back_with_websockets(length: int) -> None:
    payload = os.urandom(length)
    cut = [0, length // 3, length // 3 + 1, length]  # pieces of odd lengths: every mask phase
    pieces = [memoryview(payload)[a:b] for a, b in itertools.pairwise(cut)]
    frame = bytes(wsframes.build_frame(pieces, b"\x01\x82\x43\xf4"))
    parsed = _parse(frame, mask=True)
    assert parsed.opcode is Opcode.BINARY and parsed.fin and bytes(parsed.data) == payload
    header = wsframes.parse_header(frame)
    assert header is not None and header.mask == b"\x01\x82\x43\xf4" and header.length == length
    assert header.size == len(frame) - length


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 1000, 4099])
@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_mask_into_is_websockets_apply_mask(length: int, phase: int) -> None:
    data, mask = os.urandom(length), os.urandom(4)
    out = np.empty(length, dtype=np.uint8)
    wsframes.mask_into(out, data, mask, phase)
    assert out.tobytes() == apply_mask(data, mask[phase:] + mask[:phase])
    wsframes.mask_into(out, out.data, mask, phase)  # in place: masking twice gives the data back
    assert out.tobytes() == data


@pytest.mark.parametrize("length", BOUNDARIES)
def test_parse_header_waits_for_the_whole_header(length: int) -> None:
    frame = Frame(Opcode.BINARY, bytes(length)).serialize(mask=True)
    header = wsframes.parse_header(frame)
    assert header is not None
    for short in range(header.size):
        assert wsframes.parse_header(frame, 0, short) is None
    assert (header.fin, header.rsv, header.opcode, header.length) == (True, 0, 2, length)
    assert header.mask == frame[header.size - 4 : header.size]


def test_frame_header_refuses_what_no_frame_can_be() -> None:
    with pytest.raises(ValueError):
        wsframes.frame_header(-1)
    with pytest.raises(ValueError):
        wsframes.frame_header(1 << 63)
    with pytest.raises(ValueError):
        wsframes.frame_header(3, b"abc")


def test_chunk_pieces_are_the_chunk_frame_and_keep_the_payload_in_place() -> None:
    payload = memoryview(bytearray(os.urandom(5000)))
    head, data, tail = codec.encode_chunk_pieces(7, 4096, payload[100:900], 5000, digest=b"d" * 16)
    assert data.obj is payload.obj  # a view of the caller's memory, not a copy
    joined = head + bytes(data) + tail
    assert joined == codec.encode_chunk_frame(7, 4096, payload[100:900], 5000, digest=b"d" * 16)
    envelope = codec.decode_envelope(joined)
    assert envelope.request_id == 7 and envelope.chunk.offset == 4096 and envelope.chunk.total_bytes == 5000
    assert envelope.chunk.data == bytes(payload[100:900]) and envelope.chunk.digest == b"d" * 16


# --------------------------------------------------------------------------------------------------
# against plain websockets peers on loopback

BIG = wsframes.DIRECT_MIN_BYTES * 3 + 5


async def _echo(ws: ServerConnection) -> None:
    """Echo every message as it came (text stays text), over websockets' own send."""
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def _server(factory: Any, handler: Callable[..., Any], max_size: int | None) -> Any:
    return await serve(
        handler, "127.0.0.1", 0, create_connection=factory, compression=None, max_size=max_size
    )


@pytest.fixture(params=["fast client", "fast server", "both fast"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[ClientConnection]:
    """A client connected to an echo server; one side or both use the fast frames."""
    fast_server = request.param != "fast client"
    fast_client = request.param != "fast server"
    server = await _server(wsframes.FastServerConnection if fast_server else None, _echo, 4 << 20)
    port = server.sockets[0].getsockname()[1]
    factory = wsframes.FastClientConnection if fast_client else None
    ws = await connect(
        f"ws://127.0.0.1:{port}", create_connection=factory, compression=None, max_size=4 << 20
    )
    try:
        yield ws
    finally:
        await ws.close()
        server.close()
        await server.wait_closed()


def _messages() -> list[bytes | str]:
    sizes = [BIG, 10, 2 * BIG + 1, wsframes.DIRECT_MIN_BYTES, wsframes.DIRECT_MIN_BYTES - 1, 0, 70_000, BIG]
    out: list[bytes | str] = [os.urandom(n) for n in sizes]
    out.insert(3, "text between binary frames")
    return out


async def test_messages_come_back_in_order_whatever_their_size(pair: ClientConnection) -> None:
    messages = _messages()
    for message in messages:  # all sent before any is read: frames share reads of the socket
        if isinstance(message, bytes) and len(message) % 2:
            await wsframes.send_binary(pair, [message[:3], memoryview(message)[3:]])
        else:
            await pair.send(message)
    await pair.ping()
    direct = 0
    for message in messages:
        got = await pair.recv()
        assert type(got) is type(message) or isinstance(got, memoryview)
        assert (bytes(got) if not isinstance(got, str) else got) == message
        direct += isinstance(got, memoryview)
    # a fast client reads big frames itself (some may still go through websockets, after a frame it
    # holds part of); a plain one never returns a memoryview
    assert (direct > 0) == isinstance(pair, wsframes.FastFrames)


async def test_frames_above_the_direct_ceiling_go_through_websockets(
    pair: ClientConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wsframes, "DIRECT_MAX_BYTES", BIG - 1)
    message = os.urandom(BIG)
    await wsframes.send_binary(pair, [message])
    got = await pair.recv()
    assert type(got) is bytes and got == message


async def test_fragmented_messages_still_go_through_websockets(pair: ClientConnection) -> None:
    parts = [os.urandom(BIG), os.urandom(7), os.urandom(BIG)]
    await pair.send(parts)  # one message in three frames
    await wsframes.send_binary(pair, [parts[0]])
    assert bytes(await pair.recv()) == b"".join(parts)
    assert bytes(await pair.recv()) == parts[0]


async def test_a_frame_over_the_size_limit_closes_with_1009() -> None:
    server = await _server(wsframes.FastServerConnection, _echo, BIG)
    port = server.sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            await ws.send(os.urandom(BIG))
            assert len(await ws.recv()) == BIG  # at the limit: read directly, echoed
            await ws.send(os.urandom(BIG + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        server.close()
        await server.wait_closed()


async def test_an_unmasked_client_frame_is_a_protocol_error() -> None:
    """A server must refuse unmasked frames (RFC 6455 5.1); the fast reader leaves that to websockets."""
    server = await _server(wsframes.FastServerConnection, _echo, None)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert response.startswith(b"HTTP/1.1 101")
        writer.write(wsframes.frame_header(BIG) + bytes(BIG))
        close = await asyncio.wait_for(reader.read(64), 10)
        assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1002
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_peer_that_stops_mid_frame_ends_the_connection() -> None:
    received: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            received.append(await ws.recv())
        except ConnectionClosed as exc:
            received.append(exc)

    server = await _server(wsframes.FastServerConnection, handler, None)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        frame = bytes(wsframes.build_frame([bytes(BIG)], b"abcd"))
        writer.write(frame[: len(frame) // 2])  # half a direct frame, then the end of the stream
        await writer.drain()
        writer.write_eof()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
        assert received and isinstance(received[0], ConnectionClosed)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_send_binary_on_a_closed_connection_raises_connection_closed(pair: ClientConnection) -> None:
    await pair.close()
    with pytest.raises(ConnectionClosed):
        await wsframes.send_binary(pair, [bytes(BIG)])


async def test_a_batch_sends_every_message_in_order(pair: ClientConnection) -> None:
    messages = [os.urandom(BIG + i) for i in range(5)]
    batches = iter([m[:5], memoryview(m)[5:]] for m in messages)
    rounds = 1
    while await wsframes.send_binary_batch(pair, batches):
        rounds += 1
    assert rounds <= len(messages) + 1
    for message in messages:
        assert bytes(await pair.recv()) == message


async def test_a_batch_stops_before_the_next_message_when_asked(pair: ClientConnection) -> None:
    sent: list[int] = []

    def messages() -> Any:
        for i in range(5):
            sent.append(i)
            yield [bytes([i]) * BIG]

    assert not await wsframes.send_binary_batch(pair, messages(), stop=lambda: len(sent) >= 2)
    assert [bytes(await pair.recv())[0] for _ in range(2)] == [0, 1]
    await wsframes.send_binary(pair, [b"after"])
    assert bytes(await pair.recv()) == b"after"  # nothing else was sent
