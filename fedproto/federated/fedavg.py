"""Federated training over remote workers: :class:`FedAvg`, rounds of sampled clients.

:class:`FedAvg` keeps a global ``nn.Module`` on the coordinator and trains it with federated clients,
round after round. A client is a (worker, dataset) pair (:class:`~fedproto.federated.FederatedClient`);
one worker may hold many. Every round:

1. *availability*: the workers not connected right now are pinged (which reconnects them when they
   are back); the clients of a worker that does not answer are *unavailable* this round. Fewer than
   ``min_available_clients`` available clients end the run with :class:`FedAvgError`;
2. *sampling*: ``max(min_fit_clients, int(fraction_fit * available))`` of the available clients (at
   most all of them) are drawn by the ``sampler`` (by default a
   :class:`~fedproto.federated.SeededSampler`: the same seed gives the same samples);
3. *training*: the strategy's train config (:meth:`Strategy.configure_fit`) is sent to every worker
   that does not hold it yet (once per worker, the model as TorchScript, or by registered name). The
   clients of one worker train one after the other, different workers at the same time; each client
   gets the global weights (``set_model_weights``, strict), fits on its dataset, and its trained weights
   are fetched (``get_model_weights``). By default every fit starts with a new optimizer
   (``reset_optimizer``), as federated averaging is defined: no momentum leaks from one client or round
   to the next;
4. *aggregation*: each update is folded into the strategy's aggregator as soon as it arrives, weighted
   by the samples the client holds (``FitResult.dataset_size``), and dropped. A client that fails is
   *dropped*; with ``round_timeout``, the clients still training when the round's deadline passes are
   cancelled and reported *late*, their results discarded. When fewer than ``min_fit_clients`` clients
   finished, the round raises :class:`FedAvgError` (after its record is appended and checkpointed, the
   global weights unchanged); otherwise the strategy turns the aggregate into the next global weights
   (:meth:`Strategy.finalize`);
5. *evaluation* (``evaluate=True``): every worker whose clients finished loads the new global weights
   and evaluates them on those clients' evaluation datasets (each distinct one once), within the same
   deadline: an evaluation not done when it passes is cancelled and reported late, its result
   discarded. The round's loss is the sample-weighted mean; its headline metric follows what the
   workers evaluated (``EvaluateResult.kind``): the accuracy ``sum(correct) / sum(total)`` of the
   classifications, or the sample-weighted mean squared and mean absolute errors of the regressions.

*Memory.* With a streaming aggregator (every strategy but median and trimmed mean) the coordinator
holds O(model) memory, whatever the number of clients or workers: the global weights are the model's
own tensors (no copy), the running sum is float64 (two models' worth for float32 weights), and at most
``max_transfers`` (default 1) model-sized transfers are in flight at once: the global weights going to
a worker, or a client's trained weights coming back. To a worker that offers chunked weights (protocol
section 12.8) both move a chunk at a time: the global weights are cut from the model's own tensors, and
each chunk of trained weights is folded into the sum as it arrives, so no update is ever held whole;
the aggregate is then written into the model's own tensors, slice by slice. A worker without chunked
weights moves whole messages (about two models' worth of bytes while a transfer lasts). Strategies that
need every update (median, trimmed mean) keep them all, and say so; FedAdam and FedYogi build the next
weights beside the old ones.

Each round ends in a :class:`~fedproto.federated.RoundRecord` appended to :attr:`FedAvg.history`, a
line on the console (``progress``) and, with ``run_dir``, a checkpoint (see
:mod:`fedproto.federated.checkpoint`) and a plot of accuracy per round (``accuracy.png``).
``FedAvg(..., run_dir=d, resume=True)`` (or :meth:`FedAvg.resume`) goes on from the last complete round
and, with the same seeds, ends with the same weights as a run that was never interrupted.

Every setting is checked in the constructor, before any training: a bad one raises
:class:`~fedproto.federated.FedAvgConfigError` (a ``ValueError``).

``FedAvg`` is async first: ``await fedavg.run_async(rounds)`` drives :class:`~fedproto.AsyncClient`
objects on the running loop. The blocking ``fedavg.run(rounds)`` drives :class:`~fedproto.Client`
objects: each client's requests run on that client's own loop thread, so the workers still train
concurrently. FedAvg assumes it is the only user of its identity's training state on each worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import math
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from torch import Tensor, nn

from fedproto.client import AsyncClient, Client
from fedproto.errors import ConnectionClosedError, FailedPreconditionError, FedprotoError
from fedproto.federated.aggregation import Aggregator, StreamingMean, UpdateMismatchError
from fedproto.federated.checkpoint import RunDirectory, model_signature, write_atomically
from fedproto.federated.clients import FederatedClient
from fedproto.federated.errors import FedAvgConfigError, FedAvgError, ResumeError
from fedproto.federated.records import ClientRound, RoundCallback, RoundRecord
from fedproto.federated.sampling import ClientSampler, SeededSampler, sample_size
from fedproto.federated.strategies import (
    FedAvgStrategy,
    Strategy,
    resolve_streaming,
    strategy_from_settings,
)
from fedproto.training import TrainConfig
from fedproto.types import EvaluateKind, EvaluateResult, FitResult, TrainSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FedAvg"]

T = TypeVar("T")

#: What makes a client fail a round (instead of ending the run).
_WORKER_FAILURES: tuple[type[BaseException], ...] = (FedprotoError, OSError)
#: Seconds a ping may take to find out whether a disconnected worker is back.
PROBE_TIMEOUT = 10.0


class _Remote:
    """One worker as FedAvg drives it: its label and a way to run client coroutines on the right loop.

    An :class:`AsyncClient` runs on the caller's loop. A :class:`Client` keeps its connection on its own
    loop thread, so its coroutines go there through :meth:`Client.submit`, the public way for asyncio
    code to drive a blocking client; awaiting the returned future here, rather than blocking on the
    client's methods, lets every worker train at once, and cancelling the round cancels the request on
    the worker.
    """

    def __init__(self, client: AsyncClient | Client) -> None:
        if isinstance(client, Client):
            self.aio = client.aio
            self.sync: Client | None = client
        else:
            self.aio = client
            self.sync = None
        try:
            self.label = self.aio.server.server_id
        except ConnectionClosedError:
            self.label = self.aio.url
        #: The train config this worker holds (the spec sent), None before the first.
        self.config: TrainSpec | None = None

    async def run(self, factory: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        if self.sync is None:
            return await factory(self.aio)
        return await asyncio.wrap_future(self.sync.submit(factory(self.aio)))


@dataclasses.dataclass(slots=True)
class _Client:
    """A federated client as the rounds use it: its id, its worker and its datasets."""

    name: str
    remote: _Remote
    dataset_key: str
    eval_dataset_key: str
    spec: FederatedClient


def _wire_spec(config: TrainConfig, *, reset_optimizer: bool) -> TrainSpec:
    """``config`` as workers receive it: its model and loss scripted (or traced) and saved here, once.

    Every worker then receives the same archive, saved once per run (not once per worker), and no
    worker's ``set_train_config`` scripts or saves again. A large archive still travels to each worker in
    chunks (protocol section 12.9), cut from these bytes.
    """
    spec = config.to_spec()
    if reset_optimizer and not spec.reset_optimizer:
        spec = dataclasses.replace(spec, reset_optimizer=True)
    return spec


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _count(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FedAvgConfigError(f"{name} must be an integer between {low} and {high}, got {value!r}")
    return value


def _seconds(value: object, name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise FedAvgConfigError(f"{name} must be None or a positive number of seconds, got {value!r}")
    return float(value)


class FedAvg:
    """Federated training of ``model`` with ``clients``, round after round (see the module's text).

    - ``clients``: :class:`~fedproto.federated.FederatedClient` pairs, or connected clients
      (:class:`~fedproto.AsyncClient` for :meth:`run_async`, :class:`~fedproto.Client` for :meth:`run`
      or :meth:`run_async`), each then one federated client training on ``dataset_key``.
    - ``model``: the global model; its state dict holds the global weights, which every round replaces.
    - ``config``: how clients train locally (loss, optimizer, batch size, local epochs, seed...). Its
      ``model`` is what workers build: usually ``model`` itself, or a TorchScript version of it, or the
      name of an architecture the workers registered; its state-dict names must be those of ``model``.
      A model or loss given as Python code is scripted (or traced) once, here.
    - ``dataset_key``/``eval_dataset_key``: the datasets of clients given as bare connections, and the
      default evaluation dataset (None: each client's training dataset); ``evaluate=False`` skips
      evaluation.
    - ``strategy``: a :class:`~fedproto.federated.Strategy` or a strategy's name ("fedavg", "fedprox",
      "fedadam", "fedyogi", "median", "trimmed_mean"); default FedAvg.
    - ``fraction_fit`` (0 < f <= 1), ``min_fit_clients`` (the fewest clients sampled, and the fewest
      that must finish for a round to count; default 1), ``min_available_clients`` (the fewest
      available clients for a round to start; default 1); ``min_workers`` is the older name of
      ``min_fit_clients``.
    - ``sampler``: a :class:`~fedproto.federated.ClientSampler`; default ``SeededSampler(seed)``.
    - ``streaming``: fold updates as they arrive (True), keep them all (False), or whatever the
      strategy allows (None, the default); ``updates``: what the aggregator folds, the clients'
      "weights" or their "deltas" ``w_i - w_global`` (their pseudo-gradients; an aggregator of deltas
      adds the global weights back, so the result is the same). Workers send trained weights either
      way (``FitReply.weights``): deltas are computed here, in float64.
    - ``round_timeout``: seconds a round may take from the start of its training, evaluation included;
      clients not done training by then are late, and so are evaluations not done by then (the round
      ends at its deadline either way). ``fit_timeout``: seconds one client's fit may take before it
      counts as failed.
    - ``max_transfers``: how many model-sized transfers (global weights out, trained weights back) may
      be in flight at once; each holds a few chunks on the coordinator (two models' worth with workers
      that move weights in one message). 1 (the default) bounds the coordinator's memory whatever the
      number of workers; more lets transfers to several workers overlap (slow links); None: no bound
      (one per worker).
    - ``reset_optimizer``: every fit starts with a new optimizer (default True).
    - ``run_dir``: checkpoint every round there; ``resume=True`` goes on from its last complete round,
      whose global weights, records, strategy state and sampler state replace the given ones
      (:class:`~fedproto.federated.ResumeError` when it holds another model or strategy); without
      ``resume`` a run directory that already holds a run is refused. ``run_settings``: JSON values
      stored in the run directory's ``run.json`` (the command line keeps its options there).
      ``plot``: write ``accuracy.png`` to the run directory after every round (default: with a run
      directory).
    - ``progress``: a callback taking each round's record; ``None`` prints one line per round on
      stderr when it is a terminal, ``True`` always; ``False`` is silent.
    """

    def __init__(
        self,
        clients: Sequence[FederatedClient | AsyncClient | Client],
        model: nn.Module,
        config: TrainConfig,
        *,
        dataset_key: str | None = None,
        eval_dataset_key: str | None = None,
        strategy: Strategy | str | None = None,
        fraction_fit: float = 1.0,
        min_fit_clients: int | None = None,
        min_available_clients: int = 1,
        min_workers: int | None = None,
        sampler: ClientSampler | None = None,
        seed: int = 0,
        streaming: bool | None = None,
        updates: str = "weights",
        round_timeout: float | None = None,
        fit_timeout: float | None = None,
        max_transfers: int | None = 1,
        evaluate: bool = True,
        reset_optimizer: bool = True,
        run_dir: str | Path | None = None,
        resume: bool = False,
        run_settings: Mapping[str, Any] | None = None,
        plot: bool | None = None,
        progress: bool | RoundCallback | None = None,
    ) -> None:
        if not clients:
            raise FedAvgConfigError("FedAvg needs at least one client")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a fedproto.TrainConfig, not {type(config).__name__}")
        self.model = model
        self.config = config
        self._clients = self._build_clients(clients, dataset_key, eval_dataset_key)
        total = len(self._clients)

        if (
            not isinstance(fraction_fit, (int, float))
            or isinstance(fraction_fit, bool)
            or not 0 < fraction_fit <= 1
        ):
            raise FedAvgConfigError(f"fraction_fit must be in (0, 1], got {fraction_fit!r}")
        self.fraction_fit = float(fraction_fit)
        if min_workers is not None and min_fit_clients is not None:
            raise FedAvgConfigError("pass min_fit_clients or min_workers (its older name), not both")
        self._min_name = "min_workers" if min_workers is not None else "min_fit_clients"
        requested = min_workers if min_workers is not None else min_fit_clients
        self.min_fit_clients = _count(1 if requested is None else requested, self._min_name, 1, total)
        self.min_available_clients = _count(min_available_clients, "min_available_clients", 0, total)

        if strategy is None:
            strategy = FedAvgStrategy()
        elif isinstance(strategy, str):
            strategy = strategy_from_settings({"name": strategy})
        elif not isinstance(strategy, Strategy):
            raise TypeError(
                f"strategy must be a Strategy or a strategy's name, not {type(strategy).__name__}"
            )
        self.strategy = strategy
        self.streaming = resolve_streaming(strategy, streaming)
        if updates not in ("weights", "deltas"):
            raise FedAvgConfigError(f"updates must be 'weights' or 'deltas', got {updates!r}")
        self.updates = updates
        if sampler is None:
            sampler = SeededSampler(seed)
        elif not isinstance(sampler, ClientSampler):
            raise TypeError(
                f"sampler must have sample, state_dict and load_state_dict, not {type(sampler).__name__}"
            )
        self.sampler = sampler
        self.round_timeout = _seconds(round_timeout, "round_timeout")
        self.fit_timeout = _seconds(fit_timeout, "fit_timeout")
        if max_transfers is not None:
            _count(max_transfers, "max_transfers", 1, sys.maxsize)
        self.max_transfers = max_transfers
        self.evaluate = evaluate
        self.reset_optimizer = bool(reset_optimizer)
        self.history: list[RoundRecord] = []

        self.run_dir = RunDirectory(run_dir) if run_dir is not None else None
        self.plot = self.run_dir is not None if plot is None else bool(plot)
        if self.plot and self.run_dir is None:
            raise FedAvgConfigError("plot=True writes accuracy.png to the run directory: pass run_dir too")
        if self.plot:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise FedAvgConfigError(
                    "plotting needs matplotlib: pip install 'fedproto[demo]', or pass plot=False"
                ) from None
        if resume and self.run_dir is None:
            raise FedAvgConfigError("resume=True needs run_dir, the run directory to go on from")
        if self.run_dir is not None:
            if resume:
                self._restore(self.run_dir)
            elif self.run_dir.has_checkpoint:
                raise FedAvgConfigError(
                    f"{self.run_dir.path} already holds a run; resume it (resume=True, or "
                    "fedproto fedavg --resume) or choose another run directory"
                )
            else:
                self.run_dir.write_settings(self._settings(run_settings))

        self._source_config: TrainConfig | None = None
        self._wire_spec: TrainSpec | None = None
        self._callback: RoundCallback | None = progress if callable(progress) else None
        show = sys.stderr.isatty() if progress is None else progress is True
        self._console = Console(stderr=True, highlight=False) if show else None

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        clients: Sequence[FederatedClient | AsyncClient | Client],
        model: nn.Module,
        config: TrainConfig,
        **options: Any,
    ) -> FedAvg:
        """A FedAvg going on from ``run_dir``'s last complete round (the same as ``resume=True``)."""
        return cls(clients, model, config, run_dir=run_dir, resume=True, **options)

    # -- setup ------------------------------------------------------------------------------------

    @staticmethod
    def _build_clients(
        clients: Sequence[FederatedClient | AsyncClient | Client],
        dataset_key: str | None,
        eval_dataset_key: str | None,
    ) -> list[_Client]:
        specs: list[FederatedClient] = []
        for item in clients:
            if isinstance(item, FederatedClient):
                specs.append(item)
            elif isinstance(item, (AsyncClient, Client)):
                if dataset_key is None:
                    raise FedAvgConfigError(
                        "clients given as connections train on dataset_key: pass dataset_key=..., or "
                        "FederatedClient(connection, key) pairs"
                    )
                specs.append(FederatedClient(item, dataset_key))
            else:
                raise TypeError(
                    "expected fedproto.FederatedClient, fedproto.AsyncClient or fedproto.Client, "
                    f"not {type(item).__name__}"
                )
        remotes: dict[int, _Remote] = {}
        for spec in specs:
            aio = spec.connection.aio if isinstance(spec.connection, Client) else spec.connection
            remote = remotes.get(id(aio))
            if remote is None:
                remotes[id(aio)] = _Remote(spec.connection)
            elif (remote.sync is None) != (not isinstance(spec.connection, Client)):
                raise FedAvgConfigError(
                    f"worker {remote.label} is given both as a Client and as its AsyncClient"
                )
        labels = [remote.label for remote in remotes.values()]
        for position, remote in enumerate(remotes.values()):
            if labels.count(remote.label) > 1:
                remote.label = f"{remote.label}#{position + 1}"
        per_worker: dict[int, int] = {}
        for spec in specs:
            aio = spec.connection.aio if isinstance(spec.connection, Client) else spec.connection
            per_worker[id(aio)] = per_worker.get(id(aio), 0) + 1
        built = []
        for spec in specs:
            aio = spec.connection.aio if isinstance(spec.connection, Client) else spec.connection
            remote = remotes[id(aio)]
            name = spec.name or (
                remote.label if per_worker[id(aio)] == 1 else f"{remote.label}/{spec.dataset_key}"
            )
            built.append(
                _Client(
                    name=name,
                    remote=remote,
                    dataset_key=spec.dataset_key,
                    eval_dataset_key=spec.eval_dataset_key or eval_dataset_key or spec.dataset_key,
                    spec=spec,
                )
            )
        names = [client.name for client in built]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise FedAvgConfigError(f"client ids must be unique; repeated: {repeated[:5]}")
        return built

    def _settings(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "strategy": self.strategy.settings(),
            "sampler": self.sampler.state_dict(),
            "fraction_fit": self.fraction_fit,
            "min_fit_clients": self.min_fit_clients,
            "min_available_clients": self.min_available_clients,
            "streaming": self.streaming,
            "updates": self.updates,
            "clients": [client.name for client in self._clients],
            "model": model_signature(self.model.state_dict()),
            "extra": dict(extra or {}),
        }

    def _restore(self, run_dir: RunDirectory) -> None:
        """Load the last complete round of ``run_dir`` into this coordinator (ResumeError if it cannot)."""
        run_dir.check_model(self.model.state_dict())
        checkpoint = run_dir.load()
        if checkpoint.strategy_settings != self.strategy.settings():
            raise ResumeError(
                f"{run_dir.path} was run with the strategy {checkpoint.strategy_settings}, not "
                f"{self.strategy.settings()}"
            )
        self.strategy.load_state_dict(checkpoint.strategy_state)
        self.sampler.load_state_dict(checkpoint.sampler_state)
        self.model.load_state_dict(checkpoint.weights)
        self.history = list(checkpoint.history)

    @property
    def clients(self) -> list[str]:
        """The clients' ids, in the order given."""
        return [client.name for client in self._clients]

    @property
    def workers(self) -> list[str]:
        """The workers' labels (their ids), in the order of their first client."""
        seen: dict[str, None] = {}
        for client in self._clients:
            seen.setdefault(client.remote.label, None)
        return list(seen)

    def global_weights(self) -> dict[str, Tensor]:
        """A detached copy of the global model's state dict."""
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}

    def _weights_view(self) -> dict[str, Tensor]:
        """The global model's state dict, detached but not copied.

        A round sends, aggregates against and checkpoints these tensors; nothing writes to them until
        the next global weights are loaded into the model, after the last of those uses. Not copying
        them saves one model's worth of memory for the whole round.
        """
        return {name: tensor.detach() for name, tensor in self.model.state_dict().items()}

    # -- running ----------------------------------------------------------------------------------

    def run(self, rounds: int) -> list[RoundRecord]:
        """Run ``rounds`` more rounds, blocking, with :class:`~fedproto.Client` objects; their records.

        Works in scripts and where an event loop already runs in this thread (a notebook): the rounds
        then run on a loop of their own in a helper thread.
        """
        if any(client.remote.sync is None for client in self._clients):
            raise TypeError("FedAvg.run needs fedproto.Client objects; use 'await run_async(...)' instead")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async(rounds))
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fedproto-fedavg") as pool:
            return pool.submit(asyncio.run, self.run_async(rounds)).result()

    async def run_async(self, rounds: int) -> list[RoundRecord]:
        """Run ``rounds`` more rounds (numbered after those already in :attr:`history`); their records."""
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
            raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
        records = []
        for _ in range(rounds):
            records.append(await self.run_round())
        return records

    async def run_round(self) -> RoundRecord:
        """Run one round and return its record (also appended to :attr:`history`)."""
        number = len(self.history) + 1
        started = time.perf_counter()
        available, unavailable = await self._probe()
        missing = [
            ClientRound(
                worker=client.remote.label,
                client=client.name,
                dataset_key=client.dataset_key,
                status="unavailable",
                error=error,
            )
            for client, error in unavailable
        ]
        if len(available) < self.min_available_clients:
            record = RoundRecord(
                round=number,
                clients=tuple(missing),
                loss=None,
                accuracy=None,
                seconds=time.perf_counter() - started,
                available=len(available),
                sampled=0,
            )
            self._finish(record, self.global_weights())
            raise FedAvgError(
                f"round {number}: {len(available)} clients available, fewer than "
                f"min_available_clients={self.min_available_clients}",
                record=record,
            )
        size = sample_size(
            len(available), fraction_fit=self.fraction_fit, min_fit_clients=self.min_fit_clients
        )
        by_name = {client.name: client for client in available}
        chosen = self.sampler.sample(number, [client.name for client in available], size)
        if len(set(chosen)) != len(chosen) or any(name not in by_name for name in chosen):
            raise FedAvgError(
                f"round {number}: the sampler returned ids that are not distinct available clients"
            )
        sampled = [by_name[name] for name in chosen]
        config = self._round_config(number, sampled)
        weights = self._weights_view()
        aggregator = self.strategy.aggregator(
            weights, streaming=self.streaming, deltas=self.updates == "deltas"
        )
        round_ = _Round(
            deadline=None if self.round_timeout is None else time.monotonic() + self.round_timeout,
            transfers=asyncio.Semaphore(self.max_transfers or len(sampled)),
        )
        parts = await self._train_round(sampled, config, weights, aggregator, round_)
        finished = [client for client in sampled if parts[client.name].ok]

        def unaveraged() -> RoundRecord:
            """The record of a round that ends without new weights (kept, checkpointed, then raised)."""
            record = RoundRecord(
                round=number,
                clients=tuple(parts[client.name] for client in sampled) + tuple(missing),
                loss=None,
                accuracy=None,
                seconds=time.perf_counter() - started,
                available=len(available),
                sampled=len(sampled),
            )
            self._finish(record, weights)
            return record

        if len(finished) < self.min_fit_clients:
            record = unaveraged()
            workers = {client.remote.label for client in sampled} | {c.worker for c in missing}
            finished_workers = {client.remote.label for client in finished}
            failures = "; ".join(f"{c.client}: {c.error}" for c in record.failed[:10])
            raise FedAvgError(
                f"round {number}: {len(finished)} of {len(sampled)} sampled clients finished "
                f"({len(finished_workers)} of {len(workers)} workers), fewer than "
                f"{self._min_name}={self.min_fit_clients} ({failures})",
                record=record,
            )
        broken = aggregator.broken if isinstance(aggregator, StreamingMean) else None
        if broken is not None:  # the global weights stay as they were; the run may go on or resume
            raise FedAvgError(f"round {number}: {broken}", record=unaveraged())
        if isinstance(aggregator, StreamingMean) and type(self.strategy).finalize is Strategy.finalize:
            # The next global weights are the aggregate: written slice by slice into the model's own
            # tensors, so the old weights, the new ones and the float64 sum are never all alive at once.
            aggregator.result_into(weights)
            del aggregator, weights
        else:
            aggregate = aggregator.result()
            del aggregator  # its float64 running sum
            self.model.load_state_dict(self.strategy.finalize(number, weights, aggregate))
            del aggregate, weights  # evaluation and the checkpoint read the model's own tensors
        metrics = _Metrics()
        if self.evaluate:
            evaluations = await self._evaluate_round(finished, round_)
            for name, evaluation in evaluations.items():
                parts[name] = _with_evaluation(parts[name], evaluation)
            metrics = _global_metrics([e.result for e in evaluations.values() if e.result is not None])
        record = RoundRecord(
            round=number,
            clients=tuple(parts[client.name] for client in sampled) + tuple(missing),
            loss=metrics.loss,
            accuracy=metrics.accuracy,
            mean_squared_error=metrics.mean_squared_error,
            mean_absolute_error=metrics.mean_absolute_error,
            seconds=time.perf_counter() - started,
            available=len(available),
            sampled=len(sampled),
        )
        self._finish(record, self._weights_view())
        return record

    def _round_config(self, number: int, sampled: list[_Client]) -> TrainSpec:
        """The train config of this round as workers receive it (saved once per distinct config).

        Called before the round's aggregator allocates its sum: the archive, when saved here, is never
        built beside it.
        """
        config = self.strategy.configure_fit(number, [client.spec for client in sampled], self.config)
        if config is not self._source_config or self._wire_spec is None:
            self._wire_spec = _wire_spec(config, reset_optimizer=self.reset_optimizer)
            self._source_config = config
        return self._wire_spec

    def _finish(self, record: RoundRecord, weights: dict[str, Tensor]) -> None:
        self.history.append(record)
        if self.run_dir is not None:
            self.run_dir.save(
                round=record.round,
                weights=weights,
                strategy_settings=self.strategy.settings(),
                strategy_state=self.strategy.state_dict(),
                sampler_state=self.sampler.state_dict(),
                history=self.history,
            )
            if self.plot:
                write_atomically(self.run_dir.path / "accuracy.png", _plot(self.history))
        if self._callback is not None:
            self._callback(record)
        if self._console is not None:
            self._console.print(_round_line(record), soft_wrap=True)

    # -- availability -----------------------------------------------------------------------------

    async def _probe(self) -> tuple[list[_Client], list[tuple[_Client, str]]]:
        """The available clients, and the unavailable ones with the reason."""
        remotes = list({id(client.remote): client.remote for client in self._clients}.values())

        async def probe(remote: _Remote) -> str | None:
            if remote.aio.connected:
                return None
            try:
                await remote.run(lambda aio: aio.ping(timeout=PROBE_TIMEOUT))
            except _WORKER_FAILURES as exc:
                return _one_line(exc)
            return None

        errors = dict(zip((id(r) for r in remotes), await _all([probe(r) for r in remotes]), strict=True))
        available = [client for client in self._clients if errors[id(client.remote)] is None]
        unavailable = [
            (client, str(errors[id(client.remote)])) for client in self._clients if errors[id(client.remote)]
        ]
        return available, unavailable

    # -- training ---------------------------------------------------------------------------------

    async def _train_round(
        self,
        sampled: list[_Client],
        config: TrainSpec,
        weights: dict[str, Tensor],
        aggregator: Aggregator,
        round_: _Round,
    ) -> dict[str, ClientRound]:
        """Train the sampled clients (per worker in turn, workers at once); fold updates as they come."""
        parts: dict[str, ClientRound] = {}
        groups: dict[int, list[_Client]] = {}
        for client in sampled:
            groups.setdefault(id(client.remote), []).append(client)

        async def worker_turn(clients: list[_Client]) -> None:
            for client in clients:
                try:
                    parts[client.name] = await self._train_client(client, config, weights, aggregator, round_)
                except _FoldedLate as late:  # the deadline passed as its update was folded: it counts
                    if late.part is not None:
                        parts[client.name] = late.part
                    return

        await _until(round_.deadline, [worker_turn(clients) for clients in groups.values()])
        # A cancelled worker turn ended at its next await: whatever it had not folded in is discarded.
        for client in sampled:
            if client.name not in parts:
                parts[client.name] = self._part(client, "late", self._late_error())
        return parts

    async def _train_client(
        self,
        client: _Client,
        config: TrainSpec,
        weights: dict[str, Tensor],
        aggregator: Aggregator,
        round_: _Round,
    ) -> ClientRound:
        """One client's part of the round: fit, fetch its trained weights, fold them in."""
        begun = time.perf_counter()
        folded_late = False
        try:
            result = await self._fit(client, config, weights, round_)
            async with round_.transfers:
                # folded as it arrives (streaming), or fetched whole, folded and dropped, while this
                # transfer still holds its place: no more than max_transfers updates are ever in flight
                try:
                    await self._fold_update(client, aggregator, result.dataset_size)
                except _FoldedLate:
                    folded_late = True
        except FedAvgError:
            raise  # the coordinator's mistake (a model unlike the workers'), not the worker's
        except _WORKER_FAILURES as exc:
            return self._part(client, "failed", _one_line(exc))
        except UpdateMismatchError as exc:
            return self._part(client, "failed", f"UpdateMismatchError: {exc}")
        part = ClientRound(
            worker=client.remote.label,
            client=client.name,
            dataset_key=client.dataset_key,
            loss=result.mean_loss,
            final_loss=result.final_loss,
            samples=result.samples,
            dataset_size=result.dataset_size,
            seconds=time.perf_counter() - begun,
            fit_seconds=result.seconds,
        )
        if folded_late:
            raise _FoldedLate(part)
        return part

    @staticmethod
    async def _fold_update(client: _Client, aggregator: Aggregator, num_samples: int) -> None:
        """Fetch the client's trained weights into the aggregator.

        A streaming aggregator folds each chunk into its running sum as it arrives: no update is ever
        held whole. Once part of an update is in the sum it cannot be taken out exactly, so a round
        deadline that passes during such a transfer lets the transfer end (one model's worth of bytes)
        and counts the update, rather than leave half of it in the sum.
        """
        if not isinstance(aggregator, StreamingMean):
            trained = await client.remote.run(_trained_weights)
            aggregator.add(trained, num_samples)
            return
        fold = aggregator.fold(num_samples)
        transfer = asyncio.ensure_future(client.remote.run(lambda aio: aio.stream_model_weights(fold)))
        cancelled = False
        try:
            while not transfer.done():
                try:
                    await asyncio.shield(transfer)
                except asyncio.CancelledError:
                    if not fold.started:
                        transfer.cancel()
                        raise
                    cancelled = True  # part of it is folded: let the transfer end, then stop
            transfer.result()
        except BaseException as exc:
            fold.abort(_one_line(exc))
            raise
        fold.commit()
        if cancelled and (task := asyncio.current_task()) is not None:
            task.uncancel()  # the update counts (it is in the sum); the worker's turn ends after it
            raise _FoldedLate(None)

    def _late_error(self) -> str:
        return f"the round's deadline of {self.round_timeout:g} s passed first"

    @staticmethod
    def _part(client: _Client, status: str, error: str) -> ClientRound:
        return ClientRound(
            worker=client.remote.label,
            client=client.name,
            dataset_key=client.dataset_key,
            status=status,
            error=error,
        )

    async def _configure(self, remote: _Remote, config: TrainSpec, round_: _Round) -> None:
        async with round_.transfers:  # the model travels with the train config (TorchScript, in chunks)
            summary = await remote.run(lambda aio: aio.set_train_config(config))
        expected = list(self.model.state_dict())
        if list(summary.state_names) != expected:
            raise FedAvgConfigError(
                f"worker {remote.label} built a model with state names {list(summary.state_names)}, "
                f"but the global model has {expected}"
            )
        remote.config = config

    async def _fit(
        self, client: _Client, config: TrainSpec, weights: dict[str, Tensor], round_: _Round
    ) -> FitResult:
        """Configure the worker if needed, send the global weights, fit the client's dataset.

        The fit's reply carries no weights: they are fetched afterwards, when a transfer may start, so
        that the workers' replies never pile up on the coordinator.
        """
        remote = client.remote

        async def step() -> FitResult:
            async with round_.transfers:
                await remote.run(lambda aio: aio.set_model_weights(weights, strict=True))
            return await remote.run(
                lambda aio: aio.fit(client.dataset_key, progress=False, timeout=self.fit_timeout)
            )

        if remote.config is not config:
            await self._configure(remote, config, round_)
        try:
            return await step()
        except FailedPreconditionError:
            # The worker lost this identity's training state (it restarted), or still finishes the batch of
            # a fit cancelled at the last deadline (12.3.13): a new train config replaces the state for
            # the requests that follow (the cancelled fit ends on the old one). Configure again, retry once.
            remote.config = None
            await self._configure(remote, config, round_)
            return await step()

    # -- evaluation -------------------------------------------------------------------------------

    async def _evaluate_round(self, finished: list[_Client], round_: _Round) -> dict[str, _Evaluation]:
        """Each finished client's worker evaluates the model's weights on each distinct evaluation dataset.

        Returns the outcome by client id; a dataset evaluated for several clients of one worker is
        attributed to the first of them only, so no sample counts twice. Evaluations still running at
        the round's deadline are cancelled and reported late.
        """
        weights = self._weights_view()
        plans: dict[int, dict[str, _Client]] = {}
        for client in finished:
            plans.setdefault(id(client.remote), {}).setdefault(client.eval_dataset_key, client)
        outcomes: dict[str, _Evaluation] = {}

        async def worker_turn(firsts: dict[str, _Client]) -> None:
            remote = next(iter(firsts.values())).remote
            try:
                async with round_.transfers:
                    await remote.run(lambda aio: aio.set_model_weights(weights, strict=True))
            except _WORKER_FAILURES as exc:
                for client in firsts.values():
                    outcomes[client.name] = _Evaluation("failed", error=_one_line(exc))
                return
            for key, client in firsts.items():
                try:
                    result = await remote.run(_evaluation(key))
                except _WORKER_FAILURES as exc:
                    outcomes[client.name] = _Evaluation("failed", error=_one_line(exc))
                else:
                    outcomes[client.name] = _Evaluation("ok", result=result)

        await _until(round_.deadline, [worker_turn(firsts) for firsts in plans.values()])
        for firsts in plans.values():
            for client in firsts.values():
                if client.name not in outcomes:
                    outcomes[client.name] = _Evaluation("late", error=self._late_error())
        return outcomes


