"""The asyncio client against a real worker over loopback: every request, errors, pipelining, cancel,
chunked transfers and reconnects."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import torch
from conftest import (
    TOKENS,
    WAIT,
    client_of,
    conformance_limits,
    in_flight,
    wait_until,
)
from torch import nn
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import fedproto
from fedproto import hashing
from fedproto.client.async_client import _InFlightGate
from fedproto.errors import ErrorCode, error_class_for
from fedproto.server.profile import conformance_worker
from fedproto.session import ClientSession, ReplyReceived
from fedproto.types import FreedBytes
from fedproto_pb.v1.calls_pb2 import CallReply
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.errors_pb2 import Error
from fedproto_pb.v1.objects_pb2 import GetObjectReply
from fedproto_pb.v1.objects_pb2 import ObjectInfo as ProtoObjectInfo
from fedproto_pb.v1.session_pb2 import Goodbye, Notification, Pong, Welcome
from fedproto_pb.v1.session_pb2 import Limits as ProtoLimits
from fedproto_pb.v1.tensor_pb2 import DTYPE_UINT8, Chunk
from fedproto_pb.v1.tensor_pb2 import TensorInfo as ProtoTensorInfo
from fedproto_pb.v1.training_pb2 import FitProgress
from fedproto_pb.v1.value_pb2 import Value

# -- helpers --------------------------------------------------------------------------------------------


def raw_bytes(tensor: torch.Tensor) -> bytes:
    """The elements of a tensor as row-major bytes (the exact bit patterns)."""
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_identical(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == expected.dtype
    assert tuple(got.shape) == tuple(expected.shape)
    assert raw_bytes(got) == raw_bytes(expected)


def sample_tensor(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_complex:
        return torch.randn(shape, generator=generator, dtype=dtype)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=generator, dtype=dtype)


ALL_DTYPES = [
    torch.float16,
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]


# -- every request type ---------------------------------------------------------------------------------


async def test_handshake_reports_the_worker(alice: fedproto.AsyncClient, worker: fedproto.Worker) -> None:
    info = alice.server
    assert info.version == 1
    assert info.server_id == worker.id
    assert info.identity == "alice"
    assert {"objects", "chunked", "datasets", "calls", "notifications", "conformance"} <= info.capabilities
    assert info.limits == worker.limits
    assert alice.connected


async def test_ping(alice: fedproto.AsyncClient) -> None:
    for _ in range(3):
        seconds = await alice.ping()
        assert seconds >= 0


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(
    "shape", [(), (0,), (2, 0, 3), (5,), (3, 4)], ids=["0d", "empty", "empty3d", "1d", "2d"]
)
async def test_send_get_round_trip_every_dtype(
    alice: fedproto.AsyncClient, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    tensor = sample_tensor(dtype, shape)
    ref = await alice.send(tensor, "t", tags=["a"], description="d")
    assert ref.id == "t"
    assert ref.info.dtype == dtype
    assert ref.info.shape == shape
    assert ref.info.nbytes == tensor.numel() * tensor.element_size()
    assert ref.info.tags == ("a",)
    assert ref.info.description == "d"
    assert_identical(await alice.get("t"), tensor)
    assert_identical(await ref.get(), tensor)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
async def test_non_contiguous_tensors_arrive_in_logical_order(
    alice: fedproto.AsyncClient, dtype: torch.dtype
) -> None:
    base = sample_tensor(dtype, (4, 6))
    views = {"transposed": base.t(), "strided": base[:, ::2], "expanded": base[:1].expand(3, 6)}
    for name, view in views.items():
        assert not view.is_contiguous()
        await alice.send(view, name)
        got = await alice.get(name)
        assert got.is_contiguous()
        assert_identical(got, view.contiguous())


async def test_float_bit_patterns_are_kept(alice: fedproto.AsyncClient) -> None:
    bits = torch.tensor([0x7FC00001, 0xFF800000, 0x7F800000, 0x80000000, 0x00000001], dtype=torch.int64)
    special = bits.to(torch.int32).view(torch.float32)  # a NaN payload, -inf, inf, -0.0, a subnormal
    await alice.send(special, "special")
    assert_identical(await alice.get("special"), special)


async def test_send_numpy_array_and_conjugate_view(alice: fedproto.AsyncClient) -> None:
    array = np.arange(12, dtype=">i4").reshape(3, 4)  # big-endian input travels little-endian
    await alice.send(array, "np")
    assert_identical(await alice.get("np"), torch.arange(12, dtype=torch.int32).reshape(3, 4))
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    await alice.send(z.conj(), "conj")
    assert_identical(await alice.get("conj"), z.conj().resolve_conj())


async def test_send_without_id_gets_a_fresh_one(alice: fedproto.AsyncClient) -> None:
    first = await alice.send(torch.zeros(1))
    second = await alice.send(torch.zeros(1))
    assert first.id and second.id and first.id != second.id
    assert [o.id for o in await alice.list_objects()] == [first.id, second.id]


async def test_delete(alice: fedproto.AsyncClient) -> None:
    ref = await alice.send(torch.zeros(10, dtype=torch.float64), "x")
    freed = await ref.delete()
    # an int that says what it counts where it is shown, and is a plain number everywhere else
    assert freed == 80 and isinstance(freed, int) and isinstance(freed, FreedBytes)
    assert repr(freed) == "80 bytes freed" and str(freed) == f"{freed}" == "80"
    assert json.dumps({"freed": freed}) == '{"freed": 80}' and freed + 1 == 81
    assert repr(FreedBytes(1)) == "1 byte freed"
    with pytest.raises(fedproto.NotFoundError):
        await alice.get("x")
    assert await alice.objects_count() == 0


async def test_list_count_clear_keep_insertion_order(alice: fedproto.AsyncClient) -> None:
    ids = ["zeta", "alpha", "mid", "beta"]
    for n, object_id in enumerate(ids):
        await alice.send(
            torch.full((n + 1,), n, dtype=torch.int16), object_id, tags=[f"t{n}"], description=object_id
        )
    listed = await alice.list_objects()
    assert [o.id for o in listed] == ids
    assert [o.shape for o in listed] == [(1,), (2,), (3,), (4,)]
    assert [o.tags for o in listed] == [("t0",), ("t1",), ("t2",), ("t3",)]
    assert [o.description for o in listed] == ids
    assert all(o.dtype == torch.int16 for o in listed)
    # overwriting keeps the position; delete + send moves to the end
    await alice.send(torch.zeros(7, dtype=torch.int16), "alpha", overwrite=True)
    await alice.delete("zeta")
    await alice.send(torch.zeros(1, dtype=torch.int16), "zeta")
    listed = await alice.list_objects()
    assert [o.id for o in listed] == ["alpha", "mid", "beta", "zeta"]
    assert listed[0].shape == (7,)
    assert await alice.objects_count() == 4
    assert await alice.clear_objects() == 4
    assert await alice.objects_count() == 0
    assert await alice.list_objects() == []
    assert await alice.clear_objects() == 0


async def test_search_is_an_and_of_exact_tags(alice: fedproto.AsyncClient) -> None:
    await alice.send(torch.zeros(1), "ab", tags=["a", "b"])
    await alice.send(torch.zeros(1), "a", tags=["a"])
    await alice.send(torch.zeros(1), "bc", tags=["b", "c"])
    await alice.send(torch.zeros(1), "abc", tags=["c", "b", "a"])
    await alice.send(torch.zeros(1), "A", tags=["A"])
    assert [o.id for o in await alice.search("a")] == ["ab", "a", "abc"]
    assert [o.id for o in await alice.search("a", "b")] == ["ab", "abc"]
    assert [o.id for o in await alice.search("b", "a", "c")] == ["abc"]
    assert [o.id for o in await alice.search("A")] == ["A"]
    assert await alice.search("a", "missing") == []
    assert [o.id for o in await alice.search()] == ["ab", "a", "bc", "abc", "A"]


async def test_datasets(alice: fedproto.AsyncClient) -> None:
    (fixture,) = await alice.datasets()
    assert fixture.key == "conformance"
    assert fixture.sample_count == 64
    assert fixture.feature_shape == (4,)
    assert fixture.target_shape == ()
    assert fixture.feature_dtype == torch.float32
    assert fixture.target_dtype == torch.int64
    assert fixture.description == "conformance fixture"


async def test_methods(alice: fedproto.AsyncClient) -> None:
    methods = {m.name: m for m in await alice.methods()}
    assert list(methods) == ["echo", "fail", "notify", "sleep", "whoami"]
    echo = methods["echo"]
    assert [(p.name, p.type, p.kind, p.required) for p in echo.parameters] == [
        ("args", "any", "var_positional", False),
        ("kwargs", "any", "var_keyword", False),
    ]
    assert echo.returns == "map"
    fail = methods["fail"]
    assert [(p.name, p.type, p.kind, p.required) for p in fail.parameters] == [
        ("code", "int", "positional_or_keyword", True),
        ("message", "string", "positional_or_keyword", False),
    ]
    assert fail.returns == "null"
    assert [p.name for p in methods["sleep"].parameters] == ["seconds"]
    assert [p.name for p in methods["notify"].parameters] == ["topic", "payload"]  # no context parameter
    assert methods["whoami"].parameters == ()
    assert methods["whoami"].returns == "string"
    assert all(m.description for m in methods.values())


async def test_float_parameter_is_listed_as_double(alice: fedproto.AsyncClient) -> None:
    methods = {m.name: m for m in await alice.methods()}
    assert [(p.name, p.type) for p in methods["sleep"].parameters] == [("seconds", "double")]
    assert methods["sleep"].returns == "double"


async def test_call_and_remote_sugar(alice: fedproto.AsyncClient) -> None:
    value = {
        "none": None,
        "bool": True,
        "int": -(2**63),
        "float": 1.5,
        "str": "héllo",
        "bytes": b"\x00\xff",
        "list": [1, [2, [3]], {"k": "v"}],
        "empty": {},
    }
    result = await alice.call("echo", 1, "x", value, k=2, z=None)
    assert result == {"args": [1, "x", value], "kwargs": {"k": 2, "z": None}}
    assert list(result["kwargs"]) == ["k", "z"]
    assert await alice.remote.echo(b=1, a=2) == {"args": [], "kwargs": {"b": 1, "a": 2}}
    assert list((await alice.remote.echo(b=1, a=2))["kwargs"]) == ["b", "a"]
    assert await alice.remote.whoami() == "alice"
    assert await alice.remote.sleep(0) == 0.0
    assert isinstance(await alice.call("sleep", 0), float)  # an int binds to a double parameter
    assert await alice.call_with("echo", (1,), {"k": 2}, timeout=WAIT) == {"args": [1], "kwargs": {"k": 2}}
    tensor = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    echoed = await alice.call("echo", tensor)
    assert_identical(echoed["args"][0], tensor)


async def test_notifications_callback_and_queue(alice: fedproto.AsyncClient) -> None:
    seen: list[tuple[str, object]] = []
    seen_async: list[tuple[str, object]] = []

    @alice.on_notification
    def record(topic: str, payload: object) -> None:
        seen.append((topic, payload))

    async def record_async(topic: str, payload: object) -> None:
        seen_async.append((topic, payload))

    alice.on_notification(record_async)
    assert await alice.call("notify", "progress", {"step": 1, "of": [1, 2]}) is None
    # the notification is sent before the CallReply, so the callback already ran
    assert seen == [("progress", {"step": 1, "of": [1, 2]})]
    assert await alice.next_notification(timeout=WAIT) == ("progress", {"step": 1, "of": [1, 2]})
    await alice.remote.notify("other", None)
    assert await alice.next_notification(timeout=WAIT) == ("other", None)
    await wait_until(lambda: len(seen_async) == 2, what="async notification callbacks")
    assert seen_async == seen == [("progress", {"step": 1, "of": [1, 2]}), ("other", None)]
    with pytest.raises(TimeoutError):
        await alice.next_notification(timeout=0.05)


async def test_worker_pushes_notifications_per_identity(
    worker: fedproto.Worker, alice: fedproto.AsyncClient, bob: fedproto.AsyncClient
) -> None:
    assert await worker.notify("news", [1, 2], identity="alice") == 1
    assert await alice.next_notification(timeout=WAIT) == ("news", [1, 2])
    with pytest.raises(TimeoutError):
        await bob.next_notification(timeout=0.1)
    assert await worker.notify("all", "x") == 2
    assert await bob.next_notification(timeout=WAIT) == ("all", "x")
    assert await alice.next_notification(timeout=WAIT) == ("all", "x")


async def test_a_notification_too_large_for_a_client_is_dropped_for_it(make_worker) -> None:
    w = await make_worker()
    async with client_of(w, max_frame_bytes=1024) as small, client_of(w) as large:
        assert await w.notify("big", "x" * 2000) == 1  # section 6.4.8
        assert await large.next_notification(timeout=WAIT) == ("big", "x" * 2000)
        with pytest.raises(TimeoutError):
            await small.next_notification(timeout=0.1)
        with pytest.raises(fedproto.ResourceExhaustedError):  # the notify hook (section 18.2.12)
            await small.call("notify", "big", "x" * 2000)
        await small.ping()


# -- training -------------------------------------------------------------------------------------------


def small_config(**changes: object) -> fedproto.TrainConfig:
    torch.manual_seed(0)
    settings: dict[str, object] = {
        "model": nn.Linear(4, 3),
        "loss_fn": "cross_entropy",
        "optimizer": "SGD",
        "optimizer_args": {"lr": 0.1},
        "batch_size": 8,
        "epochs": 2,
        "shuffle": False,
        "seed": 0,
    }
    settings.update(changes)
    return fedproto.TrainConfig(**settings)  # type: ignore[arg-type]


async def test_training_requests(alice: fedproto.AsyncClient) -> None:
    catalog = await alice.list_models()
    assert catalog.names == ("conformance-linear",)
    assert catalog.weights_only is False

    summary = await alice.set_train_config(small_config())
    assert summary.parameter_count == 15
    assert summary.state_names == ("weight", "bias")

    events: list[fedproto.FitProgressEvent] = []
    result = await alice.fit("conformance", progress=events.append, progress_every=3, return_weights=True)
    assert result.epochs == 2
    assert result.batches == 16
    assert result.samples == 128
    assert result.dataset_size == 64
    assert math.isfinite(result.final_loss) and math.isfinite(result.mean_loss)
    assert result.weights is not None and list(result.weights) == ["weight", "bias"]
    # progress: every 3rd batch and the last of each epoch, strictly increasing, all before the reply
    assert [(e.epoch, e.batch) for e in events] == [(1, 3), (1, 6), (1, 8), (2, 3), (2, 6), (2, 8)]
    assert all(e.batches_per_epoch == 8 for e in events)
    assert [e.samples for e in events] == [24, 48, 64, 88, 112, 128]
    assert events[-1].loss == pytest.approx(result.final_loss)

    weights = await alice.get_model_weights()
    assert list(weights) == ["weight", "bias"]
    for name in weights:
        assert_identical(weights[name], result.weights[name])

    evaluation = await alice.evaluate("conformance", return_histograms=True, nr_bins=3)
    assert evaluation.total == 64
    assert evaluation.loss is not None and math.isfinite(evaluation.loss)
    assert 0 <= evaluation.correct <= 64
    assert evaluation.target_histogram == [22, 21, 21]
    assert sum(evaluation.prediction_histogram) == 64
    assert evaluation.kind is fedproto.EvaluateKind.CLASSIFICATION  # int64 targets are classes
    assert evaluation.mean_squared_error is None
    quiet = await alice.evaluate("conformance", return_loss=False, return_raw_accuracy=False, batch_size=5)
    assert quiet.loss is None and quiet.correct == 0 and quiet.total == 64
    assert quiet.prediction_histogram == [] and quiet.target_histogram == []
    unchanged = await alice.get_model_weights()  # evaluate changes no parameter
    for name in weights:
        assert_identical(unchanged[name], weights[name])

    new = {"weight": torch.full((3, 4), 0.25), "bias": torch.tensor([1.0, -2.0, 0.5])}
    assert await alice.set_model_weights(new, strict=True) == 2
    got = await alice.get_model_weights()
    for name in new:
        assert_identical(got[name], new[name])
    assert await alice.set_model_weights({"bias": torch.zeros(3)}) == 1
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.set_model_weights({"bias": torch.zeros(4)})
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.set_model_weights({"nope": torch.zeros(3)})
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.set_model_weights({"bias": torch.zeros(3)}, strict=True)
    assert_identical((await alice.get_model_weights())["bias"], torch.zeros(3))


async def test_fit_without_weights_and_registered_model(alice: fedproto.AsyncClient) -> None:
    initial = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}
    summary = await alice.set_train_config(
        small_config(model="conformance-linear", initial_weights=initial, epochs=1, max_nr_batches=3)
    )
    assert summary.state_names == ("weight", "bias")
    before = await alice.get_model_weights()
    assert_identical(before["weight"], initial["weight"])
    result = await alice.fit("conformance")
    assert result.weights in (None, {})
    assert result.batches == 3 and result.samples == 24 and result.epochs == 1
    after = await alice.get_model_weights()
    assert not torch.equal(after["weight"], before["weight"])


async def test_progress_every_zero_still_reports_the_last_batch_of_each_epoch(
    alice: fedproto.AsyncClient,
) -> None:
    await alice.set_train_config(small_config(batch_size=3, epochs=3))  # 22 batches per epoch
    events: list[fedproto.FitProgressEvent] = []
    result = await alice.fit("conformance", progress=events.append)
    pairs = [(e.epoch, e.batch) for e in events]
    assert pairs == sorted(set(pairs))
    for epoch in (1, 2, 3):
        assert (epoch, 22) in pairs
    assert len(pairs) <= 3 * 22
    assert result.batches == 66 and result.samples == 192


async def test_fits_continue_from_the_current_weights(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(small_config(epochs=1))
    first = await alice.fit("conformance", return_weights=True)
    second = await alice.fit("conformance", return_weights=True)
    assert first.weights is not None and second.weights is not None
    assert not torch.equal(first.weights["weight"], second.weights["weight"])
    assert second.mean_loss < first.mean_loss  # plain SGD on a fixed order keeps improving here


async def test_same_seed_same_result(alice: fedproto.AsyncClient) -> None:
    results = []
    for _ in range(2):
        await alice.set_train_config(small_config(shuffle=True, seed=123, epochs=2))
        results.append(await alice.fit("conformance", return_weights=True))
    assert results[0].weights is not None and results[1].weights is not None
    for name in results[0].weights:
        assert_identical(results[0].weights[name], results[1].weights[name])


async def test_failed_set_train_config_keeps_the_previous_state(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(small_config())
    before = await alice.get_model_weights()
    with pytest.raises(fedproto.NotFoundError):
        await alice.set_train_config(small_config(model="no-such-model"))
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.set_train_config(small_config(initial_weights={"weight": torch.zeros(2, 2)}))
    after = await alice.get_model_weights()
    for name in before:
        assert_identical(after[name], before[name])


async def test_a_model_that_does_not_fit_the_dataset_fails_the_fit(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(small_config(model=nn.Linear(5, 3)))  # 5 inputs, the fixture has 4
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.fit("conformance")
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.evaluate("conformance")
    assert await alice.call("whoami") == "alice"


async def test_model_use_during_a_fit(alice: fedproto.AsyncClient, worker: fedproto.Worker) -> None:
    await alice.set_train_config(small_config(batch_size=1, epochs=100_000))
    started = asyncio.Event()
    fit = asyncio.create_task(alice.fit("conformance", progress=lambda _e: started.set(), progress_every=1))
    try:
        await asyncio.wait_for(started.wait(), WAIT)
        # the reference worker refuses other uses of the model while it trains (section 12.3.13)
        with pytest.raises(fedproto.FailedPreconditionError):
            await alice.get_model_weights()
        with pytest.raises(fedproto.FailedPreconditionError):
            await alice.evaluate("conformance")
        # a new train config replaces the state for later requests; the running fit keeps its own
        zeros = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}
        await alice.set_train_config(small_config(model="conformance-linear", initial_weights=zeros))
        assert not fit.done()
        weights = await alice.get_model_weights()
        assert_identical(weights["weight"], zeros["weight"])
    finally:
        fit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fit
    await wait_until(lambda: in_flight(worker) == 0, what="the worker to stop the fit")
    assert_identical((await alice.get_model_weights())["bias"], torch.zeros(3))


async def test_model_size_limit(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_model_bytes=500))
    async with client_of(w) as c:
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.set_train_config(small_config())
        assert (await c.set_train_config(small_config(model="conformance-linear"))).parameter_count == 15


async def test_custom_torchscript_loss(alice: fedproto.AsyncClient) -> None:
    def squared_margin(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output.sum(dim=1) - target.to(output.dtype)).pow(2).mean()

    await alice.set_train_config(small_config(loss_fn=squared_margin, epochs=1))
    result = await alice.fit("conformance")
    assert result.batches == 8 and math.isfinite(result.final_loss)


# -- errors ---------------------------------------------------------------------------------------------


async def test_not_found(alice: fedproto.AsyncClient) -> None:
    with pytest.raises(fedproto.NotFoundError) as info:
        await alice.get("missing")
    assert info.value.remote is True
    assert info.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(fedproto.NotFoundError):
        await alice.delete("missing")
    await alice.set_train_config(small_config())
    with pytest.raises(fedproto.NotFoundError):
        await alice.fit("no-such-dataset")
    with pytest.raises(fedproto.NotFoundError):
        await alice.evaluate("no-such-dataset")
    with pytest.raises(fedproto.NotFoundError):
        await alice.set_train_config(small_config(model="no-such-model"))


async def test_method_not_found(alice: fedproto.AsyncClient) -> None:
    for name in ("nope", "__init__", "add_dataset", "stop", "_handle_request", "echo.__globals__", ""):
        with pytest.raises(fedproto.MethodNotFoundError):
            await alice.call(name)


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("sleep", ["one"], {}),  # wrong type
        ("sleep", [None], {}),  # null is not a double
        ("fail", ["7"], {}),  # a string for an int
        ("fail", [1.0], {}),  # a double is not an int
        ("fail", [], {}),  # missing required argument
        ("whoami", [1], {}),  # too many positional
        ("sleep", [0.1, 0.2], {}),  # too many positional
        ("sleep", [], {"secs": 1}),  # unknown keyword
        ("sleep", [0.1], {"seconds": 0.1}),  # both by position and keyword
        ("sleep", [-1], {}),  # out of range
        ("sleep", [61], {}),  # out of range
        ("fail", [0], {}),  # outside 1..16
        ("fail", [17], {}),
    ],
)
async def test_invalid_arguments(
    alice: fedproto.AsyncClient, method: str, args: list[object], kwargs: dict[str, object]
) -> None:
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.call_with(method, args, kwargs)


async def test_invalid_tensor_is_rejected(alice: fedproto.AsyncClient) -> None:
    bad_bool = torch.tensor([0, 1, 2], dtype=torch.uint8).view(torch.bool)  # byte 2 is not a bool
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.send(bad_bool, "bad")
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.call("echo", bad_bool)
    assert await alice.objects_count() == 0


async def test_already_exists_and_overwrite(alice: fedproto.AsyncClient) -> None:
    await alice.send(torch.ones(3), "x", tags=["old"])
    with pytest.raises(fedproto.AlreadyExistsError):
        await alice.send(torch.zeros(5), "x")
    assert_identical(await alice.get("x"), torch.ones(3))
    ref = await alice.send(torch.zeros(5, dtype=torch.int8), "x", tags=["new"], overwrite=True)
    assert ref.info.tags == ("new",)
    assert_identical(await alice.get("x"), torch.zeros(5, dtype=torch.int8))
    assert [(o.id, o.tags) for o in await alice.list_objects()] == [("x", ("new",))]


async def test_object_quota(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_object_bytes=1024))
    async with client_of(w) as c:
        await c.send(torch.zeros(256, dtype=torch.float32), "full")  # exactly the quota
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.send(torch.zeros(1, dtype=torch.uint8), "one-more")
        # overwriting frees the replaced object's bytes first
        await c.send(torch.zeros(1024, dtype=torch.uint8), "full", overwrite=True)
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.send(torch.zeros(1025, dtype=torch.uint8), "full", overwrite=True)
        assert [o.nbytes for o in await c.list_objects()] == [1024]
        await c.delete("full")
        await c.send(torch.zeros(512, dtype=torch.uint8), "a")
        await c.send(torch.zeros(512, dtype=torch.uint8), "b")
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.send(torch.zeros(1, dtype=torch.uint8), "c")
        await c.clear_objects()
        await c.send(torch.zeros(1024, dtype=torch.uint8), "again")


async def test_chunked_upload_over_quota_is_refused(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(chunk_bytes=1024, max_object_bytes=10_000))
    async with client_of(w) as c:
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.send(torch.zeros(20_000, dtype=torch.uint8), "big")
        assert await c.objects_count() == 0
        await c.send(torch.zeros(10_000, dtype=torch.uint8), "fits")


async def test_call_argument_size_limit(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_call_args_bytes=1000))
    async with client_of(w) as c:
        assert await c.call("echo", b"x" * 900) == {"args": [b"x" * 900], "kwargs": {}}
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.call("echo", b"x" * 1000)
        with pytest.raises(fedproto.ResourceExhaustedError):
            await c.call("echo", k=b"x" * 1000)


async def test_in_flight_limit(make_worker) -> None:
    # the client holds back what is beyond the worker's max_in_flight (section 5.5.7): none is refused
    w = await make_worker(limits=conformance_limits(max_in_flight=4))
    async with client_of(w) as c:
        results = await asyncio.gather(*(c.call("echo", n) for n in range(100)))
        assert results == [{"args": [n], "kwargs": {}} for n in range(100)]
        slow = await asyncio.gather(*(c.call("sleep", 0.2) for _ in range(8)))
        assert slow == [0.2] * 8


async def test_failed_precondition(alice: fedproto.AsyncClient) -> None:
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.fit("conformance")
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.evaluate("conformance")
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.get_model_weights()
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.set_model_weights({"bias": torch.zeros(3)})


async def test_unauthenticated(worker: fedproto.Worker) -> None:
    for token in ("wrong", "", "tok-a ", "tok-"):
        client = fedproto.AsyncClient(worker.url, token=token)
        with pytest.raises(fedproto.UnauthenticatedError) as info:
            await asyncio.wait_for(client.open(), WAIT)
        assert "tok-a" not in str(info.value) and "tok-b" not in str(info.value)
        assert not client.connected
        await client.close()
    async with client_of(worker, TOKENS["bob"]) as bob:
        assert bob.server.identity == "bob"


async def test_permission_denied_for_torchscript_on_weights_only(make_worker) -> None:
    w = await make_worker(conformance=False, weights_only=True)
    w.register_model("linear", lambda: nn.Linear(4, 3))
    async with client_of(w) as c:
        catalog = await c.list_models()
        assert catalog.weights_only is True
        assert catalog.names == ("linear",)
        with pytest.raises(fedproto.PermissionDeniedError):
            await c.set_train_config(small_config())
        summary = await c.set_train_config(small_config(model="linear"))
        assert summary.parameter_count == 15


async def test_deadline_exceeded(alice: fedproto.AsyncClient) -> None:
    with pytest.raises(fedproto.DeadlineExceededError) as info:
        await alice.call_with("sleep", [30], timeout=0.2)
    assert info.value.remote is True  # the worker's own DEADLINE_EXCEEDED, not a local timeout
    assert await alice.call("sleep", 0) == 0.0


async def test_default_timeout_becomes_the_deadline(worker: fedproto.Worker) -> None:
    async with client_of(worker, TOKENS["alice"], timeout=0.2) as c:
        with pytest.raises(fedproto.DeadlineExceededError):
            await c.call("sleep", 30)
        assert await c.call("sleep", 0) == 0.0


@pytest.mark.parametrize("code", range(1, 17), ids=lambda c: ErrorCode(c).name)
async def test_fail_hook_raises_the_class_of_every_code(alice: fedproto.AsyncClient, code: int) -> None:
    cls = error_class_for(code)
    with pytest.raises(fedproto.ProtocolError) as info:
        await alice.call("fail", code, f"message {code}")
    assert type(info.value) is cls
    assert info.value.code == code
    assert info.value.message == f"message {code}"
    assert info.value.remote is True
    assert alice.connected  # an Error never ends the connection
    assert await alice.call("whoami") == "alice"


# -- pipelining -----------------------------------------------------------------------------------------


async def test_pipelining_fast_calls_overtake_a_slow_one(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_in_flight=256))
    async with client_of(w) as c:
        finished: list[object] = []

        async def track(label: object, coro) -> object:  # type: ignore[no-untyped-def]
            result = await coro
            finished.append(label)
            return result

        slow = asyncio.create_task(track("slow", c.call("sleep", 1.0)))
        fast = [asyncio.create_task(track(i, c.call("echo", i))) for i in range(100)]
        results = await asyncio.gather(*fast)
        assert results == [{"args": [i], "kwargs": {}} for i in range(100)]
        assert not slow.done()
        await c.ping()  # a ping during the slow call returns before it
        assert not slow.done()
        assert await slow == 1.0
        assert finished[-1] == "slow"
        assert sorted(finished[:-1]) == list(range(100))


# -- cancel ---------------------------------------------------------------------------------------------


async def test_cancelling_the_task_cancels_the_call_on_the_worker(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_in_flight=4))
    async with client_of(w) as c:
        task = asyncio.create_task(c.call("sleep", 30))
        await wait_until(lambda: in_flight(w) == 1, what="the sleep to reach the worker")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: in_flight(w) == 0, what="the worker to end the cancelled sleep")
        # all max_in_flight slots are free again
        assert await asyncio.gather(*(c.call("sleep", 0.05) for _ in range(4))) == [0.05] * 4
        assert c.connected


async def test_cancelling_a_long_fit_stops_it(alice: fedproto.AsyncClient, worker: fedproto.Worker) -> None:
    await alice.set_train_config(small_config(batch_size=1, epochs=100_000, shuffle=True))
    started = asyncio.Event()
    events: list[fedproto.FitProgressEvent] = []

    def on_progress(event: fedproto.FitProgressEvent) -> None:
        events.append(event)
        started.set()

    task = asyncio.create_task(alice.fit("conformance", progress=on_progress, progress_every=1))
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: in_flight(worker) == 0, what="the worker to stop the fit")
    await asyncio.wait_for(alice.ping(), WAIT)
    count = len(events)
    weights = await asyncio.wait_for(alice.get_model_weights(), WAIT)  # the training state is free again
    assert list(weights) == ["weight", "bias"]
    await asyncio.sleep(0.1)
    assert len(events) == count  # no progress after the cancel
    assert events[-1].samples < 100_000 * 64


async def test_fit_deadline(alice: fedproto.AsyncClient, worker: fedproto.Worker) -> None:
    await alice.set_train_config(small_config(batch_size=1, epochs=100_000))
    with pytest.raises(fedproto.DeadlineExceededError):
        await alice.fit("conformance", timeout=0.3)
    await wait_until(lambda: in_flight(worker) == 0, what="the worker to stop the fit")
    assert list(await alice.get_model_weights()) == ["weight", "bias"]


# -- chunked transfers ----------------------------------------------------------------------------------

CHUNKED_LIMITS = conformance_limits(max_frame_bytes=1 << 20, chunk_bytes=64 << 10, max_object_bytes=64 << 20)


@pytest.mark.parametrize("extra", [0, 3], ids=["whole-chunks", "partial-last-chunk"])
async def test_chunked_transfer_larger_than_a_frame(make_worker, extra: int) -> None:
    w = await make_worker(limits=CHUNKED_LIMITS)
    generator = torch.Generator().manual_seed(7)
    tensor = torch.randint(0, 256, ((3 << 20) + extra,), dtype=torch.uint8, generator=generator)
    assert tensor.numel() > w.limits.max_frame_bytes
    async with client_of(w) as c:
        sent: list[tuple[int, int]] = []
        ref = await c.send(tensor, "big", progress=lambda done, total: sent.append((done, total)))
        assert ref.info.nbytes == tensor.numel()
        received: list[tuple[int, int]] = []
        got = await c.get("big", progress=lambda done, total: received.append((done, total)))
        assert_identical(got, tensor)
        for progress in (sent, received):
            assert len(progress) == math.ceil(tensor.numel() / (64 << 10))
            dones = [d for d, _ in progress]
            assert dones == sorted(set(dones))  # strictly increasing
            assert {t for _, t in progress} == {tensor.numel()}
            assert dones[-1] == tensor.numel()
        float_tensor = torch.randn(1024, 1024, generator=generator)  # 4 MiB, float32
        await c.send(float_tensor, "floats")
        assert_identical(await c.get("floats"), float_tensor)


async def test_small_client_frame_limit_gets_chunked_downloads(make_worker) -> None:
    w = await make_worker(limits=CHUNKED_LIMITS)
    tensor = torch.arange(30_000, dtype=torch.int32)  # 120000 bytes: below the worker's frame limit
    async with client_of(w, max_frame_bytes=100_000) as c:
        await c.send(tensor, "t")
        progress: list[tuple[int, int]] = []
        assert_identical(await c.get("t", progress=lambda d, t: progress.append((d, t))), tensor)
        assert progress and progress[-1] == (120_000, 120_000)


async def test_download_chunks_fit_a_client_frame_limit_below_chunk_bytes(make_worker) -> None:
    w = await make_worker(limits=CHUNKED_LIMITS)
    tensor = torch.arange(50_000, dtype=torch.int32)  # 200000 bytes, chunk_bytes is 65536
    async with client_of(w) as sender:
        await sender.send(tensor, "t")
    async with client_of(w, max_frame_bytes=16 << 10) as c:
        assert_identical(await asyncio.wait_for(c.get("t"), WAIT), tensor)


async def test_concurrent_uploads_are_checked_against_the_quota_when_they_finish(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(chunk_bytes=1024, max_object_bytes=3000))
    async with client_of(w) as c:
        first, second = torch.zeros(2000, dtype=torch.uint8), torch.ones(2000, dtype=torch.uint8)
        results = await asyncio.gather(c.send(first, "a"), c.send(second, "b"), return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], fedproto.ResourceExhaustedError)
        assert await c.objects_count() == 1


# -- reconnect ------------------------------------------------------------------------------------------


async def test_reconnects_to_a_worker_restarted_on_the_same_port(make_worker) -> None:
    first = await make_worker()
    port = first.port
    client = fedproto.AsyncClient(first.url, reconnect_attempts=20)
    try:
        await asyncio.wait_for(client.open(), WAIT)
        await client.send(torch.ones(2), "kept-only-by-the-old-worker")
        await first.stop(grace=0)
        await wait_until(lambda: not client.connected, what="the client to see the close")
        second = await make_worker(port=port)
        assert second.port == port
        assert await asyncio.wait_for(client.call("whoami"), WAIT) == "anonymous"
        assert client.connected
        assert client.server.server_id == second.id
        assert await client.objects_count() == 0  # a new worker: a new handshake, a fresh store
        await client.ping()
    finally:
        await client.close()


async def test_call_with_worker_down_raises_connection_closed(make_worker) -> None:
    w = await make_worker()
    client = fedproto.AsyncClient(w.url, reconnect_attempts=2, connect_timeout=2)
    try:
        await asyncio.wait_for(client.open(), WAIT)
        await client.ping()
        await w.stop(grace=0)
        with pytest.raises(fedproto.ConnectionClosedError):
            await asyncio.wait_for(client.ping(), WAIT)
    finally:
        await client.close()


async def test_pending_call_fails_when_the_worker_goes_away(make_worker) -> None:
    w = await make_worker()
    async with client_of(w, reconnect=False) as c:
        task = asyncio.create_task(c.call("sleep", 30))
        await wait_until(lambda: in_flight(w) == 1, what="the sleep to reach the worker")
        await w.stop(grace=0)
        with pytest.raises(fedproto.UnavailableError) as info:  # section 5.3.8: outcome unknown
            await asyncio.wait_for(task, WAIT)
        assert info.value.code is ErrorCode.UNAVAILABLE
        with pytest.raises(fedproto.ConnectionClosedError) as closed:
            await c.ping()
        assert isinstance(closed.value, fedproto.UnavailableError)


async def test_connect_to_nothing_raises_connection_closed() -> None:
    w = conformance_worker()
    await w.start("127.0.0.1", 0)
    url = w.url
    await w.stop(grace=0)
    with pytest.raises(fedproto.ConnectionClosedError):
        await asyncio.wait_for(fedproto.AsyncClient.connect(url, connect_timeout=2), WAIT)
    with pytest.raises(ValueError):
        fedproto.AsyncClient("http://127.0.0.1:1")


async def test_closed_client_refuses_new_calls(worker: fedproto.Worker) -> None:
    async with client_of(worker, TOKENS["alice"]) as c:
        await c.ping()
    await c.close()
    with pytest.raises(fedproto.ConnectionClosedError):
        await c.ping()


# -- the client against a scripted server ---------------------------------------------------------------

Frames = list[bytes | str]


class ScriptedServer:
    """A minimal WebSocket server that welcomes clients and answers requests as a test scripts it."""

    def __init__(self, respond: Callable[[Envelope], Frames], welcome: Envelope | None) -> None:
        self.respond = respond
        self.welcome = welcome
        self.received: list[Envelope] = []
        self.close_codes: list[int | None] = []
        self.connections = 0
        self.sockets: list[ServerConnection] = []
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.sockets.append(ws)
        try:
            hello = Envelope.FromString(await ws.recv())
            self.received.append(hello)
            welcome = self.welcome or Envelope(
                welcome=Welcome(
                    version=1,
                    server_id="scripted",
                    capabilities=["objects", "calls", "a-future-capability"],
                    limits=ProtoLimits(max_frame_bytes=1 << 20, max_in_flight=8, chunk_bytes=1024),
                    identity="anonymous",
                )
            )
            welcome.request_id = hello.request_id
            await ws.send(welcome.SerializeToString())
            async for data in ws:
                envelope = Envelope.FromString(data)
                self.received.append(envelope)
                if envelope.WhichOneof("body") == "goodbye":  # as a server must (section 6.3.2)
                    await ws.close()
                    break
                for frame in self.respond(envelope):
                    await ws.send(frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)

    def kinds(self) -> list[str | None]:
        return [e.WhichOneof("body") for e in self.received]


def pong_only(envelope: Envelope) -> Frames:
    if envelope.WhichOneof("body") == "ping":
        return [Envelope(request_id=envelope.request_id, pong=Pong()).SerializeToString()]
    return []


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(respond: Callable[[Envelope], Frames] = pong_only, welcome: Envelope | None = None):  # type: ignore[no-untyped-def]
        fake = ScriptedServer(respond, welcome)
        fake.server = await serve(fake.handler, "127.0.0.1", 0, compression=None, max_size=None)
        servers.append(fake)
        return fake

    try:
        yield start
    finally:
        for fake in servers:
            assert fake.server is not None
            fake.server.close()
            await asyncio.wait_for(fake.server.wait_closed(), WAIT)


def answer(kind: str, make: Callable[[Envelope], Frames]) -> Callable[[Envelope], Frames]:
    """Answer requests of ``kind`` with ``make(request)``, pings with pongs, and ignore the rest."""

    def respond(envelope: Envelope) -> Frames:
        if envelope.WhichOneof("body") == kind:
            return make(envelope)
        return pong_only(envelope)

    return respond


def chunk_frames(rid: int, data: bytes, size: int) -> Frames:
    return [
        Envelope(
            request_id=rid,
            chunk=Chunk(offset=offset, data=data[offset : offset + size], total_bytes=len(data)),
        ).SerializeToString()
        for offset in range(0, len(data), size)
    ]


def chunked_reply(rid: int, data: bytes, sha: bytes) -> bytes:
    info = ProtoObjectInfo(
        id="x", tensor=ProtoTensorInfo(dtype=DTYPE_UINT8, shape=[len(data)], nbytes=len(data), sha256=sha)
    )
    return Envelope(request_id=rid, get_object_reply=GetObjectReply(info=info)).SerializeToString()


async def test_client_checks_the_sha256_of_downloads(scripted) -> None:
    data = bytes(range(256)) * 10

    def bad_sha(request: Envelope) -> Frames:
        return [
            *chunk_frames(request.request_id, data, 1024),
            chunked_reply(request.request_id, data, b"\0" * 32),
        ]

    fake = await scripted(answer("get_object", bad_sha))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        with pytest.raises(fedproto.DataLossError):
            await c.get("x")
        await c.ping()  # the connection is still fine


async def test_client_checks_that_chunks_cover_the_payload(scripted) -> None:
    data = bytes(3000)

    def short(request: Envelope) -> Frames:
        frames = chunk_frames(request.request_id, data, 1024)
        return [*frames[:2], chunked_reply(request.request_id, data, hashlib.sha256(data).digest())]

    fake = await scripted(answer("get_object", short))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        with pytest.raises(fedproto.DataLossError):
            await c.get("x")


async def test_good_chunked_download_from_another_implementation(scripted) -> None:
    data = bytes(range(256)) * 10

    def good(request: Envelope) -> Frames:
        frames = chunk_frames(request.request_id, data, 1000)  # smaller than chunk_bytes: allowed
        return [*frames, chunked_reply(request.request_id, data, hashlib.sha256(data).digest())]

    fake = await scripted(answer("get_object", good))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        assert "a-future-capability" in c.server.capabilities  # unknown capabilities are ignored
        progress: list[int] = []
        got = await c.get("x", progress=lambda done, _total: progress.append(done))
        assert got.numpy().tobytes() == data
        assert progress == [1000, 2000, 2560]


@pytest.mark.parametrize("code", [0, 99], ids=["unspecified", "unknown"])
async def test_unknown_error_codes_are_internal(scripted, code: int) -> None:
    def fail(request: Envelope) -> Frames:
        error = Error(code=code, message="strange")  # type: ignore[arg-type]
        return [Envelope(request_id=request.request_id, error=error).SerializeToString()]

    fake = await scripted(answer("call", fail))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        with pytest.raises(fedproto.InternalError) as info:
            await c.call("anything")
        assert info.value.message == "strange"


async def test_reply_of_the_wrong_kind_fails_the_request(scripted) -> None:
    def wrong(request: Envelope) -> Frames:
        return [Envelope(request_id=request.request_id, pong=Pong()).SerializeToString()]

    fake = await scripted(answer("call", wrong))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        with pytest.raises(fedproto.InternalError):  # section 5.3.7
            await c.call("anything")


async def test_unknown_notification_topics_and_bad_payloads_do_not_end_the_session(scripted) -> None:
    def notify(request: Envelope) -> Frames:
        bad = Envelope(notification=Notification(topic="bad", payload=Value()))  # a Value with no kind
        good = Envelope(notification=Notification(topic="never-heard-of", payload=Value(int_value=3)))
        reply = Envelope(request_id=request.request_id, call_reply=CallReply(result=Value(null_value=0)))
        return [bad.SerializeToString(), good.SerializeToString(), reply.SerializeToString()]

    fake = await scripted(answer("call", notify))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        assert await c.call("anything") is None
        assert await c.next_notification(timeout=WAIT) == ("never-heard-of", 3)
        await c.ping()


async def test_text_frame_from_the_server_closes_1003(scripted) -> None:
    fake = await scripted(answer("call", lambda _request: ["text is not allowed"]))
    async with fedproto.AsyncClient.connect(fake.url, reconnect=False) as c:
        with pytest.raises(fedproto.ConnectionClosedError):
            await asyncio.wait_for(c.call("anything"), WAIT)
    await wait_until(lambda: bool(fake.close_codes), what="the scripted server to see the close")
    assert fake.close_codes == [1003]


async def test_undecodable_frame_from_the_server_closes_1002_and_fails_requests_unavailable(scripted) -> None:
    fake = await scripted(answer("call", lambda _request: [b"\xff\xff\xff"]))
    async with fedproto.AsyncClient.connect(fake.url, reconnect=False) as c:
        with pytest.raises(fedproto.UnavailableError):  # sections 3.3.6 and 5.3.8
            await asyncio.wait_for(c.call("anything"), WAIT)
    await wait_until(lambda: bool(fake.close_codes), what="the scripted server to see the close")
    assert fake.close_codes == [1002]


async def test_frame_over_the_client_limit_closes_1009(scripted) -> None:
    def big(request: Envelope) -> Frames:
        return [Envelope(request_id=request.request_id, pong=Pong(payload=bytes(5000))).SerializeToString()]

    fake = await scripted(big)
    async with fedproto.AsyncClient.connect(fake.url, reconnect=False, max_frame_bytes=4096) as c:
        assert fake.received[0].hello.max_frame_bytes == 4096
        with pytest.raises(fedproto.ConnectionClosedError):
            await asyncio.wait_for(c.ping(), WAIT)
    await wait_until(lambda: bool(fake.close_codes), what="the scripted server to see the close")
    assert fake.close_codes == [1009]


@pytest.mark.parametrize(
    ("welcome", "error"),
    [
        (Envelope(welcome=Welcome(version=2, server_id="future")), fedproto.UnsupportedVersionError),
        (Envelope(error=Error(code=ErrorCode.UNAUTHENTICATED, message="no")), fedproto.UnauthenticatedError),
        (Envelope(error=Error(code=ErrorCode.UNSUPPORTED_VERSION)), fedproto.UnsupportedVersionError),
        # a Welcome without the limits a client needs (section 4.1.8)
        (Envelope(welcome=Welcome(version=1, server_id="no-limits")), fedproto.MalformedError),
    ],
    ids=["version-2", "unauthenticated", "unsupported", "no-limits"],
)
async def test_failed_handshakes(scripted, welcome: Envelope, error: type[Exception]) -> None:
    fake = await scripted(welcome=welcome)
    with pytest.raises(error):
        await asyncio.wait_for(fedproto.AsyncClient.connect(fake.url, token="secret"), WAIT)
    hello = fake.received[0]
    assert hello.WhichOneof("body") == "hello" and hello.request_id != 0
    assert list(hello.hello.versions) == [1] and hello.hello.token == "secret"


async def test_local_timeout_cancels_the_request_on_the_server(scripted) -> None:
    fake = await scripted(answer("call", lambda _request: []))  # never answers
    async with fedproto.AsyncClient.connect(fake.url) as c:
        with pytest.raises(fedproto.DeadlineExceededError) as info:
            await c.call_with("anything", timeout=0.1)
        assert info.value.remote is False
        await wait_until(lambda: "cancel" in fake.kinds(), what="the client's Cancel")
        call = next(e for e in fake.received if e.WhichOneof("body") == "call")
        cancel = next(e for e in fake.received if e.WhichOneof("body") == "cancel")
        assert call.deadline_ms == 100
        assert cancel.request_id == call.request_id
        await c.ping()


async def test_goodbye_from_the_server_moves_new_requests_to_a_new_connection(scripted) -> None:
    def goodbye_then_reply(request: Envelope) -> Frames:
        return [
            Envelope(goodbye=Goodbye(reason="maintenance")).SerializeToString(),
            Envelope(
                request_id=request.request_id, call_reply=CallReply(result=Value(int_value=1))
            ).SerializeToString(),
        ]

    fake = await scripted(answer("call", goodbye_then_reply))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        assert await c.call("anything") == 1  # the reply after the goodbye is still delivered
        await c.ping()
        assert fake.connections == 2  # no new request went to the connection that said goodbye
    assert fake.kinds() == ["hello", "call", "hello", "ping", "goodbye"]


async def test_old_connection_closing_does_not_fail_requests_on_the_new_one(scripted) -> None:
    def respond(request: Envelope) -> Frames:
        if request.WhichOneof("body") == "call" and request.call.method == "first":
            reply = Envelope(request_id=request.request_id, call_reply=CallReply(result=Value(int_value=1)))
            return [Envelope(goodbye=Goodbye()).SerializeToString(), reply.SerializeToString()]
        return pong_only(request)  # "slow" calls are answered by the test

    fake = await scripted(respond)
    async with fedproto.AsyncClient.connect(fake.url) as c:
        assert await c.call("first") == 1  # then the server said goodbye on that connection
        slow = asyncio.create_task(c.call("slow"))
        try:
            await wait_until(
                lambda: fake.connections == 2 and "call" in fake.kinds()[3:], what="the slow call"
            )
            await fake.sockets[0].close()  # the server finally closes the old connection
            await asyncio.sleep(0.2)
            assert not slow.done(), slow
            rid = next(
                e.request_id
                for e in fake.received
                if e.WhichOneof("body") == "call" and e.call.method == "slow"
            )
            reply = Envelope(request_id=rid, call_reply=CallReply(result=Value(int_value=2)))
            await fake.sockets[1].send(reply.SerializeToString())
            assert await asyncio.wait_for(slow, WAIT) == 2
        finally:
            slow.cancel()
            await asyncio.gather(slow, return_exceptions=True)


# -- holding requests back, deadlines, goodbye and frame limits (sections 5.5.7, 5.6.8, 6.2.10, 6.3.8,
# 14.2.7) -------------------------------------------------------------------------------------------


def one_in_flight(max_frame_bytes: int = 1 << 20) -> Envelope:
    limits = ProtoLimits(max_frame_bytes=max_frame_bytes, max_in_flight=1, chunk_bytes=1024)
    return Envelope(
        welcome=Welcome(version=1, server_id="one", capabilities=["calls", "deadlines"], limits=limits)
    )


def calls_answered_except(held: str) -> Callable[[Envelope], Frames]:
    """Answer every call but ``held`` with its method's name, pings with pongs."""

    def respond(request: Envelope) -> Frames:
        if request.WhichOneof("body") == "call" and request.call.method != held:
            result = Value(string_value=request.call.method)
            return [
                Envelope(
                    request_id=request.request_id, call_reply=CallReply(result=result)
                ).SerializeToString()
            ]
        return pong_only(request)

    return respond


