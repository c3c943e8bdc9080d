"""Federated averaging against real loopback workers: weighting, records, failures and both APIs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ThreadedWorker, in_flight, stop_quietly, wait_until
from torch import nn

import fedproto
from fedproto import codec
from fedproto.datasets import Dataset
from fedproto.errors import FailedPreconditionError
from fedproto.federated import (
    CoordinateMedian,
    FedAdam,
    FedAvg,
    FedAvgConfigError,
    FedAvgError,
    FederatedClient,
    FedProx,
    Median,
    ResumeError,
    RoundRecord,
    SeededSampler,
    WorkerRound,
    aggregation,
    clients_of,
)
from fedproto.federated.fedavg import _figure
from fedproto.server.profile import REGISTERED_MODEL, conformance_worker, fixture_dataset
from fedproto.training import ModelRegistry, TrainingState

#: Bound on a whole federated run in these tests.
RUN = 60.0

StartWorker = Callable[..., Awaitable[fedproto.Worker]]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="worker .* requires no token")
        yield


@pytest.fixture
async def start_worker() -> AsyncIterator[StartWorker]:
    """Start plain workers on 127.0.0.1: ``await start_worker("a", (x, y), port=0)``; stopped at the end."""
    started: list[fedproto.Worker] = []

    async def factory(
        id: str, dataset: Any, *, port: int = 0, key: str = "data", more: dict[str, Any] | None = None
    ) -> fedproto.Worker:
        worker = fedproto.Worker(id, shutdown_grace=0.5)
        worker.add_dataset(dataset, key=key)
        for other_key, other in (more or {}).items():
            worker.add_dataset(other, key=other_key)
        started.append(worker)
        await worker.start("127.0.0.1", port)
        return worker

    try:
        yield factory
    finally:
        for worker in started:
            await stop_quietly(worker)


def classification(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(samples, 4, generator=generator)
    targets = (features[:, 0] > 0).long() + (features[:, 1] > 0).long()
    return features, targets


class Normed(nn.Module):
    """A small classifier with buffers, one of them an integer (BatchNorm's num_batches_tracked)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.hidden(x))))


def classifier_config(model: nn.Module | str, **changes: Any) -> fedproto.TrainConfig:
    settings: dict[str, Any] = {
        "model": model,
        "loss_fn": "cross_entropy",
        "optimizer": "SGD",
        "optimizer_args": {"lr": 0.1},
        "batch_size": 8,
        "epochs": 1,
        "seed": 0,
    }
    settings.update(changes)
    return fedproto.TrainConfig(**settings)


# -- weighting ------------------------------------------------------------------------------------------


async def test_average_is_weighted_by_samples_held(start_worker: StartWorker, connect: Any) -> None:
    # One full-batch SGD step on w*x with MSE from w=0: w_k = lr * 2 * mean(x*y) = 2 * 0.25 * y_k.
    # Worker a holds 1 sample (y=1 -> w=0.5), worker b 3 samples (y=3 -> w=1.5): the FedAvg average is
    # (1 * 0.5 + 3 * 1.5) / 4 = 1.25 (an unweighted mean would give 1.0).
    a = await start_worker("a", (torch.ones(1, 1), torch.full((1, 1), 1.0)))
    b = await start_worker("b", (torch.ones(3, 1), torch.full((3, 1), 3.0)))
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    config = fedproto.TrainConfig(
        model=model, loss_fn="mse", optimizer_args={"lr": 0.25}, batch_size=8, shuffle=False
    )
    fedavg = FedAvg([await connect(a), await connect(b)], model, config, dataset_key="data", progress=False)
    [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)

    assert model.weight.item() == 1.25
    assert [(w.worker, w.ok, w.dataset_size, w.samples) for w in record.workers] == [
        ("a", True, 1, 1),
        ("b", True, 3, 3),
    ]
    # Evaluated at w=1.25: a's loss (1.25-1)^2, b's (1.25-3)^2, weighted by samples. Float targets make
    # it a regression (protocol 12.5): no accuracy, and no count of "correct" values; the round reports
    # the sample-weighted mean squared and mean absolute errors instead.
    assert [w.eval_loss for w in record.workers] == [0.0625, 3.0625]
    assert record.loss == pytest.approx((0.0625 + 3 * 3.0625) / 4)
    assert record.accuracy is None
    assert [(w.eval_kind, w.eval_correct, w.eval_total) for w in record.workers] == [
        ("regression", None, 1),
        ("regression", None, 3),
    ]
    assert [w.eval_mean_squared_error for w in record.workers] == [0.0625, 3.0625]
    assert [w.eval_mean_absolute_error for w in record.workers] == [0.25, 1.75]
    assert record.mean_squared_error == pytest.approx((0.0625 + 3 * 3.0625) / 4)
    assert record.mean_absolute_error == pytest.approx((0.25 + 3 * 1.75) / 4)
    assert record.metric == ("mse", record.mean_squared_error)
    assert RoundRecord.from_json(record.to_json()) == record


async def test_global_weights_are_the_average_of_the_workers_updates(
    start_worker: StartWorker, connect: Any
) -> None:
    sizes = [24, 40, 72]
    workers = [await start_worker(f"w{k}", classification(n, seed=k)) for k, n in enumerate(sizes)]
    clients = [await connect(w) for w in workers]
    torch.manual_seed(0)
    model = Normed()
    fedavg = FedAvg(
        clients, model, classifier_config(model, epochs=2), dataset_key="data", evaluate=False, progress=False
    )
    [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)

    # Without evaluation every worker still holds the weights it trained this round.
    updates = [(await c.get_model_weights(), n) for c, n in zip(clients, sizes, strict=True)]
    expected = fedproto.average_weights(updates)
    got = model.state_dict()
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    # The integer buffer comes from the worker holding the most samples (2 epochs of 72 in batches of 8).
    assert int(got["norm.num_batches_tracked"]) == 18
    assert [w.dataset_size for w in record.workers] == sizes
    assert [w.samples for w in record.workers] == [2 * n for n in sizes]
    assert record.loss is None and record.accuracy is None
    assert all(w.eval_loss is None for w in record.workers)


async def test_the_archive_is_saved_once_and_reaches_each_worker_as_a_model_object(
    start_worker: StartWorker, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[fedproto.TrainConfig] = []
    to_spec = fedproto.TrainConfig.to_spec

    def counting(config: fedproto.TrainConfig) -> Any:
        saved.append(config)
        return to_spec(config)

    monkeypatch.setattr(fedproto.TrainConfig, "to_spec", counting)
    workers = [await start_worker(f"w{k}", classification(16, seed=k)) for k in range(3)]
    torch.manual_seed(0)
    # 4*256 + 256*512 + 512*3 weights: an archive of about 530 KB, more than one 256 KiB chunk
    model = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 3))
    fedavg = FedAvg(
        [await connect(w) for w in workers],
        model,
        classifier_config(model),
        dataset_key="data",
        evaluate=False,
        progress=False,
    )
    await asyncio.wait_for(fedavg.run_async(2), RUN)
    assert len(saved) == 1, "the archive is saved once per run, not once per worker or round"
    for worker in workers:
        spec = worker.services.training["anonymous"].spec
        assert spec.model_object and spec.model_torchscript is None, worker.id
        assert worker.services.objects.count("anonymous") == 0, "the archive's object was deleted"


