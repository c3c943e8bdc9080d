"""Federated averaging (FedAvg, McMahan et al., 2017) over remote workers.

:class:`FedAvg` keeps a global ``nn.Module`` on the coordinator and trains it with many workers, round
after round:

1. once per worker: ``set_train_config`` (the model travels once, as TorchScript, or by registered name);
2. every round, on every worker at the same time: ``set_model_weights(global)`` (strict), then
   ``fit(dataset_key, return_weights=True)``, whose reply carries the trained weights back;
3. the global weights become the average of the workers' weights, each weighted by the number of samples
   the worker holds (``FitResult.dataset_size``, FedAvg's ``n_k``), with :func:`average_weights`;
4. when ``evaluate`` is true: every worker that trained this round loads the averaged weights and
   evaluates them on ``eval_dataset_key``; the global loss is the sample-weighted mean of their losses
   and the global accuracy ``sum(correct) / sum(total)``.

Each round ends in a :class:`RoundRecord` appended to :attr:`FedAvg.history`.

A worker that fails during a round (a protocol error, a closed connection, an OS error) is reported in
that round's record and left out of the average; the round still counts when at least ``min_workers``
workers succeeded, otherwise :class:`FedAvgError` is raised (after the record is appended, and with the
global weights left unchanged). A failed worker is tried again in the next round, and the client
reconnects by itself; when the worker lost its training state (it restarted), the train config is sent
again and the step retried once.

``FedAvg`` is async first: ``await fedavg.run_async(rounds)`` drives :class:`~fedproto.AsyncClient`
objects on the running loop. The blocking ``fedavg.run(rounds)`` drives :class:`~fedproto.Client`
objects: each client's requests run on that client's own loop thread, so the workers still train
concurrently. ``run_async`` accepts both kinds of clients. FedAvg assumes it is the only user of its
identity's training state on each worker while it runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from rich.console import Console
from torch import Tensor, nn

from fedproto.client import AsyncClient, Client
from fedproto.errors import ConnectionClosedError, FailedPreconditionError, FedprotoError
from fedproto.federated.averaging import average_weights
from fedproto.training import TrainConfig
from fedproto.training.torchscript import load_torchscript
from fedproto.types import EvaluateResult, FitResult

__all__ = ["FedAvg", "FedAvgError", "RoundCallback", "RoundRecord", "WorkerRound"]

T = TypeVar("T")

#: What makes a worker fail a round (instead of ending the run).
_WORKER_FAILURES: tuple[type[BaseException], ...] = (FedprotoError, OSError)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRound:
    """What one worker did in one round.

    ``ok`` is true when the worker's weights went into the average; otherwise ``error`` says why not.
    ``loss`` is the fit's mean batch loss and ``final_loss`` its last batch's; ``samples`` the samples
    trained on (repeats across local epochs included) and ``dataset_size`` the samples held (the
    averaging weight). ``seconds`` is the wall-clock time of the worker's training step as the
    coordinator saw it (sending weights, fitting, receiving weights), ``fit_seconds`` the time of the
    training loop on the worker. The ``eval_*`` fields hold the worker's evaluation of the averaged
    weights (None when not evaluated; ``eval_error`` when the evaluation failed).
    """

    worker: str
    ok: bool
    error: str | None = None
    loss: float | None = None
    final_loss: float | None = None
    samples: int = 0
    dataset_size: int = 0
    seconds: float = 0.0
    fit_seconds: float = 0.0
    eval_loss: float | None = None
    eval_correct: int | None = None
    eval_total: int | None = None
    eval_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """One round of federated averaging: every worker's part and the global metrics.

    ``loss`` and ``accuracy`` evaluate the averaged weights over every worker that evaluated them (None
    when nothing was evaluated); ``seconds`` is the wall-clock time of the whole round.
    """

    round: int
    workers: tuple[WorkerRound, ...]
    loss: float | None
    accuracy: float | None
    seconds: float

    @property
    def succeeded(self) -> tuple[WorkerRound, ...]:
        """The workers whose weights went into this round's average."""
        return tuple(w for w in self.workers if w.ok)

    @property
    def failed(self) -> tuple[WorkerRound, ...]:
        """The workers that failed this round."""
        return tuple(w for w in self.workers if not w.ok)


