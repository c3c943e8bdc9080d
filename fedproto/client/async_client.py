"""The asyncio client: the core every other client API is built on.

``AsyncClient`` keeps one WebSocket connection to a worker, runs a reader task that feeds frames to a
:class:`~fedproto.session.ClientSession`, and resolves one future per request, so any number of requests
can be in flight at once (pipelining) and their replies may arrive in any order. Cancelling the task
that awaits a request cancels the request on the worker; a per-call ``timeout`` becomes the request's
deadline on the worker. When the connection drops between calls, the next call reconnects with backoff
and redoes the handshake.

The client never has more requests in flight than the worker's ``max_in_flight``: further ones wait in
line, unsent, until a terminal reply frees a place (docs/protocol.md section 5.5.7), so any number of
concurrent calls succeed instead of getting RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from fedproto import codec, hashing, transport
from fedproto.client.progress import FitProgressBar, FitProgressCallback, wants_bar
from fedproto.datasets import DatasetDescription
from fedproto.errors import (
    ConnectionClosedError,
    DeadlineExceededError,
    FedprotoError,
    ProtocolError,
    RequestCancelledError,
    ResourceExhaustedError,
    UnavailableError,
)
from fedproto.session import (
    ClientSession,
    CloseConnection,
    Connected,
    ConnectionErrorReceived,
    ErrorReceived,
    Event,
    GoodbyeReceived,
    NotificationReceived,
    ProgressReceived,
    ReplyReceived,
    SendFrame,
    SessionState,
    TransferProgress,
    WeightsChunkReceived,
    WeightsManifestReceived,
    check_digest_offer,
    with_digest,
)
from fedproto.session.server import CHUNKED_WEIGHTS, MODEL_OBJECT
from fedproto.session.transfers import ChunkPieces
from fedproto.training import TrainConfig
from fedproto.types import (
    EvaluateKind,
    EvaluateOptions,
    EvaluateResult,
    FitOptions,
    FitResult,
    FreedBytes,
    MethodInfo,
    ModelCatalog,
    ModelSummary,
    ObjectInfo,
    ServerInfo,
    TrainSpec,
    WeightSlice,
    WeightsManifest,
)
from fedproto.wsframes import FastClientConnection, send_binary_batch

__all__ = [
    "AsyncClient",
    "NotificationCallback",
    "ObjectRef",
    "RemoteMethods",
    "TransferCallback",
    "WeightsSink",
]

log = logging.getLogger("fedproto.client")

#: Called as ``callback(done_bytes, total_bytes)`` while a chunked transfer moves.
TransferCallback = Callable[[int, int], None]
#: Called as ``callback(topic, payload)`` for each notification; may be a coroutine function.
NotificationCallback = Callable[[str, Any], Any]

CLIENT_NAME = transport.IMPLEMENTATION_NAME
#: Extra seconds a client waits past a call's timeout for the worker's own DEADLINE_EXCEEDED reply, when
#: the worker honours deadlines (section 5.6.9).
_DEADLINE_GRACE = 1.0
#: Seconds ``close`` waits for the worker to close the connection after the Goodbye (section 6.3.8).
_GOODBYE_WAIT = 5.0
#: What a worker must offer for a model archive to travel as a stored object (section 12.9.1).
_MODEL_OBJECT_NEEDS = frozenset({MODEL_OBJECT, "objects", "chunked", "training"})
#: The description of the object a model archive travels in (section 12.9).
_ARCHIVE_DESCRIPTION = "TorchScript model archive of a set_train_config"
#: Seconds the deletion of such an object may take once the config was answered.
_CLEANUP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ObjectRef:
    """A handle to an object stored on a worker, returned by ``send``.

    ``ref.get()`` and ``ref.delete()`` go through the client that sent it (awaitable for
    :class:`AsyncClient`, plain calls for :class:`~fedproto.Client`).
    """

    id: str
    info: ObjectInfo
    owner: Any

    def get(self, **kwargs: Any) -> Any:
        """Fetch the object's tensor back from the worker."""
        return self.owner.get(self.id, **kwargs)

    def delete(self) -> Any:
        """Delete the object on the worker; returns the bytes freed (:class:`~fedproto.types.FreedBytes`).

        That is an ``int`` (``ref.delete() == 36`` for a 3x3 float32 tensor) shown as ``36 bytes freed``;
        NOT_FOUND when the object is already gone.
        """
        return self.owner.delete(self.id)


class RemoteMethods:
    """Attribute sugar for custom calls: ``client.remote.get_colony_id(1, x=2)``."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._owner.call(name, *args, **kwargs)


class WeightsSink(Protocol):
    """Takes a model's weights piece by piece as they arrive (:meth:`AsyncClient.stream_model_weights`).

    ``begin`` gets the layout before any element; ``take`` then gets every element of every tensor
    exactly once, in payload order, as :class:`~fedproto.types.WeightSlice` s whose ``values`` are valid
    only during the call. An exception raised by either ends the download (the request is cancelled on
    the worker) and is raised by ``stream_model_weights``.
    """

    def begin(self, manifest: WeightsManifest) -> None:
        """The tensors about to arrive: names, dtypes, shapes, in order."""

    def take(self, part: WeightSlice) -> None:
        """Elements ``part.start`` onward of tensor ``part.name``."""


class _Assembler:
    """The :class:`WeightsSink` of :meth:`AsyncClient.get_model_weights`: each tensor allocated once."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def begin(self, manifest: WeightsManifest) -> None:
        self.weights = {e.name: torch.empty(e.shape, dtype=e.dtype) for e in manifest.entries}

    def take(self, part: WeightSlice) -> None:
        flat = self.weights[part.name].view(-1)
        flat[part.start : part.start + part.values.numel()] = part.values


