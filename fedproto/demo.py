"""``fedproto demo``: federated training of a handwritten-digits classifier on local worker processes.

The demo loads scikit-learn's bundled digits (1797 images of 8x8 pixels, 10 classes; nothing is
downloaded), keeps a stratified 20 % as the test set, and deals the rest out to the workers as uneven,
non-IID shards (Dirichlet label skew: each worker sees some digits far more than others). Every worker
is a separate ``fedproto serve`` process on 127.0.0.1 that requires a token. The coordinator trains a
64-64-10 MLP with :class:`~fedproto.federated.FedAvg`, then trains the same model centrally on the pooled
training data with the same budget (as many epochs over all the data as the federation ran, the same
seed, optimizer and batch size, and the very training loop the workers run) and prints both test
accuracies. It plots the accuracy per round against the central baseline (``--plot``).

    fedproto demo [--rounds 10] [--workers 3] [--epochs 2] [--seed 0] [--plot demo.png | --no-plot]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.live import Live
from rich.table import Table
from torch import nn

from fedproto.client import Client
from fedproto.datasets import Dataset
from fedproto.errors import FedprotoError, ProtocolError
from fedproto.federated import FedAvg, RoundRecord
from fedproto.training import ModelRegistry, TrainConfig, TrainingState

__all__ = ["DemoError", "main"]

#: Seconds a worker process may take to start listening (it imports torch first).
START_TIMEOUT = 60.0
#: Seconds a worker process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: The demo's local training: SGD with momentum, small batches (tuned for FedAvg on non-IID shards).
OPTIMIZER = "SGD"
OPTIMIZER_ARGS: dict[str, Any] = {"lr": 0.05, "momentum": 0.9}
BATCH_SIZE = 16
#: Dirichlet concentration of the label skew: smaller is more skewed.
ALPHA = 0.5
#: The fewest training samples a worker's shard may hold.
MIN_SHARD = 40
IDENTITY = "coordinator"


class DemoError(Exception):
    """The demo cannot go on (a worker did not start, a dependency is missing, ...)."""


def build_parser() -> argparse.ArgumentParser:
    """The demo's command-line options."""
    parser = argparse.ArgumentParser(
        prog="fedproto demo",
        description="Federated training of a digits classifier on local worker processes, "
        "compared with central training.",
    )
    parser.add_argument("--rounds", type=int, default=10, help="federated rounds (default 10)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes, 1 to 16 (default 3)")
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, shards and model (default 0)")
    parser.add_argument("--plot", type=Path, default=Path("demo.png"), help="plot file (default demo.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not write a plot")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 on success, 1 on failure, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        return _run(args)
    except KeyboardInterrupt:
        print("fedproto demo: interrupted", file=sys.stderr)
        return 130
    except (DemoError, FedprotoError, OSError, ValueError) as exc:
        print(f"fedproto demo: {_one_line(exc)}", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace) -> None:
    if args.rounds < 1:
        raise DemoError("--rounds must be at least 1")
    if not 1 <= args.workers <= 16:
        raise DemoError("--workers must be between 1 and 16")
    if args.epochs < 1:
        raise DemoError("--epochs must be at least 1")
    if args.seed < 0:
        raise DemoError("--seed must be >= 0")


def _one_line(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, ProtocolError) else f"{exc.code.name}: {exc.message}"
    return " ".join(text.split()) or type(exc).__name__


# -- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    x_train: np.ndarray[Any, Any]
    y_train: np.ndarray[Any, Any]
    x_test: np.ndarray[Any, Any]
    y_test: np.ndarray[Any, Any]
    shards: list[np.ndarray[Any, Any]]


def _load(workers: int, seed: int) -> _Data:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DemoError("the demo needs scikit-learn: pip install 'fedproto[demo]'") from None
    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    targets = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        features, targets, test_size=0.2, stratify=targets, random_state=seed
    )
    shards = _dirichlet_shards(y_train, workers, np.random.default_rng(seed))
    return _Data(x_train, y_train, x_test, y_test, shards)