async def answer_held(fake: ScriptedServer, method: str = "hold") -> None:
    request = next(e for e in fake.received if e.WhichOneof("body") == "call" and e.call.method == method)
    reply = Envelope(request_id=request.request_id, call_reply=CallReply(result=Value(string_value="held")))
    await fake.sockets[0].send(reply.SerializeToString())


def methods_sent(fake: ScriptedServer) -> list[str]:
    return [e.call.method for e in fake.received if e.WhichOneof("body") == "call"]


async def test_a_held_back_request_is_sent_with_what_remains_of_its_deadline(scripted) -> None:
    fake = await scripted(calls_answered_except("hold"), welcome=one_in_flight())
    async with fedproto.AsyncClient.connect(fake.url) as c:
        hold = asyncio.create_task(c.call("hold"))
        await wait_until(lambda: methods_sent(fake) == ["hold"], what="the first call")
        later = asyncio.create_task(c.call_with("later", timeout=2.0))
        await asyncio.sleep(0.5)
        assert methods_sent(fake) == ["hold"]  # held back: the worker's one place is taken
        await answer_held(fake)
        assert await asyncio.wait_for(later, WAIT) == "later" and await hold == "held"
        sent = next(e for e in fake.received if e.WhichOneof("body") == "call" and e.call.method == "later")
        assert 1000 < sent.deadline_ms <= 1550  # about 1.5 s of the caller's 2 s were left (section 5.6.8)


