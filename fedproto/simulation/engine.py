"""``fedproto.simulation.run``: a federation of many simulated clients on a few real workers.

A run checks every setting first (:class:`SimulationConfigError`, before anything starts), loads the
digits (:mod:`fedproto.simulation.partition`), starts the hosts on the chosen backend
(:mod:`fedproto.simulation.backends`: ``local`` processes or ``ray`` actors, each a real worker holding
a slice of the clients' datasets), connects to each host over loopback WebSockets, and trains the
digits MLP with :class:`fedproto.FedAvg` over the clients as (worker, dataset) pairs: each round a
seeded ``fraction`` of the clients trains, the chosen strategy aggregates, and the coordinator
evaluates the new global model on the held-out test digits. The hosts are always stopped at the end.

With ``run_dir`` the run keeps its checkpoints and round records there (FedAvg's run directory) and
the settings that make it this federation in ``simulation.json``; ``resume=True`` goes on from the last
complete round, after checking that they are the ones the run started with (other clients, partition,
seed, strategy or model would silently train another federation).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor, nn

from fedproto.client import AsyncClient
from fedproto.federated import FedAvg, FederatedClient, RoundRecord
from fedproto.federated.checkpoint import MANIFEST
from fedproto.federated.strategies import STRATEGIES
from fedproto.simulation.backends import BACKENDS, Host, host_specs, local_hosts, ray_available, ray_hosts
from fedproto.simulation.host import TEST_KEY
from fedproto.simulation.partition import (
    PARTITIONS,
    DigitsSplit,
    PartitionError,
    label_skew,
    load_digits_split,
    partition,
)
from fedproto.training import TrainConfig

__all__ = [
    "STRATEGY_NAMES",
    "SimulationConfig",
    "SimulationConfigError",
    "SimulationResult",
    "digits_mlp",
    "round_line",
    "run",
]

#: The settings a resumed run must share with the run it resumes: its clients' data, strategy and model.
_RUN_SETTINGS = ("clients", "partition", "alpha", "seed", "strategy", "hidden")
#: The file in the run directory holding them.
SETTINGS_FILE = "simulation.json"
#: The Dirichlet concentration of a ``dirichlet`` partition given no ``alpha``.
DEFAULT_ALPHA = 0.5


#: The strategies by the names the simulation takes (FedAvg's names, with ``-`` for ``_``).
STRATEGY_NAMES = tuple(name.replace("_", "-") for name in STRATEGIES)


class SimulationConfigError(ValueError):
    """A simulation setting that cannot work, found before anything starts."""


def _strategy_name(name: str) -> str:
    """FedAvg's name of a strategy named on the command line (``trimmed-mean`` is ``trimmed_mean``)."""
    return name.replace("-", "_")


