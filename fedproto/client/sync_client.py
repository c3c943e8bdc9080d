"""The synchronous facade: :class:`Client`, with the same methods as :class:`AsyncClient`.

Every ``Client`` owns a private event loop on a background thread and runs the async core there, so it
works the same in a script and in a notebook whose own loop is already running in the main thread.
Interrupting a call (Ctrl-C) cancels the request on the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import numpy as np
import torch

from fedproto.client.async_client import (
    AsyncClient,
    NotificationCallback,
    ObjectRef,
    RemoteMethods,
    TransferCallback,
)
from fedproto.client.progress import FitProgressCallback
from fedproto.datasets import DatasetDescription
from fedproto.errors import ConnectionClosedError
from fedproto.training import EvaluateResult, FitResult, TrainConfig
from fedproto.types import MethodInfo, ModelCatalog, ModelSummary, ObjectInfo, ServerInfo

__all__ = ["Client"]

T = TypeVar("T")


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


class Client:
    """A blocking connection to one worker: ``with Client("ws://127.0.0.1:8777") as alice: ...``.

    Takes the same keyword arguments as :class:`AsyncClient` and connects (doing the handshake) at once.
    Notification callbacks run on the client's background thread.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._portal = _LoopThread(name="fedproto-client")
        self._async = AsyncClient(url, **kwargs)
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

    # Each method below does exactly what the AsyncClient method of the same name does.

    def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip a Ping; returns the seconds it took."""
        return self._run(self._async.ping(timeout=timeout))

    def send(
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
        """Store a tensor on the worker; returns a handle whose ``get``/``delete`` block."""
        ref = self._run(
            self._async.send(
                tensor, id, tags, description, overwrite=overwrite, progress=progress, timeout=timeout
            )
        )
        return ObjectRef(ref.id, ref.info, self)

    def get(
        self, id: str, *, progress: TransferCallback | None = None, timeout: float | None = None
    ) -> torch.Tensor:
        """Fetch a stored tensor."""
        return self._run(self._async.get(id, progress=progress, timeout=timeout))

    def delete(self, id: str, *, timeout: float | None = None) -> int:
        """Delete a stored object; returns the bytes freed."""
        return self._run(self._async.delete(id, timeout=timeout))

    def list_objects(self, *, timeout: float | None = None) -> list[ObjectInfo]:
        """Every object this identity keeps on the worker."""
        return self._run(self._async.list_objects(timeout=timeout))

    def objects_count(self, *, timeout: float | None = None) -> int:
        """How many objects this identity keeps on the worker."""
        return self._run(self._async.objects_count(timeout=timeout))

    def clear_objects(self, *, timeout: float | None = None) -> int:
        """Delete every object of this identity; returns how many."""
        return self._run(self._async.clear_objects(timeout=timeout))

    def search(self, *tags: str, timeout: float | None = None) -> list[ObjectInfo]:
        """Objects carrying every one of ``tags``."""
        return self._run(self._async.search(*tags, timeout=timeout))

    def datasets(self, *, timeout: float | None = None) -> list[DatasetDescription]:
        """The datasets the worker offers (descriptions only)."""
        return self._run(self._async.datasets(timeout=timeout))

    def methods(self, *, timeout: float | None = None) -> list[MethodInfo]:
        """The methods the worker exposes."""
        return self._run(self._async.methods(timeout=timeout))

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call an exposed method: ``alice.call("get_colony_id")``."""
        return self._run(self._async.call(method, *args, **kwargs))

    def call_with(
        self,
        method: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call an exposed method with explicit arguments and a per-call timeout."""
        return self._run(self._async.call_with(method, args, kwargs, timeout=timeout))

    def on_notification(self, callback: NotificationCallback) -> NotificationCallback:
        """Call ``callback(topic, payload)`` (on the client's thread) for every notification."""
        return self._async.on_notification(callback)

    def next_notification(self, timeout: float | None = None) -> tuple[str, Any]:
        """Wait for the next notification: ``(topic, payload)``."""
        return self._run(self._async.next_notification(timeout))

    def set_train_config(self, config: TrainConfig, *, timeout: float | None = None) -> ModelSummary:
        """Send a train config to the worker."""
        return self._run(self._async.set_train_config(config, timeout=timeout))

    def fit(
        self,
        dataset_key: str,
        *,
        progress: bool | FitProgressCallback | None = None,
        progress_every: int = 0,
        return_weights: bool = False,
        timeout: float | None = None,
    ) -> FitResult:
        """Train on one of the worker's datasets (a progress bar by default in a terminal)."""
        return self._run(
            self._async.fit(
                dataset_key,
                progress=progress,
                progress_every=progress_every,
                return_weights=return_weights,
                timeout=timeout,
            )
        )

    def evaluate(
        self,
        dataset_key: str,
        *,
        return_histograms: bool = False,
        nr_bins: int = 0,
        return_loss: bool = True,
        return_raw_accuracy: bool = True,
        batch_size: int = 0,
        timeout: float | None = None,
    ) -> EvaluateResult:
        """Evaluate the worker's model on one of its datasets."""
        return self._run(
            self._async.evaluate(
                dataset_key,
                return_histograms=return_histograms,
                nr_bins=nr_bins,
                return_loss=return_loss,
                return_raw_accuracy=return_raw_accuracy,
                batch_size=batch_size,
                timeout=timeout,
            )
        )

    def get_model_weights(self, *, timeout: float | None = None) -> dict[str, torch.Tensor]:
        """The worker's current model weights."""
        return self._run(self._async.get_model_weights(timeout=timeout))

    def set_model_weights(
        self, state: dict[str, torch.Tensor], *, strict: bool = False, timeout: float | None = None
    ) -> int:
        """Replace (some of) the worker's model weights."""
        return self._run(self._async.set_model_weights(state, strict=strict, timeout=timeout))

    def list_models(self, *, timeout: float | None = None) -> ModelCatalog:
        """The architectures the worker registered."""
        return self._run(self._async.list_models(timeout=timeout))

    def _call_async(self, factory: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        """Run ``factory(async_client)`` on the client's loop (for extensions such as training)."""
        return self._run(factory(self._async))