# -- records ------------------------------------------------------------------------------------------


async def test_history_records_every_round(start_worker: StartWorker, connect: Any) -> None:
    # The workers train the architecture they registered; the coordinator's copy has the same state names.
    workers = []
    for k in range(2):
        worker = fedproto.Worker(f"reg{k}")
        worker.add_dataset(fixture_dataset(), key="conformance")
        worker.register_model(REGISTERED_MODEL, lambda: nn.Linear(4, 3))
        workers.append(worker)
    seen: list[RoundRecord] = []
    try:
        for worker in workers:
            await worker.start("127.0.0.1", 0)
        clients = [await connect(w) for w in workers]
        model = nn.Linear(4, 3)
        fedavg = FedAvg(
            clients,
            model,
            classifier_config(REGISTERED_MODEL),
            dataset_key="conformance",
            progress=seen.append,
        )
        first = await asyncio.wait_for(fedavg.run_async(3), RUN)
        more = await asyncio.wait_for(fedavg.run_async(2), RUN)
    finally:
        for worker in workers:
            await stop_quietly(worker)

    assert fedavg.history == first + more == seen
    assert [r.round for r in fedavg.history] == [1, 2, 3, 4, 5]
    assert fedavg.workers == ["reg0", "reg1"]
    for record in fedavg.history:
        assert isinstance(record, RoundRecord)
        assert len(record.workers) == 2 and record.succeeded == record.workers and record.failed == ()
        assert all(isinstance(w, WorkerRound) for w in record.workers)
        assert record.loss is not None and record.loss >= 0
        assert record.accuracy is not None and 0 <= record.accuracy <= 1
        assert record.seconds > 0
        for w in record.workers:
            assert w.ok and w.error is None and w.eval_error is None
            assert w.samples == w.dataset_size == 64 and w.eval_total == 64
            assert w.loss is not None and w.final_loss is not None
            assert w.seconds > 0 and w.fit_seconds > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        fedavg.history[0].round = 9  # type: ignore[misc]