def _dirichlet_shards(
    targets: np.ndarray[Any, Any], workers: int, rng: np.random.Generator
) -> list[np.ndarray[Any, Any]]:
    """Split sample indices into non-IID shards: each class is shared out in Dirichlet(ALPHA) proportions.

    Draws again (a bounded number of times) until every shard holds at least MIN_SHARD samples.
    """
    classes = np.unique(targets)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(workers)]
        for label in classes:
            members = np.flatnonzero(targets == label)
            rng.shuffle(members)
            shares = rng.dirichlet([ALPHA] * workers)
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for position, chunk in enumerate(np.split(members, cuts)):
                parts[position].extend(chunk.tolist())
        if min(len(part) for part in parts) >= MIN_SHARD:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    raise DemoError(f"cannot deal {len(targets)} samples to {workers} workers with {MIN_SHARD} or more each")


def _model(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _config(model: nn.Module, epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(
        model=model,
        loss_fn="cross_entropy",
        optimizer=OPTIMIZER,
        optimizer_args=dict(OPTIMIZER_ARGS),
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        seed=seed,
    )


# -- worker processes ---------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def last_words(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that were free a moment ago (all held at once, so they differ)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@contextlib.contextmanager
def _workers(directory: Path, shards: list[Path], test: Path, tokens: Path) -> Iterator[list[_Process]]:
    """Start one ``fedproto serve`` process per shard; stop them all at the end, whatever happens."""
    started: list[_Process] = []
    try:
        for number, (shard, port) in enumerate(zip(shards, _free_ports(len(shards)), strict=True), start=1):
            name = f"worker-{number}"
            log = directory / f"{name}.log"
            command = _worker_command(name, port, shard, test, tokens)
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=_worker_environment()
                )
            started.append(_Process(name, port, process, log))
        _wait_listening(started)
        yield started
    finally:
        _stop(started)


def _worker_command(name: str, port: int, shard: Path, test: Path, tokens: Path) -> list[str]:
    """The command line of one worker process: ``fedproto serve`` on 127.0.0.1 with its two datasets."""
    return [
        sys.executable,
        "-m",
        "fedproto",
        "--log-level",
        "WARNING",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--id",
        name,
        "--dataset",
        f"train={shard}",
        "--dataset",
        f"test={test}",
        "--token-file",
        str(tokens),
    ]


def _worker_environment() -> dict[str, str]:
    """The workers' environment: one compute thread each, since several share this machine's CPUs.

    A small model gains nothing from more threads, and busy-waiting thread pools of several processes
    on the same cores slow every one of them down.
    """
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", "1")
    environment.setdefault("MKL_NUM_THREADS", "1")
    return environment


def _wait_listening(processes: list[_Process]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(processes)
    while waiting:
        for worker in list(waiting):
            status = worker.process.poll()
            if status is not None:
                said = worker.last_words()
                raise DemoError(
                    f"{worker.name} exited with status {status} before listening"
                    + (f": {said}" if said else "")
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", worker.port), 0.5):
                waiting.remove(worker)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(f"{w.name} (port {w.port})" for w in waiting)
            raise DemoError(f"{names} did not start listening within {START_TIMEOUT:g} s")
        if waiting:
            time.sleep(0.1)


def _stop(processes: list[_Process]) -> None:
    """SIGTERM every process, wait, then kill those still running."""
    for worker in processes:
        if worker.process.poll() is None:
            with contextlib.suppress(OSError):
                worker.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for worker in processes:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                worker.process.kill()
            worker.process.wait()


# -- the run ------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    console = Console(highlight=False)
    data = _load(args.workers, args.seed)
    console.print(
        f"digits: {len(data.y_train)} training samples dealt to {args.workers} workers (non-IID), "
        f"{len(data.y_test)} test samples"
    )
    for number, shard in enumerate(data.shards, start=1):
        counts = np.bincount(data.y_train[shard], minlength=10)
        common = ", ".join(str(d) for d in np.argsort(-counts, kind="stable")[:3])
        console.print(f"  worker-{number}: {len(shard):4d} samples, mostly digits {common}")

    initial = _model(args.seed)
    with tempfile.TemporaryDirectory(prefix="fedproto-demo-") as temp:
        directory = Path(temp)
        shard_files = []
        for number, shard in enumerate(data.shards, start=1):
            path = directory / f"shard{number}.npz"
            np.savez(path, features=data.x_train[shard], targets=data.y_train[shard])
            shard_files.append(path)
        test_file = directory / "test.npz"
        np.savez(test_file, features=data.x_test, targets=data.y_test)
        token = secrets.token_urlsafe(24)
        token_file = directory / "tokens.txt"
        token_file.write_text(f"{IDENTITY} {token}\n")
        os.chmod(token_file, 0o600)

        with _workers(directory, shard_files, test_file, token_file) as processes:
            console.print(f"started {len(processes)} worker processes in {time.perf_counter() - began:.1f} s")
            history = _federate(args, console, copy.deepcopy(initial), processes, token)

    federated = history[-1].accuracy
    assert federated is not None  # every round that returns evaluated on at least one worker
    central, central_seconds = _central(args, data, copy.deepcopy(initial))
    fed_seconds = sum(record.seconds for record in history)
    console.print(f"federated: {args.rounds} rounds x {args.epochs} local epochs in {fed_seconds:.1f} s")
    console.print(
        f"central:   {args.rounds * args.epochs} epochs on the pooled data in {central_seconds:.1f} s"
    )
    console.print(
        f"[bold]federated accuracy {federated:.3f} vs central {central:.3f}[/] "
        f"({100 * (federated - central):+.1f} points)"
    )
    if not args.no_plot:
        _plot(args.plot, history, central)
        console.print(f"plot written to {args.plot}")
    console.print(f"done in {time.perf_counter() - began:.1f} s")
    return 0


def _federate(
    args: argparse.Namespace, console: Console, model: nn.Module, processes: list[_Process], token: str
) -> list[RoundRecord]:
    clients: list[Client] = []
    try:
        for worker in processes:
            clients.append(Client(worker.url, token=token, connect_timeout=10.0, reconnect_attempts=3))
        table = Table(title="federated averaging", title_justify="left")
        table.add_column("round", justify="right")
        table.add_column("test loss", justify="right")
        table.add_column("test accuracy", justify="right")
        for worker in processes:
            table.add_column(f"{worker.name}\nsamples · seconds", justify="right")

        # In a terminal the table grows row by row; elsewhere (a pipe, a log) it is printed once, at the end.
        live = Live(table, console=console, auto_refresh=False) if console.is_terminal else None
        with live if live is not None else contextlib.nullcontext():

            def show(record: RoundRecord) -> None:
                cells = [
                    f"{w.samples} · {w.seconds:.2f}" if w.ok else f"[red]failed: {w.error}[/]"
                    for w in record.workers
                ]
                table.add_row(
                    str(record.round),
                    "-" if record.loss is None else f"{record.loss:.4f}",
                    "-" if record.accuracy is None else f"{record.accuracy:.3f}",
                    *cells,
                )
                if live is not None:
                    live.refresh()

            fedavg = FedAvg(
                clients,
                model,
                _config(model, args.epochs, args.seed),
                dataset_key="train",
                eval_dataset_key="test",
                min_workers=1,
                progress=show,
            )
            history = fedavg.run(args.rounds)
        if live is None:
            console.print(table)
        return history
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()


def _central(args: argparse.Namespace, data: _Data, model: nn.Module) -> tuple[float, float]:
    """Train on the pooled data with the workers' own loop; (test accuracy, seconds)."""
    config = _config(model, args.rounds * args.epochs, args.seed)
    state = TrainingState.configure(
        config.to_spec(), registry=ModelRegistry(), weights_only=False, max_model_bytes=0
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same compute as one worker gets (and a small model's fastest)
    try:
        started = time.perf_counter()
        state.fit(Dataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)))
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    result = state.evaluate(Dataset(torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)))
    return result.correct / result.total, seconds


def _plot(path: Path, history: list[RoundRecord], central: float) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DemoError(
            "plotting needs matplotlib: pip install 'fedproto[demo]' (or use --no-plot)"
        ) from None
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.subplots()
    rounds = [record.round for record in history]
    accuracies = [np.nan if record.accuracy is None else record.accuracy for record in history]
    axes.plot(rounds, accuracies, marker="o", label="federated (FedAvg)")
    axes.axhline(central, color="tab:orange", linestyle="--", label=f"central ({central:.3f})")
    axes.set_xlabel("round")
    axes.set_ylabel("test accuracy")
    axes.set_title("Digits: federated averaging on non-IID shards vs central training")
    axes.set_xticks(rounds if len(rounds) <= 20 else rounds[:: max(1, len(rounds) // 10)])
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
