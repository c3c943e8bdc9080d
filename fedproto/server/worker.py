"""The reference server: a data owner's :class:`Worker`.

A worker holds named datasets, an object store scoped per client identity, the methods its owner chose
to expose, and (per identity) a training state. It serves protocol v1 over WebSocket
(``await worker.serve(host, port)`` in asyncio code, ``worker.run(host, port)`` in scripts and notebooks)
and answers every request as docs/protocol.md says.

This module is the worker's public face and its lifecycle (start, serve, stop, run, notify). The rest
lives beside it: the protocol rules in :mod:`fedproto.session`, the per-connection I/O in
:mod:`fedproto.server._connection`, what each request does in :mod:`fedproto.server.handlers` (which
see the worker only as :class:`~fedproto.server.services.WorkerServices`), tokens in
:mod:`fedproto.server.tokens`, TLS in :mod:`fedproto.server.tls`, threads in
:mod:`fedproto.server.threads`, and the WebSocket settings in :mod:`fedproto.transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar, overload

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from fedproto import transport
from fedproto.datasets import Dataset, as_dataset, load_dataset_file
from fedproto.errors import EventLoopRunningError
from fedproto.hashing import background_hasher
from fedproto.server._connection import ServerConnectionHandler
from fedproto.server.dispatch import dispatcher
from fedproto.server.handlers import HANDLERS
from fedproto.server.methods import MethodRegistry
from fedproto.server.services import WorkerServices
from fedproto.server.store import ObjectStore
from fedproto.server.threads import WorkerThreads
from fedproto.server.tls import server_ssl_context
from fedproto.server.tokens import ANONYMOUS, TokenTable, load_token_file
from fedproto.session import CHUNKED_WEIGHTS, MODEL_OBJECT, ServerSession
from fedproto.training import ModelRegistry, TrainingState
from fedproto.types import Limits, TensorInfo, WeightsManifest
from fedproto.wsframes import FastServerConnection

# ANONYMOUS, SUBPROTOCOL and load_token_file were defined here before they got modules of their own; they
# stay importable from here.
__all__ = ["ANONYMOUS", "SUBPROTOCOL", "Worker", "load_token_file"]

log = logging.getLogger("fedproto.worker")

#: The WebSocket subprotocol name of protocol v1 (section 2); see :mod:`fedproto.transport`.
SUBPROTOCOL = transport.SUBPROTOCOL

F = TypeVar("F", bound=Callable[..., Any])


class Worker:
    """A data owner's worker: datasets, objects, exposed methods and training, served over WebSocket.

    >>> worker = Worker(id="alice")
    >>> worker.add_dataset((features, targets), key="xor")        # doctest: +SKIP
    >>> @worker.method
    ... def get_colony_id() -> int:
    ...     return 7
    >>> worker.run("127.0.0.1", 8777)                              # doctest: +SKIP

    Subclasses may expose methods with :func:`~fedproto.rpc` instead. ``tokens`` maps identities to
    bearer tokens (or is a list of tokens); without tokens every client shares the anonymous identity.

    Model work runs on one training thread with ``training_threads`` PyTorch intra-op threads (default:
    what PyTorch had); creating a worker sets the creating thread's own intra-op threads to 1, so that
    the two never compete for the cores.

    When a request fails with an unexpected exception (a bug, or an exposed method raising something
    other than a :class:`~fedproto.ProtocolError`), the client gets ``INTERNAL`` with a generic message
    and a short error id, and the worker logs the id beside the traceback (docs/protocol.md §13.1.7).
    ``expose_errors=True`` sends the exception's type and text instead, for development. A method that
    means to tell the client something raises a ``ProtocolError`` subclass, which reaches it as-is.

    ``max_connections`` bounds the connections served at once: one more is refused during its opening
    handshake with HTTP 503 (docs/protocol.md section 14.2.11); docs/security.md lists every bound.
    """

    def __init__(
        self,
        id: str = "worker",
        *,
        tokens: Mapping[str, str] | Iterable[str] | None = None,
        limits: Limits | None = None,
        weights_only: bool = False,
        shutdown_grace: float = 5.0,
        max_threads: int = 32,
        training_threads: int | None = None,
        expose_errors: bool = False,
        max_connections: int = 1000,
    ) -> None:
        self.id = id
        #: The most WebSocket connections served at once (0: no limit); the opening handshake of one more
        #: is refused with HTTP 503 (docs/protocol.md section 14.2.11).
        self.max_connections = max_connections
        #: Send unexpected exceptions' text to clients (default: a generic message and an error id).
        self.expose_errors = expose_errors
        self.shutdown_grace = shutdown_grace
        self._tokens = TokenTable(tokens)
        limits = limits or Limits()
        # Created first: it sets the serving thread's PyTorch threads before anything else uses PyTorch.
        self.threads = WorkerThreads(id, max_threads=max_threads, training_threads=training_threads)
        #: What the request handlers use of this worker; the worker's own state lives there too.
        self.services = WorkerServices(
            limits=limits,
            objects=ObjectStore(
                max_bytes_per_identity=limits.max_object_bytes,
                max_objects_per_identity=limits.max_objects,
                max_metadata_bytes=limits.max_object_metadata_bytes,
            ),
            methods=MethodRegistry(),
            models=ModelRegistry(),
            threads=self.threads,
            weights_only=weights_only,
        )
        self.services.methods.register_marked(self)
        self._dispatch = dispatcher(self.services, HANDLERS)
        self._extra_capabilities: list[str] = []
        self._connections: set[ServerConnectionHandler] = set()
        self._server: Server | None = None
        self._tls = False
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warmed_up = False

    # -- configuration (the services' own state) ---------------------------------------------------

    @property
    def limits(self) -> Limits:
        """The limits this worker advertises and enforces (section 14); set before serving."""
        return self.services.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.services.limits = limits
        # the store enforces the quotas the Welcome advertises: they change together
        self.objects.max_bytes = limits.max_object_bytes
        self.objects.max_objects = limits.max_objects
        self.objects.max_metadata_bytes = limits.max_object_metadata_bytes

    @property
    def weights_only(self) -> bool:
        """Whether clients may train registered architectures only (section 12.2)."""
        return self.services.weights_only

    @weights_only.setter
    def weights_only(self, weights_only: bool) -> None:
        self.services.weights_only = weights_only

    @property
    def objects(self) -> ObjectStore:
        """The object store, scoped per client identity (section 9)."""
        return self.services.objects

    @property
    def methods(self) -> MethodRegistry:
        """The methods exposed to custom calls (section 11)."""
        return self.services.methods

    @property
    def training_threads(self) -> int:
        """PyTorch intra-op threads of the training thread."""
        return self.threads.training_threads

    @property
    def _training(self) -> dict[str, TrainingState]:
        """The training states by client identity (for tests that wait for a client's first config)."""
        return self.services.training

    # -- what the worker offers -------------------------------------------------------------------

    def add_dataset(self, dataset: Any, key: str, description: str = "") -> None:
        """Offer a dataset under ``key``: a torch Dataset, a (features, targets) pair, or a file path."""
        if not key:
            raise ValueError("a dataset needs a non-empty key")
        if isinstance(dataset, (str, Path)):
            self.services.datasets[key] = load_dataset_file(dataset, description)
        else:
            self.services.datasets[key] = as_dataset(dataset, description)

    @property
    def datasets(self) -> dict[str, Dataset]:
        """The datasets this worker offers, by key (a copy of the mapping)."""
        return dict(self.services.datasets)

    @overload
    def method(self, func: F, /) -> F: ...

    @overload
    def method(
        self, /, *, name: str | None = None, description: str | None = None, inline: bool = False
    ) -> Callable[[F], F]: ...

    def method(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        inline: bool = False,
    ) -> Any:
        """Expose a function to custom calls: ``@worker.method`` or ``@worker.method(name=...)``.

        Plain functions run on a thread so they never stall the worker; ``inline=True`` runs one on the
        event loop instead, for functions that return at once (see :func:`~fedproto.rpc`).
        """

        def register(f: F) -> F:
            self.methods.register(f, name=name, description=description, inline=inline)
            return f

        return register(func) if func is not None else register

    def register_model(self, name: str, factory: Callable[[], Any]) -> None:
        """Register an architecture clients may train by name (the weights-only mode's only option)."""
        self.services.models.register(name, factory)

    def add_capability(self, name: str) -> None:
        """Advertise an extra capability string in the Welcome."""
        if name not in self._extra_capabilities:
            self._extra_capabilities.append(name)

    @property
    def capabilities(self) -> list[str]:
        """The capability strings this worker advertises (section 4.3)."""
        caps = ["objects", "chunked", "datasets", "calls", "notifications", "deadlines", "training"]
        caps += [CHUNKED_WEIGHTS, MODEL_OBJECT]
        return caps + self._extra_capabilities

    # -- serving ----------------------------------------------------------------------------------

    def set_tokens(self, tokens: Mapping[str, str] | Iterable[str] | None) -> None:
        """Replace the tokens clients may present (as the constructor's ``tokens``); set before serving."""
        self._tokens = TokenTable(tokens)

    def authenticate(self, token: str) -> str | None:
        """Map a Hello token to an identity (None: refused). Compares in constant time (section 15)."""
        return self._tokens.authenticate(token)

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8777,
        *,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        """Start listening and return; :meth:`wait_closed` waits for :meth:`stop`. Port 0 picks one."""
        if self._server is not None:
            raise RuntimeError("the worker is already serving")
        if not self._tokens.required:
            log.warning(
                "worker %s requires no token: every client shares the %r identity and its objects",
                self.id,
                ANONYMOUS,
            )
        ssl_context = server_ssl_context(tls_cert, tls_key)
        transport.keep_payload_buffers()  # chunk-sized buffers reused, not faulted in again (see there)
        if not self._warmed_up:
            # PyTorch's one-time costs before listening, off the first client's clock (warm_up_training).
            # Awaited, not left running: the import it triggers must not race code on other threads
            # (TorchScript scripting walks module dicts that the import is filling).
            self._warmed_up = True
            await asyncio.wrap_future(self.threads.warm_up())
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._server = await serve(
            self._serve_connection,
            host,
            port,
            ssl=ssl_context,
            process_request=self._admit,
            create_connection=FastServerConnection,  # bulk frames read without copies (wsframes)
            **transport.server_options(self.limits.max_frame_bytes),
        )
        self._tls = ssl_context is not None
        identities = len(self._tokens.identities)
        log.info(
            "worker %s listening on %s (%s, %s)",
            self.id,
            self.url,
            f"{identities} identit{'y' if identities == 1 else 'ies'}" if identities else "no token required",
            "TLS" if self._tls else "no TLS",
        )

    @property
    def port(self) -> int:
        """The TCP port the worker listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the worker is not serving")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """The ``ws://`` (or ``wss://``) URL of the worker (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the worker is not serving")
        sock = next(iter(self._server.sockets))
        host = sock.getsockname()[0]
        scheme = "wss" if self._tls else "ws"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    async def wait_closed(self) -> None:
        """Wait until :meth:`stop` has finished."""
        if self._stopping is not None:
            await self._stopping.wait()
        if self._server is not None:
            await self._server.wait_closed()

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8777,
        *,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        """Serve until :meth:`stop` is called (or the task is cancelled, which stops gracefully)."""
        await self.start(host, port, tls_cert=tls_cert, tls_key=tls_key)
        try:
            await self.wait_closed()
        finally:
            await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight work finish for ``grace`` seconds, cancel the rest, close 1001."""
        server = self._server
        if server is None:
            return
        server.close(close_connections=False)
        grace = self.shutdown_grace if grace is None else grace
        await asyncio.gather(*(c.shutdown(grace) for c in list(self._connections)), return_exceptions=True)
        await server.wait_closed()
        if self._stopping is not None:
            self._stopping.set()
        self._server = None
        log.info("worker %s stopped", self.id)

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8777,
        *,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        """Serve until SIGINT/SIGTERM (or Ctrl-C), blocking: the entry point of a script.

        Where an event loop already runs in this thread (asyncio code, a notebook), blocking would stall
        that loop: this raises :class:`~fedproto.EventLoopRunningError`; use
        ``await worker.serve(host, port)`` there instead.

        The worker logs to the ``fedproto.worker`` logger ("listening on URL" when ready). When the
        program has configured no logging at all, this adds a handler printing fedproto's INFO
        messages to stderr, so a plain script shows them; see :func:`_log_to_stderr_if_unconfigured`.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise EventLoopRunningError(
                "Worker.run() blocks, and an event loop is already running in this thread: "
                "use 'await worker.serve(host, port)' instead"
            )
        _log_to_stderr_if_unconfigured()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
            await self.serve(host, port, tls_cert=tls_cert, tls_key=tls_key)

        asyncio.run(main())

    async def notify(self, topic: str, payload: Any = None, *, identity: str | None = None) -> int:
        """Push a notification to every connected client (or those of one identity); returns how many got it.

        A client whose frame limit the notification would exceed does not get it (section 6.4.8).
        """
        targets = [c for c in list(self._connections) if identity is None or c.identity == identity]
        results = await asyncio.gather(*(c.notify(topic, payload) for c in targets), return_exceptions=True)
        return sum(1 for result in results if not isinstance(result, BaseException))

    def _admit(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse an opening handshake with HTTP 503 while ``max_connections`` connections are served."""
        if self.max_connections and len(self._connections) >= self.max_connections:
            open_now = len(self._connections)
            log.warning("connection refused peer=%s: %d connections open", _peer_of(ws), open_now)
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        session = ServerSession(
            server_id=self.id,
            server_name=transport.IMPLEMENTATION_NAME,
            limits=self.limits,
            capabilities=self.capabilities,
            authenticate=self.authenticate,
            check_upload=self._check_upload,
            check_weights=self._check_weights,
            hasher=background_hasher,
        )
        handler = ServerConnectionHandler(self._dispatch, ws, session, expose_errors=self.expose_errors)
        self._connections.add(handler)
        try:
            await handler.run()
        finally:
            self._connections.discard(handler)

    def _check_upload(self, identity: str, object_id: str, info: TensorInfo, overwrite: bool) -> None:
        # An upload's buffer is allocated whole when it starts: the identity's uploads in progress, on
        # every connection, count against its quota, or one client could hold many quotas' worth of
        # memory by starting uploads it never finishes (section 14.2.9).
        pending = sum(c.session.upload_bytes for c in self._connections if c.identity == identity)
        self.objects.check_room(identity, object_id, info.nbytes, overwrite=overwrite, pending=pending)

    def _check_weights(self, identity: str, manifest: WeightsManifest, strict: bool) -> None:
        # before the upload's buffer exists: a manifest that does not fit the model (or no model at all)
        # is refused at once, so a set_weights never makes the worker hold more than a model's bytes
        state = self.services.training_state(identity)
        state.check_weights({e.name: (e.dtype, e.shape) for e in manifest.entries}, strict=strict)

    # -- threads and datasets, for exposed methods and subclasses ---------------------------------

    def submit_training(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue model work on the worker's training thread (see :meth:`WorkerThreads.submit_training`)."""
        return self.threads.submit_training(func, *args, **kwargs)

    async def run_training(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run model work on the training thread and return its result (see :meth:`submit_training`)."""
        return await self.threads.run_training(func, *args, **kwargs)

    @property
    def training_busy(self) -> bool:
        """Whether the training thread is running (or has queued) model work."""
        return self.threads.training_busy

    async def run_sync(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking work on the worker's threads, off the event loop."""
        return await self.threads.run_sync(func, *args, **kwargs)

    def dataset(self, key: str) -> Dataset:
        """The dataset called ``key`` (NOT_FOUND otherwise)."""
        return self.services.dataset(key)


def _peer_of(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


#: The handler :func:`_log_to_stderr_if_unconfigured` added, so that it is added once only.
_stderr_handler: logging.Handler | None = None


def _log_to_stderr_if_unconfigured() -> None:
    """Show fedproto's INFO messages on stderr when the program configured no logging.

    Libraries should leave logging to the application, but :meth:`Worker.run` *is* the application's
    entry point in a plain script, and Python's last-resort handler prints only warnings: "listening
    on" would never show. So, as ``uvicorn.run`` and ``flask run`` do, the blocking entry point sets up
    minimal output, and only when nothing else did: once any handler is configured anywhere up the
    logger tree (``logging.basicConfig``, the ``fedproto`` command line, a framework), this does
    nothing and the application keeps full control. Plain text, not rich: log lines stay greppable.
    """
    global _stderr_handler
    package_log = logging.getLogger("fedproto")
    if _stderr_handler is not None or package_log.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_log.addHandler(handler)
    if package_log.level == logging.NOTSET:
        package_log.setLevel(logging.INFO)
    _stderr_handler = handler
