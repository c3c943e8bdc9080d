"""What the handler tests share: a connection over a real, handshaken session, and request helpers.

Each handler gets a :class:`WorkerServices` built by the ``services`` fixture and a connection whose
session is a real :class:`ServerSession`, so a request's event is exactly what the shell would pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from fedproto import codec, hashing
from fedproto.server.dispatch import Reply, dispatcher
from fedproto.server.handlers import HANDLERS
from fedproto.server.services import WorkerServices
from fedproto.session import ClientSession, Event, RequestReceived, SendFrame, ServerSession
from fedproto.session.transfers import ChunkPieces
from fedproto.types import Limits
from fedproto_pb.v1 import objects_pb2

#: The chunk size of the fake connection's session: small, so downloads come in several chunks.
CHUNK_BYTES = 64


class FakeConnection:
    """A handler's connection: a handshaken session, and lists of what was sent and notified.

    Its client offers ``digests`` (the client's default offer unless given), as the worker's would see; its
    session advertises ``capabilities`` (none unless given).
    """

    def __init__(
        self,
        identity: str = "alice",
        digests: Sequence[str] = hashing.PREFERRED_DIGESTS,
        capabilities: Sequence[str] = (),
    ) -> None:
        self.session = ServerSession(
            server_id="test",
            server_name="test",
            limits=Limits(chunk_bytes=CHUNK_BYTES, max_frame_bytes=4096),
            capabilities=list(capabilities),
            authenticate=lambda token: identity,
        )
        self.client = ClientSession(digests=digests)
        for event in self.session.receive_frame(self.client.hello()):
            if isinstance(event, SendFrame):
                self.client.receive_frame(event.data)
        self.sent: list[bytes] = []
        self.notes: list[tuple[str, Any]] = []

    @property
    def identity(self) -> str:
        return self.session.identity or ""

    async def send(self, frame: bytes | ChunkPieces) -> None:
        # a chunk may come as its pieces; the frame on the wire is their concatenation
        self.sent.append(frame if isinstance(frame, bytes) else b"".join(frame))

    async def send_all(self, frames: Iterable[bytes | ChunkPieces]) -> None:
        for frame in frames:
            await self.send(frame)

    async def notify(self, topic: str, payload: Any) -> None:
        self.notes.append((topic, payload))

    def receive(self, **body: Any) -> RequestReceived:
        """The event the session makes of a request from the client."""
        _, frame = self.client.request(**body)
        [event] = [e for e in self.session.receive_frame(frame) if isinstance(e, RequestReceived)]
        return event

    def client_events(self) -> list[Event]:
        """What the client makes of the frames the handlers sent themselves."""
        return [event for frame in self.sent for event in self.client.receive_frame(frame)]


async def handle(services: WorkerServices, conn: FakeConnection, **body: Any) -> Reply | None:
    """Run ``body``'s request through the table, as the worker's dispatch does."""
    return await dispatcher(services, HANDLERS)(conn, conn.receive(**body))


def one(reply: Reply | None) -> Any:
    """The message of a reply body ``{kind: message}``."""
    assert reply is not None
    [(_, message)] = reply.items()
    return message


def send_request(object_id: str, values: Sequence[float], tags: Sequence[str] = ()) -> Any:
    """A SendObjectRequest carrying ``values`` inline as a float32 tensor."""
    tensor = codec.tensor_to_proto(torch.tensor(values, dtype=torch.float32))
    return objects_pb2.SendObjectRequest(id=object_id, tags=list(tags), tensor=tensor)