class _FoldedLate(Exception):
    """A client's update was folded while the round's deadline passed: it counts, its worker stops."""

    def __init__(self, part: ClientRound | None) -> None:
        super().__init__("folded as the round's deadline passed")
        self.part = part


@dataclasses.dataclass(frozen=True, slots=True)
class _Round:
    """What the steps of one round share: its deadline (``time.monotonic``) and its transfer places."""

    deadline: float | None
    transfers: asyncio.Semaphore


@dataclasses.dataclass(frozen=True, slots=True)
class _Evaluation:
    """One client's evaluation in a round: "ok" with its result, or "failed" or "late" with the reason."""

    status: str
    result: EvaluateResult | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Metrics:
    """A round's global metrics from its evaluations (None: nothing of that kind was evaluated)."""

    loss: float | None = None
    accuracy: float | None = None
    mean_squared_error: float | None = None
    mean_absolute_error: float | None = None


async def _trained_weights(aio: AsyncClient) -> dict[str, Tensor]:
    return await aio.get_model_weights()


def _evaluation(key: str) -> Callable[[AsyncClient], Coroutine[Any, Any, EvaluateResult]]:
    return lambda aio: aio.evaluate(key)


def _with_evaluation(part: ClientRound, evaluation: _Evaluation) -> ClientRound:
    result = evaluation.result
    if result is None:
        return dataclasses.replace(part, eval_status=evaluation.status, eval_error=evaluation.error)
    regression = result.kind is EvaluateKind.REGRESSION
    return dataclasses.replace(
        part,
        eval_status=evaluation.status,
        eval_kind=result.kind.value,
        eval_loss=result.loss,
        eval_correct=None if regression else result.correct,
        eval_total=result.total,
        eval_mean_squared_error=result.mean_squared_error if regression else None,
        eval_mean_absolute_error=result.mean_absolute_error if regression else None,
    )


