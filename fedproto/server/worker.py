"""The reference server: a data owner's :class:`Worker`.

A worker holds named datasets, an object store scoped per client identity, the methods its owner chose
to expose, and (per identity) a training state. It serves protocol v1 over WebSocket
(``await worker.serve(host, port)`` in asyncio code, ``worker.run(host, port)`` in scripts and notebooks)
and answers every request as docs/protocol.md says. The per-connection I/O lives in
:mod:`fedproto.server._connection`; the protocol rules in :mod:`fedproto.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import signal
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, overload

import torch
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from fedproto import codec
from fedproto.datasets import Dataset, as_dataset, describe, load_dataset_file
from fedproto.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnimplementedError,
)
from fedproto.hashing import BackgroundSha256
from fedproto.server._connection import ServerConnectionHandler
from fedproto.server.methods import CallContext, ExposedMethod, MethodRegistry
from fedproto.server.store import ObjectStore
from fedproto.session import RequestReceived, ServerSession
from fedproto.training import ModelRegistry, TrainingState
from fedproto.types import Limits, TensorInfo
from fedproto_pb.v1 import calls_pb2, datasets_pb2, objects_pb2
from fedproto_pb.v1.objects_pb2 import SendObjectRequest

__all__ = ["ANONYMOUS", "SUBPROTOCOL", "Worker", "load_token_file"]

log = logging.getLogger("fedproto.worker")

F = TypeVar("F", bound=Callable[..., Any])

#: The identity every client shares when the worker requires no token (section 15).
ANONYMOUS = "anonymous"
#: The WebSocket subprotocol name of protocol v1 (section 2).
SUBPROTOCOL = Subprotocol("fedproto.v1")
SERVER_NAME = "fedproto-python/0.1"


def load_token_file(path: str | Path) -> dict[str, str]:
    """Read ``identity token`` (or ``identity:token``) lines into {identity: token}; # starts a comment.

    A line holding only a token gets an identity derived from the token's hash, so that identities never
    reveal tokens.
    """
    tokens: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(":", " ", 1).split()
        if len(parts) == 1:
            identity, token = _identity_of(parts[0]), parts[0]
        elif len(parts) == 2:
            identity, token = parts
        else:
            raise ValueError(f"{path}:{number}: expected 'IDENTITY TOKEN' or 'TOKEN'")
        if identity in tokens:
            raise ValueError(f"{path}:{number}: identity {identity!r} appears twice")
        tokens[identity] = token
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


def _identity_of(token: str) -> str:
    return "id-" + hashlib.sha256(token.encode()).hexdigest()[:12]


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
    ) -> None:
        self.id = id
        self.limits = limits or Limits()
        self.weights_only = weights_only
        self.shutdown_grace = shutdown_grace
        self._tokens = _normalize_tokens(tokens)
        self.objects = ObjectStore(max_bytes_per_identity=self.limits.max_object_bytes)
        self.methods = MethodRegistry()
        self.methods.register_marked(self)
        self._datasets: dict[str, Dataset] = {}
        self._training: dict[str, TrainingState] = {}
        self._models = ModelRegistry()
        self._extra_capabilities: list[str] = []
        self._connections: set[ServerConnectionHandler] = set()
        self._server: Server | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix=f"fedproto-{id}")
        # All model work (load, fit, evaluate, weights) runs on one thread, which gets PyTorch's intra-op
        # threads; the serving thread keeps one. OpenMP keeps a team of threads per calling thread, and
        # once the teams of two threads outnumber the cores, libgomp stops spinning at its barriers and
        # every small parallel region pays for a sleep and a wake-up: a small model's fit ran 3-4x slower
        # in a worker than in a script. This must happen before the serving thread's first parallel
        # region (loading a dataset, say), which is why it is done here.
        self._training_jobs = 0  # queued or running on the training thread
        self._training_jobs_lock = threading.Lock()
        self.training_threads = training_threads or torch.get_num_threads()
        torch.set_num_threads(1)
        self._training_executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"fedproto-{id}-train",
            initializer=torch.set_num_threads,
            initargs=(self.training_threads,),
        )

    # -- what the worker offers -------------------------------------------------------------------

    def add_dataset(self, dataset: Any, key: str, description: str = "") -> None:
        """Offer a dataset under ``key``: a torch Dataset, a (features, targets) pair, or a file path."""
        if not key:
            raise ValueError("a dataset needs a non-empty key")
        if isinstance(dataset, (str, Path)):
            self._datasets[key] = load_dataset_file(dataset, description)
        else:
            self._datasets[key] = as_dataset(dataset, description)

    @property
    def datasets(self) -> dict[str, Dataset]:
        """The datasets this worker offers, by key (a copy of the mapping)."""
        return dict(self._datasets)

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
        self._model_registry().register(name, factory)

    def _model_registry(self) -> ModelRegistry:
        return self._models

    def add_capability(self, name: str) -> None:
        """Advertise an extra capability string in the Welcome."""
        if name not in self._extra_capabilities:
            self._extra_capabilities.append(name)

    @property
    def capabilities(self) -> list[str]:
        """The capability strings this worker advertises (section 4.3)."""
        caps = ["objects", "chunked", "datasets", "calls", "notifications", "deadlines", "training"]
        return caps + self._extra_capabilities

    # -- serving ----------------------------------------------------------------------------------

    def authenticate(self, token: str) -> str | None:
        """Map a Hello token to an identity (None: refused). Compares in constant time (section 15)."""
        if not self._tokens:
            return ANONYMOUS
        given = token.encode()
        found = None
        for secret, identity in self._tokens:
            # Every token is compared, so timing reveals neither which token matched nor where.
            if hmac.compare_digest(given, secret):
                found = identity
        return found

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
        if not self._tokens:
            log.warning(
                "worker %s requires no token: every client shares the %r identity and its objects",
                self.id,
                ANONYMOUS,
            )
        ssl_context = None
        if tls_cert or tls_key:
            if not (tls_cert and tls_key):
                raise ValueError("TLS needs both a certificate and a key")
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(str(tls_cert), str(tls_key))
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._server = await serve(
            self._serve_connection,
            host,
            port,
            ssl=ssl_context,
            max_size=self.limits.max_frame_bytes,
            compression=None,  # tensors do not compress; deflate would only cost CPU (section 2)
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_subprotocol,
            ping_interval=20,
            ping_timeout=60,
            max_queue=64,
            write_limit=4 * 1024 * 1024,
            server_header=None,
        )
        log.info("worker %s listening on %s", self.id, self.url)

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
        scheme = "wss" if self._server.server._ssl_context is not None else "ws"  # type: ignore[attr-defined]
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
        """Serve until SIGINT/SIGTERM (or Ctrl-C), blocking. Works even where a loop already runs.

        In a notebook (an event loop already running in this thread) the worker gets its own loop in a
        background thread, and this call blocks until it is interrupted, like it does in a script.
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
            await self.serve(host, port, tls_cert=tls_cert, tls_key=tls_key)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(main())
            return
        thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"fedproto-{self.id}", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.2)
        except KeyboardInterrupt:
            if self._loop is not None:
                asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(self.shutdown_grace + 10)
            thread.join()

    async def notify(self, topic: str, payload: Any = None, *, identity: str | None = None) -> int:
        """Push a notification to every connected client (or those of one identity); returns how many."""
        targets = [c for c in list(self._connections) if identity is None or c.identity == identity]
        await asyncio.gather(*(c.notify(topic, payload) for c in targets), return_exceptions=True)
        return len(targets)

    async def _serve_connection(self, ws: ServerConnection) -> None:
        session = ServerSession(
            server_id=self.id,
            server_name=SERVER_NAME,
            limits=self.limits,
            capabilities=self.capabilities,
            authenticate=self.authenticate,
            check_upload=self._check_upload,
            hasher=BackgroundSha256,
        )
        handler = ServerConnectionHandler(self, ws, session)
        self._connections.add(handler)
        try:
            await handler.run()
        finally:
            self._connections.discard(handler)

    def _check_upload(self, identity: str, request: SendObjectRequest, info: TensorInfo) -> None:
        self.objects.check_room(identity, request.id, info.nbytes, overwrite=request.overwrite)

    # -- requests ---------------------------------------------------------------------------------

    async def _handle_request(
        self, conn: ServerConnectionHandler, event: RequestReceived
    ) -> dict[str, Any] | None:
        handler = _HANDLERS.get(event.kind)
        if handler is None:
            raise UnimplementedError(f"{event.kind} is not implemented by this worker")
        return await handler(self, conn, event)

    def submit_training(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue model work on the worker's training thread (one for all identities, in arrival order).

        The job counts as running until the thread has finished it, even when whoever awaits the
        returned future gives up earlier: :attr:`training_busy` must not say "idle" while a cancelled
        fit is still winding down between two batches.
        """
        future = self._training_executor.submit(functools.partial(func, *args, **kwargs))
        with self._training_jobs_lock:
            self._training_jobs += 1
        future.add_done_callback(self._training_job_done)
        return asyncio.wrap_future(future)

    def _training_job_done(self, _future: Any) -> None:  # runs on the training thread
        with self._training_jobs_lock:
            self._training_jobs -= 1

    async def run_training(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run model work on the training thread and return its result (see :meth:`submit_training`)."""
        return await self.submit_training(func, *args, **kwargs)

    @property
    def training_busy(self) -> bool:
        """Whether the training thread is running (or has queued) model work."""
        return self._training_jobs > 0

    async def run_sync(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking work on the worker's threads, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    def dataset(self, key: str) -> Dataset:
        """The dataset called ``key`` (NOT_FOUND otherwise)."""
        try:
            return self._datasets[key]
        except KeyError:
            raise NotFoundError(f"no dataset {key!r}", details={"dataset_key": key}) from None


# --------------------------------------------------------------------------------------------------
# request handlers: one per request kind, each returning the reply body or None if it sent it itself

Handler = Callable[[Worker, ServerConnectionHandler, RequestReceived], Any]
_HANDLERS: dict[str, Handler] = {}


def _handles(kind: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[kind] = func
        return func

    return register


@_handles("send_object")
async def _send_object(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    request: SendObjectRequest = ev.message
    if ev.payload is not None:
        info = codec.tensor_info_from_proto(request.chunked)
        payload: bytes | bytearray = ev.payload
    elif request.WhichOneof("payload") == "tensor":
        info = codec.check_tensor(request.tensor)
        payload = request.tensor.data
    else:
        raise InvalidArgumentError("SendObjectRequest carries no tensor")
    stored = worker.objects.put(
        conn.identity,
        object_id=request.id,
        tags=request.tags,
        description=request.description,
        tensor=info,
        payload=payload,
        overwrite=request.overwrite,
    )
    return {"send_object_reply": objects_pb2.SendObjectReply(info=codec.object_info_to_proto(stored))}


@_handles("get_object")
async def _get_object(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> None:
    ObjectStore.check_id(ev.message.id)
    stored = worker.objects.get(conn.identity, ev.message.id)
    for frame in conn.session.download(ev.request_id, stored.info, memoryview(stored.payload)):
        await conn.send(frame)


@_handles("delete_object")
async def _delete_object(
    worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived
) -> dict[str, Any]:
    ObjectStore.check_id(ev.message.id)
    freed = worker.objects.delete(conn.identity, ev.message.id)
    return {"delete_object_reply": objects_pb2.DeleteObjectReply(freed_bytes=freed)}


@_handles("list_objects")
async def _list_objects(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    infos = [codec.object_info_to_proto(i) for i in worker.objects.list(conn.identity)]
    return {"list_objects_reply": objects_pb2.ListObjectsReply(objects=infos)}


@_handles("count_objects")
async def _count_objects(
    worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived
) -> dict[str, Any]:
    return {"count_objects_reply": objects_pb2.CountObjectsReply(count=worker.objects.count(conn.identity))}


@_handles("clear_objects")
async def _clear_objects(
    worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived
) -> dict[str, Any]:
    return {"clear_objects_reply": objects_pb2.ClearObjectsReply(removed=worker.objects.clear(conn.identity))}


@_handles("search_objects")
async def _search_objects(
    worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived
) -> dict[str, Any]:
    infos = [codec.object_info_to_proto(i) for i in worker.objects.search(conn.identity, ev.message.tags)]
    return {"search_objects_reply": objects_pb2.SearchObjectsReply(objects=infos)}


@_handles("list_datasets")
async def _list_datasets(
    worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived
) -> dict[str, Any]:
    infos = [codec.dataset_info_to_proto(describe(k, worker._datasets[k])) for k in sorted(worker._datasets)]
    return {"list_datasets_reply": datasets_pb2.ListDatasetsReply(datasets=infos)}


@_handles("list_methods")
async def _list_methods(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    infos = [codec.method_info_to_proto(i) for i in worker.methods.infos()]
    return {"list_methods_reply": calls_pb2.ListMethodsReply(methods=infos)}


@_handles("call")
async def _call(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    request: calls_pb2.CallRequest = ev.message
    method: ExposedMethod = worker.methods.get(request.method)
    size = codec.call_args_size(request)
    limit = worker.limits.max_call_args_bytes
    if limit and size > limit:
        raise ResourceExhaustedError(
            f"call arguments take {size} bytes, more than the limit of {limit}", details={"limit": str(limit)}
        )
    args = [codec.value_from_proto(a) for a in request.args]
    kwargs = codec.values_from_entries(request.kwargs)
    context = None
    if method.wants_context:
        context = CallContext(
            identity=conn.identity, method=method.name, _notify=conn.notify, _loop=asyncio.get_running_loop()
        )
    call_args, call_kwargs = method.bind(args, kwargs, context)
    try:
        if method.is_async:
            result = await method.func(*call_args, **call_kwargs)
        elif method.inline:
            result = method.func(*call_args, **call_kwargs)
        else:
            result = await worker.run_sync(method.func, *call_args, **call_kwargs)
    except asyncio.CancelledError:
        if context is not None:
            context.cancelled.set()
        raise
    try:
        value = codec.value_to_proto(result)
    except InvalidArgumentError as exc:
        raise InternalError(f"{method.name} returned a value the protocol cannot carry: {exc}") from None
    return {"call_reply": calls_pb2.CallReply(result=value)}


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
    # Offered: use it. Not offered: still serve (section 2 forbids refusing such clients).
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _normalize_tokens(tokens: Mapping[str, str] | Iterable[str] | None) -> list[tuple[bytes, str]]:
    if tokens is None:
        return []
    pairs = list(tokens.items()) if isinstance(tokens, Mapping) else [(_identity_of(t), t) for t in tokens]
    for identity, token in pairs:
        if not token or not identity:
            raise ValueError("tokens and identities must be non-empty")
    return [(token.encode(), identity) for identity, token in pairs]


# The training handlers register themselves in _HANDLERS when their module is imported.
from fedproto.server import _training_handlers  # noqa: E402, F401