async def test_progress_line_per_round_on_request(
    start_worker: StartWorker, connect: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = await start_worker("solo", classification(16, seed=1))
    client = await connect(worker)
    model = nn.Linear(4, 3)
    await asyncio.wait_for(
        FedAvg([client], model, classifier_config(model), dataset_key="data", progress=True).run_async(2), RUN
    )
    err = capsys.readouterr().err
    assert "round   1" in err and "round   2" in err and "1/1 workers" in err
    await asyncio.wait_for(
        FedAvg([client], model, classifier_config(model), dataset_key="data", progress=False).run_async(1),
        RUN,
    )
    await asyncio.wait_for(
        FedAvg([client], model, classifier_config(model), dataset_key="data").run_async(1), RUN
    )
    assert capsys.readouterr().err == ""  # silent, and stderr is no terminal under pytest


# -- failures -----------------------------------------------------------------------------------------


async def test_worker_dying_mid_round_is_left_out_and_rejoins(
    start_worker: StartWorker, connect: Any
) -> None:
    a = await start_worker("a", classification(32, seed=1))
    b = await start_worker("b", classification(48, seed=2))
    # The victim's dataset makes its fit long enough to be stopped while the round runs.
    victim = await start_worker("victim", classification(60_000, seed=3))
    port = victim.port
    clients = [await connect(a), await connect(b), await connect(victim, reconnect_attempts=2)]
    model = nn.Linear(4, 3)
    fedavg = FedAvg(
        clients, model, classifier_config(model, batch_size=4), dataset_key="data", progress=False
    )

    round_one = asyncio.create_task(fedavg.run_async(1))
    try:
        await wait_until(
            lambda: (bool(victim._training) and in_flight(victim) > 0) or round_one.done(),
            timeout=RUN,
            what="the victim's training request",
        )
        assert not round_one.done(), "the round ended before the victim could be stopped"
        await victim.stop(grace=0)
        [first] = await asyncio.wait_for(round_one, RUN)
    finally:
        round_one.cancel()
    assert [w.worker for w in first.failed] == ["victim"]
    failure = first.failed[0]
    assert failure.error and failure.loss is None and failure.eval_loss is None
    assert [w.worker for w in first.succeeded] == ["a", "b"]
    assert first.accuracy is not None  # evaluated on the workers that trained
    assert sum(w.eval_total or 0 for w in first.workers) == 32 + 48

    # Still down: left out again, and the run goes on.
    [second] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    assert [w.worker for w in second.failed] == ["victim"]
    assert [w.worker for w in second.succeeded] == ["a", "b"]

    # Back (restarted, so without training state): configured again, it rejoins the average.
    await start_worker("victim", classification(16, seed=4), port=port)
    [third] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    assert third.failed == ()
    assert [w.dataset_size for w in third.workers] == [32, 48, 16]
    assert [r.round for r in fedavg.history] == [1, 2, 3]


async def test_fewer_than_min_workers_raise(start_worker: StartWorker, connect: Any) -> None:
    up = await start_worker("up", classification(16, seed=1))
    down = await start_worker("down", classification(16, seed=2))
    clients = [await connect(up), await connect(down, reconnect_attempts=1)]
    await down.stop(grace=0)
    model = nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fedavg = FedAvg(
        clients, model, classifier_config(model), dataset_key="data", min_workers=2, progress=False
    )

    with pytest.raises(FedAvgError, match="down") as caught:
        await asyncio.wait_for(fedavg.run_async(3), RUN)

    assert isinstance(caught.value, fedproto.FedprotoError)
    assert "1 of 2 workers" in str(caught.value) and "min_workers=2" in str(caught.value)
    record = caught.value.record
    assert fedavg.history == [record]
    assert [w.worker for w in record.failed] == ["down"] and [w.worker for w in record.succeeded] == ["up"]
    assert record.loss is None and record.accuracy is None
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), "the global weights must not change in a failed round"

    # With min_workers=1 the same situation is an ordinary round.
    lenient = FedAvg(clients, model, classifier_config(model), dataset_key="data", progress=False)
    [ok] = await asyncio.wait_for(lenient.run_async(1), RUN)
    assert [w.worker for w in ok.succeeded] == ["up"] and [w.worker for w in ok.failed] == ["down"]