async def test_a_cancelled_held_back_request_is_never_sent(scripted) -> None:
    fake = await scripted(calls_answered_except("hold"), welcome=one_in_flight())
    async with fedproto.AsyncClient.connect(fake.url) as c:
        hold = asyncio.create_task(c.call("hold"))
        await wait_until(lambda: methods_sent(fake) == ["hold"], what="the first call")
        dropped = asyncio.create_task(c.call("dropped"))
        timed_out = asyncio.create_task(c.call_with("timed-out", timeout=0.2))
        await asyncio.sleep(0.1)
        dropped.cancel()
        watch = asyncio.get_running_loop().time()
        with pytest.raises(fedproto.DeadlineExceededError):
            await timed_out
        assert asyncio.get_running_loop().time() - watch < 0.5  # at its deadline, unsent (section 5.6.10)
        await answer_held(fake)
        assert await hold == "held" and await c.call("after") == "after"
        with pytest.raises(asyncio.CancelledError):
            await dropped
    assert methods_sent(fake) == ["hold", "after"] and "cancel" not in fake.kinds()  # section 6.2.10


async def test_a_cancelled_request_keeps_its_place_until_its_reply(scripted) -> None:
    fake = await scripted(calls_answered_except("hold"), welcome=one_in_flight())
    async with fedproto.AsyncClient.connect(fake.url) as c:
        hold = asyncio.create_task(c.call("hold"))
        await wait_until(lambda: methods_sent(fake) == ["hold"], what="the first call")
        hold.cancel()
        await wait_until(lambda: "cancel" in fake.kinds(), what="the Cancel")
        later = asyncio.create_task(c.call("later"))
        await asyncio.sleep(0.3)
        assert methods_sent(fake) == ["hold"]  # the cancelled call is in flight until its reply
        await answer_held(fake)  # its normal reply, not reported to anyone (section 6.2.10)
        assert await asyncio.wait_for(later, WAIT) == "later"


