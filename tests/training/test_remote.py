"""Training over the wire against an in-process worker on loopback (docs/protocol.md section 12).

Remote results are compared with the same computation done locally: the training loop documented in
``TrainingState.fit``, and evaluation per section 12.5.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import torch
import torch.jit._recursive
from conftest import TOKENS, WAIT, WorkerFactory, client_of, conformance_limits, in_flight, wait_until
from torch import Tensor, nn

import fedproto

#: Bound on one fit or evaluation in these tests.
FIT = 60.0


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x)))


def classification(samples: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(samples, 4, generator=generator)
    targets = (features[:, 0] > 0).long() + (features[:, 1] > 0).long()
    return features, targets


def new_model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP()


def config_for(model: nn.Module | str, **changes: Any) -> fedproto.TrainConfig:
    settings: dict[str, Any] = {
        "model": model,
        "loss_fn": "cross_entropy",
        "optimizer": "SGD",
        "optimizer_args": {"lr": 0.05, "momentum": 0.9},
        "batch_size": 16,
        "epochs": 3,
        "shuffle": True,
        "seed": 7,
    }
    settings.update(changes)
    return fedproto.TrainConfig(**settings)


@pytest.fixture
async def trainer(make_worker: WorkerFactory) -> fedproto.Worker:
    """A plain worker with a 100-sample dataset "data" and a 20 000-sample "big"; alice and bob tokens."""
    worker = await make_worker(conformance=False, id="trainer", tokens=TOKENS)
    worker.add_dataset(classification(100, seed=1), key="data")
    worker.add_dataset(classification(20_000, seed=2), key="big")
    return worker


@pytest.fixture
async def alice(trainer: fedproto.Worker) -> AsyncIterator[fedproto.AsyncClient]:
    async with client_of(trainer, TOKENS["alice"]) as client:
        yield client


def local_fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    targets: Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    shuffle: bool = True,
) -> list[float]:
    """The loop of ``TrainingState.fit``'s docstring, written out; returns the batch losses."""
    loss_fn = nn.CrossEntropyLoss()
    n = len(features)
    losses = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        for _epoch in range(epochs):
            order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = loss_fn(model(features[index]), targets[index])
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    return losses


