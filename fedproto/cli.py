"""The ``fedproto`` command: serve a worker, poke any server, run the conformance suite or the demo.

Every failure ends in one clear line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fedproto.errors import FedprotoError, ProtocolError

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the server, as ws://HOST:PORT or wss://HOST:PORT")
    parser.add_argument("--token", default="", help="bearer token for the handshake")
    parser.add_argument("--token-file", type=Path, help="read the token from this file (first line)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate(s) to verify a wss:// server with")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait per request (default 30)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fedproto", description="Remote federated training over protocol fedproto v1."
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)")
    # --log-level is also accepted after the subcommand (fedproto serve --log-level WARNING)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="logging level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a worker (a data owner's server)", parents=[common])
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8777, help="TCP port (default 8777; 0 picks one)")
    serve.add_argument("--id", help="the worker's id (default: the loaded worker's, else 'worker')")
    serve.add_argument(
        "--worker",
        metavar="MODULE:FACTORY",
        help="serve your own worker: a fedproto.Worker, a Worker subclass or a callable returning one, "
        "from an importable module or a .py file (examples/colony_worker.py:make_worker); the other "
        "options given here apply to it",
    )
    serve.add_argument(
        "--methods",
        action="append",
        default=[],
        metavar="MODULE",
        help="expose the module-level functions marked @fedproto.rpc in MODULE (a module name or a .py "
        "file; repeatable)",
    )
    serve.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="KEY=FILE",
        help="offer a dataset from a .pt, .npz or .csv file (repeatable)",
    )
    serve.add_argument("--token-file", type=Path, help="file of 'IDENTITY TOKEN' lines; tokens required")
    serve.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM) to serve wss://")
    serve.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    serve.add_argument(
        "--weights-only", action="store_true", help="refuse TorchScript models; train registered ones only"
    )
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=MODULE:FACTORY",
        help="register an architecture clients may train by name: mlp=mypkg.models:make_mlp (repeatable)",
    )
    serve.add_argument(
        "--conformance", action="store_true", help="expose the conformance profile (docs/protocol.md §18)"
    )
    serve.add_argument(
        "--expose-errors",
        action="store_true",
        help="send clients the text of unexpected exceptions (default: a generic message and an error id "
        "that the log shows beside the traceback)",
    )
    serve.add_argument(
        "--max-connections",
        metavar="N",
        help="serve at most N connections at once; one more is refused with HTTP 503 "
        "(docs/protocol.md §14.2.11; default 1000, or the loaded worker's own; 0: no limit)",
    )

    ls = sub.add_parser("ls", help="list a server's datasets, objects and methods", parents=[common])
    _add_client_options(ls)

    call = sub.add_parser("call", help="call an exposed method with JSON arguments", parents=[common])
    _add_client_options(call)
    call.add_argument("method", help="the method's name")
    call.add_argument("args", nargs="*", help="positional arguments, each a JSON value")
    call.add_argument(
        "--kw", action="append", default=[], metavar="NAME=JSON", help="a keyword argument (repeatable)"
    )

    ping = sub.add_parser("ping", help="measure round trips to a server", parents=[common])
    _add_client_options(ping)
    ping.add_argument("--count", type=int, default=5, help="how many pings (default 5)")

    conformance = sub.add_parser(
        "conformance",
        help="check a server against the spec (see 'fedproto conformance --help')",
        add_help=False,
    )
    conformance.add_argument("rest", nargs=argparse.REMAINDER)

    demo = sub.add_parser("demo", help="federated training of a digits classifier on three local workers")
    demo.add_argument("rest", nargs=argparse.REMAINDER)

    fedavg = sub.add_parser(
        "fedavg",
        help="federated training with running workers, resumable (see 'fedproto fedavg --help')",
        add_help=False,
    )
    fedavg.add_argument("rest", nargs=argparse.REMAINDER)

    simulate = sub.add_parser(
        "simulate",
        help="simulate many clients on a few local workers or Ray (see 'fedproto simulate --help')",
        add_help=False,
    )
    simulate.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _delegated(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """Commands parsing their own options (conformance, demo, fedavg, simulate): (command, arguments)."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 1 if "=" in argv[index] or argv[index] in ("-h", "--help") else 2
    if index < len(argv) and argv[index] in ("conformance", "demo", "fedavg", "simulate"):
        return argv[index], list(argv[index + 1 :])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    delegated = _delegated(argv)
    if delegated is not None:
        # argparse's REMAINDER drops options that follow the subcommand, so pass them on untouched
        top = parser.parse_args(argv[: len(argv) - len(delegated[1]) - 1])
        logging.basicConfig(level=getattr(logging, str(top.log_level).upper(), logging.INFO))
        return _run_delegated(*delegated)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "ls":
            return asyncio.run(_ls(args))
        if args.command == "call":
            return asyncio.run(_call(args))
        if args.command == "ping":
            return asyncio.run(_ping(args))
    except KeyboardInterrupt:
        return 130
    except (FedprotoError, OSError, ValueError) as exc:
        print(f"fedproto {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # pragma: no cover - parser.error exits


#: What ``fedproto conformance`` says when the suite's dependencies are not installed.
MISSING_CONFORMANCE_EXTRA = (
    "fedproto conformance needs hypothesis, which the library does not install: "
    "pip install 'fedproto[conformance]'"
)


def _conformance_main() -> Callable[[list[str]], int]:
    """The suite's entry point: the installed ``fedproto_conformance``, or ``conformance/`` of a source
    checkout run without installing (the same package under the name of its folder)."""
    try:
        module = importlib.import_module("fedproto_conformance.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "fedproto_conformance":
            raise
        module = importlib.import_module("conformance.cli")
    main: Callable[[list[str]], int] = module.main
    return main


def _run_delegated(command: str, rest: list[str]) -> int:
    try:
        if command == "conformance":
            try:
                conformance_main = _conformance_main()
            except ModuleNotFoundError as exc:
                if exc.name != "hypothesis":
                    raise
                # the suite is an extra: the library itself never needs hypothesis
                print(MISSING_CONFORMANCE_EXTRA, file=sys.stderr)
                return EXIT_FAILURE
            return conformance_main(rest)
        if command == "fedavg":
            from fedproto.federated.command import main as fedavg_main

            return fedavg_main(rest)
        if command == "simulate":
            from fedproto.simulation.command import main as simulate_main

            return simulate_main(rest)
        from fedproto.demo import main as demo_main

        return demo_main(rest)
    except KeyboardInterrupt:
        return 130


def _one_line(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, ProtocolError) else f"{exc.code.name}: {exc.message}"
    return " ".join(text.split()) or type(exc).__name__


# -- serve --------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from fedproto.server import Worker, load_token_file
    from fedproto.server.loading import load_methods, load_worker
    from fedproto.server.profile import conformance_worker

    tokens = load_token_file(args.token_file) if args.token_file else None
    # checked before anything is loaded or served, so a typo costs nothing
    max_connections = _max_connections(args.max_connections)
    if args.conformance and args.worker:
        raise ValueError("--conformance and --worker both choose the worker: give one")
    if args.conformance:
        worker = conformance_worker(args.id or "conformance", tokens=tokens)
    elif args.worker:
        # the loaded worker keeps its own settings unless an option here says otherwise
        worker = load_worker(args.worker)
        if args.id:
            worker.id = args.id
        if args.token_file:
            worker.set_tokens(tokens)
        if args.weights_only:
            worker.weights_only = True
    else:
        worker = Worker(args.id or "worker", tokens=tokens, weights_only=args.weights_only)
    if args.expose_errors:
        worker.expose_errors = True
    if max_connections is not None:
        worker.max_connections = max_connections
    for module in args.methods:
        load_methods(module, worker)
    for spec in args.dataset:
        key, sep, path = spec.partition("=")
        if not sep or not key or not path:
            raise ValueError(f"--dataset expects KEY=FILE, got {spec!r}")
        worker.add_dataset(Path(path), key=key)
    for spec in args.model:
        name, factory = _model_factory(spec)
        worker.register_model(name, factory)
    worker.run(args.host, args.port, tls_cert=args.tls_cert, tls_key=args.tls_key)
    return EXIT_OK


def _max_connections(text: str | None) -> int | None:
    """The ``--max-connections`` value: a whole number >= 0 (0: no limit), None when not given.

    Parsed here rather than by argparse's ``type=int`` so that a bad value is one line, like every
    other error of the command, and not a usage message.
    """
    if text is None:
        return None
    try:
        value = int(text.strip(), 10)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"--max-connections expects a whole number >= 0 (0: no limit), got {text!r}")
    return value


def _model_factory(spec: str) -> tuple[str, Any]:
    """Resolve ``NAME=MODULE:FACTORY`` (a module name or a .py file, as ``--worker``) into the name and the
    callable."""
    from fedproto.server.loading import import_user_module

    name, sep, target = spec.partition("=")
    module_name, colon, attribute = target.rpartition(":")
    if not (sep and colon and name and module_name and attribute):
        raise ValueError(f"--model expects NAME=MODULE:FACTORY, got {spec!r}")
    module = import_user_module(module_name, option=f"--model {spec}")
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"--model {spec}: {module_name} has no attribute {attribute!r}") from None
    if not callable(factory):
        raise ValueError(f"--model {spec}: {target} is not callable")
    return name, factory