async def test_goodbyes_fail_held_back_requests_unsent(scripted) -> None:
    fake = await scripted(calls_answered_except("hold"), welcome=one_in_flight())
    c = await fedproto.AsyncClient.connect(fake.url)
    hold = asyncio.create_task(c.call("hold"))
    await wait_until(lambda: methods_sent(fake) == ["hold"], what="the first call")
    held = asyncio.create_task(c.call("held"))
    await asyncio.sleep(0.1)
    await fake.sockets[0].send(Envelope(goodbye=Goodbye(reason="maintenance")).SerializeToString())
    with pytest.raises(fedproto.UnavailableError):  # the worker's goodbye (section 6.3.8)
        await asyncio.wait_for(held, WAIT)
    await answer_held(fake)
    assert await hold == "held"
    hold = asyncio.create_task(c.call("hold"))  # on a new connection
    await wait_until(lambda: methods_sent(fake) == ["hold", "hold"], what="the call on the new connection")
    held = asyncio.create_task(c.call("held"))
    await asyncio.sleep(0.1)
    await c.close()
    with pytest.raises(fedproto.RequestCancelledError):  # the client's own goodbye
        await asyncio.wait_for(held, WAIT)
    with pytest.raises(fedproto.UnavailableError):
        await asyncio.wait_for(hold, WAIT)
    assert "held" not in methods_sent(fake)
    assert fake.kinds()[-1] == "goodbye" and fake.close_codes[-1] == 1000


