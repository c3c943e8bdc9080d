"""The blocking facade :class:`fedproto.Client`, against a worker served from a thread of its own.

It must work both in plain code and inside a running event loop (an ``async def`` test calling it
directly, as a notebook cell does)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import pydoc
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import WAIT, ThreadedWorker
from torch import nn

import fedproto
from fedproto.client import async_client
from fedproto.server.profile import conformance_worker


def client_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "fedproto-client" and t.is_alive())


async def test_client_inside_a_running_event_loop(threaded_worker: ThreadedWorker) -> None:
    asyncio.get_running_loop()  # this test runs inside a loop, like a notebook cell
    with fedproto.Client(threaded_worker.url) as c:
        assert c.url == threaded_worker.url
        assert c.server.identity == "anonymous"
        assert isinstance(c.aio, fedproto.AsyncClient)
        assert c.ping() >= 0
        ref = c.send(torch.arange(4), "x", tags=["t"], description="four")
        assert isinstance(ref, fedproto.ObjectRef)
        assert torch.equal(ref.get(), torch.arange(4))
        assert torch.equal(c.get("x"), torch.arange(4))
        assert [o.id for o in c.list_objects()] == ["x"]
        assert [o.id for o in c.search("t")] == ["x"]
        assert c.objects_count() == 1
        assert ref.delete() == 32
        c.send(torch.zeros(1), "y")
        assert c.clear_objects() == 1
        assert [d.key for d in c.datasets()] == ["conformance"]
        assert [m.name for m in c.methods()] == ["echo", "fail", "notify", "sleep", "whoami"]
        assert c.call("echo", 1, k="v") == {"args": [1], "kwargs": {"k": "v"}}
        assert c.remote.whoami() == "anonymous"
        assert c.call_with("sleep", [0.01], timeout=WAIT) == 0.01
        with pytest.raises(fedproto.NotFoundError):
            c.get("missing")
        with pytest.raises(fedproto.DeadlineExceededError):
            c.call_with("sleep", [30], timeout=0.2)
        # the caller's own loop keeps running between blocking calls
        await asyncio.sleep(0)


async def test_notifications_and_training_inside_a_running_loop(threaded_worker: ThreadedWorker) -> None:
    with fedproto.Client(threaded_worker.url) as c:
        seen: list[tuple[str, object]] = []
        threads: list[str] = []

        def on_notification(topic: str, payload: object) -> None:
            seen.append((topic, payload))
            threads.append(threading.current_thread().name)

        c.on_notification(on_notification)
        c.call("notify", "hello", [1, 2])
        assert c.next_notification(timeout=WAIT) == ("hello", [1, 2])
        assert seen == [("hello", [1, 2])]
        assert threads == ["fedproto-client"]  # callbacks run on the client's thread

        assert c.list_models().names == ("conformance-linear",)
        torch.manual_seed(0)
        config = fedproto.TrainConfig(
            model=nn.Linear(4, 3), loss_fn="cross_entropy", optimizer_args={"lr": 0.1}, batch_size=16
        )
        assert c.set_train_config(config).parameter_count == 15
        events: list[fedproto.FitProgressEvent] = []
        result = c.fit("conformance", progress=events.append, progress_every=1, return_weights=True)
        assert result.batches == 4 and [e.batch for e in events] == [1, 2, 3, 4]
        weights = c.get_model_weights()
        assert result.weights is not None
        assert all(torch.equal(weights[n], result.weights[n]) for n in weights)
        assert c.set_model_weights({"bias": torch.zeros(3)}) == 1
        assert torch.equal(c.get_model_weights()["bias"], torch.zeros(3))
        assert c.evaluate("conformance").total == 64


def test_client_in_plain_code_and_from_many_threads(threaded_worker: ThreadedWorker) -> None:
    with fedproto.Client(threaded_worker.url) as c, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: c.call("echo", i), range(64)))
        assert results == [{"args": [i], "kwargs": {}} for i in range(64)]
        sleeps = list(pool.map(lambda _: c.call("sleep", 0.2), range(8)))
        assert sleeps == [0.2] * 8


def test_client_from_its_own_callback_is_refused(threaded_worker: ThreadedWorker) -> None:
    with fedproto.Client(threaded_worker.url) as c:
        errors: list[BaseException] = []
        done = threading.Event()

        def callback(topic: str, payload: object) -> None:
            try:
                c.ping()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        c.on_notification(callback)
        c.call("notify", "t", None)
        assert done.wait(WAIT)
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        assert c.ping() >= 0  # the client still works


def test_failed_connect_raises_and_leaves_no_thread(threaded_worker: ThreadedWorker) -> None:
    before = client_threads()
    url = threaded_worker.url
    threaded_worker.run(threaded_worker.worker.stop(grace=0))
    with pytest.raises(fedproto.ConnectionClosedError):
        fedproto.Client(url, connect_timeout=2)
    assert client_threads() == before


def test_unauthenticated_and_identity() -> None:
    threaded = ThreadedWorker(conformance_worker(tokens={"alice": "tok-a"}))
    try:
        threaded.run(threaded.worker.start("127.0.0.1", 0))
        with pytest.raises(fedproto.UnauthenticatedError):
            fedproto.Client(threaded.url, token="wrong")
        with fedproto.Client(threaded.url, token="tok-a") as c:
            assert c.server.identity == "alice"
            assert c.call("whoami") == "alice"
    finally:
        threaded.close()


def test_close_stops_the_thread(threaded_worker: ThreadedWorker) -> None:
    before = client_threads()
    c = fedproto.Client(threaded_worker.url)
    assert client_threads() == before + 1
    c.close()
    assert client_threads() == before


def _outcome(action: Callable[[], object]) -> type[BaseException] | None:
    """Run ``action``; the class of the exception it raised (dropped at once, with its frames), or None."""
    try:
        action()
    except Exception as exc:
        raised: type[BaseException] | None = type(exc)
    else:
        raised = None
    gc.collect()
    return raised


@pytest.mark.filterwarnings("ignore:coroutine 'AsyncClient:RuntimeWarning")
def test_close_twice_is_harmless(threaded_worker: ThreadedWorker) -> None:
    c = fedproto.Client(threaded_worker.url)
    c.close()
    assert _outcome(c.close) is None


@pytest.mark.filterwarnings("ignore:coroutine 'AsyncClient:RuntimeWarning")
def test_calls_on_a_closed_client_raise_connection_closed(threaded_worker: ThreadedWorker) -> None:
    with fedproto.Client(threaded_worker.url) as c:
        pass
    assert _outcome(c.ping) is fedproto.ConnectionClosedError


# -- the blocking facade mirrors the async core ---------------------------------------------------

#: AsyncClient coroutines with no blocking twin, and why.
ASYNC_ONLY = {"open": "a Client connects in its constructor"}
#: Public Client methods that are no AsyncClient coroutine, and why.
FACADE_ONLY = {
    "submit": "hands a coroutine of the async core to the client's loop thread",
    "on_notification": "registers a callback; the same plain method on both",
}
#: Defaults the blocking facade changes on purpose: in a terminal a blocking fit shows a progress bar.
CHANGED_DEFAULTS = {("fit", "progress"): (False, None)}


def _public(cls: type, predicate: Callable[[object], bool]) -> set[str]:
    return {name for name, member in inspect.getmembers(cls, predicate) if not name.startswith("_")}


def test_every_async_coroutine_has_a_blocking_twin_and_back() -> None:
    coroutines = _public(fedproto.AsyncClient, inspect.iscoroutinefunction)
    blocking = _public(fedproto.Client, inspect.isfunction)
    assert coroutines - blocking == set(ASYNC_ONLY)
    assert blocking - coroutines == set(FACADE_ONLY)
    assert not any(inspect.iscoroutinefunction(getattr(fedproto.Client, name)) for name in blocking)


@pytest.mark.parametrize(
    "name", sorted(_public(fedproto.AsyncClient, inspect.iscoroutinefunction) - set(ASYNC_ONLY))
)
def test_blocking_twin_has_the_same_parameters(name: str) -> None:
    core = inspect.signature(getattr(fedproto.AsyncClient, name))
    twin = inspect.signature(getattr(fedproto.Client, name))
    assert list(twin.parameters) == list(core.parameters)
    for parameter, mirrored in zip(core.parameters.values(), twin.parameters.values(), strict=True):
        assert (mirrored.kind, mirrored.annotation) == (parameter.kind, parameter.annotation), parameter.name
        expected = CHANGED_DEFAULTS.get((name, parameter.name), (parameter.default, parameter.default))[1]
        assert mirrored.default == expected, parameter.name
    assert twin.return_annotation == core.return_annotation


def test_blocking_twins_document_themselves() -> None:
    send = fedproto.Client.send
    assert send.__qualname__ == "Client.send" and send.__module__ == "fedproto.client.sync_client"
    core_doc = inspect.getdoc(fedproto.AsyncClient.send)
    assert core_doc and core_doc in (send.__doc__ or "")
    assert "progress=None" in (fedproto.Client.fit.__doc__ or "")
    shown = pydoc.render_doc(fedproto.Client.send, renderer=pydoc.plaintext)
    assert "send(self, tensor:" in shown and "overwrite: 'bool' = False" in shown


def test_blocking_fit_asks_for_a_bar_by_default(
    threaded_worker: ThreadedWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []

    def wants_bar(progress: object) -> bool:
        asked.append(progress)
        return False

    monkeypatch.setattr(async_client, "wants_bar", wants_bar)
    with fedproto.Client(threaded_worker.url) as c:
        for kwargs in ({}, {"progress": False}):
            with pytest.raises(fedproto.FailedPreconditionError):  # no train config yet
                c.fit("conformance", **kwargs)
    assert asked == [None, False]  # None: a bar when stderr is a terminal


def test_submit_runs_a_coroutine_on_the_client_loop(threaded_worker: ThreadedWorker) -> None:
    with fedproto.Client(threaded_worker.url) as c:
        assert c.submit(c.aio.call("echo", 5)).result(timeout=WAIT) == {"args": [5], "kwargs": {}}
    closing = c.aio.ping()
    with pytest.raises(fedproto.ConnectionClosedError):
        c.submit(closing)


# -- connection options: explicit, the same everywhere ---------------------------------------------------

_OPENERS = {
    "AsyncClient": fedproto.AsyncClient.__init__,
    "AsyncClient.connect": fedproto.AsyncClient.connect,
    "Client": fedproto.Client.__init__,
}


def _options(opener: Callable[..., object]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(opener).parameters.values() if p.name not in ("self", "url")]


@pytest.mark.parametrize("where", sorted(_OPENERS))
def test_connection_options_are_explicit_typed_and_documented(where: str) -> None:
    opener = _OPENERS[where]
    options = _options(opener)
    # no **kwargs: help(), editors and type checkers see every option
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options), where
    assert all(p.annotation is not inspect.Parameter.empty for p in options), where
    doc = inspect.getdoc(opener) or ""
    undocumented = [p.name for p in options if f"``{p.name}``" not in doc and f"{p.name}:" not in doc]
    assert not undocumented, f"{where} does not document {undocumented}"


@pytest.mark.parametrize("where", ["AsyncClient.connect", "Client"])
def test_connection_options_mirror_the_async_constructor(where: str) -> None:
    core = [(p.name, p.kind, p.annotation, p.default) for p in _options(fedproto.AsyncClient.__init__)]
    assert [(p.name, p.kind, p.annotation, p.default) for p in _options(_OPENERS[where])] == core


def test_help_shows_the_client_options() -> None:
    shown = pydoc.render_doc(fedproto.Client, renderer=pydoc.plaintext)
    for text in ("token: 'str' = ''", "timeout: 'float | None' = None", "reconnect_attempts: 'int' = 5",
                 "max_frame_bytes: 'int' = 0", "ssl_context: 'ssl.SSLContext | None' = None"):
        assert text in shown, text


def test_a_misspelt_option_fails_before_any_thread_starts() -> None:
    before = client_threads()
    with pytest.raises(TypeError, match="tokn"):
        fedproto.Client("ws://127.0.0.1:9", tokn="secret")  # type: ignore[call-arg]
    assert client_threads() == before


def test_every_option_reaches_the_connection(threaded_worker: ThreadedWorker) -> None:
    options = {
        "token": "",
        "name": "options-test",
        "timeout": 12.5,
        "connect_timeout": 3.0,
        "reconnect": False,
        "reconnect_attempts": 2,
        "max_frame_bytes": 1 << 20,
        "digests": ("blake3", "sha256"),
    }
    with fedproto.Client(threaded_worker.url, **options) as c:
        assert {key: getattr(c.aio, key) for key in options} == options
        assert c.ping() >= 0
        assert c.digest == c.server.digest == "blake3"


def test_a_bad_digest_offer_fails_before_any_thread_starts() -> None:
    before = client_threads()
    with pytest.raises(fedproto.DigestConfigError, match="md5"):
        fedproto.Client("ws://127.0.0.1:9", digests=["md5", "sha256"])
    assert client_threads() == before


def test_the_default_offer_negotiates_xxh3_with_the_python_worker(threaded_worker: ThreadedWorker) -> None:
    with fedproto.Client(threaded_worker.url) as c:
        assert c.digest == "xxh3-128"
        ref = c.send(torch.arange(5.0), "x")
        assert not ref.info.tensor.sha256 and len(ref.info.tensor.digest) == 16


async def test_connect_passes_every_option(threaded_worker: ThreadedWorker) -> None:
    async with fedproto.AsyncClient.connect(
        threaded_worker.url, name="options-test", timeout=7.0, reconnect=False, max_frame_bytes=4096
    ) as c:
        assert (c.name, c.timeout, c.reconnect, c.max_frame_bytes) == ("options-test", 7.0, False, 4096)
        assert await c.ping() >= 0
