"""PySyft 0.2's websocket wire, emulated: what users migrating to fedproto move tensors with today.

As PySyft 0.2's ``WebsocketClientWorker`` / ``WebsocketServerWorker`` did it:

- a tensor is simplified to PySyft's tuple ``(id, tensor_bin, chain, grad_chain, tags, description,
  serializer)`` where ``tensor_bin`` is ``torch.save``'s output (the default ``torch`` serializer), wrapped
  in an object message, and the whole is packed with ``msgpack``;
- the client sends ``str(binascii.hexlify(packed))`` as one *text* frame (the ``"b'...'"`` repr
  included), and the server takes ``binascii.unhexlify(message[2:-1])``, unpacks it, ``torch.load``s the
  tensor and keeps it;
- a request for the object comes back the same way: the server serializes the stored tensor, hexlifies
  it and sends one text frame; the client strips, unhexlifies, unpacks and loads it.

The client is synchronous (PySyft used ``websocket-client``); the server uses ``websockets`` as PySyft's
did. Run the server with ``python -m benchmarks.baselines.pysyft_wire``.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import io
import signal
from typing import Any

import msgpack
import torch
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import ClientConnection, connect

# Type codes standing in for PySyft's serde codes (their values do not change the bytes' volume).
OBJ_MSG, OBJ_REQ, FORCE_DELETE, TENSOR, STRING, SET, NONE_REPLY = 1, 2, 3, 10, 11, 12, 13
WS_OPTIONS: dict[str, Any] = {"compression": None, "max_size": None, "ping_interval": None}


def _tensor_bin(tensor: torch.Tensor) -> bytes:
    stream = io.BytesIO()
    torch.save(tensor, stream)
    return stream.getvalue()


def serialize_tensor(tensor: torch.Tensor, object_id: int) -> bytes:
    """PySyft 0.2's bytes for an object message carrying ``tensor``."""
    simplified = (
        TENSOR,
        (object_id, _tensor_bin(tensor), None, None, (SET, ()), None, (STRING, (b"torch",))),
    )
    return msgpack.packb((OBJ_MSG, simplified), use_bin_type=True)


def deserialize(data: bytes) -> Any:
    """Unpack a message: ``(kind, object id, tensor)`` for a tensor, else ``(kind, body, None)``."""
    kind, body = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)
    if kind in (OBJ_MSG, TENSOR) and body and body[0] == TENSOR:
        _, (object_id, tensor_bin, *_rest) = body
        return kind, object_id, torch.load(io.BytesIO(tensor_bin), weights_only=True)
    return kind, body, None


def to_text(data: bytes) -> str:
    """What PySyft put in a text frame: ``str(binascii.hexlify(data))``."""
    return str(binascii.hexlify(data))


def from_text(message: str) -> bytes:
    """What PySyft took out of a text frame: ``binascii.unhexlify(message[2:-1])``."""
    return binascii.unhexlify(message[2:-1])


# --------------------------------------------------------------------------------------------------
# server


async def _handler(ws: ServerConnection) -> None:
    objects: dict[int, torch.Tensor] = {}
    async for message in ws:
        assert isinstance(message, str)
        kind, body, tensor = deserialize(from_text(message))
        if kind == OBJ_MSG and tensor is not None:
            objects[int(body)] = tensor
            reply = msgpack.packb((NONE_REPLY, None), use_bin_type=True)
        elif kind == OBJ_REQ:
            object_id = int(body[0])
            reply = serialize_tensor(objects[object_id], object_id)
        elif kind == FORCE_DELETE:
            objects.pop(int(body[0]), None)
            reply = msgpack.packb((NONE_REPLY, None), use_bin_type=True)
        else:
            reply = msgpack.packb((NONE_REPLY, None), use_bin_type=True)
        text = to_text(reply)
        del reply, tensor
        await ws.send(text)


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(_handler, host, port, **WS_OPTIONS) as server:
        print(f"READY {next(iter(server.sockets)).getsockname()[1]}", flush=True)
        await stop.wait()


# --------------------------------------------------------------------------------------------------
# client


def open_client(port: int) -> ClientConnection:
    """A synchronous connection, as PySyft's client had."""
    return connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None)


def send(ws: ClientConnection, tensor: torch.Tensor, object_id: int) -> None:
    """Store ``tensor`` on the server under ``object_id``."""
    ws.send(to_text(serialize_tensor(tensor, object_id)))
    message = ws.recv()
    assert isinstance(message, str)
    from_text(message)


def get(ws: ClientConnection, object_id: int) -> torch.Tensor:
    """Fetch the tensor stored under ``object_id``."""
    ws.send(to_text(msgpack.packb((OBJ_REQ, (object_id,)), use_bin_type=True)))
    message = ws.recv()
    assert isinstance(message, str)
    _, _, tensor = deserialize(from_text(message))
    assert tensor is not None
    return tensor


def delete(ws: ClientConnection, object_id: int) -> None:
    """Drop the tensor stored under ``object_id``."""
    ws.send(to_text(msgpack.packb((FORCE_DELETE, (object_id,)), use_bin_type=True)))
    ws.recv()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
