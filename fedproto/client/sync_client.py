"""The synchronous facade: :class:`Client`, with the same methods as :class:`AsyncClient`.

Every ``Client`` owns a private event loop on a background thread and runs the async core there, so it
works the same in a script and in a notebook whose own loop is already running in the main thread.
Interrupting a call (Ctrl-C) cancels the request on the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import ssl
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from fedproto import hashing
from fedproto.client.async_client import (
    CLIENT_NAME,
    AsyncClient,
    NotificationCallback,
    ObjectRef,
    RemoteMethods,
)
from fedproto.errors import ConnectionClosedError
from fedproto.types import ServerInfo

__all__ = ["Client"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class _LoopThread:
    """An event loop running on a daemon thread, to which coroutines are handed and awaited."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop.is_closed():
            coro.close()
            raise ConnectionClosedError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a Client must not be used from its own callbacks; use AsyncClient there")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the task, which cancels the request on the worker
            try:
                future.result(timeout=5)
            except (concurrent.futures.CancelledError, Exception):
                pass
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
    *,
    result: Callable[[Client, R], R] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[Concatenate[Client, P], R]:
    """The blocking :class:`Client` method that runs ``method`` (an :class:`AsyncClient` coroutine).

    The method is written once, on the async core; this builds its blocking twin instead of a second
    hand-written signature that could drift. ``ParamSpec`` carries the parameters to type checkers, so
    mypy and IDEs check ``client.send(...)`` against ``AsyncClient.send``; ``functools.wraps`` and an
    explicit ``__signature__`` give ``help()`` and ``inspect`` the same parameters and docstring.
    ``result`` post-processes the value (``send``'s handle must go through the blocking client);
    ``defaults`` changes the default of keyword parameters, and is applied when the caller omits them.
    """
    name = method.__name__
    signature = inspect.signature(method)
    overrides = dict(defaults or {})
    unknown = set(overrides) - set(signature.parameters)
    if unknown:
        raise TypeError(f"AsyncClient.{name} has no parameters {sorted(unknown)}")

    @functools.wraps(method)
    def blocking(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        for key, default in overrides.items():
            kwargs.setdefault(key, default)
        reply = self._run(method(self._async, *args, **kwargs))
        return reply if result is None else result(self, reply)

    blocking.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            parameter.replace(default=overrides[parameter.name]) if parameter.name in overrides else parameter
            for parameter in signature.parameters.values()
        ]
    )
    blocking.__module__ = __name__
    blocking.__qualname__ = f"Client.{name}"
    blocking.__doc__ = (
        f"{inspect.getdoc(method) or ''}\n\nBlocks until the reply: :meth:`AsyncClient.{name}` run on the "
        "client's loop thread."
    )
    if overrides:
        changed = ", ".join(f"``{key}={value!r}``" for key, value in overrides.items())
        blocking.__doc__ += f" Defaults here: {changed}."
    return blocking


def _owned_by_caller(client: Client, ref: ObjectRef) -> ObjectRef:
    """``send``'s handle, rebound so that its ``get``/``delete`` block too."""
    return ObjectRef(ref.id, ref.info, client)


class Client:
    """A blocking connection to one worker: ``with Client("ws://127.0.0.1:8777") as alice: ...``.

    Takes the same keyword arguments as :class:`AsyncClient` and connects (doing the handshake) at once.
    Notification callbacks run on the client's background thread.
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
        """Connect to the worker at ``url`` and do the handshake; raises the worker's error if it refuses.

        The arguments are :class:`AsyncClient`'s; ``help()`` shows their descriptions here too (one text
        for both clients, appended below when this module loads).
        """
        # built before the loop thread, so that a bad argument leaves no thread behind
        self._async = AsyncClient(
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
        self._portal = _LoopThread(name="fedproto-client")
        self.remote = RemoteMethods(self)
        try:
            self._portal.run(self._async.open())
        except BaseException:
            self._portal.stop()
            raise

    @property
    def url(self) -> str:
        """The worker's URL."""
        return self._async.url

    @property
    def server(self) -> ServerInfo:
        """What the worker said about itself in its Welcome."""
        return self._async.server

    @property
    def digest(self) -> str:
        """The payload digest algorithm the worker chose for this connection (protocol section 7.5)."""
        return self._async.digest

    @property
    def aio(self) -> AsyncClient:
        """The async client underneath (its coroutines run on this client's own loop thread)."""
        return self._async

    def close(self) -> None:
        """Say Goodbye, close the connection and stop the background loop (again: does nothing)."""
        if self._portal.closed:
            return
        try:
            self._portal.run(self._async.close())
        finally:
            self._portal.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._portal.run(coro)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine of :attr:`aio` on this client's loop thread, without waiting for it.

        The way for asyncio code to drive a blocking client: ``await
        asyncio.wrap_future(client.submit(client.aio.fit("xor")))`` lets many clients work at once
        (this is what :class:`~fedproto.FedAvg` does). Cancelling the returned future cancels the
        request on the worker. Raises ConnectionClosedError when the client is closed.
        """
        if self._portal.closed:
            coro.close()
            raise ConnectionClosedError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._portal.loop)

    def on_notification(self, callback: NotificationCallback) -> NotificationCallback:
        """Call ``callback(topic, payload)`` (on the client's thread) for every notification."""
        return self._async.on_notification(callback)

    # Every request method is the AsyncClient coroutine of the same name, run to completion on the
    # client's loop thread: same parameters, same documentation (see _blocking).

    ping = _blocking(AsyncClient.ping)
    send = _blocking(AsyncClient.send, result=_owned_by_caller)
    get = _blocking(AsyncClient.get)
    delete = _blocking(AsyncClient.delete)
    list_objects = _blocking(AsyncClient.list_objects)
    objects_count = _blocking(AsyncClient.objects_count)
    clear_objects = _blocking(AsyncClient.clear_objects)
    search = _blocking(AsyncClient.search)
    datasets = _blocking(AsyncClient.datasets)
    methods = _blocking(AsyncClient.methods)
    call = _blocking(AsyncClient.call)
    call_with = _blocking(AsyncClient.call_with)
    next_notification = _blocking(AsyncClient.next_notification)
    set_train_config = _blocking(AsyncClient.set_train_config)
    # In a terminal a blocking fit shows a progress bar unless asked not to (progress=False).
    fit = _blocking(AsyncClient.fit, defaults={"progress": None})
    evaluate = _blocking(AsyncClient.evaluate)
    get_model_weights = _blocking(AsyncClient.get_model_weights)
    set_model_weights = _blocking(AsyncClient.set_model_weights)
    stream_model_weights = _blocking(AsyncClient.stream_model_weights)
    list_models = _blocking(AsyncClient.list_models)


def _args_section(docstring: str | None) -> str:
    """The ``Args:`` section of a Google-style docstring, as written (indented), or nothing."""
    text = docstring or ""
    start = text.find("        Args:")
    return text[start:].rstrip() if start >= 0 else ""


# One text describes the options of both clients: the blocking client's help shows AsyncClient's.
Client.__init__.__doc__ = "\n\n".join(
    ((Client.__init__.__doc__ or "").rstrip(), _args_section(AsyncClient.__init__.__doc__))
)
