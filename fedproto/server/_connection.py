"""The I/O shell around one server-side connection.

It moves frames between a websockets connection and a :class:`~fedproto.session.ServerSession`, runs
each request as its own task (so a slow call never holds up anything else, section 5.4), enforces
deadlines and cancels, and drains or cancels in-flight work when the connection or the worker closes.
Every protocol rule is decided by the session, and what a request does by the dispatch callable it is
given (:func:`fedproto.server.dispatch.dispatcher`); this module only acts on their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from fedproto.errors import (
    DeadlineExceededError,
    InternalError,
    ProtocolError,
    RequestCancelledError,
    UnavailableError,
)
from fedproto.server.dispatch import Dispatch
from fedproto.session import (
    CloseCode,
    CloseConnection,
    Event,
    GoodbyeReceived,
    HandshakeCompleted,
    RequestCancelled,
    RequestReceived,
    SendFrame,
    ServerSession,
    UploadStarted,
)
from fedproto.session.transfers import ChunkPieces
from fedproto.wsframes import send_binary, send_binary_batch

__all__ = ["ServerConnectionHandler", "internal_error"]

log = logging.getLogger("fedproto.worker")

#: Why a request task was cancelled, which decides the error it ends with.
_CLIENT_CANCEL = "client"
_SHUTDOWN = "shutdown"
_CLOSED = "closed"


class ServerConnectionHandler:
    """Serves one client connection: frames through ``session``, requests through ``dispatch``.

    The handler is the :class:`~fedproto.server.dispatch.Connection` that ``dispatch`` receives with
    each request. A request that fails with an unexpected exception ends with ``INTERNAL``: a generic
    message and an error id the log shows beside the traceback, or, with ``expose_errors``, the
    exception's type and text (see :func:`internal_error`).
    """

    def __init__(
        self, dispatch: Dispatch, ws: ServerConnection, session: ServerSession, *, expose_errors: bool = False
    ) -> None:
        self._dispatch = dispatch
        self.expose_errors = expose_errors
        self.ws = ws
        self.session = session
        self.peer = _peer(ws)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancel_reason: dict[int, str] = {}
        self._draining = False
        self._closing = False
        # chunked uploads waiting for chunks have no task yet: their deadlines run on timers
        self._upload_timers: dict[int, asyncio.TimerHandle] = {}
        self._upload_started: dict[int, float] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._last_frame = 0.0

    @property
    def identity(self) -> str:
        """The client's identity once the handshake is done ("" before)."""
        return self.session.identity or ""

    # -- the receive loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; never raises for anything the client does."""
        limits = self.session.limits
        close_code: int | None = None
        try:
            try:
                first = await asyncio.wait_for(self.ws.recv(), limits.handshake_timeout_seconds or None)
            except TimeoutError:
                log.info("handshake timeout peer=%s", self.peer)
                await self.ws.close(CloseCode.POLICY_VIOLATION, "handshake timeout")
                return
            self._last_frame = asyncio.get_running_loop().time()
            await self._apply(self.session.receive_frame(first))
            # One watchdog for idleness instead of a timeout around every receive: a timeout per frame
            # costs a timer (or a task) per request, a fifth of the receive loop's time at high rates.
            watchdog = asyncio.create_task(self._watch_idle(limits.idle_timeout_seconds))
            try:
                while not self._closing:
                    message = await self.ws.recv()
                    self._last_frame = asyncio.get_running_loop().time()
                    await self._apply(self.session.receive_frame(message))
            finally:
                watchdog.cancel()
        except ConnectionClosed as exc:
            close_code = exc.rcvd.code if exc.rcvd else None
        except Exception:  # a bug here must not take the worker down with it
            log.exception("connection failed peer=%s identity=%s", self.peer, self.identity)
            with contextlib.suppress(Exception):
                await self.ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            for timer in self._upload_timers.values():
                timer.cancel()
            await self._cancel_all(_CLOSED)
            log.info(
                "connection closed peer=%s identity=%s code=%s",
                self.peer,
                self.identity,
                close_code if close_code is not None else self.ws.close_code,
            )

    async def _watch_idle(self, idle: float) -> None:
        """Close with 1001 after ``idle`` seconds without a frame and with no work in flight."""
        if not idle:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._last_frame + idle - loop.time(), 0.05))
            if loop.time() - self._last_frame >= idle and not self._tasks and not self.session.uploads:
                log.info("idle timeout peer=%s identity=%s", self.peer, self.identity)
                await self.ws.close(CloseCode.GOING_AWAY, "idle timeout")
                return

    async def _apply(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SendFrame):
                await self.send(event.data)
            elif isinstance(event, UploadStarted):
                self._watch_upload(event)
            elif isinstance(event, RequestReceived):
                event = self._upload_done(event)
                if self._draining and event.payload is None:  # section 6.3: no new work during shutdown
                    error = UnavailableError("the worker is shutting down")
                    await self.send(self.session.fail(event.request_id, error))
                else:
                    self._start(event)
            elif isinstance(event, RequestCancelled):
                self._cancel(event.request_id, _CLIENT_CANCEL)
            elif isinstance(event, CloseConnection):
                self._closing = True
                await self.ws.close(event.code, event.reason)
            elif isinstance(event, HandshakeCompleted):
                log.info(
                    "handshake peer=%s identity=%s client=%r version=%d digest=%s",
                    self.peer,
                    event.identity,
                    event.client_name,
                    event.version,
                    event.digest,
                )
            elif isinstance(event, GoodbyeReceived):
                self._closing = True
                await self._abort_uploads(RequestCancelledError("the client said goodbye"))
                await self._cancel_all(_CLIENT_CANCEL)
                await self.ws.close(CloseCode.NORMAL, "goodbye")

    async def send(self, frame: bytes | ChunkPieces) -> None:
        """Send one frame; a connection that closed meanwhile is not an error here.

        A chunk given as its pieces is framed by :func:`fedproto.wsframes.send_binary`, which writes the
        stored payload's bytes without copying them into a frame first.

        One frame at a time: websockets writes a frame, then waits while its buffer is above the write
        limit, so concurrent senders would each add a frame before waiting. A client that never reads
        would then hold write limit + max_in_flight frames of memory; in turn, it holds write limit + one
        frame (docs/protocol.md section 14.2.13).
        """
        async with self._send_lock:
            with contextlib.suppress(ConnectionClosed):
                if isinstance(frame, tuple):
                    await send_binary(self.ws, frame)
                else:
                    await self.ws.send(frame)

    async def send_all(self, frames: Iterable[bytes | ChunkPieces]) -> None:
        """Send ``frames`` in order (a download's chunks and reply), in batches up to the write limit.

        The send lock is taken per batch, not per frame: other requests' frames go out between batches
        (section 7.3.32), and websockets' per-send work is paid once per batch
        (:func:`fedproto.wsframes.send_binary_batch`). A connection that closed meanwhile ends it quietly.
        """
        messages = (frame if isinstance(frame, tuple) else (frame,) for frame in frames)
        more = True
        while more:
            async with self._send_lock:
                try:
                    more = await send_binary_batch(self.ws, messages)
                except ConnectionClosed:
                    return

    # -- chunked uploads --------------------------------------------------------------------------

    def _watch_upload(self, event: UploadStarted) -> None:
        loop = asyncio.get_running_loop()
        self._upload_started[event.request_id] = loop.time()
        if event.deadline is not None:
            self._upload_timers[event.request_id] = loop.call_later(
                event.deadline, self._upload_deadline, event.request_id, event.deadline
            )

    def _upload_deadline(self, rid: int, deadline: float) -> None:
        self._upload_timers.pop(rid, None)
        self._upload_started.pop(rid, None)
        frame = self.session.abort_upload(rid, DeadlineExceededError(f"deadline of {deadline:.3f} s passed"))
        if frame is not None:
            task = asyncio.create_task(self.send(frame))
            self._sends.add(task)  # keep a reference until it is sent
            task.add_done_callback(self._sends.discard)

    def _upload_done(self, event: RequestReceived) -> RequestReceived:
        """A completed upload's handler gets what is left of the request's deadline."""
        timer = self._upload_timers.pop(event.request_id, None)
        if timer is not None:
            timer.cancel()
        started = self._upload_started.pop(event.request_id, None)
        if started is None or event.deadline is None:
            return event
        left = max(event.deadline - (asyncio.get_running_loop().time() - started), 0.0)
        return RequestReceived(event.request_id, event.kind, event.message, left, event.payload)

    async def _abort_uploads(self, error: ProtocolError) -> None:
        for rid in sorted(self.session.uploads):
            timer = self._upload_timers.pop(rid, None)
            if timer is not None:
                timer.cancel()
            self._upload_started.pop(rid, None)
            frame = self.session.abort_upload(rid, error)
            if frame is not None:
                await self.send(frame)

    # -- request tasks ----------------------------------------------------------------------------

    def _start(self, event: RequestReceived) -> None:
        task = asyncio.create_task(self._run(event))
        self._tasks[event.request_id] = task
        task.add_done_callback(functools.partial(self._forget, event.request_id))

    def _forget(self, rid: int, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(rid, None)

    async def _run(self, event: RequestReceived) -> None:
        rid = event.request_id
        try:
            if event.deadline is None:
                body = await self._dispatch(self, event)
            else:
                async with asyncio.timeout(event.deadline):
                    body = await self._dispatch(self, event)
            if body is not None and self.session.is_in_flight(rid):
                await self.send(self.session.reply(rid, **body))
        except asyncio.CancelledError:
            reason = self._cancel_reason.pop(rid, _CLIENT_CANCEL)
            if reason == _CLIENT_CANCEL:
                await self._fail(rid, RequestCancelledError("cancelled by the client"))
            elif reason == _SHUTDOWN:
                await self._fail(rid, UnavailableError("the worker is shutting down"))
            raise
        except TimeoutError:
            await self._fail(rid, DeadlineExceededError(f"deadline of {event.deadline:.3f} s passed"))
        except ProtocolError as error:
            await self._fail(rid, error)
        except Exception as exc:
            internal = internal_error(exc, expose=self.expose_errors)
            log.exception(
                "request failed error_id=%s peer=%s identity=%s kind=%s",
                internal.details["error_id"],
                self.peer,
                self.identity,
                event.kind,
            )
            await self._fail(rid, internal)

    async def _fail(self, rid: int, error: ProtocolError) -> None:
        if self.session.is_in_flight(rid):
            await self.send(self.session.fail(rid, error))

    def _cancel(self, rid: int, reason: str) -> None:
        task = self._tasks.get(rid)
        if task is not None and not task.done():
            self._cancel_reason[rid] = reason
            task.cancel()

    async def _cancel_all(self, reason: str) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for rid in list(self._tasks):
            self._cancel(rid, reason)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if reason == _CLOSED:
            return
        # A task cancelled before it first ran never reaches its except clause (a request that arrived
        # just before the goodbye): its request still gets its Error before the close (sections 6.3.9
        # and 6.3.4). Uploads waiting for chunks were ended before.
        for rid in sorted(self.session.in_flight - self.session.uploads):
            if reason == _CLIENT_CANCEL:
                await self._fail(rid, RequestCancelledError("the client said goodbye"))
            else:
                await self._fail(rid, UnavailableError("the worker is shutting down"))

    # -- worker-initiated -------------------------------------------------------------------------

    async def notify(self, topic: str, payload: Any) -> None:
        """Push a notification to this client (only once the handshake is done)."""
        if self.session.identity is not None:
            await self.send(self.session.notification(topic, payload))

    async def shutdown(self, grace: float) -> None:
        """Say goodbye, let in-flight work finish for ``grace`` seconds, cancel the rest, close 1001."""
        self._draining = True
        if self.session.identity is not None:
            await self.send(self.session.goodbye("worker shutting down"))
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        while loop.time() < end and (self.session.uploads or any(not t.done() for t in self._tasks.values())):
            pending = [t for t in self._tasks.values() if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(end - loop.time(), 0))
            else:  # only uploads still receiving chunks: give them the rest of the grace period
                await asyncio.sleep(min(0.05, max(end - loop.time(), 0)))
        await self._abort_uploads(UnavailableError("the worker is shutting down"))
        await self._cancel_all(_SHUTDOWN)
        self._closing = True
        with contextlib.suppress(Exception):
            await self.ws.close(CloseCode.GOING_AWAY, "worker shutting down")


def internal_error(exc: BaseException, *, expose: bool = False) -> InternalError:
    """The INTERNAL error a client gets for an unexpected exception (docs/protocol.md §11.4, §13.1.7).

    Its details carry ``error_id``, 8 random hex digits the worker logs beside the traceback, so the
    owner can find the failure a user reports without the user ever seeing paths, values or
    configuration. Only with ``expose`` does the message carry the exception's type and text.
    """
    error_id = secrets.token_hex(4)
    if expose:
        message = f"{type(exc).__name__}: {exc} (error id {error_id})"
    else:
        message = f"the worker failed to handle the request (error id {error_id}; its log has the details)"
    return InternalError(message, details={"error_id": error_id})


def _peer(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"