async def test_a_worker_refusing_the_request_fails_only_its_part(
    start_worker: StartWorker, connect: Any
) -> None:
    good = await start_worker("good", classification(16, seed=1))
    other = await start_worker("other", classification(16, seed=2), key="elsewhere")
    model = nn.Linear(4, 3)
    fedavg = FedAvg(
        [await connect(good), await connect(other)],
        model,
        classifier_config(model),
        dataset_key="data",
        progress=False,
    )
    [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    [failure] = record.failed
    assert failure.worker == "other" and failure.error is not None and "NotFoundError" in failure.error


# -- arguments and the blocking form --------------------------------------------------------------------


async def test_arguments_are_checked(start_worker: StartWorker, connect: Any) -> None:
    worker = await start_worker("w", classification(16, seed=1))
    client = await connect(worker)
    model = nn.Linear(4, 3)
    config = classifier_config(model)
    with pytest.raises(ValueError, match="at least one client"):
        FedAvg([], model, config, dataset_key="data")
    with pytest.raises(ValueError, match="min_workers"):
        FedAvg([client], model, config, dataset_key="data", min_workers=2)
    with pytest.raises(TypeError, match=r"AsyncClient or fedproto\.Client"):
        FedAvg([object()], model, config, dataset_key="data")  # type: ignore[list-item]
    fedavg = FedAvg([client], model, config, dataset_key="data", progress=False)
    with pytest.raises(ValueError, match="rounds"):
        await fedavg.run_async(-1)
    with pytest.raises(TypeError, match=r"needs fedproto\.Client"):
        fedavg.run(1)
    # A global model whose state names differ from what the workers build is a coordinator mistake.
    other = nn.Sequential(nn.Linear(4, 3))
    mismatched = FedAvg([client], other, config, dataset_key="data", progress=False)
    with pytest.raises(ValueError, match="state names"):
        await asyncio.wait_for(mismatched.run_async(1), RUN)


def test_blocking_run_drives_clients_concurrently() -> None:
    threaded = [ThreadedWorker(conformance_worker(f"t{k}")) for k in range(2)]
    clients: list[fedproto.Client] = []
    try:
        for t in threaded:
            t.run(t.worker.start("127.0.0.1", 0))
        clients = [fedproto.Client(t.url) for t in threaded]
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        fedavg = FedAvg(clients, model, classifier_config(model), dataset_key="conformance", progress=False)
        records = fedavg.run(2)
        assert [r.round for r in records] == [1, 2] and fedavg.history == records
        assert all(r.failed == () and r.accuracy is not None for r in records)
        # The clients still work on their own afterwards.
        assert clients[0].ping() >= 0
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        for t in threaded:
            t.close()


# -- clients as (worker, dataset) pairs, sampling, streaming --------------------------------------------


def _local_fit(
    config: fedproto.TrainConfig, weights: dict[str, torch.Tensor], data: Any
) -> dict[str, torch.Tensor]:
    """What a worker's fit of ``data`` from ``weights`` gives, computed here with the same engine."""
    state = TrainingState.configure(
        config.to_spec(), registry=ModelRegistry(), weights_only=False, max_model_bytes=0
    )
    state.load_weights(weights, strict=True)
    state.fit(Dataset(*data))
    return state.state_dict()


async def test_rounds_sample_clients_not_connections(start_worker: StartWorker, connect: Any) -> None:
    # Two workers hold four client datasets each; half of the eight clients train every round.
    data = {f"w{w}/k{k}": classification(8 + 4 * k + w, seed=10 * w + k) for w in range(2) for k in range(4)}
    workers = []
    for w in range(2):
        keys = {f"k{k}": data[f"w{w}/k{k}"] for k in range(4)}
        first = keys.pop("k0")
        workers.append(await start_worker(f"w{w}", first, key="k0", more=keys))
    connections = [await connect(worker) for worker in workers]
    clients = [c for connection in connections for c in clients_of(connection, [f"k{k}" for k in range(4)])]
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    config = classifier_config(model, batch_size=4)
    fedavg = FedAvg(clients, model, config, fraction_fit=0.5, seed=3, evaluate=False, progress=False)
    assert fedavg.clients == list(data)
    for number in range(1, 4):
        before = fedavg.global_weights()
        [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)
        expected = SeededSampler(3).sample(number, list(data), 4)
        assert [c.client for c in record.clients] == expected
        assert (record.available, record.sampled, record.finished, record.dropped, record.late) == (
            8,
            4,
            4,
            0,
            0,
        )
        assert [c.dataset_key for c in record.clients] == [name.split("/")[1] for name in expected]
        assert [c.dataset_size for c in record.clients] == [len(data[name][1]) for name in expected]
        # The new global weights are the exact sample-weighted mean of the sampled clients' fits.
        spec_config = dataclasses.replace(
            classifier_config(nn.Linear(4, 3), batch_size=4), reset_optimizer=True
        )
        updates = [(_local_fit(spec_config, before, data[name]), len(data[name][1])) for name in expected]
        averaged = fedproto.average_weights(updates)
        for name, tensor in averaged.items():
            torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=1e-7)


