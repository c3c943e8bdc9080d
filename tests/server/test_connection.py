"""The connection shell without sockets: a fake WebSocket in, a fake dispatch callable behind it.

What the shell itself decides is checked here: each request runs as its own task and ends with exactly
one terminal frame, whatever the dispatch does (returns a body, returns None, raises a protocol error or
a bug, overruns its deadline, gets cancelled); shutdown drains, then says goodbye and closes 1001.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from fedproto import codec
from fedproto.errors import ErrorCode, NotFoundError
from fedproto.server._connection import ServerConnectionHandler, internal_error
from fedproto.server.dispatch import Connection, Reply
from fedproto.session import ClientSession, CloseCode, RequestReceived, ServerSession
from fedproto.types import Limits
from fedproto_pb.v1 import calls_pb2, envelope_pb2, objects_pb2

WAIT = 5.0


class FakeWebSocket:
    """What the shell uses of a websockets ``ServerConnection``: frames in through a queue, out to one."""

    remote_address = ("127.0.0.1", 4242)

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""

    async def recv(self) -> bytes:
        data = await self.incoming.get()
        if data is None:
            raise ConnectionClosed(None, Close(self.close_code or CloseCode.NORMAL, self.close_reason))
        return data

    async def send(self, data: bytes) -> None:
        if self.close_code is not None:
            raise ConnectionClosed(None, Close(self.close_code, self.close_reason))
        self.outgoing.put_nowait(bytes(data))

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.incoming.put_nowait(None)

    async def next_sent(self) -> envelope_pb2.Envelope:
        return codec.decode_envelope(await asyncio.wait_for(self.outgoing.get(), WAIT))


DispatchFunc = Callable[[Connection, RequestReceived], Awaitable[Reply | None]]


class Harness:
    """A shell serving one fake connection with the given dispatch, and a client session to talk to it."""

    def __init__(self, dispatch: DispatchFunc) -> None:
        self.ws = FakeWebSocket()
        self.session = ServerSession(
            server_id="test",
            server_name="test",
            limits=Limits(max_in_flight=8),
            capabilities=["calls"],
            authenticate=lambda token: "alice" if token == "tok" else None,
        )
        self.shell = ServerConnectionHandler(dispatch, self.ws, self.session)  # type: ignore[arg-type]
        self.client = ClientSession(token="tok")
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.task = asyncio.create_task(self.shell.run())
        self.ws.incoming.put_nowait(self.client.hello())
        welcome = await asyncio.wait_for(self.ws.outgoing.get(), WAIT)
        assert codec.decode_envelope(welcome).WhichOneof("body") == "welcome"
        self.client.receive_frame(welcome)
        assert self.shell.identity == "alice"

    def request(self, deadline: float | None = None, **body: Any) -> int:
        rid, frame = self.client.request(deadline=deadline, **body)
        self.ws.incoming.put_nowait(frame)
        return rid

    async def finish(self) -> None:
        await self.ws.close()
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
async def harness_for() -> AsyncIterator[Callable[[DispatchFunc], Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(dispatch: DispatchFunc) -> Harness:
        harness = Harness(dispatch)
        made.append(harness)
        await harness.open()
        return harness

    yield make
    for harness in made:
        await harness.finish()


def count_reply(count: int) -> Reply:
    return {"count_objects_reply": objects_pb2.CountObjectsReply(count=count)}


async def test_the_dispatch_gets_the_request_and_the_connection(harness_for) -> None:
    seen: list[tuple[Connection, RequestReceived]] = []

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        seen.append((conn, event))
        return count_reply(7)

    h = await harness_for(dispatch)
    rid = h.request(count_objects=objects_pb2.CountObjectsRequest())
    reply = await h.ws.next_sent()
    assert reply.request_id == rid and reply.count_objects_reply.count == 7
    [(conn, event)] = seen
    assert conn is h.shell and conn.identity == "alice"
    assert event.request_id == rid and event.kind == "count_objects" and event.deadline is None


async def test_a_dispatch_that_sent_its_reply_itself_gets_no_second_one(harness_for) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> None:
        await conn.send(conn.session.reply(event.request_id, **count_reply(3)))

    h = await harness_for(dispatch)
    first = h.request(count_objects=objects_pb2.CountObjectsRequest())
    assert (await h.ws.next_sent()).count_objects_reply.count == 3
    second = h.request(count_objects=objects_pb2.CountObjectsRequest())
    reply = await h.ws.next_sent()
    assert (reply.request_id, reply.count_objects_reply.count) == (second, 3), f"a second reply to {first}"


async def test_protocol_errors_and_bugs_become_error_replies(harness_for) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        if event.kind == "count_objects":
            raise NotFoundError("nothing here", details={"why": "test"})
        raise KeyError("a bug")

    h = await harness_for(dispatch)
    rid = h.request(count_objects=objects_pb2.CountObjectsRequest())
    error = await h.ws.next_sent()
    assert error.request_id == rid and error.error.code == ErrorCode.NOT_FOUND
    assert error.error.message == "nothing here" and dict(error.error.details) == {"why": "test"}
    rid = h.request(list_objects=objects_pb2.ListObjectsRequest())
    error = await h.ws.next_sent()
    assert error.request_id == rid and error.error.code == ErrorCode.INTERNAL
    # a bug's text stays on the worker: the client gets a generic message and an id the log shows too
    error_id = error.error.details["error_id"]
    assert re.fullmatch("[0-9a-f]{8}", error_id) and error_id in error.error.message
    assert "KeyError" not in error.error.message and "a bug" not in error.error.message


async def test_an_unexpected_exception_is_logged_with_its_error_id(harness_for, caplog) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        raise ValueError("kaboom secret path /etc/x")

    h = await harness_for(dispatch)
    h.request(list_objects=objects_pb2.ListObjectsRequest())
    error = await h.ws.next_sent()
    error_id = error.error.details["error_id"]
    assert "/etc/x" not in error.error.message
    [record] = [r for r in caplog.records if r.getMessage().startswith("request failed")]
    assert f"error_id={error_id}" in record.getMessage() and record.exc_info is not None
    assert "kaboom secret path /etc/x" in str(record.exc_info[1])


def test_expose_errors_sends_the_exception_text() -> None:
    error = internal_error(ValueError("kaboom"), expose=True)
    assert error.code == ErrorCode.INTERNAL and error.message.startswith("ValueError: kaboom (error id ")
    assert error.details["error_id"] in error.message
    # two failures never share an id
    ids = {internal_error(ValueError()).details["error_id"] for _ in range(20)}
    assert len(ids) == 20


async def test_requests_run_concurrently(harness_for) -> None:
    release = asyncio.Event()

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        if event.kind == "count_objects":
            await release.wait()
            return count_reply(1)
        release.set()
        return {"list_objects_reply": objects_pb2.ListObjectsReply()}

    h = await harness_for(dispatch)
    slow = h.request(count_objects=objects_pb2.CountObjectsRequest())
    fast = h.request(list_objects=objects_pb2.ListObjectsRequest())
    assert [(await h.ws.next_sent()).request_id for _ in range(2)] == [fast, slow]


async def test_a_deadline_ends_the_dispatch_with_deadline_exceeded(harness_for) -> None:
    cancelled = asyncio.Event()

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        assert event.deadline == pytest.approx(0.05)
        try:
            await asyncio.sleep(WAIT * 2)
        finally:
            cancelled.set()
        return count_reply(0)

    h = await harness_for(dispatch)
    rid = h.request(deadline=0.05, count_objects=objects_pb2.CountObjectsRequest())
    error = await h.ws.next_sent()
    assert error.request_id == rid and error.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert cancelled.is_set()


async def test_a_cancel_cancels_the_dispatch_and_answers_cancelled(harness_for) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        started.set()
        try:
            await asyncio.sleep(WAIT * 2)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return count_reply(0)

    h = await harness_for(dispatch)
    rid = h.request(call=calls_pb2.CallRequest(method="sleep"))
    await asyncio.wait_for(started.wait(), WAIT)
    h.ws.incoming.put_nowait(h.client.cancel(rid))
    error = await h.ws.next_sent()
    assert error.request_id == rid and error.error.code == ErrorCode.CANCELLED
    assert cancelled.is_set()


async def test_notify_reaches_the_client(harness_for) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        await conn.notify("topic", {"n": 1})
        return count_reply(0)

    h = await harness_for(dispatch)
    h.request(count_objects=objects_pb2.CountObjectsRequest())
    note = await h.ws.next_sent()
    assert note.notification.topic == "topic"
    assert codec.value_from_proto(note.notification.payload) == {"n": 1}
    assert (await h.ws.next_sent()).WhichOneof("body") == "count_objects_reply"


async def test_shutdown_lets_work_finish_then_closes_going_away(harness_for) -> None:
    release = asyncio.Event()

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        await release.wait()
        return count_reply(5)

    h = await harness_for(dispatch)
    rid = h.request(count_objects=objects_pb2.CountObjectsRequest())
    await asyncio.sleep(0)  # let the request's task start
    shutdown = asyncio.create_task(h.shell.shutdown(grace=WAIT))
    goodbye = await h.ws.next_sent()
    assert goodbye.WhichOneof("body") == "goodbye"
    release.set()
    reply = await h.ws.next_sent()
    assert reply.request_id == rid and reply.count_objects_reply.count == 5
    await asyncio.wait_for(shutdown, WAIT)
    assert h.ws.close_code == CloseCode.GOING_AWAY


async def test_shutdown_cancels_what_outlives_the_grace_period(harness_for) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        await asyncio.sleep(WAIT * 2)
        return count_reply(0)

    h = await harness_for(dispatch)
    rid = h.request(count_objects=objects_pb2.CountObjectsRequest())
    await asyncio.sleep(0)
    await asyncio.wait_for(h.shell.shutdown(grace=0.05), WAIT)
    assert (await h.ws.next_sent()).WhichOneof("body") == "goodbye"
    error = await h.ws.next_sent()
    assert error.request_id == rid and error.error.code == ErrorCode.UNAVAILABLE
    assert h.ws.close_code == CloseCode.GOING_AWAY


async def test_a_client_goodbye_cancels_work_and_closes_normally(harness_for) -> None:
    started = asyncio.Event()

    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        started.set()
        await asyncio.sleep(WAIT * 2)
        return count_reply(0)

    h = await harness_for(dispatch)
    h.request(count_objects=objects_pb2.CountObjectsRequest())
    await asyncio.wait_for(started.wait(), WAIT)
    h.ws.incoming.put_nowait(h.client.goodbye("done"))
    assert h.task is not None
    await asyncio.wait_for(h.task, WAIT)
    assert h.ws.close_code == CloseCode.NORMAL
    assert not h.session.in_flight


async def test_a_refused_hello_closes_the_connection_without_dispatching() -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        raise AssertionError("dispatched without a handshake")

    h = Harness(dispatch)
    h.client = ClientSession(token="wrong")
    task = asyncio.create_task(h.shell.run())
    h.ws.incoming.put_nowait(h.client.hello())
    error = await h.ws.next_sent()
    assert error.error.code == ErrorCode.UNAUTHENTICATED
    await asyncio.wait_for(task, WAIT)
    assert h.ws.close_code is not None and h.shell.identity == ""


async def test_a_goodbye_right_behind_requests_still_cancels_each_before_the_close(harness_for) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        await asyncio.sleep(WAIT * 2)
        return count_reply(0)

    h = await harness_for(dispatch)
    # read in one go: the tasks of these requests are cancelled before they ever run (section 6.3.9)
    rids = [h.request(count_objects=objects_pb2.CountObjectsRequest()) for _ in range(3)]
    h.ws.incoming.put_nowait(h.client.goodbye("done"))
    assert h.task is not None
    await asyncio.wait_for(h.task, WAIT)
    errors = [codec.decode_envelope(h.ws.outgoing.get_nowait()) for _ in rids]
    assert sorted(e.request_id for e in errors) == rids
    assert {e.error.code for e in errors} == {ErrorCode.CANCELLED}
    assert h.ws.outgoing.empty() and h.ws.close_code == CloseCode.NORMAL


async def test_a_shutdown_right_behind_requests_still_answers_each_unavailable(harness_for) -> None:
    async def dispatch(conn: Connection, event: RequestReceived) -> Reply:
        await asyncio.sleep(WAIT * 2)
        return count_reply(0)

    h = await harness_for(dispatch)
    rid = h.request(count_objects=objects_pb2.CountObjectsRequest())
    await asyncio.sleep(0)  # the request is read; its task has not run yet
    await h.shell.shutdown(grace=0)  # in this task: nothing else runs before the cancel
    assert (await h.ws.next_sent()).WhichOneof("body") == "goodbye"
    error = await h.ws.next_sent()
    assert error.request_id == rid and error.error.code == ErrorCode.UNAVAILABLE
