"""``fedproto fedavg``: federated training of a model with running workers, from the command line.

The options mirror :class:`~fedproto.federated.FedAvg`'s arguments::

    fedproto fedavg --worker ws://127.0.0.1:8777 --worker ws://127.0.0.1:8778=train-a,train-b \\
        --model mypkg.models:make_mlp --rounds 20 --strategy fedadam --fraction-fit 0.5 \\
        --seed 0 --run-dir runs/mlp
    fedproto fedavg --resume runs/mlp            # after a crash: go on from the last complete round

Each ``--worker URL`` contributes one client per dataset key (``URL=KEY,KEY``; by default the keys of
``--dataset-key``). The model is built by ``--model MODULE:FACTORY`` (a module name or a ``.py``
file, then a function taking no arguments and returning an ``nn.Module``) under
``torch.manual_seed(--seed)``. With ``--run-dir`` every round is checkpointed there together with these
options (never the token), so ``--resume RUN_DIR`` needs no other option; ``--rounds``, ``--token``,
``--token-file`` and ``--quiet`` may still be given to it.
Every failure ends in one line on stderr: exit status 2 for options argparse cannot read, 1 for
everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import torch
from torch import nn

from fedproto.errors import FedprotoError, ProtocolError
from fedproto.federated.checkpoint import RunDirectory
from fedproto.federated.clients import FederatedClient
from fedproto.federated.errors import FedAvgConfigError, ResumeError
from fedproto.federated.strategies import STRATEGIES, strategy_from_settings

__all__ = ["build_parser", "main"]

#: Options of one invocation, never written to the run directory (the token is a secret).
PER_INVOCATION = ("token", "quiet")
#: Options a resumed run may set anew; every other one comes from the run directory.
RESUME_OVERRIDES = ("rounds", "token_file", *PER_INVOCATION)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2), like every failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = _Parser(
        prog="fedproto fedavg",
        description="Federated training with running fedproto workers (FedAvg and other strategies).",
    )
    workers = parser.add_argument_group("clients")
    workers.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="URL[=KEY,KEY]",
        help="a worker and the dataset keys of its clients (repeatable)",
    )
    workers.add_argument(
        "--dataset-key",
        action="append",
        default=[],
        metavar="KEY",
        help="dataset keys of workers given without keys (repeatable; default 'train')",
    )
    workers.add_argument(
        "--eval-dataset-key", help="dataset evaluating the global model (default: each client's)"
    )
    workers.add_argument("--token", default="", help="bearer token for every worker")
    workers.add_argument("--token-file", help="read the token from this file (first line, last word)")

    training = parser.add_argument_group("training")
    training.add_argument("--model", metavar="MODULE:FACTORY", help="builds the model: mypkg.models:make_mlp")
    training.add_argument(
        "--loss", default="cross_entropy", help="built-in loss name (default cross_entropy)"
    )
    training.add_argument("--optimizer", default="SGD", help="torch.optim class (default SGD)")
    training.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    training.add_argument(
        "--optimizer-arg", action="append", default=[], metavar="NAME=JSON", help="more optimizer arguments"
    )
    training.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    training.add_argument("--epochs", type=int, default=1, help="local epochs per round (default 1)")
    training.add_argument("--seed", type=int, default=0, help="seed of the model, training and sampling")

    rounds = parser.add_argument_group("rounds")
    rounds.add_argument(
        "--rounds", type=int, default=10, help="rounds in all, resumed ones included (default 10)"
    )
    rounds.add_argument("--strategy", default="fedavg", choices=sorted(STRATEGIES), help="default fedavg")
    rounds.add_argument("--mu", type=float, help="FedProx's proximal term (default 0.01)")
    rounds.add_argument("--eta", type=float, help="FedAdam/FedYogi server learning rate (default 0.01)")
    rounds.add_argument("--beta1", type=float, help="FedAdam/FedYogi first-moment decay (default 0.9)")
    rounds.add_argument("--beta2", type=float, help="FedAdam/FedYogi second-moment decay (default 0.99)")
    rounds.add_argument("--tau", type=float, help="FedAdam/FedYogi adaptivity (default 0.001)")
    rounds.add_argument("--trim", type=float, help="trimmed_mean: fraction cut at each end (default 0.1)")
    rounds.add_argument("--fraction-fit", type=float, default=1.0, help="share of clients per round")
    rounds.add_argument("--min-fit-clients", type=int, default=1, help="fewest clients per round (default 1)")
    rounds.add_argument("--min-available-clients", type=int, default=1, help="fewest available (default 1)")
    rounds.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fold updates as they arrive (default: when the strategy allows)",
    )
    rounds.add_argument("--updates", default="weights", choices=("weights", "deltas"), help="what is folded")
    rounds.add_argument("--round-timeout", type=float, help="seconds per round; later results are discarded")
    rounds.add_argument("--fit-timeout", type=float, help="seconds one client's fit may take")
    rounds.add_argument(
        "--max-transfers",
        type=int,
        default=1,
        help="model-sized transfers in flight at once (default 1: the coordinator holds O(model) memory "
        "however many workers; 0: one per worker)",
    )
    rounds.add_argument("--no-evaluate", action="store_true", help="do not evaluate the global model")

    runs = parser.add_argument_group("run directory")
    runs.add_argument("--run-dir", type=Path, help="checkpoint every round here (and plot accuracy.png)")
    runs.add_argument("--resume", type=Path, metavar="RUN_DIR", help="go on from this run directory")
    runs.add_argument("--no-plot", action="store_true", help="do not write accuracy.png")
    runs.add_argument("--quiet", action="store_true", help="no line per round")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 done, 1 failed, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = _options(args)
        return _run(options)
    except KeyboardInterrupt:
        print("fedproto fedavg: interrupted", file=sys.stderr)
        return 130
    except (FedprotoError, OSError, ValueError, TypeError) as exc:
        print(f"fedproto fedavg: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, ProtocolError) else f"{exc.code.name}: {exc.message}"
    return " ".join(text.split()) or type(exc).__name__


def _stored(args: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON values, without secrets and without --resume."""
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    for key in (*PER_INVOCATION, "resume"):
        values.pop(key, None)
    return values


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The run's options: the command line's, or with --resume the run directory's (plus overrides)."""
    if args.resume is None:
        if not args.worker:
            raise FedAvgConfigError("give at least one --worker URL")
        if not args.model:
            raise FedAvgConfigError("give --model MODULE:FACTORY")
        options = _stored(args)
        options["model"] = _model_spec(args.model)
        options["token"] = args.token
        options["quiet"] = args.quiet
        return options
    defaults = vars(build_parser().parse_args([]))
    given = {key for key, value in vars(args).items() if value != defaults[key]} - {"resume"}
    refused = sorted(given - set(RESUME_OVERRIDES))
    if refused:
        names = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise FedAvgConfigError(f"--resume takes its options from the run directory; {names} cannot change")
    run_dir = RunDirectory(args.resume)
    stored = run_dir.settings().get("extra", {}).get("command")
    if not isinstance(stored, dict):
        raise ResumeError(f"{args.resume} was not started by 'fedproto fedavg' (its run.json has no command)")
    options = dict(stored)
    options.update({key: getattr(args, key) for key in given})
    options["token"] = args.token
    options["quiet"] = args.quiet
    options["run_dir"] = str(args.resume)
    options["resume"] = True
    return options