async def test_close_lets_the_worker_cancel_requests_in_flight(make_worker) -> None:
    w = await make_worker()
    async with client_of(w) as c:
        task = asyncio.create_task(c.call("sleep", 30))
        await wait_until(lambda: in_flight(w) == 1, what="the sleep to reach the worker")
    # the worker answered the goodbye with CANCELLED, then closed (sections 6.3.2, 6.3.9)
    with pytest.raises(fedproto.RequestCancelledError) as info:
        await asyncio.wait_for(task, WAIT)
    assert info.value.remote


async def test_a_request_larger_than_a_frame_fails_locally(make_worker) -> None:
    w = await make_worker(limits=conformance_limits(max_frame_bytes=64 << 10, chunk_bytes=32 << 10))
    async with client_of(w) as c:
        before = c._ws
        with pytest.raises(fedproto.ResourceExhaustedError) as info:
            await c.call("echo", b"x" * (100 << 10))
        assert not info.value.remote and info.value.details == {"limit": str(64 << 10)}
        await c.ping()
        assert c._ws is before  # the connection was never at risk (section 14.2.7)


async def test_a_tensor_that_fits_a_chunk_but_not_a_frame_with_its_description_goes_in_chunks(
    make_worker,
) -> None:
    w = await make_worker(limits=conformance_limits(max_frame_bytes=16 << 10, chunk_bytes=8 << 10))
    async with client_of(w) as c:
        tensor = torch.arange(2000, dtype=torch.float32)  # 8000 bytes, within chunk_bytes
        ref = await c.send(tensor, "described", description="d" * 10_000)
        assert ref.info.description == "d" * 10_000
        assert torch.equal(await c.get("described"), tensor)