def digits_mlp(seed: int = 0, hidden: Sequence[int] = (64,)) -> nn.Sequential:
    """An MLP for the digits, its initial weights drawn from ``seed``: 64 inputs, ``hidden`` widths with
    ReLU between, 10 outputs. The default, 64-64-10, is the model of ``fedproto demo``."""
    widths = [64, *hidden, 10]
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for index in range(len(widths) - 1):
            if index:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(widths[index], widths[index + 1]))
    return nn.Sequential(*layers)


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Every setting of a simulation, checked when made (:class:`SimulationConfigError` otherwise).

    The data: ``clients`` virtual clients dealt the digits' training samples by ``partition``
    (``"iid"``, or ``"dirichlet"`` with concentration ``alpha``, default :data:`DEFAULT_ALPHA`; an
    ``alpha`` with ``"iid"`` is refused, as it would change nothing), seeded by ``seed``. The federation:
    ``rounds`` rounds, each training ``max(min_fit_clients, fraction * clients)`` sampled clients
    with ``strategy``; each client trains ``epochs`` local epochs of SGD (``lr``, momentum 0.9,
    ``batch_size``; a new optimizer every fit, as a real client would start) of the digits MLP with
    ``hidden`` layer widths. ``evaluate``: the hosts also evaluate each round's global model on the
    test digits through the protocol (FedAvg's evaluation: in the round's time, its records and its
    plot); the coordinator always evaluates it too, outside the round's time. Where: ``backend``
    (``"local"`` or ``"ray"``), ``workers`` hosts sharing the clients, ``address`` of an existing Ray
    cluster (None: a private one with ``num_cpus`` CPUs).
    """

    clients: int = 100
    fraction: float = 0.1
    rounds: int = 5
    backend: str = "local"
    address: str | None = None
    partition: str = "iid"
    alpha: float | None = None
    strategy: str = "fedavg"
    run_dir: Path | None = None
    resume: bool = False
    seed: int = 0
    workers: int = 2
    min_fit_clients: int = 1
    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.05
    hidden: tuple[int, ...] = (64,)
    num_cpus: int | None = None
    evaluate: bool = True

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SimulationConfigError(f"{name} must be an integer >= {low}, got {value!r}")
            if high is not None and value > high:
                raise SimulationConfigError(f"{name} must be at most {high}, got {value!r}")

        integer("clients", 1)
        integer("rounds", 1)
        integer("seed", 0)
        integer("epochs", 1)
        integer("batch_size", 1)
        integer("workers", 1)
        integer("min_fit_clients", 1)
        hidden = self.hidden
        if (
            not isinstance(hidden, (tuple, list))
            or not hidden
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden)
        ):
            raise SimulationConfigError(f"hidden must be a non-empty sequence of widths >= 1, got {hidden!r}")
        object.__setattr__(self, "hidden", tuple(hidden))
        fraction = self.fraction
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            raise SimulationConfigError(f"fraction must be a number in (0, 1], got {fraction!r}")
        if self.min_fit_clients > self.clients:
            raise SimulationConfigError(
                f"min_fit_clients={self.min_fit_clients} clients must train each round, "
                f"but there are only {self.clients} clients"
            )
        if self.workers > self.clients:
            raise SimulationConfigError(
                f"workers={self.workers} hosts cannot share {self.clients} clients "
                "(one host per client at most)"
            )
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not 0 < self.lr < math.inf:
            raise SimulationConfigError(f"lr must be a number > 0, got {self.lr!r}")
        _choice("backend", self.backend, BACKENDS)
        _choice("partition", self.partition, PARTITIONS)
        if not isinstance(self.strategy, str) or _strategy_name(self.strategy) not in STRATEGIES:
            _choice("strategy", self.strategy, STRATEGY_NAMES)
        alpha = self.alpha
        if alpha is None:
            if self.partition == "dirichlet":
                object.__setattr__(self, "alpha", DEFAULT_ALPHA)
        elif self.partition != "dirichlet":
            raise SimulationConfigError(
                "alpha is the Dirichlet concentration: it needs partition 'dirichlet', "
                f"not {self.partition!r}"
            )
        elif not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < math.inf:
            raise SimulationConfigError(f"alpha must be a number > 0, got {alpha!r}")
        if self.address is not None and self.backend != "ray":
            raise SimulationConfigError("address joins a Ray cluster: it needs backend 'ray'")
        if self.num_cpus is not None:
            integer("num_cpus", 1)
            if self.address is not None:
                raise SimulationConfigError("num_cpus sizes a private Ray instance: not with address")
        if self.backend == "ray" and not ray_available():
            raise SimulationConfigError(
                "backend 'ray' needs Ray, which is not installed: pip install 'fedproto[ray]'"
            )
        if self.resume and self.run_dir is None:
            raise SimulationConfigError("resume needs run_dir (the run directory to resume)")
        if self.run_dir is not None and not isinstance(self.run_dir, Path):
            object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def concentration(self) -> float:
        """The Dirichlet concentration the partition uses (:data:`DEFAULT_ALPHA` where none applies)."""
        return DEFAULT_ALPHA if self.alpha is None else float(self.alpha)

    @property
    def sampled(self) -> int:
        """How many clients train each round."""
        return min(self.clients, max(self.min_fit_clients, int(self.fraction * self.clients + 1e-9)))

    def settings(self) -> dict[str, Any]:
        """Every setting as JSON values (kept in the run directory's ``run.json``)."""
        values = dataclasses.asdict(self)
        values["run_dir"] = None if self.run_dir is None else str(self.run_dir)
        values["hidden"] = list(self.hidden)
        return values

    def run_settings(self) -> dict[str, Any]:
        """The settings that decide which federation is trained (checked again on resume)."""
        values = {name: getattr(self, name) for name in _RUN_SETTINGS}
        values["strategy"] = _strategy_name(self.strategy)
        values["hidden"] = list(self.hidden)
        return values


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SimulationConfigError(f"unknown {name} {value!r}; choose among {', '.join(choices)}")


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    """What a simulation did.

    ``records`` are FedAvg's round records of the rounds run now (a resumed run's earlier rounds are in
    its run directory); ``accuracies`` and ``losses`` evaluate the global model on the held-out test
    digits after each of those rounds, and ``accuracy``/``loss`` after the last one. ``label_skew`` is
    the partition's mean total-variation distance from the overall label mix
    (:func:`~fedproto.simulation.partition.label_skew`) and ``client_sizes`` the fewest and the most
    samples a client holds; ``weights`` are the final global weights; ``startup_seconds`` is the time to
    start the hosts and connect, ``seconds`` the whole run's.
    """

    config: SimulationConfig
    records: tuple[RoundRecord, ...]
    accuracies: tuple[float, ...]
    losses: tuple[float, ...]
    accuracy: float
    loss: float
    initial_accuracy: float
    label_skew: float
    client_sizes: tuple[int, int]
    weights: dict[str, Tensor]
    startup_seconds: float
    seconds: float

    @property
    def rounds(self) -> int:
        """How many rounds ran in this call."""
        return len(self.records)


def round_line(record: RoundRecord, accuracy: float) -> str:
    """One line about a round: its number, the test accuracy, the clients that finished, its time."""
    line = (
        f"round {record.round:>3}  test accuracy {accuracy:.3f}  "
        f"{record.finished}/{record.sampled} clients  {record.seconds:.2f} s"
    )
    for failure in [c for c in record.clients if c.status in ("failed", "late")][:3]:
        line += f"\n    {failure.client} {failure.status}: {failure.error}"
    return line


def _evaluate(model: nn.Module, data: DigitsSplit) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on the test digits."""
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
        targets = torch.from_numpy(data.y_test)
        loss = float(nn.functional.cross_entropy(logits, targets))
        accuracy = float((logits.argmax(dim=1) == targets).double().mean())
    return accuracy, loss


def _check_run_dir(config: SimulationConfig) -> None:
    """The run directory fits the run: nothing there to start afresh, the same run settings to resume.

    Checked before anything starts; the run settings are written (``simulation.json``) only once the
    check passed, so a refused run never changes the directory.
    """
    if config.run_dir is None:
        return
    path = config.run_dir / SETTINGS_FILE
    wanted = config.run_settings()
    has_run = (config.run_dir / MANIFEST).is_file()
    if not config.resume:
        if has_run:
            raise SimulationConfigError(
                f"{config.run_dir} already holds a run; pass resume to go on with it, or choose another"
            )
        config.run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=1, sort_keys=True) + "\n")
        return
    if not has_run:
        raise SimulationConfigError(f"cannot resume {config.run_dir}: it holds no complete round")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SimulationConfigError(f"cannot resume {config.run_dir}: {SETTINGS_FILE}: {exc}") from None
    # an iid partition has no alpha (runs written before that was enforced kept the default there)
    compared = [k for k in wanted if not (k == "alpha" and wanted["partition"] == "iid")]
    differ = [f"{k} {saved.get(k)!r} -> {wanted[k]!r}" for k in compared if saved.get(k) != wanted[k]]
    if differ:
        raise SimulationConfigError(
            f"cannot resume {config.run_dir} with other settings ({'; '.join(differ)})"
        )


def run(
    *,
    progress: bool | Callable[[RoundRecord, float], None] | None = None,
    **settings: Any,
) -> SimulationResult:
    """Simulate a federation (see the module text and :class:`SimulationConfig` for ``settings``).

    ``progress`` is a callback taking each round's record and the global model's test accuracy;
    ``True`` prints FedAvg's line per round on stderr, ``None`` does when stderr is a terminal.
    Raises :class:`SimulationConfigError` before anything starts when a setting cannot work.
    """
    config = SimulationConfig(**settings)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run(config, progress))
    # called from a running loop (a notebook): the run gets a loop of its own on a helper thread
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fedproto-simulation") as pool:
        return pool.submit(asyncio.run, _run(config, progress)).result()


@contextlib.contextmanager
def _hosts(config: SimulationConfig, token: str) -> Iterator[list[Host]]:
    specs = host_specs(
        clients=config.clients,
        workers=config.workers,
        partition=config.partition,
        alpha=config.concentration,
        seed=config.seed,
    )
    if config.backend == "ray":
        with ray_hosts(specs, token, address=config.address, num_cpus=config.num_cpus) as hosts:
            yield hosts
    else:
        log_dir = config.run_dir / "logs" if config.run_dir is not None else None
        with local_hosts(specs, token, log_dir=log_dir) as hosts:
            yield hosts


async def _run(
    config: SimulationConfig, progress: bool | Callable[[RoundRecord, float], None] | None
) -> SimulationResult:
    began = time.perf_counter()
    data = load_digits_split(config.seed)
    try:
        parts = partition(
            data.y_train,
            config.clients,
            scheme=config.partition,
            alpha=config.concentration,
            seed=config.seed,
        )
    except PartitionError as exc:
        raise SimulationConfigError(str(exc)) from None
    _check_run_dir(config)
    model = digits_mlp(config.seed, config.hidden)
    initial_accuracy, _ = _evaluate(model, data)
    train_config = TrainConfig(
        model=model,
        loss_fn="cross_entropy",
        optimizer="SGD",
        optimizer_args={"lr": float(config.lr), "momentum": 0.9},
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        seed=config.seed,
        reset_optimizer=True,
    )
    token = secrets.token_urlsafe(24)
    show = progress is True or (progress is None and sys.stderr.isatty())
    console = Console(stderr=True, highlight=False) if show else None
    accuracies: list[float] = []
    losses: list[float] = []
    records: list[RoundRecord] = []

    def on_round(record: RoundRecord) -> None:
        # the coordinator's own evaluation, outside the round's timed span
        accuracy, loss = _evaluate(model, data)
        accuracies.append(accuracy)
        losses.append(loss)
        records.append(record)
        if callable(progress):
            progress(record, accuracy)
        if console is not None:
            console.print(round_line(record, accuracy))

    with _hosts(config, token) as hosts:
        connections: list[AsyncClient] = []
        try:
            connections = list(
                await asyncio.gather(
                    *(AsyncClient.connect(host.url, token=token, connect_timeout=30.0) for host in hosts)
                )
            )
            clients = [
                FederatedClient(connection, key, eval_dataset_key=TEST_KEY, name=key)
                for connection, host in zip(connections, hosts, strict=True)
                for key in host.keys
            ]
            startup = time.perf_counter() - began
            fedavg = FedAvg(
                clients,
                model,
                train_config,
                strategy=_strategy_name(config.strategy),
                fraction_fit=config.fraction,
                min_fit_clients=config.min_fit_clients,
                seed=config.seed,
                evaluate=config.evaluate,
                run_dir=config.run_dir,
                resume=config.resume,
                run_settings={"simulation": config.settings()},
                progress=on_round,
            )
            remaining = config.rounds - len(fedavg.history)
            if remaining > 0:
                await fedavg.run_async(remaining)
        finally:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    final_accuracy, final_loss = _evaluate(model, data)
    sizes = [len(p) for p in parts]
    return SimulationResult(
        config=config,
        records=tuple(records),
        accuracies=tuple(accuracies),
        losses=tuple(losses),
        accuracy=final_accuracy,
        loss=final_loss,
        initial_accuracy=initial_accuracy,
        label_skew=label_skew(data.y_train, parts),
        client_sizes=(min(sizes), max(sizes)),
        weights={name: t.detach().clone() for name, t in model.state_dict().items()},
        startup_seconds=startup,
        seconds=time.perf_counter() - began,
    )