async def test_the_same_seed_gives_the_same_run(start_worker: StartWorker, connect: Any) -> None:
    more = {f"k{k}": classification(12 + k, seed=k) for k in range(1, 6)}
    worker = await start_worker("solo", classification(12, seed=0), key="k0", more=more)
    connection = await connect(worker)
    clients = clients_of(connection, [f"k{k}" for k in range(6)])

    async def run(seed: int) -> tuple[list[list[str]], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        fedavg = FedAvg(
            clients,
            model,
            classifier_config(model),
            fraction_fit=0.34,
            seed=seed,
            evaluate=False,
            progress=False,
        )
        records = await asyncio.wait_for(fedavg.run_async(4), RUN)
        return [[c.client for c in r.clients] for r in records], fedavg.global_weights()

    samples, weights = await run(7)
    again, weights_again = await run(7)
    other, _ = await run(8)
    assert samples == again and all(len(sample) == 2 for sample in samples)
    assert all(torch.equal(weights[name], weights_again[name]) for name in weights)
    assert samples != other


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"fraction_fit": 0}, FedAvgConfigError, r"fraction_fit must be in \(0, 1\]"),
        ({"fraction_fit": 1.5}, FedAvgConfigError, "fraction_fit"),
        ({"fraction_fit": "all"}, FedAvgConfigError, "fraction_fit"),
        ({"min_fit_clients": 3}, FedAvgConfigError, "min_fit_clients must be an integer between 1 and 2"),
        ({"min_fit_clients": 0}, FedAvgConfigError, "min_fit_clients"),
        ({"min_available_clients": 5}, FedAvgConfigError, "min_available_clients"),
        ({"min_fit_clients": 1, "min_workers": 1}, FedAvgConfigError, "not both"),
        ({"strategy": "median", "streaming": True}, FedAvgConfigError, "cannot stream"),
        ({"strategy": Median(), "streaming": True}, FedAvgConfigError, "cannot stream"),
        ({"strategy": "fedsgd"}, FedAvgConfigError, "unknown strategy 'fedsgd'"),
        ({"updates": "gradients"}, FedAvgConfigError, "updates must be"),
        ({"round_timeout": 0}, FedAvgConfigError, "round_timeout"),
        ({"fit_timeout": -1}, FedAvgConfigError, "fit_timeout"),
        ({"plot": True}, FedAvgConfigError, "pass run_dir too"),
        ({"resume": True}, FedAvgConfigError, "resume=True needs run_dir"),
        ({"dataset_key": None}, FedAvgConfigError, "pass dataset_key"),
        ({"sampler": object()}, TypeError, "sampler must have"),
        ({"strategy": 3}, TypeError, "strategy must be"),
    ],
)
async def test_bad_settings_fail_before_any_training(
    start_worker: StartWorker, connect: Any, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    a = await start_worker("a", classification(8, seed=1))
    b = await start_worker("b", classification(8, seed=2))
    clients = [await connect(a), await connect(b)]
    model = nn.Linear(4, 3)
    settings: dict[str, Any] = {"dataset_key": "data", "progress": False, **options}
    with pytest.raises(error, match=message):
        FedAvg(clients, model, classifier_config(model), **settings)
    if issubclass(error, FedAvgConfigError):
        assert issubclass(error, ValueError) and issubclass(error, FedAvgError)
    for client in clients:  # nothing reached the workers: no train config was sent
        with pytest.raises(FailedPreconditionError):
            await client.get_model_weights()


async def test_client_ids_must_be_unique(start_worker: StartWorker, connect: Any) -> None:
    worker = await start_worker("w", classification(8, seed=1), more={"other": classification(8, seed=2)})
    connection = await connect(worker)
    model = nn.Linear(4, 3)
    twice = [FederatedClient(connection, "data", name="x"), FederatedClient(connection, "other", name="x")]
    with pytest.raises(FedAvgConfigError, match=r"unique; repeated: \['x'\]"):
        FedAvg(twice, model, classifier_config(model))
    with pytest.raises(FedAvgConfigError, match="dataset_key"):
        FederatedClient(connection, "")
    pair = [FederatedClient(connection, "data"), FederatedClient(connection, "other")]
    assert FedAvg(pair, model, classifier_config(model), progress=False).clients == ["w/data", "w/other"]


async def test_too_few_available_clients_end_the_run_before_training(
    start_worker: StartWorker, connect: Any
) -> None:
    up = await start_worker("up", classification(8, seed=1), more={"b": classification(8, seed=3)})
    down = await start_worker("down", classification(8, seed=2))
    clients = [
        *clients_of(await connect(up), ["data", "b"]),
        FederatedClient(await connect(down, reconnect_attempts=1), "data"),
    ]
    await down.stop(grace=0)
    model = nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fedavg = FedAvg(clients, model, classifier_config(model), min_available_clients=3, progress=False)
    with pytest.raises(
        FedAvgError, match="2 clients available, fewer than min_available_clients=3"
    ) as caught:
        await asyncio.wait_for(fedavg.run_async(1), RUN)
    record = caught.value.record
    assert record is not None and record.sampled == 0 and record.available == 2
    assert [(c.client, c.status) for c in record.clients] == [("down", "unavailable")]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # With 2 available clients required, the round runs on the two clients of the worker that is up.
    fedavg = FedAvg(clients, model, classifier_config(model), min_available_clients=2, progress=False)
    [ok] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    assert [(c.client, c.status) for c in ok.clients] == [
        ("up/data", "ok"),
        ("up/b", "ok"),
        ("down", "unavailable"),
    ]
    assert (ok.available, ok.sampled, ok.finished) == (2, 2, 2)


class SlowLinear(nn.Linear):
    """A registered architecture whose every batch takes ``delay`` seconds (a slow client's device)."""

    def __init__(self, delay: float) -> None:
        super().__init__(4, 3)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return super().forward(x)


async def test_a_round_deadline_discards_late_results(start_worker: StartWorker, connect: Any) -> None:
    fast = await start_worker("fast", classification(16, seed=1))
    slow = await start_worker("slow", classification(16, seed=2))
    fast.register_model("timed", lambda: SlowLinear(0.0))
    slow.register_model("timed", lambda: SlowLinear(1.0))  # 4 batches of 1 s: past the 3 s deadline
    clients = [await connect(fast), await connect(slow)]
    model = nn.Linear(4, 3)
    fedavg = FedAvg(
        clients,
        model,
        classifier_config("timed", batch_size=4),
        dataset_key="data",
        round_timeout=3.0,
        evaluate=False,
        progress=False,
    )
    [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    assert [(c.client, c.status) for c in record.clients] == [("fast", "ok"), ("slow", "late")]
    assert record.late == 1 and record.finished == 1 and record.dropped == 0
    assert "deadline of 3 s" in (record.clients[1].error or "")
    assert 3.0 <= record.seconds < 6.0
    # Only the fast client's update counts: the global weights are its trained weights.
    trained = await clients[0].get_model_weights()
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in trained.items())
    # The next round starts at once, while the slow worker still finishes the batch of its cancelled fit:
    # FedAvg configures it anew rather than counting it failed, and it is late again.
    [again] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    assert [(c.client, c.status) for c in again.clients] == [("fast", "ok"), ("slow", "late")]
    # The late fit was cancelled on its worker (it stops before its next batch).
    await wait_until(lambda: not slow.training_busy, what="the slow worker's cancelled fit to stop")


async def test_median_and_fedprox_end_to_end(start_worker: StartWorker, connect: Any) -> None:
    sets = [classification(16 + 8 * k, seed=k) for k in range(3)]
    workers = [await start_worker(f"m{k}", data) for k, data in enumerate(sets)]
    clients = [await connect(w) for w in workers]
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    fedavg = FedAvg(
        clients,
        model,
        classifier_config(model),
        dataset_key="data",
        strategy=Median(),
        evaluate=False,
        progress=False,
    )
    assert fedavg.streaming is False
    await asyncio.wait_for(fedavg.run_async(1), RUN)
    median = CoordinateMedian(start)
    for client, data in zip(clients, sets, strict=True):
        median.add(await client.get_model_weights(), len(data[1]))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in median.result().items())

    # FedProx: the workers train with the proximal term, exactly as the engine does it locally.
    model.load_state_dict(start)
    fedprox = FedAvg(
        clients,
        model,
        classifier_config(model),
        dataset_key="data",
        strategy=FedProx(mu=2.0),
        evaluate=False,
        progress=False,
    )
    await asyncio.wait_for(fedprox.run_async(1), RUN)
    config = dataclasses.replace(classifier_config(nn.Linear(4, 3)), proximal_mu=2.0, reset_optimizer=True)
    for client, data in zip(clients, sets, strict=True):
        remote = await client.get_model_weights()
        local = _local_fit(config, start, data)
        assert all(torch.equal(remote[k], local[k]) for k in local)