async def test_a_stray_progress_fails_the_call_at_once_and_cancels_it(scripted) -> None:
    def progress_only(request: Envelope) -> Frames:
        return [
            Envelope(request_id=request.request_id, fit_progress=FitProgress(epoch=1)).SerializeToString()
        ]

    fake = await scripted(answer("call", progress_only))
    async with fedproto.AsyncClient.connect(fake.url) as c:
        with pytest.raises(fedproto.InternalError):  # section 5.3.7
            await asyncio.wait_for(c.call("anything"), WAIT)
        await wait_until(lambda: "cancel" in fake.kinds(), what="the client's Cancel")
        await c.ping()


async def test_a_request_woken_just_before_a_goodbye_is_not_sent() -> None:
    # the gate alone: a place frees, then the worker says goodbye before the woken request runs
    gate = _InFlightGate(ClientSession(), limit=0)
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    gate._limit = 1
    gate.wake()
    gate.fail(fedproto.UnavailableError("the worker said goodbye"))
    with pytest.raises(fedproto.UnavailableError):
        await waiter
    assert not gate.waiting


# -- payload digests (protocol section 7.5) ---------------------------------------------------------------

DIGESTS = sorted(hashing.IMPLEMENTED_DIGESTS)


def _carried(info: fedproto.TensorInfo, name: str) -> bytes:
    """The digest a description carries under ``name``, checking that the other field is empty."""
    if name == "sha256":
        assert not info.digest
        return info.sha256
    assert not info.sha256  # section 7.5.8
    return info.digest


