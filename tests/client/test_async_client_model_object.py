"""A train config's model archive as a stored object, between a client and a real worker (section 12.9)."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from conftest import TOKENS, client_of, conformance_limits, stop_quietly
from torch import Tensor, nn

import fedproto
from fedproto.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from fedproto.session import MODEL_OBJECT

#: Small chunks, so that even a small model's archive is larger than one.
CHUNK_BYTES = 4096


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


class NoModelObject(fedproto.Worker):
    """A worker as written before section 12.9: the archive comes inline only."""

    @property
    def capabilities(self) -> list[str]:
        return [name for name in super().capabilities if name != MODEL_OBJECT]


def config(model: nn.Module | None = None) -> fedproto.TrainConfig:
    model = model if model is not None else nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3))
    return fedproto.TrainConfig(model=model, loss_fn="cross_entropy", optimizer="SGD", batch_size=8, epochs=1)


def data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(24, 4, generator=generator)
    return features, (features[:, 0] > 0).long()


async def start(cls: type[fedproto.Worker] = fedproto.Worker, **kwargs: Any) -> fedproto.Worker:
    limits = kwargs.pop("limits", conformance_limits(chunk_bytes=CHUNK_BYTES))
    worker = cls("w", tokens=TOKENS, limits=limits, **kwargs)
    worker.add_dataset(data(), key="data")
    await worker.start("127.0.0.1", 0)
    return worker


def received(worker: fedproto.Worker) -> fedproto.TrainSpec:
    """The train config alice's training state was built from, as the worker received it."""
    return worker.services.training["alice"].spec


async def test_a_large_archive_travels_as_an_object_that_is_deleted_afterwards() -> None:
    worker = await start()
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            assert MODEL_OBJECT in alice.server.capabilities
            kept = await alice.send(torch.arange(3.0), id="kept")  # the identity's own objects stay
            spec = config().to_spec()
            assert spec.model_torchscript is not None and len(spec.model_torchscript) > CHUNK_BYTES
            summary = await alice.set_train_config(spec)
            assert summary.parameter_count == 4 * 64 + 64 + 64 * 3 + 3
            got = received(worker)
            assert got.model_torchscript is None and got.model_object, "the config named the object"
            assert [info.id for info in await alice.list_objects()] == [kept.id]
            fitted = await alice.fit("data", progress=False)
            assert fitted.samples == 24
    finally:
        await stop_quietly(worker)


async def test_a_model_object_builds_the_model_the_inline_archive_builds() -> None:
    worker = await start()
    older = await start(NoModelObject)
    try:
        spec = config().to_spec()
        weights = []
        for each in (worker, older):
            async with client_of(each, TOKENS["alice"]) as alice:
                await alice.set_train_config(spec)
                weights.append(await alice.get_model_weights())
        assert received(worker).model_object and received(older).model_object is None
        assert list(weights[0]) == list(weights[1])
        assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    finally:
        await stop_quietly(worker)
        await stop_quietly(older)


async def test_an_older_worker_gets_the_archive_inline() -> None:
    worker = await start(NoModelObject)
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            assert MODEL_OBJECT not in alice.server.capabilities
            await alice.set_train_config(config())
            assert received(worker).model_torchscript is not None
            assert received(worker).model_object is None
            assert await alice.objects_count() == 0, "nothing was stored"
    finally:
        await stop_quietly(worker)


async def test_an_archive_of_one_chunk_goes_inline() -> None:
    worker = await start(limits=conformance_limits(chunk_bytes=1 << 20, max_frame_bytes=4 << 20))
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            await alice.set_train_config(config())
            assert received(worker).model_torchscript is not None
    finally:
        await stop_quietly(worker)


async def test_a_refused_config_leaves_no_object_behind() -> None:
    worker = await start(weights_only=True)
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            with pytest.raises(PermissionDeniedError) as info:
                await alice.set_train_config(config())
            assert info.value.details.get("field") == "model_object"
            assert await alice.objects_count() == 0
    finally:
        await stop_quietly(worker)


async def test_an_archive_that_does_not_load_is_refused_naming_the_object() -> None:
    worker = await start()
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            garbage = dataclasses.replace(config().to_spec(), model_torchscript=b"PK\x03\x04" * CHUNK_BYTES)
            with pytest.raises(InvalidArgumentError, match="model_object is not a loadable TorchScript"):
                await alice.set_train_config(garbage)
            assert await alice.objects_count() == 0
            assert "alice" not in worker.services.training
    finally:
        await stop_quietly(worker)


async def test_an_archive_larger_than_max_model_bytes_is_refused_after_the_upload() -> None:
    spec = config().to_spec()
    assert spec.model_torchscript is not None
    limit = len(spec.model_torchscript) - 1
    worker = await start(limits=conformance_limits(chunk_bytes=CHUNK_BYTES, max_model_bytes=limit))
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            with pytest.raises(ResourceExhaustedError) as info:
                await alice.set_train_config(spec)
            assert info.value.details.get("field") == "model_object"
            assert await alice.objects_count() == 0
    finally:
        await stop_quietly(worker)


async def test_a_store_without_room_gets_the_archive_inline() -> None:
    spec = config().to_spec()
    assert spec.model_torchscript is not None
    room = len(spec.model_torchscript) - 1
    worker = await start(limits=conformance_limits(chunk_bytes=CHUNK_BYTES, max_object_bytes=room))
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            await alice.set_train_config(spec)
            assert received(worker).model_torchscript == spec.model_torchscript
            assert await alice.objects_count() == 0
    finally:
        await stop_quietly(worker)


async def test_a_cancelled_config_still_deletes_its_object() -> None:
    worker = await start()
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            started = asyncio.Event()
            original = worker.services.threads.run_training

            async def slow(*args: Any, **kwargs: Any) -> Any:
                started.set()
                await asyncio.sleep(30)
                return await original(*args, **kwargs)

            worker.services.threads.run_training = slow  # type: ignore[method-assign]
            task = asyncio.create_task(alice.set_train_config(config()))
            await asyncio.wait_for(started.wait(), 10)
            assert await alice.objects_count() == 1, "the archive is stored while the config is loaded"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await alice.objects_count() == 0
    finally:
        await stop_quietly(worker)