def assert_close_weights(got: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


# -- fit equals local training --------------------------------------------------------------------------


async def test_remote_fit_equals_local_training(alice: fedproto.AsyncClient) -> None:
    model = new_model()
    local = copy.deepcopy(model)
    summary = await alice.set_train_config(config_for(model))
    assert summary.parameter_count == sum(p.numel() for p in model.parameters())
    assert list(summary.state_names) == list(model.state_dict())

    features, targets = classification(100, seed=1)
    optimizer = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
    # Two fits: the second continues from the first's weights and optimizer state (section 12.3.9).
    for _ in range(2):
        result = await asyncio.wait_for(alice.fit("data", return_weights=True), FIT)
        losses = local_fit(local, optimizer, features, targets, seed=7, epochs=3, batch_size=16)
        assert result.weights is not None
        assert_close_weights(result.weights, local.state_dict())
        assert result.batches == len(losses) == 3 * 7
        assert result.samples == 300 and result.epochs == 3 and result.dataset_size == 100
        assert result.final_loss == pytest.approx(losses[-1], rel=1e-5, abs=1e-6)
        assert result.mean_loss == pytest.approx(sum(losses) / len(losses), rel=1e-5, abs=1e-6)
    assert_close_weights(await alice.get_model_weights(), local.state_dict())


async def test_fit_without_return_weights_carries_none(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(config_for(new_model(), epochs=1))
    result = await asyncio.wait_for(alice.fit("data"), FIT)
    assert result.weights is None and result.batches == 7


# -- progress -------------------------------------------------------------------------------------------


async def test_progress_events_arrive_in_order(alice: fedproto.AsyncClient) -> None:
    # 100 samples in batches of 16: 7 batches per epoch, the last one of 4 samples.
    await alice.set_train_config(config_for(new_model()))
    events: list[fedproto.FitProgressEvent] = []
    result = await asyncio.wait_for(alice.fit("data", progress=events.append, progress_every=3), FIT)
    assert [(e.epoch, e.batch) for e in events] == [(e, b) for e in (1, 2, 3) for b in (3, 6, 7)]
    assert all(e.batches_per_epoch == 7 for e in events)
    assert [e.samples for e in events] == [48, 96, 100, 148, 196, 200, 248, 296, 300]
    assert events[-1].samples == result.samples
    assert events[-1].loss == pytest.approx(result.final_loss)

    # The server's own interval: strictly increasing, and the last batch of every epoch is there.
    events.clear()
    await asyncio.wait_for(alice.fit("data", progress=events.append), FIT)
    pairs = [(e.epoch, e.batch) for e in events]
    assert pairs == sorted(set(pairs))
    assert {(1, 7), (2, 7), (3, 7)} <= set(pairs)


async def test_progress_when_max_nr_batches_ends_the_fit(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(config_for(new_model(), max_nr_batches=10))
    events: list[fedproto.FitProgressEvent] = []
    result = await asyncio.wait_for(alice.fit("data", progress=events.append, progress_every=1), FIT)
    assert result.batches == 10 and result.epochs == 2
    assert [(e.epoch, e.batch, e.batches_per_epoch) for e in events] == [(1, b, 7) for b in range(1, 8)] + [
        (2, b, 3) for b in range(1, 4)
    ]


# -- cancel ---------------------------------------------------------------------------------------------


async def test_cancelling_a_fit_stops_it_on_the_worker(
    trainer: fedproto.Worker, alice: fedproto.AsyncClient
) -> None:
    # 20 000 samples in batches of 1 for 100 epochs: far longer than any test would wait.
    await alice.set_train_config(config_for(new_model(), batch_size=1, epochs=100))
    started = asyncio.Event()
    events: list[fedproto.FitProgressEvent] = []

    def on_progress(event: fedproto.FitProgressEvent) -> None:
        events.append(event)
        started.set()

    fit = asyncio.create_task(alice.fit("big", progress=on_progress, progress_every=1))
    try:
        await asyncio.wait_for(started.wait(), FIT)
        fit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(fit, WAIT)
    finally:
        fit.cancel()
    assert await asyncio.wait_for(alice.ping(), WAIT) >= 0
    # The worker ends the fit between batches and answers it (section 12.4.9).
    await wait_until(lambda: in_flight(trainer) == 0, what="the cancelled fit to end on the worker")
    assert events[-1].epoch == 1 and events[-1].batch < 20_000

    # The training state is free again: weights can be read and set, and a new fit runs.
    weights = await asyncio.wait_for(alice.get_model_weights(), WAIT)
    assert await asyncio.wait_for(alice.set_model_weights(weights, strict=True), WAIT) == len(weights)
    await alice.set_train_config(config_for(new_model(), batch_size=1, max_nr_batches=5))
    result = await asyncio.wait_for(alice.fit("big"), FIT)
    assert result.batches == 5


# -- evaluate -------------------------------------------------------------------------------------------


async def test_evaluate_matches_a_local_computation(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(config_for(new_model(), epochs=2))
    await asyncio.wait_for(alice.fit("data"), FIT)
    local = new_model()
    local.load_state_dict(await alice.get_model_weights())
    local.eval()
    features, targets = classification(100, seed=1)
    with torch.no_grad():
        output = local(features)
        # Section 12.5.6: the batch losses (batches of the config's 16) weighted by their sizes.
        batch_losses = [
            float(nn.functional.cross_entropy(output[i : i + 16], targets[i : i + 16]))
            * len(targets[i : i + 16])
            for i in range(0, 100, 16)
        ]
    predicted = output.argmax(dim=1)

    result = await asyncio.wait_for(alice.evaluate("data", return_histograms=True, nr_bins=5), FIT)
    assert result.total == 100
    assert result.loss == pytest.approx(sum(batch_losses) / 100, rel=1e-5)
    assert result.correct == int((predicted == targets).sum())
    assert result.prediction_histogram == torch.bincount(predicted, minlength=5).tolist()
    assert result.target_histogram == torch.bincount(targets, minlength=5).tolist()

    # Without histograms, loss or counts, those parts stay empty; nr_bins 0 sizes them to the classes.
    bare = await asyncio.wait_for(
        alice.evaluate("data", return_loss=False, return_raw_accuracy=False, batch_size=7), FIT
    )
    assert bare.loss is None and bare.correct == 0 and bare.total == 100
    assert bare.prediction_histogram == [] and bare.target_histogram == []
    sized = await asyncio.wait_for(alice.evaluate("data", return_histograms=True), FIT)
    assert len(sized.target_histogram) == max(int(targets.max()), int(predicted.max())) + 1


# -- weights-only mode ----------------------------------------------------------------------------------


async def test_weights_only_worker_trains_registered_models_only(make_worker: WorkerFactory) -> None:
    worker = await make_worker(conformance=False, id="owner", weights_only=True)
    worker.add_dataset(classification(100, seed=1), key="data")
    worker.register_model("mlp", MLP)
    async with client_of(worker) as client:
        catalog = await client.list_models()
        assert catalog.names == ("mlp",) and catalog.weights_only

        with pytest.raises(fedproto.PermissionDeniedError) as refused:
            await client.set_train_config(config_for(new_model()))
        assert refused.value.remote

        initial = new_model(3).state_dict()
        summary = await client.set_train_config(config_for("mlp", initial_weights=initial, epochs=1))
        assert list(summary.state_names) == list(initial)
        assert_close_weights(await client.get_model_weights(), initial)
        result = await asyncio.wait_for(client.fit("data", return_weights=True), FIT)
        assert result.weights is not None and result.batches == 7
        assert await client.set_model_weights(initial, strict=True) == len(initial)
        assert_close_weights(await client.get_model_weights(), initial)


# -- errors arrive as their classes ---------------------------------------------------------------------


def bypassing_local_checks(config: fedproto.TrainConfig, **changes: Any) -> fedproto.TrainConfig:
    """The config with values the constructor would refuse, as a client in another language could send."""
    for name, value in changes.items():
        setattr(config, name, value)
    return config


@pytest.mark.parametrize(
    "changes",
    [
        {"optimizer": "NoSuchOptimizer"},
        {"optimizer": "Optimizer"},
        {"optimizer_args": {"lr": -1.0}},
        {"optimizer_args": {"no_such_argument": 1}},
        {"optimizer_args": {"lr": "fast"}},
        {"batch_size": 0},
        {"epochs": 0},
    ],
    ids=lambda changes: "-".join(f"{k}={v}" for k, v in changes.items()),
)
async def test_invalid_configs_are_refused_by_the_worker(
    alice: fedproto.AsyncClient, changes: dict[str, Any]
) -> None:
    with pytest.raises(fedproto.InvalidArgumentError) as refused:
        await alice.set_train_config(bypassing_local_checks(config_for(new_model()), **changes))
    assert refused.value.remote and refused.value.code is fedproto.ErrorCode.INVALID_ARGUMENT


async def test_a_failed_config_keeps_the_previous_state(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(config_for(new_model(), epochs=1))
    await asyncio.wait_for(alice.fit("data"), FIT)
    before = await alice.get_model_weights()
    with pytest.raises(fedproto.InvalidArgumentError):
        await alice.set_train_config(bypassing_local_checks(config_for(new_model(5)), batch_size=0))
    assert_close_weights(await alice.get_model_weights(), before)
    assert (await asyncio.wait_for(alice.fit("data"), FIT)).batches == 7


async def test_a_model_over_the_limit_is_refused(make_worker: WorkerFactory) -> None:
    worker = await make_worker(conformance=False, limits=conformance_limits(max_model_bytes=1000))
    async with client_of(worker) as client:
        with pytest.raises(fedproto.ResourceExhaustedError):
            await client.set_train_config(config_for(new_model()))


async def test_an_unknown_registered_model_is_not_found(alice: fedproto.AsyncClient) -> None:
    with pytest.raises(fedproto.NotFoundError):
        await alice.set_train_config(config_for("no-such-architecture"))


async def test_training_requests_before_a_config_fail_their_precondition(alice: fedproto.AsyncClient) -> None:
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.fit("data")
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.evaluate("data")
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.get_model_weights()
    with pytest.raises(fedproto.FailedPreconditionError):
        await alice.set_model_weights(new_model().state_dict())


async def test_an_unknown_dataset_is_not_found(alice: fedproto.AsyncClient) -> None:
    await alice.set_train_config(config_for(new_model()))
    with pytest.raises(fedproto.NotFoundError):
        await alice.fit("no-such-dataset")
    with pytest.raises(fedproto.NotFoundError):
        await alice.evaluate("no-such-dataset")


# -- identities -----------------------------------------------------------------------------------------


async def test_training_state_belongs_to_one_identity(
    trainer: fedproto.Worker, alice: fedproto.AsyncClient
) -> None:
    await alice.set_train_config(config_for(new_model(1), epochs=1))
    async with client_of(trainer, TOKENS["bob"]) as bob:
        with pytest.raises(fedproto.FailedPreconditionError):
            await bob.fit("data")
        with pytest.raises(fedproto.FailedPreconditionError):
            await bob.get_model_weights()
        await bob.set_train_config(config_for(new_model(2), epochs=1))
        await asyncio.wait_for(bob.fit("data"), FIT)
        bobs = await bob.get_model_weights()
    alices = await alice.get_model_weights()
    assert_close_weights(alices, new_model(1).state_dict())  # bob's fit did not touch alice's model
    assert not torch.equal(alices["out.weight"], bobs["out.weight"])
    # Another connection of alice's identity shares her state (section 12.1.13).
    async with client_of(trainer, TOKENS["alice"]) as again:
        assert_close_weights(await again.get_model_weights(), alices)


# -- known problems -------------------------------------------------------------------------------------


class Fresh(nn.Module):
    """A module class no other test scripts, so that scripting it compiles its methods."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x) * 2.0


async def test_concurrent_configs_script_the_same_model_safely(
    trainer: fedproto.Worker, alice: fedproto.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two clients sending one config at once (as a coordinator configuring its workers does) script the
    # model on two threads. The race is narrow, so the test holds both threads at the point where
    # TorchScript defines a class's methods: exactly the interleaving that happens by chance.
    original = torch.jit._recursive.create_methods_and_properties_from_stubs
    meeting = threading.Barrier(2, timeout=2.0)

    def rendezvous(concrete_type: Any, method_stubs: Any, property_stubs: Any) -> None:
        if concrete_type.py_class is Fresh:
            try:
                meeting.wait()
            except threading.BrokenBarrierError:
                pass  # scripting is serialised: the other thread never arrives
        original(concrete_type, method_stubs, property_stubs)

    monkeypatch.setattr(torch.jit._recursive, "create_methods_and_properties_from_stubs", rendezvous)
    config = config_for(nn.Sequential(nn.Linear(4, 3), Fresh()), epochs=1)
    async with client_of(trainer, TOKENS["alice"]) as second:
        summaries = await asyncio.wait_for(
            asyncio.gather(alice.set_train_config(config), second.set_train_config(config)), FIT
        )
    assert [s.parameter_count for s in summaries] == [15, 15]