async def test_resume_reaches_the_weights_of_an_uninterrupted_run(
    start_worker: StartWorker, connect: Any, tmp_path: Path
) -> None:
    more = {f"k{k}": classification(10 + 3 * k, seed=k) for k in range(1, 4)}
    workers = [
        await start_worker(f"r{w}", classification(9, seed=20 + w), key="k0", more=more) for w in range(2)
    ]
    connections = [await connect(w) for w in workers]
    clients = [c for connection in connections for c in clients_of(connection, [f"k{k}" for k in range(4)])]

    def build() -> tuple[nn.Module, fedproto.TrainConfig]:
        torch.manual_seed(1)
        model = Normed()
        return model, classifier_config(model, optimizer_args={"lr": 0.05, "momentum": 0.9})

    settings: dict[str, Any] = {"fraction_fit": 0.5, "seed": 5, "progress": False, "plot": True}
    model, config = build()
    whole = FedAvg(clients, model, config, strategy=FedAdam(eta=0.05), run_dir=tmp_path / "whole", **settings)
    await asyncio.wait_for(whole.run_async(5), RUN)

    model, config = build()
    first = FedAvg(clients, model, config, strategy=FedAdam(eta=0.05), run_dir=tmp_path / "cut", **settings)
    await asyncio.wait_for(first.run_async(2), RUN)
    with pytest.raises(FedAvgConfigError, match="already holds a run"):
        FedAvg(clients, model, config, strategy=FedAdam(eta=0.05), run_dir=tmp_path / "cut", **settings)
    model, config = build()  # a new coordinator: fresh model, strategy and sampler
    resumed = FedAvg.resume(tmp_path / "cut", clients, model, config, strategy=FedAdam(eta=0.05), **settings)
    assert [r.round for r in resumed.history] == [1, 2]
    await asyncio.wait_for(resumed.run_async(3), RUN)

    assert [r.round for r in resumed.history] == [1, 2, 3, 4, 5]
    assert [[c.client for c in r.clients] for r in resumed.history] == [
        [c.client for c in r.clients] for r in whole.history
    ]
    final, expected = resumed.global_weights(), whole.global_weights()
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert (tmp_path / "cut" / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "cut" / "manifest.json").is_file()

    # Resuming with another model or another strategy is refused before anything is trained.
    with pytest.raises(ResumeError, match="another model"):
        FedAvg.resume(
            tmp_path / "cut", clients, nn.Linear(4, 3), classifier_config(nn.Linear(4, 3)), **settings
        )
    with pytest.raises(ResumeError, match="strategy"):
        FedAvg.resume(tmp_path / "cut", clients, *build(), **settings)
    with pytest.raises(ResumeError, match="no manifest"):
        FedAvg.resume(tmp_path / "empty", clients, *build(), **settings)