#: Called with each round's record as soon as the round ends.
RoundCallback = Callable[[RoundRecord], None]


class FedAvgError(FedprotoError):
    """Fewer workers than ``min_workers`` succeeded in a round; ``record`` is that round's record."""

    def __init__(self, message: str, *, record: RoundRecord) -> None:
        super().__init__(message)
        self.record = record


class _Remote:
    """One worker as FedAvg drives it: its label and a way to run client coroutines on the right loop.

    An :class:`AsyncClient` runs on the caller's loop. A :class:`Client` keeps its connection on its own
    loop thread, so its coroutines go there through :meth:`Client.submit`, the public way for asyncio
    code to drive a blocking client (the same call a user would make); awaiting the returned future
    here, rather than blocking on the client's methods, lets every worker train at once, and cancelling
    the round cancels the request on the worker.
    """

    def __init__(self, client: AsyncClient | Client) -> None:
        if isinstance(client, Client):
            self.aio = client.aio
            self.sync: Client | None = client
        elif isinstance(client, AsyncClient):
            self.aio = client
            self.sync = None
        else:
            raise TypeError(f"expected fedproto.AsyncClient or fedproto.Client, not {type(client).__name__}")
        try:
            self.label = self.aio.server.server_id
        except ConnectionClosedError:
            self.label = self.aio.url
        self.configured = False

    async def run(self, factory: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        if self.sync is None:
            return await factory(self.aio)
        return await asyncio.wrap_future(self.sync.submit(factory(self.aio)))


def _scripted_once(config: TrainConfig) -> TrainConfig:
    """``config`` with its model and loss as TorchScript modules, scripted (or traced) here, once.

    Every worker then receives the same archive, and no worker's ``set_train_config`` scripts again.
    """
    changes: dict[str, Any] = {}
    if isinstance(config.model, nn.Module) and not isinstance(config.model, torch.jit.ScriptModule):
        changes["model"] = load_torchscript(config.model_bytes() or b"", "model")
    loss = config.loss_fn
    if not isinstance(loss, (str, torch.jit.ScriptModule)):
        changes["loss_fn"] = load_torchscript(config.loss_bytes() or b"", "loss")
    return dataclasses.replace(config, **changes) if changes else config


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FedAvg:
    """Federated averaging of ``model`` over the workers behind ``clients``.

    - ``clients``: one connected client per worker: :class:`~fedproto.AsyncClient` objects (for
      :meth:`run_async`) or :class:`~fedproto.Client` objects (for :meth:`run` or :meth:`run_async`).
    - ``model``: the global model; its state dict holds the global weights, which every round replaces.
    - ``config``: how workers train locally (loss, optimizer, batch size, local epochs, seed...). Its
      ``model`` is what workers build: usually ``model`` itself, or a TorchScript version of it, or the
      name of an architecture the workers registered (weights-only workers); its state-dict names must
      be those of ``model``. A model or loss given as Python code is scripted (or traced) once, here,
      and every worker receives the same TorchScript archive.
    - ``dataset_key``/``eval_dataset_key``: the datasets to train and evaluate on (evaluation uses
      ``dataset_key`` when ``eval_dataset_key`` is None); ``evaluate=False`` skips evaluation.
    - ``min_workers``: the fewest workers that must succeed in a round (see :class:`FedAvgError`).
    - ``progress``: a callback taking each :class:`RoundRecord`; ``None`` prints a line per round on
      stderr when it is a terminal, ``True`` always; ``False`` is silent.
    - ``fit_timeout``: seconds a worker's fit may take before it counts as failed (None: no limit).
    """

    def __init__(
        self,
        clients: Sequence[AsyncClient | Client],
        model: nn.Module,
        config: TrainConfig,
        *,
        dataset_key: str,
        eval_dataset_key: str | None = None,
        min_workers: int = 1,
        evaluate: bool = True,
        progress: bool | RoundCallback | None = None,
        fit_timeout: float | None = None,
    ) -> None:
        if not clients:
            raise ValueError("FedAvg needs at least one client")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
        if not isinstance(min_workers, int) or not 1 <= min_workers <= len(clients):
            raise ValueError(f"min_workers must be between 1 and {len(clients)}, got {min_workers!r}")
        self.model = model
        self.config = config
        self._wire_config = _scripted_once(config)
        self.dataset_key = dataset_key
        self.eval_dataset_key = eval_dataset_key or dataset_key
        self.min_workers = min_workers
        self.evaluate = evaluate
        self.fit_timeout = fit_timeout
        self.history: list[RoundRecord] = []
        self._remotes = [_Remote(client) for client in clients]
        labels = [remote.label for remote in self._remotes]
        for position, remote in enumerate(self._remotes):
            if labels.count(remote.label) > 1:
                remote.label = f"{remote.label}#{position + 1}"
        self._callback: RoundCallback | None = progress if callable(progress) else None
        show = sys.stderr.isatty() if progress is None else progress is True
        self._console = Console(stderr=True) if show else None

    @property
    def workers(self) -> list[str]:
        """The workers' labels (their ids), in the order of ``clients``."""
        return [remote.label for remote in self._remotes]

    def global_weights(self) -> dict[str, Tensor]:
        """A detached copy of the global model's state dict."""
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}

    # -- running ----------------------------------------------------------------------------------

    def run(self, rounds: int) -> list[RoundRecord]:
        """Run ``rounds`` more rounds, blocking, with :class:`~fedproto.Client` objects; their records.

        Works in scripts and where an event loop already runs in this thread (a notebook): the rounds
        then run on a loop of their own in a helper thread.
        """
        if any(remote.sync is None for remote in self._remotes):
            raise TypeError("FedAvg.run needs fedproto.Client objects; use 'await run_async(...)' instead")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async(rounds))
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fedproto-fedavg") as pool:
            return pool.submit(asyncio.run, self.run_async(rounds)).result()

    async def run_async(self, rounds: int) -> list[RoundRecord]:
        """Run ``rounds`` more rounds (numbered after those already in :attr:`history`); their records."""
        if not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
        records = []
        for _ in range(rounds):
            records.append(await self.run_round())
        return records

    async def run_round(self) -> RoundRecord:
        """Run one round and return its record (also appended to :attr:`history`)."""
        number = len(self.history) + 1
        started = time.perf_counter()
        weights = self.global_weights()
        outcomes = await _all([self._train(remote, weights) for remote in self._remotes])
        trained = [
            (remote, result)
            for remote, result in zip(self._remotes, outcomes, strict=True)
            if result[0] is not None
        ]
        workers = [
            self._worker_round(remote, result) for remote, result in zip(self._remotes, outcomes, strict=True)
        ]
        if len(trained) < self.min_workers:
            record = RoundRecord(
                round=number,
                workers=tuple(workers),
                loss=None,
                accuracy=None,
                seconds=time.perf_counter() - started,
            )
            self._finish(record)
            failures = "; ".join(f"{w.worker}: {w.error}" for w in record.failed)
            raise FedAvgError(
                f"round {number}: {len(trained)} of {len(workers)} workers succeeded, fewer than "
                f"min_workers={self.min_workers} ({failures})",
                record=record,
            )
        updates = []
        for _, (fit, _) in trained:
            assert fit is not None and fit.weights is not None
            updates.append((fit.weights, fit.dataset_size))
        averaged = average_weights(updates)
        self.model.load_state_dict(averaged)
        loss = accuracy = None
        if self.evaluate:
            evaluations = await _all([self._evaluate(remote, averaged) for remote, _ in trained])
            by_label = {
                remote.label: outcome for (remote, _), outcome in zip(trained, evaluations, strict=True)
            }
            workers = [_with_evaluation(w, by_label.get(w.worker)) for w in workers]
            loss, accuracy = _global_metrics([e for e, _ in evaluations if e is not None])
        record = RoundRecord(
            round=number,
            workers=tuple(workers),
            loss=loss,
            accuracy=accuracy,
            seconds=time.perf_counter() - started,
        )
        self._finish(record)
        return record

    def _finish(self, record: RoundRecord) -> None:
        self.history.append(record)
        if self._callback is not None:
            self._callback(record)
        if self._console is not None:
            self._console.print(_round_line(record), highlight=False)

    # -- one worker -------------------------------------------------------------------------------

    async def _configure(self, remote: _Remote) -> None:
        summary = await remote.run(lambda aio: aio.set_train_config(self._wire_config))
        expected = list(self.model.state_dict())
        if list(summary.state_names) != expected:
            raise ValueError(
                f"worker {remote.label} built a model with state names {list(summary.state_names)}, "
                f"but the global model has {expected}"
            )
        remote.configured = True

    async def _train(
        self, remote: _Remote, weights: dict[str, Tensor]
    ) -> tuple[FitResult | None, float | str]:
        """Configure if needed, send the global weights, fit: (result, seconds) or (None, error)."""
        started = time.perf_counter()

        async def step() -> FitResult:
            await remote.run(lambda aio: aio.set_model_weights(weights, strict=True))
            return await remote.run(
                lambda aio: aio.fit(
                    self.dataset_key, progress=False, return_weights=True, timeout=self.fit_timeout
                )
            )

        try:
            if not remote.configured:
                await self._configure(remote)
            try:
                result = await step()
            except FailedPreconditionError:
                # The worker lost this identity's training state (it restarted): configure again, retry once.
                remote.configured = False
                await self._configure(remote)
                result = await step()
        except _WORKER_FAILURES as exc:
            return None, _one_line(exc)
        if result.weights is None:
            return None, "the worker's fit reply carried no weights"
        return result, time.perf_counter() - started

    def _worker_round(self, remote: _Remote, outcome: tuple[FitResult | None, float | str]) -> WorkerRound:
        result, extra = outcome
        if result is None:
            return WorkerRound(worker=remote.label, ok=False, error=str(extra))
        assert isinstance(extra, float)
        return WorkerRound(
            worker=remote.label,
            ok=True,
            loss=result.mean_loss,
            final_loss=result.final_loss,
            samples=result.samples,
            dataset_size=result.dataset_size,
            seconds=extra,
            fit_seconds=result.seconds,
        )

    async def _evaluate(
        self, remote: _Remote, weights: dict[str, Tensor]
    ) -> tuple[EvaluateResult | None, str | None]:
        try:
            await remote.run(lambda aio: aio.set_model_weights(weights, strict=True))
            result = await remote.run(lambda aio: aio.evaluate(self.eval_dataset_key))
        except _WORKER_FAILURES as exc:
            return None, _one_line(exc)
        return result, None