def _model_spec(spec: str) -> str:
    """``MODULE:FACTORY`` checked, with a ``.py`` file's path made absolute (a resumed run may start
    elsewhere)."""
    module_name, colon, attribute = spec.rpartition(":")
    if not (colon and module_name and attribute.isidentifier()):
        raise FedAvgConfigError(f"--model expects MODULE:FACTORY (a module name or a .py file), got {spec!r}")
    if module_name.endswith(".py"):
        module_name = str(Path(module_name).resolve())
    return f"{module_name}:{attribute}"


def _import(module_name: str, spec: str) -> ModuleType:
    """Import a module name, or a ``.py`` file as ``python FILE`` would (its directory on ``sys.path``)."""
    try:
        if not module_name.endswith(".py"):
            return importlib.import_module(module_name)
        path = Path(module_name).resolve()
        if not path.is_file():
            raise FedAvgConfigError(f"--model {spec}: no such file {path}")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        loader = importlib.util.spec_from_file_location(f"_fedproto_model_{path.stem}", path)
        if loader is None or loader.loader is None:  # pragma: no cover - a .py file always has one
            raise FedAvgConfigError(f"--model {spec}: cannot import {path}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[loader.name] = module  # TorchScript looks a class's module up by name
        loader.loader.exec_module(module)
        return module
    except FedAvgConfigError:
        raise
    except Exception as exc:  # a missing module, or the user's module raising while imported
        raise FedAvgConfigError(f"--model {spec}: importing {module_name} failed: {_one_line(exc)}") from None


def _model(spec: str, seed: int) -> nn.Module:
    """Build the model ``--model MODULE:FACTORY`` names, under ``torch.manual_seed(seed)``."""
    module_name, _, attribute = spec.rpartition(":")
    module = _import(module_name, spec)
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise FedAvgConfigError(f"--model {spec}: {module_name} has no attribute {attribute!r}") from None
    if not callable(factory):
        raise FedAvgConfigError(f"--model {spec}: {attribute} is not callable")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    if not isinstance(model, nn.Module):
        raise FedAvgConfigError(f"--model {spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def _optimizer_args(options: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"lr": options["lr"]}
    for item in options["optimizer_arg"]:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise FedAvgConfigError(f"--optimizer-arg expects NAME=JSON, got {item!r}")
        try:
            result[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FedAvgConfigError(f"--optimizer-arg {name}: {text!r} is not JSON ({exc.msg})") from None
    return result


def _strategy(options: dict[str, Any]) -> Any:
    name = options["strategy"]
    hyper = {
        "fedprox": {"mu": options["mu"]},
        "fedadam": {k: options[k] for k in ("eta", "beta1", "beta2", "tau")},
        "fedyogi": {k: options[k] for k in ("eta", "beta1", "beta2", "tau")},
        "trimmed_mean": {"beta": options["trim"]},
    }.get(name, {})
    unused = [k for k in ("mu", "eta", "beta1", "beta2", "tau", "trim") if options[k] is not None]
    used = {"trim" if k == "beta" else k for k in hyper}
    stray = sorted(set(unused) - used)
    if stray:
        raise FedAvgConfigError(f"--{', --'.join(stray)} do not apply to the {name} strategy")
    return strategy_from_settings({"name": name, **{k: v for k, v in hyper.items() if v is not None}})


def _run(options: dict[str, Any]) -> int:
    from rich.console import Console

    from fedproto.client import Client
    from fedproto.federated.fedavg import FedAvg
    from fedproto.training import TrainConfig

    console = Console(stderr=True, highlight=False)
    token = options["token"]
    if options.get("token_file"):
        token = Path(options["token_file"]).read_text().strip().splitlines()[0].split()[-1]
    model = _model(options["model"], options["seed"])
    config = TrainConfig(
        model=model,
        loss_fn=options["loss"],
        optimizer=options["optimizer"],
        optimizer_args=_optimizer_args(options),
        batch_size=options["batch_size"],
        epochs=options["epochs"],
        seed=options["seed"],
    )
    strategy = _strategy(options)
    plan: list[tuple[str, list[str]]] = []
    for spec in options["worker"]:
        url, sep, keys = spec.partition("=")
        names = [k for k in keys.split(",") if k] if sep else (options["dataset_key"] or ["train"])
        if not url or not names:
            raise FedAvgConfigError(f"--worker expects URL or URL=KEY,KEY, got {spec!r}")
        plan.append((url, names))
    connections: list[Client] = []
    try:
        for url, _ in plan:
            connections.append(Client(url, token=token, connect_timeout=10.0, reconnect_attempts=3))
        clients = [
            FederatedClient(connection, key)
            for connection, (_, keys) in zip(connections, plan, strict=True)
            for key in keys
        ]
        run_dir = options.get("run_dir")
        fedavg = FedAvg(
            clients,
            model,
            config,
            eval_dataset_key=options["eval_dataset_key"],
            strategy=strategy,
            fraction_fit=options["fraction_fit"],
            min_fit_clients=options["min_fit_clients"],
            min_available_clients=options["min_available_clients"],
            seed=options["seed"],
            streaming=options["streaming"],
            updates=options["updates"],
            round_timeout=options["round_timeout"],
            fit_timeout=options["fit_timeout"],
            # runs written before the option existed transferred with the default
            max_transfers=options.get("max_transfers", 1) or None,
            evaluate=not options["no_evaluate"],
            run_dir=run_dir,
            resume=bool(options.get("resume")),
            run_settings={
                "command": {k: v for k, v in options.items() if k not in (*PER_INVOCATION, "resume")}
            },
            plot=bool(run_dir) and not options["no_plot"],
            progress=not options["quiet"],
        )
        remaining = options["rounds"] - len(fedavg.history)
        if remaining < 0:
            raise FedAvgConfigError(f"the run already has {len(fedavg.history)} rounds, more than --rounds")
        if fedavg.history:
            console.print(
                f"resuming after round {len(fedavg.history)} of {options['rounds']}", soft_wrap=True
            )
        fedavg.run(remaining)
    finally:
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()
    last = fedavg.history[-1] if fedavg.history else None
    metric = None if last is None else last.metric
    # the metric of what the workers evaluated: float targets have a mean squared error, no accuracy
    if metric is None:
        shown = "accuracy -"
    else:
        shown = f"{metric[0]} {metric[1]:.3f}" if metric[0] == "accuracy" else f"{metric[0]} {metric[1]:.4g}"
    where = f", run directory {run_dir}" if run_dir else ""
    console.print(f"done: {len(fedavg.history)} rounds, {shown}{where}", soft_wrap=True)
    return 0
