"""Model weights in chunks between a client and a real worker on loopback (docs/protocol.md section 12.8)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from conftest import TOKENS, WorkerFactory, client_of, conformance_limits
from torch import Tensor, nn

import fedproto
from fedproto.session import CHUNKED_WEIGHTS

#: Not a multiple of any element width: float32 and int64 elements straddle chunk boundaries.
CHUNK_BYTES = 1030


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


class Normed(nn.Module):
    """Float32 parameters and BatchNorm's buffers, among them the int64 ``num_batches_tracked``."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 300)
        self.norm = nn.BatchNorm1d(300)
        self.out = nn.Linear(300, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.norm(self.hidden(x))))


class NoChunkedWeights(fedproto.Worker):
    """A worker as written before section 12.8: get_weights and set_weights inline only."""

    @property
    def capabilities(self) -> list[str]:
        return [name for name in super().capabilities if name != CHUNKED_WEIGHTS]


def config(model: nn.Module) -> fedproto.TrainConfig:
    return fedproto.TrainConfig(model=model, loss_fn="cross_entropy", optimizer="SGD", batch_size=8, epochs=1)


def data(samples: int = 32) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(samples, 4, generator=generator)
    return features, (features[:, 0] > 0).long()


async def trainer(make_worker: WorkerFactory, cls: type[fedproto.Worker] = fedproto.Worker) -> Any:
    limits = conformance_limits(chunk_bytes=CHUNK_BYTES)
    worker = cls("w", tokens=TOKENS, limits=limits)
    await worker.start("127.0.0.1", 0)
    worker.add_dataset(data(), key="data")
    return worker


def changed(model: nn.Module) -> dict[str, Tensor]:
    """New values for every entry of ``model``'s state dict (the counter too)."""
    generator = torch.Generator().manual_seed(11)
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.dtype.is_floating_point:
            state[name] = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        else:
            state[name] = torch.full_like(tensor, 41)
    return state


class Recording:
    """A weights sink that keeps what it is given (copies: the slices are only valid during the call)."""

    def __init__(self) -> None:
        self.manifest: fedproto.WeightsManifest | None = None
        self.parts: list[tuple[str, int, Tensor]] = []

    def begin(self, manifest: fedproto.WeightsManifest) -> None:
        self.manifest = manifest

    def take(self, part: fedproto.WeightSlice) -> None:
        self.parts.append((part.name, part.start, part.values.clone()))

    def assembled(self) -> dict[str, Tensor]:
        assert self.manifest is not None
        out = {e.name: torch.empty(e.shape, dtype=e.dtype) for e in self.manifest.entries}
        for name, start, values in self.parts:
            out[name].view(-1)[start : start + values.numel()] = values
        return out


@pytest.mark.parametrize("cls", [fedproto.Worker, NoChunkedWeights], ids=["chunked", "inline-worker"])
async def test_weights_set_then_read_are_equal_byte_for_byte(make_worker: WorkerFactory, cls: type) -> None:
    worker = await trainer(make_worker, cls)
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            assert (CHUNKED_WEIGHTS in alice.server.capabilities) == (cls is fedproto.Worker)
            model = Normed()
            await alice.set_train_config(config(model))
            new = changed(model)
            assert await alice.set_model_weights(new, strict=True) == len(new)
            got = await alice.get_model_weights()
            assert list(got) == list(new)
            for name, tensor in new.items():
                assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
            sink = Recording()
            manifest = await alice.stream_model_weights(sink)
            assert manifest.names == tuple(new)
            streamed = sink.assembled()
            assert all(torch.equal(streamed[name], tensor) for name, tensor in new.items())
    finally:
        await worker.stop(grace=0)


async def test_a_stream_never_builds_the_whole_model(make_worker: WorkerFactory) -> None:
    worker = await trainer(make_worker)
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            model = Normed()
            await alice.set_train_config(config(model))
            sink = Recording()
            await alice.stream_model_weights(sink)
            assert sink.manifest is not None and sink.manifest.total_bytes > 4 * CHUNK_BYTES
            # each piece is at most a chunk's worth of elements: the model came in many pieces
            assert max(values.numel() * values.element_size() for _, _, values in sink.parts) <= CHUNK_BYTES
            assert len(sink.parts) >= sink.manifest.total_bytes // CHUNK_BYTES
    finally:
        await worker.stop(grace=0)


async def test_a_sink_that_refuses_ends_the_download_with_its_error(make_worker: WorkerFactory) -> None:
    class Refusing(Recording):
        def take(self, part: fedproto.WeightSlice) -> None:
            raise ValueError("not this one")

    worker = await trainer(make_worker)
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            await alice.set_train_config(config(Normed()))
            with pytest.raises(ValueError, match="not this one"):
                await alice.stream_model_weights(Refusing())
            # the connection goes on: the cancelled download's late chunks are dropped
            assert list(await alice.get_model_weights()) == list(Normed().state_dict())
    finally:
        await worker.stop(grace=0)


async def test_chunked_weights_that_do_not_fit_the_model_are_refused(make_worker: WorkerFactory) -> None:
    worker = await trainer(make_worker)
    try:
        async with client_of(worker, TOKENS["alice"]) as alice:
            with pytest.raises(fedproto.FailedPreconditionError):
                await alice.set_model_weights({"w": torch.ones(3)})
            model = Normed()
            await alice.set_train_config(config(model))
            with pytest.raises(fedproto.InvalidArgumentError, match="not in the model"):
                await alice.set_model_weights({"nope": torch.ones(3)})
            wrong = dict(changed(model), **{"out.bias": torch.ones(4)})
            with pytest.raises(fedproto.InvalidArgumentError, match="shape"):
                await alice.set_model_weights(wrong, strict=True)
            with pytest.raises(fedproto.InvalidArgumentError, match="missing"):
                await alice.set_model_weights({"out.bias": torch.ones(3)}, strict=True)
            # nothing changed (section 12.6.6)
            got = await alice.get_model_weights()
            assert all(torch.equal(got[name], tensor) for name, tensor in model.state_dict().items())
    finally:
        await worker.stop(grace=0)