async def _until(deadline: float | None, coroutines: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines concurrently until they end or ``deadline`` (``time.monotonic``) passes.

    Those still running at the deadline are cancelled (and awaited: each ends at its next await); an
    exception other than a worker's failure, which the coroutines record themselves, is passed on.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    if not tasks:
        return
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # a bug in this coordinator (not a worker failure) surfaces here


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


def _global_metrics(results: list[EvaluateResult]) -> _Metrics:
    """The round's metrics from the clients' evaluations, each kind pooled on its own.

    Loss: the sample-weighted mean of every evaluation's loss. Classifications: the pooled accuracy
    ``sum(correct) / sum(total)``. Regressions: the sample-weighted means of their mean squared and
    mean absolute errors (no accuracy: values are not classes). A kind nothing evaluated stays None.
    """
    with_loss = [result for result in results if result.loss is not None]
    loss_total = sum(result.total for result in with_loss)
    loss = (
        math.fsum(float(result.loss or 0.0) * result.total for result in with_loss) / loss_total
        if loss_total
        else None
    )
    classified = [result for result in results if result.kind is EvaluateKind.CLASSIFICATION]
    total = sum(result.total for result in classified)
    accuracy = sum(result.correct for result in classified) / total if total else None
    regressions = [result for result in results if result.kind is EvaluateKind.REGRESSION]

    def pooled(errors: list[tuple[float | None, int]]) -> float | None:
        known = [(error, count) for error, count in errors if error is not None]
        count = sum(n for _, n in known)
        return math.fsum(float(error) * n for error, n in known) / count if count else None

    return _Metrics(
        loss=loss,
        accuracy=accuracy,
        mean_squared_error=pooled([(r.mean_squared_error, r.total) for r in regressions]),
        mean_absolute_error=pooled([(r.mean_absolute_error, r.total) for r in regressions]),
    )


def _round_line(record: RoundRecord) -> str:
    """One line per round: round, sampled, finished, dropped (and late), loss, the metric of what was
    evaluated (accuracy, or mse and mae), late or failed evaluations, workers, seconds."""
    parts = [
        f"[bold]round {record.round:>3}[/]",
        f"sampled {record.sampled}",
        f"finished {record.finished}",
        f"dropped {record.dropped}" if not record.dropped else f"[red]dropped {record.dropped}[/]",
    ]
    if record.late:
        parts.append(f"[yellow]late {record.late}[/]")
    unavailable = len(record.clients) - record.sampled
    if unavailable:
        parts.append(f"[yellow]unavailable {unavailable}[/]")
    parts.append("loss -" if record.loss is None else f"loss {record.loss:.4f}")
    if record.accuracy is not None:
        parts.append(f"accuracy {record.accuracy:.3f}")
    if record.mean_squared_error is not None:
        parts.append(f"mse {record.mean_squared_error:.4g}")
        if record.mean_absolute_error is not None:
            parts.append(f"mae {record.mean_absolute_error:.4g}")
    if record.metric is None:
        parts.append("accuracy -")
    if record.eval_late:
        parts.append(f"[yellow]eval late {record.eval_late}[/]")
    if record.eval_failed:
        parts.append(f"[red]eval failed {record.eval_failed}[/]")
    workers = {c.worker for c in record.clients}
    good = {c.worker for c in record.succeeded}
    parts.append(f"{len(good)}/{len(workers)} workers")
    parts.append(f"{record.seconds:.2f} s")
    line = "  ".join(parts)
    problems = [(c, c.status, c.error) for c in record.failed]
    problems += [
        (c, f"evaluation {c.eval_status}", c.eval_error)
        for c in record.clients
        if c.eval_status in ("failed", "late")
    ]
    for client, status, error in problems[:5]:
        line += f"\n    {client.client} {status}: {error}"
    if len(problems) > 5:
        line += f"\n    ... and {len(problems) - 5} more"
    return line


def _plot(history: list[RoundRecord]) -> bytes:
    """A PNG of :func:`_figure`."""
    buffer = io.BytesIO()
    _figure(history).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _figure(history: list[RoundRecord]) -> Figure:
    """The evaluation metric per round (and the clients' mean training loss), from the records.

    The metric is the accuracy when the workers evaluated classifications, and the mean squared error
    when they evaluated regressions only (float targets: no accuracy to plot).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.subplots()
    rounds = [record.round for record in history]
    regression = all(r.accuracy is None for r in history) and any(
        r.mean_squared_error is not None for r in history
    )
    if regression:
        errors = [math.nan if r.mean_squared_error is None else r.mean_squared_error for r in history]
        axes.plot(rounds, errors, marker="o", color="tab:blue", label="mean squared error")
        axes.set_ylabel("mean squared error")
        axes.set_ylim(bottom=0)
    else:
        accuracies = [math.nan if record.accuracy is None else record.accuracy for record in history]
        axes.plot(rounds, accuracies, marker="o", color="tab:blue", label="accuracy")
        axes.set_ylabel("accuracy")
        axes.set_ylim(0, 1)
    axes.set_xlabel("round")
    axes.grid(True, alpha=0.3)
    losses = []
    for record in history:
        trained = [(c.loss, c.dataset_size) for c in record.succeeded if c.loss is not None]
        size = sum(n for _, n in trained)
        losses.append(sum(loss * n for loss, n in trained) / size if size else math.nan)
    twin = axes.twinx()
    twin.plot(rounds, losses, marker=".", linestyle="--", color="tab:orange", label="training loss")
    twin.set_ylabel("clients' training loss")
    axes.set_title("federated training, per round")
    handles = axes.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axes.legend(handles=handles, loc="upper right" if regression else "lower right")
    return figure