def _with_evaluation(
    worker: WorkerRound, outcome: tuple[EvaluateResult | None, str | None] | None
) -> WorkerRound:
    if outcome is None:
        return worker
    result, error = outcome
    if result is None:
        return dataclasses.replace(worker, eval_error=error)
    return dataclasses.replace(
        worker, eval_loss=result.loss, eval_correct=result.correct, eval_total=result.total
    )


async def _all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines concurrently; when one raises, cancel the others before passing it on."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _global_metrics(results: list[EvaluateResult]) -> tuple[float | None, float | None]:
    """Sample-weighted mean loss and pooled accuracy of the workers' evaluations."""
    total = sum(result.total for result in results)
    if total == 0:
        return None, None
    with_loss = [result for result in results if result.loss is not None]
    loss_total = sum(result.total for result in with_loss)
    loss = (
        math.fsum(float(result.loss or 0.0) * result.total for result in with_loss) / loss_total
        if loss_total
        else None
    )
    accuracy = sum(result.correct for result in results) / total
    return loss, accuracy


def _round_line(record: RoundRecord) -> str:
    parts = [f"round {record.round:>3}"]
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4f}")
    if record.accuracy is not None:
        parts.append(f"accuracy {record.accuracy:.3f}")
    parts.append(f"{len(record.succeeded)}/{len(record.workers)} workers")
    parts.append(f"{record.seconds:.2f} s")
    line = "  ".join(parts)
    for failure in record.failed:
        line += f"\n    {failure.worker} failed: {failure.error}"
    return line