@pytest.mark.parametrize("name", DIGESTS)
async def test_each_digest_checks_transfers_both_ways(make_worker, name: str) -> None:
    w = await make_worker(limits=CHUNKED_LIMITS)
    big = torch.randint(
        0, 256, ((1 << 20) + 3,), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    small = torch.arange(16, dtype=torch.float32)
    async with client_of(w, digests=tuple(dict.fromkeys((name, "sha256")))) as c:
        assert c.digest == c.server.digest == name
        for object_id, tensor in (("big", big), ("small", small)):  # chunked, then inline
            ref = await c.send(tensor, object_id, tags=["d"])
            expected = hashing.digest(name, raw_bytes(tensor))
            assert _carried(ref.info.tensor, name) == expected
            assert_identical(await c.get(object_id), tensor)
        for listed in (await c.list_objects(), await c.search("d")):
            assert [_carried(o.tensor, name) for o in listed] == [
                hashing.digest(name, raw_bytes(t)) for t in (big, small)
            ]


@pytest.mark.parametrize("name", DIGESTS)
async def test_a_header_digest_is_sent_under_the_negotiated_algorithm(
    make_worker, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """When the last chunk cannot carry the digest (section 7.3.30) it goes in the header's field."""
    monkeypatch.setattr(ClientSession, "trailing_digest_fits", lambda self, nbytes, chunk_bytes: False)
    w = await make_worker(limits=CHUNKED_LIMITS)
    tensor = torch.arange(100_000, dtype=torch.int32)
    async with client_of(w, digests=(name,)) as c:
        ref = await c.send(tensor, "t")
        assert _carried(ref.info.tensor, name) == hashing.digest(name, raw_bytes(tensor))
        assert_identical(await c.get("t"), tensor)


async def test_objects_stored_under_one_digest_are_read_under_another(make_worker) -> None:
    """The worker keeps each object's digest per algorithm, computed once when first needed (7.5.11)."""
    w = await make_worker(limits=CHUNKED_LIMITS)
    tensor = torch.arange(200_000, dtype=torch.int16)
    data = raw_bytes(tensor)
    async with client_of(w, digests=("sha256",)) as old, client_of(w, digests=("xxh3-128",)) as new:
        ref = await old.send(tensor, "t")
        assert ref.info.tensor.sha256 == hashlib.sha256(data).digest()
        (listed,) = await new.list_objects()
        assert not listed.tensor.sha256 and not listed.tensor.digest  # not computed for a listing (9.5.3)
        assert_identical(await new.get("t"), tensor)
        (listed,) = await new.list_objects()
        assert listed.tensor.digest == hashing.digest("xxh3-128", data)  # kept once computed
        (listed,) = await old.list_objects()
        assert listed.tensor.sha256 == hashlib.sha256(data).digest() and not listed.tensor.digest


async def test_a_client_offering_no_digest_gets_sha256(alice: fedproto.AsyncClient, worker) -> None:
    async with client_of(worker, TOKENS["bob"], digests=()) as old_style:
        assert old_style.digest == "sha256"
        ref = await old_style.send(torch.arange(3), "x")
        assert ref.info.tensor.sha256 == hashlib.sha256(raw_bytes(torch.arange(3))).digest()
        assert not ref.info.tensor.digest
    assert alice.digest == "xxh3-128"  # what the default offer gets from this worker


@pytest.mark.parametrize(
    ("digests", "match"), [(["md5"], "md5"), (["sha256", "sha256"], "more than once"), ("blake3", "sequence")]
)
def test_a_bad_digest_offer_fails_when_the_client_is_built(digests, match: str) -> None:
    with pytest.raises(fedproto.DigestConfigError, match=match):
        fedproto.AsyncClient("ws://127.0.0.1:9", digests=digests)


async def test_a_welcome_with_a_digest_not_offered_fails_the_handshake(scripted) -> None:
    welcome = Envelope(
        welcome=Welcome(
            version=1,
            limits=ProtoLimits(max_frame_bytes=1 << 20, max_in_flight=8, chunk_bytes=1024),
            digest="blake3",
        )
    )
    fake = await scripted(welcome=welcome)
    with pytest.raises(fedproto.MalformedError, match="blake3"):
        await asyncio.wait_for(fedproto.AsyncClient.connect(fake.url, digests=("xxh3-128", "sha256")), WAIT)
    await wait_until(lambda: bool(fake.close_codes), what="the scripted server to see the close")
    assert fake.close_codes == [1002]  # section 4.1.8


def chunked_reply_under(rid: int, data: bytes, **digest_fields: bytes) -> bytes:
    info = ProtoObjectInfo(
        id="x",
        tensor=ProtoTensorInfo(dtype=DTYPE_UINT8, shape=[len(data)], nbytes=len(data), **digest_fields),
    )
    return Envelope(request_id=rid, get_object_reply=GetObjectReply(info=info)).SerializeToString()


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"digest": hashing.digest("xxh3-128", bytes(range(256)) * 10)}, True),
        ({"digest": bytes(16)}, False),
        ({"sha256": hashlib.sha256(bytes(range(256)) * 10).digest()}, False),  # the field not in force
        ({}, False),  # a chunked download must carry its digest (section 7.3.16)
    ],
)
async def test_downloads_are_checked_under_the_negotiated_digest(scripted, fields, ok: bool) -> None:
    data = bytes(range(256)) * 10

    def reply(request: Envelope) -> Frames:
        return [
            *chunk_frames(request.request_id, data, 1024),
            chunked_reply_under(request.request_id, data, **fields),
        ]

    welcome = Envelope(
        welcome=Welcome(
            version=1,
            capabilities=["objects", "chunked"],
            limits=ProtoLimits(max_frame_bytes=1 << 20, max_in_flight=8, chunk_bytes=1024),
            digest="xxh3-128",
        )
    )
    fake = await scripted(answer("get_object", reply), welcome=welcome)
    async with fedproto.AsyncClient.connect(fake.url) as c:
        assert c.digest == "xxh3-128"
        if ok:
            assert (await c.get("x")).numpy().tobytes() == data
        else:
            with pytest.raises(fedproto.DataLossError):
                await c.get("x")
        await c.ping()


# -- memory ---------------------------------------------------------------------------------------------


async def test_a_reply_is_not_kept_alive_after_its_caller_let_go(
    alice: fedproto.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model-sized reply must die with its caller's last reference, not live on in the reader until the
    # connection's next frame: a federated coordinator would otherwise hold one model per connection.
    class Tracked(ReplyReceived):
        __slots__ = ("__weakref__",)

    replies: list[weakref.ref[ReplyReceived]] = []
    receive = ClientSession.receive_frame

    def tracked(self: ClientSession, data: Any) -> list[Any]:
        events = receive(self, data)
        for position, event in enumerate(events):
            if isinstance(event, ReplyReceived):
                events[position] = Tracked(event.request_id, event.kind, event.message, event.payload)
                replies.append(weakref.ref(events[position]))
        return events

    monkeypatch.setattr(ClientSession, "receive_frame", tracked)
    await alice.set_train_config(fedproto.TrainConfig(model=nn.Linear(64, 32), loss_fn="mse"))
    weights = await alice.get_model_weights()
    assert sorted(weights) == ["bias", "weight"] and replies
    await asyncio.sleep(0)  # the loop's own wake-up of this test's task lets go of the reply's future
    assert [ref() for ref in replies] == [None] * len(replies)