async def test_sampled_streamed_fedavg_matches_full_fedavg(start_worker: StartWorker, connect: Any) -> None:
    # Every client sampled, updates streamed: within 1 point of the full, buffered FedAvg as it was
    # (every worker every round, weights averaged with average_weights) on the same seeds and data.
    test = classification(400, seed=99)
    sets = {f"w{w}/k{k}": classification(40 + 20 * k, seed=3 * w + k) for w in range(3) for k in range(2)}
    workers = [
        await start_worker(f"w{w}", sets[f"w{w}/k0"], key="k0", more={"k1": sets[f"w{w}/k1"], "test": test})
        for w in range(3)
    ]
    connections = [await connect(w) for w in workers]
    clients = [
        c for connection in connections for c in clients_of(connection, ["k0", "k1"], eval_dataset_key="test")
    ]

    def build() -> tuple[nn.Module, fedproto.TrainConfig]:
        torch.manual_seed(2)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        return model, classifier_config(model, optimizer_args={"lr": 0.1})

    rounds = 6
    model, config = build()
    fedavg = FedAvg(clients, model, config, fraction_fit=1.0, streaming=True, progress=False)
    await asyncio.wait_for(fedavg.run_async(rounds), RUN)
    sampled_accuracy = fedavg.history[-1].accuracy
    assert sampled_accuracy is not None and all(r.sampled == 6 for r in fedavg.history)

    reference, config = build()
    for connection in connections:
        await connection.set_train_config(config)
    for _ in range(rounds):
        updates = []
        for connection in connections:
            for key in ("k0", "k1"):
                await connection.set_model_weights(reference.state_dict(), strict=True)
                result = await connection.fit(key, return_weights=True)
                assert result.weights is not None
                updates.append((result.weights, result.dataset_size))
        reference.load_state_dict(fedproto.average_weights(updates))
    await connections[0].set_model_weights(reference.state_dict(), strict=True)
    evaluation = await connections[0].evaluate("test")
    full_accuracy = evaluation.correct / evaluation.total
    assert abs(sampled_accuracy - full_accuracy) <= 0.01, (sampled_accuracy, full_accuracy)
    assert full_accuracy > 0.6