class _Recorder:
    """A :class:`WeightsSink` that remembers the manifest it passes on (was the reply chunked?)."""

    def __init__(self, sink: WeightsSink) -> None:
        self.sink = sink
        self.manifest: WeightsManifest | None = None

    def begin(self, manifest: WeightsManifest) -> None:
        self.manifest = manifest
        self.sink.begin(manifest)

    def take(self, part: WeightSlice) -> None:
        self.sink.take(part)


@dataclass
class _Call:
    future: asyncio.Future[ReplyReceived]
    session: ClientSession
    on_progress: Callable[[Any], None] | None = None
    on_transfer: TransferCallback | None = None
    weights: WeightsSink | None = None


class _InFlightGate:
    """Holds requests back while the worker's ``max_in_flight`` are in flight (section 5.5.7).

    A request counts from when it is sent until its terminal reply arrives, cancelled ones included:
    that is the session's :attr:`~fedproto.session.ClientSession.in_flight`, a span that contains the
    worker's, so the worker never refuses a request for the limit. Requests beyond it wait in a FIFO
    line of futures, woken when received frames free places; under the limit nothing waits and the
    check is one comparison.
    """

    def __init__(self, session: ClientSession, limit: int) -> None:
        self._session = session
        self._limit = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: woken waiters that have not sent yet: their places are taken
        self._woken = 0
        self._error: ProtocolError | None = None

    @property
    def waiting(self) -> bool:
        """Whether requests are held back."""
        return bool(self._waiters)

    def has_room(self) -> bool:
        """Whether a request may be sent now (nobody waits ahead of it and a place is free)."""
        if self._error is not None:
            raise self._error
        return not self._waiters and self._session.in_flight + self._woken < self._limit

    async def wait(self) -> None:
        """Wait in line for a place; on return the caller sends before it awaits anything else."""
        if self._error is not None:
            raise self._error
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._woken -= 1  # woken, then cancelled before it could send: the place goes on
                self.wake()
            elif waiter in self._waiters:  # dropped from the line, never sent (section 6.2.10)
                self._waiters.remove(waiter)
            raise
        self._woken -= 1
        if self._error is not None:  # a goodbye came between the wake-up and now
            raise self._error

    def wake(self) -> None:
        """Let as many waiters go as there are free places (after frames that may have freed some)."""
        while self._waiters and self._session.in_flight + self._woken < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1

    def fail(self, error: ProtocolError) -> None:
        """End every held-back request with ``error``, and every later one (section 6.3.8)."""
        self._error = error
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class AsyncClient:
    """A connection to one worker, for asyncio code.

    ``async with AsyncClient.connect("ws://127.0.0.1:8777", token=...) as alice:`` opens it, does the
    handshake and closes it with a Goodbye at the end. ``timeout`` is the default per-call timeout in
    seconds (None: wait as long as it takes, which long fits need).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        name: str = CLIENT_NAME,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        ca_file: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reconnect: bool = True,
        reconnect_attempts: int = 5,
        max_frame_bytes: int = 0,
        digests: Sequence[str] = hashing.PREFERRED_DIGESTS,
    ) -> None:
        """A client for the worker at ``url``; it does not connect until :meth:`open` (or ``connect``).

        Args:
            url: The worker's address, ``ws://host:port`` or ``wss://host:port`` (TLS).
            token: The bearer token the worker knows this identity by (sent in the Hello; empty: none).
            name: The client name the Hello announces to the worker (its logs show it).
            timeout: Default seconds each call may take, sent to the worker as the request's deadline;
                a call's own ``timeout=`` overrides it. None waits as long as it takes (long fits).
            connect_timeout: Seconds the TCP/TLS/WebSocket opening and the handshake may take each.
            ca_file: A PEM file of certificate authorities to verify a ``wss://`` worker with, for
                private deployments (default: the system's). Ignored when ``ssl_context`` is given.
            ssl_context: The TLS context for ``wss://`` (client certificates, pinning...); default: one
                that verifies the worker's certificate and host name.
            reconnect: When the connection dropped between calls, let the next call reconnect and redo
                the handshake (with backoff) instead of failing with ConnectionClosedError.
            reconnect_attempts: How many connection attempts such a reconnect makes before giving up.
            max_frame_bytes: The largest message this client accepts, announced in the Hello so the
                worker never sends more (protocol section 3.4); 0: no limit.
            digests: The payload digest algorithms to offer, preferred first (protocol section 7.5); the
                worker picks one and :attr:`digest` names it. The default puts the fast ``xxh3-128``
                first, which detects corruption but does not identify content: offer
                ``("blake3", "sha256")`` where a digest must (section 7.5.10). An unknown or repeated
                name raises :class:`~fedproto.DigestConfigError`.
        """
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
        self.digests = check_digest_offer(digests)
        self.url = url
        self.token = token
        self.name = name
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.max_frame_bytes = max_frame_bytes
        self._ssl = ssl_context
        if self._ssl is None and url.startswith("wss://"):
            # Certificates are verified by default; a custom CA may be given for private deployments.
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._ws: ClientConnection | None = None
        self._session: ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._gate: _InFlightGate | None = None
        # keyed by session too: ids start at 1 on every connection (section 5.1.7)
        self._calls: dict[tuple[ClientSession, int], _Call] = {}
        self._closed_by_user = False
        self._connect_lock: asyncio.Lock | None = None
        self._notification_callbacks: list[NotificationCallback] = []
        self._notifications: asyncio.Queue[tuple[str, Any]] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.remote = RemoteMethods(self)

    # -- connection -------------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        token: str = "",
        name: str = CLIENT_NAME,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        ca_file: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reconnect: bool = True,
        reconnect_attempts: int = 5,
        max_frame_bytes: int = 0,
        digests: Sequence[str] = hashing.PREFERRED_DIGESTS,
    ) -> _Connecting:
        """Open a client: ``async with AsyncClient.connect(url) as c:`` or ``await AsyncClient.connect(url)``.

        The parameters are the constructor's (spelled out so that ``help()`` and editors show them):
        ``token`` (bearer token), ``name`` (announced client name), ``timeout`` (default per-call
        seconds, None: unbounded), ``connect_timeout`` (seconds to connect and shake hands),
        ``ca_file``/``ssl_context`` (TLS for ``wss://``), ``reconnect``/``reconnect_attempts``
        (reconnecting between calls), ``max_frame_bytes`` (largest message accepted, 0: no limit),
        ``digests`` (payload digest algorithms offered, preferred first).
        """
        return _Connecting(
            cls(
                url,
                token=token,
                name=name,
                timeout=timeout,
                connect_timeout=connect_timeout,
                ca_file=ca_file,
                ssl_context=ssl_context,
                reconnect=reconnect,
                reconnect_attempts=reconnect_attempts,
                max_frame_bytes=max_frame_bytes,
                digests=digests,
            )
        )

    @property
    def server(self) -> ServerInfo:
        """What the worker said about itself in its Welcome."""
        if self._session is None or self._session.server is None:
            raise ConnectionClosedError("not connected")
        return self._session.server

    @property
    def digest(self) -> str:
        """The payload digest algorithm the worker chose for this connection (protocol section 7.5).

        Every transfer of the connection is checked with it; ``sha256`` from a worker that predates
        section 7.5. Raises ConnectionClosedError when not connected, as :attr:`server` does.
        """
        return self.server.digest

    @property
    def connected(self) -> bool:
        """Whether the connection is open and the handshake done."""
        return (
            self._ws is not None
            and self._session is not None
            and self._session.state is SessionState.OPEN
            and self._reader is not None
            and not self._reader.done()
        )

    async def open(self) -> AsyncClient:
        """Connect and do the handshake (raises the worker's error, e.g. UnauthenticatedError)."""
        self._closed_by_user = False
        await self._ensure_connected()
        return self

    async def _ensure_connected(self) -> None:
        if self.connected:
            return
        if self._closed_by_user:
            raise ConnectionClosedError("the client was closed")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self.connected:
                return
            attempts = self.reconnect_attempts if (self.reconnect and self._session is not None) else 1
            delay = 0.1
            for attempt in range(1, attempts + 1):
                try:
                    await self._connect_once()
                    return
                except (ConnectionClosedError, OSError, TimeoutError) as exc:
                    if attempt == attempts:
                        if isinstance(exc, ConnectionClosedError):
                            raise
                        raise ConnectionClosedError(f"cannot connect to {self.url}: {exc}") from exc
                    log.info("reconnect to %s failed (%s); retrying in %.1f s", self.url, exc, delay)
                    await asyncio.sleep(delay * (1 + random.random() / 4))
                    delay = min(delay * 2, 5.0)

    async def _connect_once(self) -> None:
        transport.keep_payload_buffers()  # chunk-sized buffers reused, not faulted in again (see there)
        session = ClientSession(
            token=self.token,
            client_name=self.name,
            max_frame_bytes=self.max_frame_bytes,
            digests=self.digests,
            hasher=hashing.background_hasher,
        )
        try:
            ws = await connect(
                self.url,
                ssl=self._ssl,
                open_timeout=self.connect_timeout,
                create_connection=FastClientConnection,  # bulk frames read without copies (wsframes)
                **transport.client_options(self.max_frame_bytes),
            )
        except (InvalidURI, InvalidHandshake) as exc:
            raise ConnectionClosedError(f"cannot open {self.url}: {exc}") from exc
        try:
            await ws.send(session.hello())
            first = await asyncio.wait_for(ws.recv(), self.connect_timeout)
        except ConnectionClosed as exc:
            raise ConnectionClosedError(
                f"{self.url} closed during the handshake", close_code=exc.rcvd.code if exc.rcvd else None
            ) from exc
        except BaseException:
            await ws.close()
            raise
        events = session.receive_frame(first)
        # a Welcome the client refuses closes with the session's code (1002, section 4.1.8)
        close = next((e for e in events if isinstance(e, CloseConnection)), CloseConnection(1000))
        for event in events:
            if isinstance(event, ConnectionErrorReceived):
                await ws.close(close.code, close.reason)
                raise event.error
            if isinstance(event, Connected):
                break
        else:  # pragma: no cover - the session always yields one of the two
            await ws.close()
            raise ConnectionClosedError("handshake failed")
        assert session.server is not None
        gate = _InFlightGate(session, session.server.limits.max_in_flight)
        self._ws, self._session, self._gate = ws, session, gate
        self._reader = asyncio.create_task(self._read_loop(ws, session, gate))

    async def close(self) -> None:
        """Say Goodbye and close.

        Requests still held back (section 5.5.7) fail with RequestCancelledError, unsent. Requests in
        flight end with the worker's CANCELLED, or with ConnectionClosedError when it closes first. The
        worker closes the connection after the Goodbye; the client closes it itself when that has not
        happened within 5 seconds (section 6.3.8), without a closing handshake: close() over a network
        that delivers nothing returns in about 5 seconds.
        """
        self._closed_by_user = True
        ws, session, gate, reader = self._ws, self._session, self._gate, self._reader
        if gate is not None:
            gate.fail(RequestCancelledError("the client closed the connection"))
        answered = True
        if ws is not None and session is not None and session.state is SessionState.OPEN:
            # One 5 s budget for the Goodbye's send (which waits while the worker reads nothing) and its
            # answer, not one each
            deadline = asyncio.get_running_loop().time() + _GOODBYE_WAIT
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.send(session.goodbye("client closing")), _GOODBYE_WAIT)
            if reader is not None:
                left = max(0.0, deadline - asyncio.get_running_loop().time())
                done, _ = await asyncio.wait([reader], timeout=left)
                answered = bool(done)
        if ws is not None:
            with contextlib.suppress(Exception):
                if answered:
                    await ws.close()
                else:
                    # A worker that answered nothing in 5 s would not answer a closing handshake either:
                    # waiting for it would add websockets' close timeout (10 s) to the 5 the spec states
                    ws.transport.abort()
        if reader is not None:
            with contextlib.suppress(BaseException):
                await reader
        for task in list(self._background):
            task.cancel()

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading ----------------------------------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection, session: ClientSession, gate: _InFlightGate) -> None:
        close_code: int | None = None
        reason = ""
        try:
            async for message in ws:
                events = session.receive_frame(message)
                # Nothing here may outlive its frame: a model-sized reply (its bytes, its parsed
                # message) would otherwise stay alive until the next frame arrives on this connection.
                del message
                while events:
                    await self._dispatch(ws, session, gate, events.pop(0))
                if gate.waiting:  # a terminal reply may have freed a place
                    gate.wake()
        except ConnectionClosed as exc:
            close_code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else ""
        finally:
            if close_code is None and ws.close_code is not None:
                close_code, reason = ws.close_code, ws.close_reason or ""
            error = ConnectionClosedError(
                f"connection to {self.url} closed (code {close_code}{': ' + reason if reason else ''})",
                close_code=close_code,
                reason=reason,
            )
            # an outcome the caller cannot know: UNAVAILABLE (section 5.3.8); held-back requests too
            gate.fail(error)
            # only this connection's requests: after a reconnect, newer ones live on another session
            for call in list(self._calls.values()):
                if call.session is session and not call.future.done():
                    call.future.set_exception(error)

    async def _dispatch(
        self, ws: ClientConnection, session: ClientSession, gate: _InFlightGate, event: Event
    ) -> None:
        if isinstance(event, ReplyReceived):
            call = self._calls.get((session, event.request_id))
            if call is not None and not call.future.done():
                call.future.set_result(event)
        elif isinstance(event, ErrorReceived):
            call = self._calls.get((session, event.request_id))
            if call is not None and not call.future.done():
                call.future.set_exception(event.error)
        elif isinstance(event, ProgressReceived):
            call = self._calls.get((session, event.request_id))
            if call is not None and call.on_progress is not None:
                call.on_progress(event.message)
        elif isinstance(event, (WeightsManifestReceived, WeightsChunkReceived)):
            call = self._calls.get((session, event.request_id))
            if call is not None and call.weights is not None and not call.future.done():
                try:
                    _feed(call.weights, event)
                except Exception as exc:  # the consumer refused: the download ends here
                    call.future.set_exception(exc)
                    await self._cancel_remote(ws, session, event.request_id, "the weights consumer failed")
        elif isinstance(event, TransferProgress):
            call = self._calls.get((session, event.request_id))
            if call is not None and call.on_transfer is not None:
                call.on_transfer(event.done, event.total)
        elif isinstance(event, SendFrame):  # the session cancels a request the worker got wrong
            with contextlib.suppress(ConnectionClosed):
                await ws.send(event.data)
        elif isinstance(event, NotificationReceived):
            self._deliver_notification(event.topic, event.value)
        elif isinstance(event, ConnectionErrorReceived):
            log.warning("worker reported: %s", event.error)
        elif isinstance(event, GoodbyeReceived):
            log.info("worker said goodbye: %s", event.reason)
            gate.fail(UnavailableError(f"the worker said goodbye: {event.reason}"))  # section 6.3.8
        elif isinstance(event, CloseConnection):
            await ws.close(event.code, event.reason)

    # -- notifications ----------------------------------------------------------------------------

    def on_notification(self, callback: NotificationCallback) -> NotificationCallback:
        """Call ``callback(topic, payload)`` for every notification (usable as a decorator)."""
        self._notification_callbacks.append(callback)
        return callback

    async def next_notification(self, timeout: float | None = None) -> tuple[str, Any]:
        """Wait for the next notification not yet taken: ``(topic, payload)``."""
        async with asyncio.timeout(timeout):
            return await self._notification_queue().get()

    def _notification_queue(self) -> asyncio.Queue[tuple[str, Any]]:
        if self._notifications is None:
            self._notifications = asyncio.Queue(maxsize=1000)
        return self._notifications

    def _deliver_notification(self, topic: str, payload: Any) -> None:
        queue = self._notification_queue()
        if queue.full():  # keep the newest: a slow consumer must not block the reader
            queue.get_nowait()
        queue.put_nowait((topic, payload))
        for callback in self._notification_callbacks:
            try:
                result = callback(topic, payload)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            except Exception:
                log.exception("notification callback failed")

    # -- requests ---------------------------------------------------------------------------------

    async def _request(
        self,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Any], None] | None = None,
        on_transfer: TransferCallback | None = None,
        upload: tuple[memoryview | list[memoryview], TransferCallback | None, bool] | None = None,
        payload: tuple[tuple[str, ...], memoryview] | None = None,
        weights: WeightsSink | None = None,
        **body: Any,
    ) -> ReplyReceived:
        await self._ensure_connected()
        ws, session, gate = self._ws, self._session, self._gate
        assert ws is not None and session is not None and session.server is not None and gate is not None
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        expiry = give_up = None  # loop times: the caller's deadline, and when this client stops waiting
        if timeout is not None:
            expiry = loop.time() + timeout
            # with deadlines on the worker its own DEADLINE_EXCEEDED should normally come first (5.6.9)
            give_up = expiry + (_DEADLINE_GRACE if "deadlines" in session.server.capabilities else 0.0)
        rid: int | None = None
        try:
            async with asyncio.timeout_at(give_up):
                if not gate.has_room():  # held back, unsent, until a place is free (section 5.5.7)
                    # no grace here: a deadline that passes in line ends the request unsent (5.6.10)
                    async with asyncio.timeout_at(expiry):
                        await gate.wait()
                deadline = None
                if expiry is not None:  # what remains of the caller's deadline (section 5.6.8)
                    deadline = expiry - loop.time()
                    if deadline <= 0:
                        raise TimeoutError
                rid, frame = session.request(deadline=deadline, payload=payload, **body)
                payload = None  # a big inline payload is in the frame now: not kept while the reply comes
                future: asyncio.Future[ReplyReceived] = loop.create_future()
                self._calls[session, rid] = _Call(future, session, on_progress, on_transfer, weights)
                try:
                    await ws.send(frame)
                    del frame
                    if upload is not None:
                        await self._send_chunks(ws, session, rid, future, *upload)
                except ConnectionClosed:
                    pass  # the reader fails the future with the close code
                return await future
        except TimeoutError:
            if rid is not None:
                await self._cancel_remote(ws, session, rid, "deadline")
            raise DeadlineExceededError(f"no reply within {timeout} s") from None
        except asyncio.CancelledError:
            if rid is not None:  # a request never sent is dropped without a frame (section 6.2.10)
                await self._cancel_remote(ws, session, rid, "cancelled by the client")
            raise
        finally:
            if rid is not None:
                self._calls.pop((session, rid), None)
            elif gate.waiting:  # this one took no place after all: the next in line may go
                gate.wake()

    async def _send_chunks(
        self,
        ws: ClientConnection,
        session: ClientSession,
        rid: int,
        future: asyncio.Future[ReplyReceived],
        view: memoryview | list[memoryview],
        on_transfer: TransferCallback | None,
        trailing_digest: bool,
    ) -> None:
        assert session.server is not None
        chunk_bytes = session.server.limits.chunk_bytes
        total = view.nbytes if isinstance(view, memoryview) else sum(part.nbytes for part in view)
        frames = session.upload(rid, view, chunk_bytes, trailing_digest=trailing_digest, pieces=True)

        def counted() -> Iterator[ChunkPieces]:
            sent = 0
            for pieces in frames:
                yield pieces
                sent = min(sent + chunk_bytes, total)
                if on_transfer is not None:
                    on_transfer(sent, total)

        # Chunks go out in batches up to the write limit, each masked straight from the tensor's memory
        # into its frame (wsframes); the terminal reply arriving first stops them (section 7.3.31).
        chunks = counted()
        while await send_binary_batch(ws, chunks, future.done):
            pass

    @staticmethod
    async def _cancel_remote(ws: ClientConnection, session: ClientSession, rid: int, reason: str) -> None:
        frame = session.cancel(rid, reason)
        if frame is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(ws.send(frame))

    # -- session ----------------------------------------------------------------------------------

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip a Ping; returns the seconds it took."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request(timeout=timeout, ping=codec.ping_to_proto())
        return loop.time() - start

    # -- objects ----------------------------------------------------------------------------------

    async def send(
        self,
        tensor: torch.Tensor | np.ndarray[Any, Any],
        id: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        *,
        overwrite: bool = False,
        progress: TransferCallback | None = None,
        timeout: float | None = None,
    ) -> ObjectRef:
        """Store a tensor on the worker; big ones travel in verified chunks. Returns a handle.

        A tensor goes in chunks when it is larger than the worker's ``chunk_bytes`` or when it would not
        fit one frame with its id, tags and description (section 7.3.14); a request that cannot fit a
        frame even so fails with RESOURCE_EXHAUSTED, unsent (section 14.2.7).
        """
        await self._ensure_connected()
        session = self._session
        assert session is not None
        limits = self.server.limits
        info, view = codec.tensor_payload(tensor)
        head = ObjectInfo(id=id or "", tags=tuple(tags), description=description, tensor=info)
        request = codec.send_object_request_to_proto(head, overwrite=overwrite, chunked=False)
        # the envelope around the request: tags and lengths of a few fields, the id, a deadline
        inline_size = request.ByteSize() + view.nbytes + 48
        if view.nbytes > limits.chunk_bytes or inline_size > limits.max_frame_bytes:
            # The digest travels in the last chunk (section 7.3.26), hashed while the chunks go out,
            # unless that chunk would then not fit a frame (section 7.3.30).
            trailing = session.trailing_digest_fits(view.nbytes, limits.chunk_bytes)
            if not trailing:
                digest = await asyncio.to_thread(hashing.digest, session.digest, view)
                head = dataclasses.replace(head, tensor=with_digest(info, session.digest, digest))
            request = codec.send_object_request_to_proto(head, overwrite=overwrite, chunked=True)
            reply = await self._request(
                timeout=timeout, send_object=request, upload=(view, progress, trailing)
            )
        else:
            payload = (("send_object", "tensor", "data"), view)
            reply = await self._request(timeout=timeout, payload=payload, send_object=request)
        stored = codec.send_object_reply_from_proto(reply.message)
        return ObjectRef(stored.id, stored, self)

    async def get(
        self, id: str, *, progress: TransferCallback | None = None, timeout: float | None = None
    ) -> torch.Tensor:
        """Fetch a stored tensor (big ones arrive in chunks, verified against the connection's digest)."""
        request = codec.object_id_request_to_proto("get_object", id)
        reply = await self._request(timeout=timeout, on_transfer=progress, get_object=request)
        return codec.get_object_reply_from_proto(reply.message, reply.payload)

    async def delete(self, id: str, *, timeout: float | None = None) -> FreedBytes:
        """Delete a stored object; returns the payload bytes freed (an ``int`` shown as ``N bytes freed``).

        NOT_FOUND when this identity keeps no object ``id``.
        """
        request = codec.object_id_request_to_proto("delete_object", id)
        reply = await self._request(timeout=timeout, delete_object=request)
        return FreedBytes(codec.count_reply_from_proto(reply.message))

    async def list_objects(self, *, timeout: float | None = None) -> list[ObjectInfo]:
        """Every object this identity keeps on the worker (metadata only)."""
        reply = await self._request(timeout=timeout, list_objects=codec.empty_request("list_objects"))
        return codec.object_list_reply_from_proto(reply.message)

    async def objects_count(self, *, timeout: float | None = None) -> int:
        """How many objects this identity keeps on the worker."""
        reply = await self._request(timeout=timeout, count_objects=codec.empty_request("count_objects"))
        return codec.count_reply_from_proto(reply.message)

    async def clear_objects(self, *, timeout: float | None = None) -> int:
        """Delete every object of this identity; returns how many were deleted."""
        reply = await self._request(timeout=timeout, clear_objects=codec.empty_request("clear_objects"))
        return codec.count_reply_from_proto(reply.message)

    async def search(self, *tags: str, timeout: float | None = None) -> list[ObjectInfo]:
        """Objects carrying every one of ``tags``."""
        reply = await self._request(timeout=timeout, search_objects=codec.search_request_to_proto(tags))
        return codec.object_list_reply_from_proto(reply.message)

    # -- datasets and calls -----------------------------------------------------------------------

    async def datasets(self, *, timeout: float | None = None) -> list[DatasetDescription]:
        """The datasets the worker offers (descriptions, never data)."""
        reply = await self._request(timeout=timeout, list_datasets=codec.empty_request("list_datasets"))
        return codec.datasets_reply_from_proto(reply.message)

    async def methods(self, *, timeout: float | None = None) -> list[MethodInfo]:
        """The methods the worker exposes to custom calls."""
        reply = await self._request(timeout=timeout, list_methods=codec.empty_request("list_methods"))
        return codec.methods_reply_from_proto(reply.message)

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call an exposed method with any Value arguments: ``await alice.call("get_colony_id")``."""
        return await self.call_with(method, args, kwargs)

    async def call_with(
        self,
        method: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Like :meth:`call`, with arguments given explicitly and a per-call ``timeout``."""
        request = codec.call_request_to_proto(method, args, kwargs or {})
        reply = await self._request(timeout=timeout, call=request)
        return codec.call_reply_from_proto(reply.message)

    # -- training ---------------------------------------------------------------------------------

    async def set_train_config(
        self, config: TrainConfig | TrainSpec, *, timeout: float | None = None
    ) -> ModelSummary:
        """Send a train config; the worker loads and checks it (the seed's ``config.send(alice)``).

        ``config`` may also be a :class:`~fedproto.types.TrainSpec` (``config.to_spec()``), sent as it is:
        a caller that sends one config to many workers scripts and saves its model once.

        To a worker that offers ``model-object`` (protocol section 12.9) a model archive larger than one
        chunk goes ahead as a chunked object upload cut straight from the archive's bytes, and the config
        names that object: neither the archive nor a message holding it is copied whole on the way. The
        object is deleted once the worker has answered, whether it took the config or refused it. When
        the worker's store has no room for it (RESOURCE_EXHAUSTED), the archive goes inline instead.
        ``timeout`` bounds the whole exchange.
        """
        if isinstance(config, TrainSpec):
            spec = config
        else:
            spec = await asyncio.to_thread(config.to_spec)  # scripting a model takes a while: off the loop
        loop = asyncio.get_running_loop()
        timeout = self.timeout if timeout is None else timeout
        expiry = None if timeout is None else loop.time() + timeout

        def remaining() -> float | None:
            return None if expiry is None else max(expiry - loop.time(), 0.0)

        archive = spec.model_torchscript
        if archive is not None and len(archive) > 0:
            await self._ensure_connected()
            server = self.server
            if server.capabilities >= _MODEL_OBJECT_NEEDS and len(archive) > server.limits.chunk_bytes:
                try:
                    stored = await self.send(
                        np.frombuffer(archive, dtype=np.uint8),  # a view of the archive, not a copy
                        description=_ARCHIVE_DESCRIPTION,
                        timeout=remaining(),
                    )
                except ResourceExhaustedError:  # no room in this identity's store (section 12.9.8)
                    pass
                else:
                    try:
                        named = dataclasses.replace(spec, model_torchscript=None, model_object=stored.id)
                        return await self._set_train_config(named, remaining())
                    finally:
                        await self._forget_object(stored.id)
        return await self._set_train_config(spec, remaining())

    async def _set_train_config(self, spec: TrainSpec, timeout: float | None) -> ModelSummary:
        request = codec.set_train_config_request_to_proto(spec)
        reply = await self._request(timeout=timeout, set_train_config=request)
        return codec.model_summary_from_proto(reply.message)

    async def _forget_object(self, object_id: str) -> None:
        """Delete an object this client stored for its own use, as far as the connection allows.

        Runs after the request that used it ended in any way (also when cancelled): a worker that cannot be
        reached keeps the object, which its identity may delete later (section 12.9.7).
        """
        with contextlib.suppress(FedprotoError, OSError):
            await asyncio.shield(self.delete(object_id, timeout=_CLEANUP_TIMEOUT))

    async def fit(
        self,
        dataset_key: str,
        *,
        progress: bool | FitProgressCallback | None = False,
        progress_every: int = 0,
        return_weights: bool = False,
        timeout: float | None = None,
    ) -> FitResult:
        """Train the worker's model on one of its datasets; no fixed timeout ends a long fit.

        ``progress`` is a callback taking each :class:`~fedproto.FitProgressEvent`, ``True`` for
        a progress bar, or ``None`` for a bar only when stderr is a terminal.
        """
        request = codec.fit_request_to_proto(
            FitOptions(dataset_key=dataset_key, return_weights=return_weights, progress_every=progress_every)
        )
        callback = progress if callable(progress) else None
        bar = FitProgressBar(f"{self._label()} fit {dataset_key!r}") if wants_bar(progress) else None

        def on_progress(message: Any) -> None:
            event = codec.fit_progress_from_proto(message)
            if callback is not None:
                callback(event)
            if bar is not None:
                bar.update(event)

        with bar if bar is not None else contextlib.nullcontext():
            reply = await self._request(timeout=timeout, on_progress=on_progress, fit=request)
        return codec.fit_result_from_proto(reply.message)

    def _label(self) -> str:
        try:
            return self.server.server_id
        except ConnectionClosedError:
            return self.url

    async def evaluate(
        self,
        dataset_key: str,
        *,
        return_histograms: bool = False,
        nr_bins: int = 0,
        return_loss: bool = True,
        return_raw_accuracy: bool = True,
        batch_size: int = 0,
        kind: EvaluateKind | None = None,
        timeout: float | None = None,
    ) -> EvaluateResult:
        """Evaluate the worker's model on one of its datasets.

        The result's ``kind`` says what was measured. Integer targets are classes: ``correct`` counts
        right predictions (``return_raw_accuracy``) and ``return_histograms`` counts predictions and
        targets per class. Float targets are values: ``mean_squared_error`` and ``mean_absolute_error``
        instead, no classes. ``kind=EvaluateKind.CLASSIFICATION`` treats float targets as classes
        (binary classification with 0/1 float targets, as ``bce_with_logits`` needs), and
        ``EvaluateKind.REGRESSION`` integer ones as values. ``loss`` is the mean loss per sample
        (``return_loss``); ``batch_size`` 0 uses the train config's.
        """
        options = EvaluateOptions(
            dataset_key=dataset_key,
            return_histograms=return_histograms,
            nr_bins=nr_bins,
            return_loss=return_loss,
            return_raw_accuracy=return_raw_accuracy,
            batch_size=batch_size,
            kind=kind,
        )
        reply = await self._request(timeout=timeout, evaluate=codec.evaluate_request_to_proto(options))
        return codec.evaluate_result_from_proto(reply.message)

    async def get_model_weights(self, *, timeout: float | None = None) -> dict[str, torch.Tensor]:
        """The worker's current model weights (state dict) for this identity.

        They come in chunks from a worker that offers ``chunked-weights`` (protocol section 12.8), each
        copied straight into its tensor (allocated once), and inline from one that does not.
        """
        assembler = _Assembler()
        manifest, inline = await self._get_weights(assembler, timeout)
        return assembler.weights if manifest is not None else inline

    async def stream_model_weights(
        self, sink: WeightsSink, *, timeout: float | None = None
    ) -> WeightsManifest:
        """Hand the worker's model weights to ``sink`` as they arrive, never building the whole model.

        ``sink.begin(manifest)`` comes first, then ``sink.take(part)`` for consecutive runs of whole
        elements (see :class:`WeightsSink`); the chunks are checked as they come and the whole payload
        against the connection's digest at the end (a mismatch raises :class:`~fedproto.DataLossError`
        after the sink saw the data: a sink that folds must be ready to discard what it took when this
        raises). A worker without ``chunked-weights`` answers inline: its tensors go to the sink whole.
        Returns the manifest.
        """
        manifest, inline = await self._get_weights(sink, timeout)
        if manifest is not None:
            return manifest
        manifest, _ = codec.weights_manifest_of(inline)
        sink.begin(manifest)
        for name, tensor in inline.items():
            sink.take(WeightSlice(name, 0, tensor.reshape(-1)))
        return manifest

    async def _get_weights(
        self, sink: WeightsSink, timeout: float | None
    ) -> tuple[WeightsManifest | None, dict[str, torch.Tensor]]:
        """A get_weights asking for the chunked form, streamed into ``sink``: its manifest, or (None and)
        the decoded weights when the worker answered inline (section 12.8.10)."""
        recorder = _Recorder(sink)
        reply = await self._request(
            timeout=timeout, weights=recorder, get_weights=codec.get_weights_request_to_proto(chunked=True)
        )
        if recorder.manifest is not None:
            return recorder.manifest, {}
        return None, codec.weights_reply_from_proto(reply.message)

    async def set_model_weights(
        self,
        state: dict[str, torch.Tensor],
        *,
        strict: bool = False,
        progress: TransferCallback | None = None,
        timeout: float | None = None,
    ) -> int:
        """Replace (some of) the worker's model weights; returns how many tensors were replaced.

        To a worker that offers ``chunked-weights`` (protocol section 12.8) the tensors travel as chunks
        cut straight from their own memory, hashed as they go: no encoding of the whole model exists.
        """
        session = self._session
        if session is not None and session.server is not None and CHUNKED_WEIGHTS in self.server.capabilities:
            manifest, parts = codec.weights_manifest_of(state)
            limits = self.server.limits
            trailing = session.trailing_digest_fits(manifest.total_bytes, limits.chunk_bytes)
            if not trailing:
                digest = await asyncio.to_thread(_digest_of_parts, session.digest, parts)
                if session.digest == hashing.SHA256:
                    manifest = dataclasses.replace(manifest, sha256=digest)
                else:
                    manifest = dataclasses.replace(manifest, digest=digest)
            request = codec.set_weights_chunked_request_to_proto(manifest, strict=strict)
            reply = await self._request(
                timeout=timeout, set_weights=request, upload=(parts, progress, trailing)
            )
            return codec.count_reply_from_proto(reply.message)
        # Inline: each tensor's bytes are copied once, into the frame; no local keeps the encoding alive
        # while the reply is awaited.
        reply = await self._request(
            timeout=timeout,
            payload=(("set_weights",), codec.set_weights_request_payload(state, strict=strict)),
            set_weights=codec.set_weights_request_to_proto({}, strict=False),  # the payload is all of it
        )
        return codec.count_reply_from_proto(reply.message)

    async def list_models(self, *, timeout: float | None = None) -> ModelCatalog:
        """The architectures the worker registered, and whether it accepts only those."""
        reply = await self._request(timeout=timeout, list_models=codec.empty_request("list_models"))
        return codec.model_catalog_from_proto(reply.message)


def _feed(sink: WeightsSink, event: WeightsManifestReceived | WeightsChunkReceived) -> None:
    """Hand one session event of a chunked get_weights to its sink."""
    if isinstance(event, WeightsManifestReceived):
        sink.begin(event.manifest)
        return
    for raw in event.slices:
        sink.take(WeightSlice(raw.entry.name, raw.start, raw.values()))


def _digest_of_parts(algorithm: str, parts: list[memoryview]) -> bytes:
    hasher = hashing.new_hasher(algorithm)
    for part in parts:
        hasher.update(part)
    return hasher.digest()


class _Connecting:
    """What :meth:`AsyncClient.connect` returns: awaitable, and an async context manager."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    def __await__(self) -> Any:
        return self.client.open().__await__()

    async def __aenter__(self) -> AsyncClient:
        return await self.client.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.close()
