"""FedAvg against worker processes (``fedproto serve``), one of them SIGKILLed by pid during its fit.

The round goes on with the clients that remain when ``min_fit_clients`` allows it, and reports the killed
one as failed in its record; otherwise it ends with :class:`FedAvgError`, a typed error naming the
client, the global weights unchanged. Every process a test starts is stopped when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import WAIT
from torch import nn

import fedproto
from fedproto.federated import FedAvg, FedAvgError

REPO = Path(__file__).resolve().parents[2]
#: Bound on a whole federated run in these tests.
RUN = 120.0
#: Seconds within which the coordinator must see the kill and end the victim's fit.
PROMPT = 10.0
#: Samples of the victim's dataset: at batch size 4 its fit takes far longer than the kill needs.
VICTIM_SAMPLES = 400_000


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def classification(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(samples, 4, generator=generator)
    targets = (features[:, 0] > 0).long() + (features[:, 1] > 0).long()
    return features, targets


class ServedWorker:
    """``python -m fedproto serve --id ID --dataset data=FILE`` on 127.0.0.1, a port the OS picks."""

    def __init__(self, worker_id: str, dataset: Path) -> None:
        self.id = worker_id
        command = [sys.executable, "-m", "fedproto", "serve", "--port", "0", "--id", worker_id]
        self.process = subprocess.Popen(
            [*command, "--dataset", f"data={dataset}"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self._wait_listening()
        # keep reading the log, or a chatty worker would block once the pipe's buffer is full
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_listening(self) -> str:
        assert self.process.stderr is not None
        for _ in range(200):  # bounded: the lines before "listening on"
            line = self.process.stderr.readline()
            if not line:
                break
            if " listening on ws://" in line:
                return line.split(" listening on ", 1)[1].split()[0]
        self.stop()
        raise RuntimeError(f"worker {self.id} did not start")

    def _drain(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            assert self.process.stderr is not None
            self.process.stderr.read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL by pid: no goodbye, no close frame, the sockets reset by the kernel."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str, int, int], ServedWorker]]:
    """Start worker processes: ``serve("w1", samples, seed)``; all stopped when the test ends."""
    started: list[ServedWorker] = []

    def start(worker_id: str, samples: int, seed: int) -> ServedWorker:
        path = tmp_path / f"{worker_id}.pt"
        torch.save(classification(samples, seed), path)
        worker = ServedWorker(worker_id, path)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def kill_during_fit(client: fedproto.AsyncClient, worker: ServedWorker, killed: list[float]) -> None:
    """Make ``worker`` die by SIGKILL as soon as its fit reports progress, so the fit is surely running.

    Only the client's view is instrumented (its ``fit`` asks for progress events); the coordinator, the
    connection and the worker are the ones under test.
    """
    fit = client.fit

    async def fit_then_die(dataset_key: str, **kwargs: Any) -> fedproto.FitResult:
        def on_progress(_event: fedproto.FitProgressEvent) -> None:
            if not killed:
                worker.kill()
                killed.append(time.monotonic())

        kwargs["progress"] = on_progress
        kwargs["progress_every"] = 50  # an event after 50 batches: the kill comes early in the fit
        return await fit(dataset_key, **kwargs)

    client.fit = fit_then_die  # type: ignore[method-assign]


def config(model: nn.Module) -> fedproto.TrainConfig:
    return fedproto.TrainConfig(
        model=model,
        loss_fn="cross_entropy",
        optimizer="SGD",
        optimizer_args={"lr": 0.1},
        batch_size=4,
        epochs=1,
        seed=0,
    )


async def test_a_killed_worker_fails_its_part_and_the_round_finishes_without_it(
    serve: Callable[[str, int, int], ServedWorker], connect: Any
) -> None:
    workers = [serve("w1", 32, 1), serve("w2", 48, 2), serve("victim", VICTIM_SAMPLES, 3)]
    clients = [await connect(worker, reconnect_attempts=1) for worker in workers]
    killed: list[float] = []
    kill_during_fit(clients[2], workers[2], killed)
    model = nn.Linear(4, 3)
    fedavg = FedAvg(clients, model, config(model), dataset_key="data", min_fit_clients=2, progress=False)

    [record] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    ended = time.monotonic()

    assert killed, "the victim was never killed: its fit did not run"
    assert workers[2].process.wait(WAIT) == -signal.SIGKILL
    assert ended - killed[0] < PROMPT, "the round waited long after the kill"
    assert [c.client for c in record.succeeded] == ["w1", "w2"]
    [failure] = record.failed
    assert failure.client == "victim" and failure.status == "failed"
    assert failure.error is not None and "UNAVAILABLE" in failure.error, failure.error
    assert failure.loss is None and failure.eval_loss is None
    assert record.accuracy is not None and record.loss is not None  # evaluated on the clients that trained
    assert sum(c.eval_total or 0 for c in record.clients) == 32 + 48

    # The next round finds the victim gone (unavailable) and trains with the other two.
    [second] = await asyncio.wait_for(fedavg.run_async(1), RUN)
    assert [c.client for c in second.succeeded] == ["w1", "w2"]
    assert [(c.client, c.status) for c in second.failed] == [("victim", "unavailable")]


async def test_a_killed_worker_below_min_fit_clients_ends_the_round_with_fedavg_error(
    serve: Callable[[str, int, int], ServedWorker], connect: Any
) -> None:
    workers = [serve("w1", 32, 1), serve("victim", VICTIM_SAMPLES, 3)]
    clients = [await connect(worker, reconnect_attempts=1) for worker in workers]
    killed: list[float] = []
    kill_during_fit(clients[1], workers[1], killed)
    model = nn.Linear(4, 3)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fedavg = FedAvg(clients, model, config(model), dataset_key="data", min_fit_clients=2, progress=False)

    with pytest.raises(FedAvgError) as caught:
        await asyncio.wait_for(fedavg.run_async(1), RUN)

    assert killed, "the victim was never killed: its fit did not run"
    assert time.monotonic() - killed[0] < PROMPT
    error = caught.value
    assert isinstance(error, fedproto.FedprotoError)
    assert "1 of 2 sampled clients finished" in str(error) and "min_fit_clients=2" in str(error)
    assert "victim" in str(error)
    assert fedavg.history == [error.record]
    assert [c.client for c in error.record.failed] == ["victim"]
    assert [c.client for c in error.record.succeeded] == ["w1"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), "a failed round must leave the global weights as they were"