# -- client commands ----------------------------------------------------------------------------------


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    token = args.token
    if args.token_file:
        token = args.token_file.read_text().strip().splitlines()[0].split()[-1]
    return {"token": token, "ca_file": args.ca_file, "timeout": args.timeout, "reconnect": False}


async def _ls(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fedproto.client import AsyncClient

    console = Console()
    async with AsyncClient.connect(args.url, **_client_kwargs(args)) as client:
        info = client.server
        # soft_wrap: a long line is left to the terminal to wrap, never broken inside a list by rich
        console.print(
            f"[bold]{info.server_id}[/] ({info.server_name}) protocol v{info.version}, "
            f"identity {info.identity!r}",
            soft_wrap=True,
        )
        console.print(f"capabilities: {', '.join(sorted(info.capabilities))}", soft_wrap=True)
        caps = info.capabilities
        if "datasets" in caps:
            table = Table("dataset", "samples", "features", "targets", "description", title="datasets")
            for d in await client.datasets():
                table.add_row(
                    d.key,
                    str(d.sample_count),
                    f"{list(d.feature_shape)} {str(d.feature_dtype).removeprefix('torch.')}",
                    f"{list(d.target_shape)} {str(d.target_dtype).removeprefix('torch.')}",
                    d.description,
                )
            _print_table(console, table)
        if "objects" in caps:
            table = Table("object", "dtype", "shape", "bytes", "tags", "description", title="objects")
            for o in await client.list_objects():
                table.add_row(
                    o.id,
                    str(o.dtype).removeprefix("torch."),
                    str(list(o.shape)),
                    str(o.nbytes),
                    " ".join(o.tags),
                    o.description,
                )
            _print_table(console, table)
        if "calls" in caps:
            table = Table("method", "parameters", "returns", "description", title="methods")
            for m in await client.methods():
                params = ", ".join(f"{p.name}: {p.type}" + ("" if p.required else "?") for p in m.parameters)
                table.add_row(m.name, params, m.returns, m.description)
            _print_table(console, table)
    return EXIT_OK


def _print_table(console: Any, table: Any) -> None:
    """Print a rich table, or ``TITLE: none`` for one without rows (an empty box says less)."""
    if table.row_count:
        console.print(table)
    else:
        console.print(f"{table.title}: none", soft_wrap=True)


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{what} is not valid JSON ({exc.msg}): {text!r}; quote strings as '\"text\"'"
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 64:
            return {"tensor": value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
        return {"tensor": f"<{list(value.shape)} {str(value.dtype).removeprefix('torch.')}>"}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def _call(args: argparse.Namespace) -> int:
    from fedproto.client import AsyncClient

    positional = [_parse_json(a, f"argument {i + 1}") for i, a in enumerate(args.args)]
    keywords: dict[str, Any] = {}
    for item in args.kw:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--kw expects NAME=JSON, got {item!r}")
        keywords[name] = _parse_json(text, f"keyword {name}")
    async with AsyncClient.connect(args.url, **_client_kwargs(args)) as client:
        result = await client.call_with(args.method, positional, keywords, timeout=args.timeout)
    print(json.dumps(_jsonable(result), indent=2, ensure_ascii=False))
    return EXIT_OK


async def _ping(args: argparse.Namespace) -> int:
    from fedproto.client import AsyncClient

    if args.count < 1:
        raise ValueError("--count must be at least 1")
    async with AsyncClient.connect(args.url, **_client_kwargs(args)) as client:
        times = []
        for n in range(args.count):
            seconds = await client.ping(timeout=args.timeout)
            times.append(seconds)
            print(f"pong from {client.server.server_id}: seq={n + 1} time={seconds * 1000:.3f} ms")
    low, mid, high = (1000 * x for x in (min(times), statistics.median(times), max(times)))
    print(f"{len(times)} pings: min {low:.3f} ms, median {mid:.3f} ms, max {high:.3f} ms")
    return EXIT_OK