async def test_progress_line_and_plot(
    start_worker: StartWorker, connect: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = await start_worker("p", classification(16, seed=1), more={"b": classification(8, seed=2)})
    connection = await connect(worker)
    model = nn.Linear(4, 3)
    fedavg = FedAvg(
        clients_of(connection, ["data", "b"]),
        model,
        classifier_config(model),
        run_dir=tmp_path,
        progress=True,
    )
    await asyncio.wait_for(fedavg.run_async(2), RUN)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    for number, line in enumerate(lines, start=1):
        assert line.startswith(f"round   {number}  sampled 2  finished 2  dropped 0  loss ")
        assert "accuracy 0." in line and line.endswith(" s") and "1/1 workers" in line
    assert (tmp_path / "accuracy.png").read_bytes().startswith(b"\x89PNG")


# -- coordinator memory --------------------------------------------------------------------------------


async def test_model_transfers_are_bounded_and_each_update_is_dropped_before_the_next(
    start_worker: StartWorker, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The coordinator's memory is O(model) when at most max_transfers model-sized transfers are in flight
    # (global weights out, trained weights back) and no update is ever decoded whole: each is folded
    # chunk by chunk as it streams in. Counted here, rather than in bytes, across three workers holding
    # two clients each.
    workers = [
        await start_worker(f"w{i}", classification(16, seed=i), more={"b": classification(8, seed=10 + i)})
        for i in range(3)
    ]
    connections = [await connect(worker) for worker in workers]
    clients = [client for connection in connections for client in clients_of(connection, ["data", "b"])]
    transfers = {"now": 0, "most": 0}

    def counted(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def transfer(self: fedproto.AsyncClient, *args: Any, **kwargs: Any) -> Any:
            transfers["now"] += 1
            transfers["most"] = max(transfers["most"], transfers["now"])
            try:
                await asyncio.sleep(0.02)  # long enough for other workers' transfers to overlap, if allowed
                return await method(self, *args, **kwargs)
            finally:
                transfers["now"] -= 1

        return transfer

    monkeypatch.setattr(
        fedproto.AsyncClient, "set_model_weights", counted(fedproto.AsyncClient.set_model_weights)
    )
    monkeypatch.setattr(
        fedproto.AsyncClient, "stream_model_weights", counted(fedproto.AsyncClient.stream_model_weights)
    )
    folds = {"committed": 0}
    commit = aggregation.Fold.commit

    def counted_commit(self: aggregation.Fold) -> None:
        commit(self)
        folds["committed"] += 1

    monkeypatch.setattr(aggregation.Fold, "commit", counted_commit)
    decoded: list[weakref.ref[torch.Tensor]] = []
    alive = {"most": 0}

    def track(weights: dict[str, torch.Tensor] | None) -> None:
        if weights:
            decoded.append(weakref.ref(next(iter(weights.values()))))
            alive["most"] = max(alive["most"], sum(ref() is not None for ref in decoded))

    # every set of weights the clients decode, whichever reply carried it (the workers, in this process
    # too, decode with other functions)
    weights_reply, fit_reply = codec.weights_reply_from_proto, codec.fit_result_from_proto

    def weights_tracked(message: Any) -> dict[str, torch.Tensor]:
        weights = weights_reply(message)
        track(weights)
        return weights

    def fit_tracked(message: Any) -> fedproto.FitResult:
        result = fit_reply(message)
        track(result.weights)
        return result

    monkeypatch.setattr(codec, "weights_reply_from_proto", weights_tracked)
    monkeypatch.setattr(codec, "fit_result_from_proto", fit_tracked)

    model = Normed()
    fedavg = FedAvg(clients, model, classifier_config(model), progress=False)
    assert fedavg.max_transfers == 1
    records = await asyncio.wait_for(fedavg.run_async(2), RUN)
    assert all(record.finished == 6 and record.accuracy is not None for record in records)
    assert folds["committed"] == 12  # each client's trained weights, streamed once a round
    assert decoded == []  # and never decoded whole
    assert transfers["most"] == 1
    assert alive["most"] == 0

    # The bound is the setting: two at once when allowed, and one per worker without a bound (the three
    # workers load the new weights for their evaluation at the same moment).
    for setting, most in ((2, 2), (None, 3)):
        transfers["most"] = 0
        again = FedAvg(clients, model, classifier_config(model), max_transfers=setting, progress=False)
        await asyncio.wait_for(again.run_async(1), RUN)
        assert transfers["most"] == most, setting
    with pytest.raises(FedAvgConfigError, match="max_transfers must be an integer"):
        FedAvg(clients, model, classifier_config(model), max_transfers=0)


# -- evaluation ---------------------------------------------------------------------------------------------


class SlowToEvaluate(nn.Linear):
    """A registered architecture that trains at once but takes ``delay`` seconds per evaluation batch."""

    def __init__(self, delay: float) -> None:
        super().__init__(4, 3)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            time.sleep(self.delay)
        return super().forward(x)


async def test_evaluation_ends_at_the_round_deadline_and_late_results_are_discarded(
    start_worker: StartWorker, connect: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = await start_worker("fast", classification(16, seed=1))
    slow = await start_worker("slow", classification(16, seed=2))
    fast.register_model("evaluated", lambda: SlowToEvaluate(0.0))
    slow.register_model("evaluated", lambda: SlowToEvaluate(2.0))  # 4 batches of 2 s: past the deadline
    clients = [await connect(fast), await connect(slow)]
    model = nn.Linear(4, 3)
    fedavg = FedAvg(
        clients,
        model,
        classifier_config("evaluated", batch_size=4),
        dataset_key="data",
        round_timeout=3.0,
        progress=True,
    )
    [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    # both trained in time; the slow worker's evaluation was still running at the deadline
    assert [(c.client, c.status, c.eval_status) for c in record.clients] == [
        ("fast", "ok", "ok"),
        ("slow", "ok", "late"),
    ]
    assert record.finished == 2 and record.late == 0 and record.eval_late == 1
    assert record.seconds < 6.0  # the round ended at its deadline, not after the slow evaluation's 8 s
    late = record.clients[1]
    assert "deadline of 3 s" in (late.eval_error or "")
    assert late.eval_loss is None and late.eval_total is None and late.eval_correct is None
    # the metrics are the fast worker's alone
    fast_part = record.clients[0]
    assert record.accuracy == (fast_part.eval_correct or 0) / 16 and fast_part.eval_total == 16
    assert record.loss == fast_part.eval_loss
    line = capsys.readouterr().err
    assert "eval late 1" in line and "slow evaluation late: the round's deadline of 3 s" in line
    await wait_until(lambda: not slow.training_busy, what="the slow worker's cancelled evaluation to stop")


# -- metrics by what was evaluated ----------------------------------------------------------------------


async def test_float_targets_report_mean_squared_error_not_accuracy(
    start_worker: StartWorker, connect: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(24, 4, generator=generator)
    targets = features @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    worker = await start_worker("r", (features[:16], targets[:16]), more={"b": (features[16:], targets[16:])})
    connection = await connect(worker)
    model = nn.Linear(4, 1)
    config = fedproto.TrainConfig(model=model, loss_fn="mse", optimizer_args={"lr": 0.05}, batch_size=4)
    fedavg = FedAvg(clients_of(connection, ["data", "b"]), model, config, run_dir=tmp_path, progress=True)
    records = await asyncio.wait_for(fedavg.run_async(2), RUN)
    for record in records:
        assert record.accuracy is None
        assert record.mean_squared_error is not None and record.mean_absolute_error is not None
        assert record.metric == ("mse", record.mean_squared_error)
        parts = record.clients
        assert [(c.eval_kind, c.eval_correct) for c in parts] == [("regression", None)] * 2
        assert record.mean_squared_error == pytest.approx(
            sum((c.eval_mean_squared_error or 0.0) * (c.eval_total or 0) for c in parts) / 24
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    for line, record in zip(lines, records, strict=True):
        assert f"mse {record.mean_squared_error:.4g}" in line and "mae " in line
        assert "accuracy" not in line
    assert (tmp_path / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    axes = _figure(fedavg.history).axes[0]
    assert axes.get_ylabel() == "mean squared error"
    assert [line.get_label() for line in axes.get_lines()] == ["mean squared error"]
    # classifications keep their accuracy
    classified = dataclasses.replace(records[0], accuracy=0.5, mean_squared_error=None)
    assert classified.metric == ("accuracy", 0.5)
    assert _figure([classified]).axes[0].get_ylabel() == "accuracy"
